/**
 * Atomic file writes: the data goes to a temporary file in the same directory,
 * is fsynced, then renamed over the target, and the directory is fsynced so the
 * rename itself is durable. A crash or kill at any moment leaves either the old
 * file or the new one, never a mix.
 */
import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, rmSync, unlinkSync, writeSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { randomBytes } from "node:crypto";

/** fsyncs a directory (a no-op where the platform refuses, e.g. Windows). */
export function fsyncDirSync(dir: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(dir, "r");
    fsyncSync(fd);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== "EISDIR" && code !== "EPERM" && code !== "EINVAL" && code !== "EACCES") throw e;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** Writes `data` to `path` atomically. */
export function writeFileAtomicSync(path: string, data: Uint8Array | string, opts: { mode?: number } = {}): void {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`);
  const fd = openSync(tmp, "wx", opts.mode ?? 0o644);
  try {
    let off = 0;
    while (off < bytes.length) off += writeSync(fd, bytes, off, bytes.length - off);
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    try { unlinkSync(tmp); } catch { /* already gone */ }
    throw e;
  }
  closeSync(fd);
  try {
    renameSync(tmp, path);
  } catch (e) {
    try { unlinkSync(tmp); } catch { /* already gone */ }
    throw e;
  }
  fsyncDirSync(dir);
}

/**
 * Creates the directory `dir` whole or not at all: `fill` writes its files into a temporary
 * sibling (.NAME.PID.XXXX.tmp), which is then fsynced and renamed into place. A failure removes
 * the temporary; a crash leaves at most the temporary, never a partial `dir`.
 */
export function writeDirAtomicSync(dir: string, fill: (tmp: string) => void): void {
  const parent = dirname(dir);
  const tmp = join(parent, `.${basename(dir)}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`);
  mkdirSync(tmp);
  try {
    fill(tmp);
    fsyncDirSync(tmp);
    renameSync(tmp, dir);
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  fsyncDirSync(parent);
}
