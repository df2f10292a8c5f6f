/**
 * Checkpoint integrity: SHA256SUMS lists the SHA-256 of each file of a checkpoint directory, in
 * the format of `sha256sum` (so `sha256sum -c SHA256SUMS` checks it by hand too). Reading a
 * checkpoint verifies it, so a flipped byte in the weights or the optimizer state is a one-line
 * error naming the file, not a NaN loss later. The files themselves are unchanged (PyTorch loads
 * the safetensors as before).
 */
import { createHash } from "node:crypto";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { writeFileAtomicSync } from "./atomic.js";

export const CHECKSUMS_FILE = "SHA256SUMS";

function sha256(path: string): string {
  return createHash("sha256").update(readFileSync(path)).digest("hex");
}

/**
 * Writes dir/SHA256SUMS atomically for the files `names` (default: every plain file in dir but
 * SHA256SUMS and hidden temporaries). Call it after the files are written: it hashes them as they are on disk.
 */
export function writeChecksums(dir: string, names?: string[]): void {
  const listed = (names ?? readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isFile() && e.name !== CHECKSUMS_FILE && !e.name.startsWith("."))
    .map((e) => e.name)).slice().sort();
  writeFileAtomicSync(join(dir, CHECKSUMS_FILE), listed.map((n) => `${sha256(join(dir, n))}  ${n}\n`).join(""));
}

/**
 * Checks every file dir/SHA256SUMS lists; returns one line naming the first file that is missing
 * or differs (or the malformed line), or null when all match. A directory without SHA256SUMS
 * (a checkpoint written before chainrule wrote checksums) has nothing to check: null.
 */
export function checksumMismatch(dir: string): string | null {
  const manifest = join(dir, CHECKSUMS_FILE);
  if (!existsSync(manifest)) return null;
  const lines = readFileSync(manifest, "utf8").split("\n").filter((l) => l.trim() !== "");
  for (const [i, line] of lines.entries()) {
    const m = /^([0-9a-f]{64}) [ *](.+)$/.exec(line);
    if (!m || m[2].includes("/")) return `corrupted checkpoint: ${manifest}:${i + 1}: not a "<sha256>  <file>" line`;
    const [, want, name] = m;
    const path = join(dir, name);
    if (!existsSync(path)) return `incomplete checkpoint: ${path}: missing (listed in ${CHECKSUMS_FILE})`;
    const got = sha256(path);
    if (got !== want) return `corrupted checkpoint: ${path}: SHA-256 ${got.slice(0, 12)}… differs from ${want.slice(0, 12)}… recorded in ${CHECKSUMS_FILE} when it was written`;
  }
  return null;
}
