/**
 * Checkpoint integrity: every checkpoint `chainrule train` writes holds a SHA256SUMS file (the
 * format of `sha256sum`, so `sha256sum -c SHA256SUMS` checks it by hand too) listing the
 * SHA-256 of each of its files. Commands verify it before reading a checkpoint, so a flipped
 * byte in the weights or the optimizer state is a one-line error naming the file, not a NaN
 * loss later. The safetensors files themselves are unchanged (PyTorch loads them as before).
 */
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { CheckpointError, type CheckpointContents, fsyncDirSync, readCheckpoint, writeFileAtomicSync } from "@chainrule/core";

export const CHECKSUMS_FILE = "SHA256SUMS";

/**
 * Writes a checkpoint directory `out` whole or not at all: `fill` writes into a temporary
 * directory beside it, the checksums follow, then it is synced and renamed into place. A failure
 * leaves nothing behind.
 */
export function writeCheckpointDir(out: string, fill: (dir: string) => void): void {
  const tmp = join(dirname(out), `.${basename(out)}.${randomBytes(4).toString("hex")}.tmp`);
  mkdirSync(tmp);
  try {
    fill(tmp);
    writeChecksums(tmp);
    fsyncDirSync(tmp);
    renameSync(tmp, out);
    fsyncDirSync(dirname(out));
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}

function sha256(path: string): string {
  return createHash("sha256").update(readFileSync(path)).digest("hex");
}

/** Writes dir/SHA256SUMS for every plain file in dir (call after the checkpoint's files are written). */
export function writeChecksums(dir: string): void {
  const names = readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isFile() && e.name !== CHECKSUMS_FILE && !e.name.startsWith("."))
    .map((e) => e.name)
    .sort();
  writeFileAtomicSync(join(dir, CHECKSUMS_FILE), names.map((n) => `${sha256(join(dir, n))}  ${n}\n`).join(""));
}

/**
 * Checks every file SHA256SUMS lists; throws a CheckpointError naming the first file that is
 * missing or differs. A checkpoint without SHA256SUMS (written by the library's saveCheckpoint
 * or an older chainrule) is not verified.
 */
export function verifyChecksums(dir: string): void {
  const manifest = join(dir, CHECKSUMS_FILE);
  if (!existsSync(manifest)) return;
  const lines = readFileSync(manifest, "utf8").split("\n").filter((l) => l.trim() !== "");
  for (const [i, line] of lines.entries()) {
    const m = /^([0-9a-f]{64}) [ *](.+)$/.exec(line);
    if (!m || m[2].includes("/")) throw new CheckpointError(`corrupted checkpoint: ${manifest}:${i + 1}: not a "<sha256>  <file>" line`);
    const [, want, name] = m;
    const path = join(dir, name);
    if (!existsSync(path)) throw new CheckpointError(`incomplete checkpoint: ${path}: missing (listed in ${CHECKSUMS_FILE})`);
    const got = sha256(path);
    if (got !== want) throw new CheckpointError(`corrupted checkpoint: ${path}: SHA-256 ${got.slice(0, 12)}… differs from ${want.slice(0, 12)}… recorded in ${CHECKSUMS_FILE} when it was written`);
  }
}

/** core's readCheckpoint (its errors name what is malformed, e.g. a truncated file), then the checksums. */
export function readVerifiedCheckpoint(dir: string): CheckpointContents {
  const contents = readCheckpoint(dir);
  verifyChecksums(dir);
  return contents;
}

export interface IntactCheckpoint {
  dir: string;
  contents: CheckpointContents;
  /** Newer checkpoints that could not be used, and why (one line each). */
  skipped: { dir: string; reason: string }[];
}

/**
 * The newest checkpoint (of `dirs`, oldest first) that verifies and reads, with the newer ones
 * it skipped. Throws one line naming every checkpoint and its problem when none is intact.
 */
export function newestIntactCheckpoint(dirs: string[], check: (c: CheckpointContents, dir: string) => void = () => {}): IntactCheckpoint {
  const skipped: { dir: string; reason: string }[] = [];
  for (const dir of [...dirs].reverse()) {
    try {
      const contents = readVerifiedCheckpoint(dir);
      check(contents, dir);
      return { dir, contents, skipped };
    } catch (e) {
      if (!(e instanceof CheckpointError)) throw e;
      skipped.push({ dir, reason: e.message });
    }
  }
  throw new CheckpointError(`no intact checkpoint to resume from: ${skipped.map((s) => s.reason).join("; ")}`);
}
