/**
 * One writer per run directory: `train` holds RUN_DIR/.lock (its pid, host and start time)
 * while it runs, so a second `train --resume --out RUN_DIR` is refused instead of writing
 * checkpoints beside the first. A lock whose process is gone (kill -9, a crash) is stale and
 * taken over.
 */
import { existsSync, linkSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import { join } from "node:path";
import { CliError } from "./errors.js";

export const LOCK_FILE = ".lock";

interface LockInfo {
  pid: number;
  host: string;
  /** The process's start time (Linux: clock ticks after boot), so a reused pid is not mistaken for the holder. */
  started: string | null;
}

/** Field 22 of /proc/<pid>/stat (null where there is no /proc or no such process). */
export function processStartTime(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19] ?? null;
  } catch {
    return null;
  }
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM"; // exists, owned by someone else
  }
}

/** Whether the process a lock names still runs (on another host: assumed so, it cannot be checked). */
function holderAlive(info: LockInfo): boolean {
  if (info.host !== hostname()) return true;
  if (info.pid === process.pid || !isRunning(info.pid)) return false;
  const started = processStartTime(info.pid);
  return info.started === null || started === null || started === info.started;
}

/** Whether a trainer holds runDir now: its lock exists and names a live process (this one included). */
export function trainerRunning(runDir: string): boolean {
  const held = readLock(join(runDir, LOCK_FILE));
  return held !== null && ((held.pid === process.pid && held.host === hostname()) || holderAlive(held));
}

function readLock(path: string): LockInfo | null {
  try {
    const info = JSON.parse(readFileSync(path, "utf8")) as LockInfo;
    return Number.isInteger(info.pid) && typeof info.host === "string" ? info : null;
  } catch {
    return null; // unreadable: stale
  }
}

export class RunLock {
  private released = false;
  private readonly onExit = () => this.release();

  private constructor(readonly path: string) {
    process.on("exit", this.onExit); // also on process.exit() after a second Ctrl-C
  }

  /**
   * Takes runDir's lock. Throws a one-line CliError naming the pid (and host) that holds it;
   * `note` is told when a stale lock was taken over.
   */
  static acquire(runDir: string, note: (line: string) => void = () => {}): RunLock {
    const path = join(runDir, LOCK_FILE);
    const mine: LockInfo = { pid: process.pid, host: hostname(), started: processStartTime(process.pid) };
    // Written whole to a temporary file, then hard-linked into place: link fails if the lock
    // exists, and a lock that exists is never half-written.
    const tmp = join(runDir, `${LOCK_FILE}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`);
    writeFileSync(tmp, JSON.stringify(mine) + "\n");
    try {
      for (let attempt = 0; attempt < 3; attempt++) {
        try {
          linkSync(tmp, path);
          return new RunLock(path);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw new CliError(`${path}: cannot create the run's lock (${(e as Error).message})`);
        }
        const held = readLock(path);
        if (held && holderAlive(held)) {
          const where = held.host === hostname() ? `pid ${held.pid}` : `pid ${held.pid} on host ${held.host}`;
          throw new CliError(`${runDir} is in use by another chainrule train (${where}); wait for it to end or stop it (if that process is gone, delete ${path})`);
        }
        // Stale: its process is gone. Remove it and try again (another process may win the race; then it holds the lock).
        if (existsSync(path)) rmSync(path, { force: true });
        note(`removed a stale lock ${path}${held ? ` (pid ${held.pid} no longer runs)` : " (unreadable)"}`);
      }
    } finally {
      rmSync(tmp, { force: true });
    }
    throw new CliError(`${path}: could not take the run's lock (another process keeps taking it)`);
  }

  /** Removes the lock if it is still ours. */
  release(): void {
    if (this.released) return;
    this.released = true;
    process.off("exit", this.onExit);
    const held = readLock(this.path);
    if (held && held.pid === process.pid && held.host === hostname()) rmSync(this.path, { force: true });
  }
}
