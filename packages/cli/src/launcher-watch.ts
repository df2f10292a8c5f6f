/**
 * The trainer stops when its launcher dies. `npx -y pnpm@10 chainrule train` runs the trainer
 * five processes down (npm exec → sh → pnpm → sh → tsx → node), and neither npm nor pnpm passes
 * a SIGTERM on or takes its children down when killed: without this, `kill` (or `kill -9`) of
 * the command a user started would leave the trainer writing checkpoints on its own.
 *
 * The launchers are the trainer's ancestors, in its process group (a shell starts each command
 * line as one group), that are Node.js processes (npx, pnpm, tsx, a Node script) or shells those
 * started (`sh -c` of a package script); the walk stops at the first other process, such as the
 * user's shell or a shell script, so a run a script started in the background goes on when the
 * script ends. When a launcher exits, its child is re-parented, which shows as a changed parent
 * pid somewhere in the chain; the trainer then sends itself SIGTERM, so it stops the way SIGTERM
 * stops it (checkpoint, exit 143).
 * Linux reads the chain from /proc; elsewhere only the trainer's own parent is watched, when a
 * package manager's script started it.
 */
import { readFileSync, readlinkSync } from "node:fs";
import { basename } from "node:path";

interface Link {
  pid: number;
  /** Its parent when the watch began. */
  ppid: number;
}

/** (parent pid, process group) of a process, from /proc (null if gone or without /proc). */
function procStat(pid: number): { ppid: number; pgrp: number } | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" "); // state ppid pgrp ...
    return { ppid: Number(f[1]), pgrp: Number(f[2]) };
  } catch {
    return null;
  }
}

/** The executable's name ("node", "sh", ...), "" if unreadable. */
function exeName(pid: number): string {
  try {
    return basename(readlinkSync(`/proc/${pid}/exe`));
  } catch {
    return "";
  }
}

/** A process that launches the trainer and waits for it: Node.js (npx, pnpm, tsx), or a shell one of those started. */
function isLauncher(pid: number, ppid: number): boolean {
  const exe = exeName(pid);
  if (/^node/.test(exe)) return true;
  return /^(sh|dash|bash)$/.test(exe) && /^node/.test(exeName(ppid));
}

/**
 * The links to watch, nearest first: the trainer and each launcher whose parent is a launcher too.
 * The outermost launcher's own parent (the user's shell, a script) is not watched: a run started
 * with nohup goes on when the terminal closes.
 */
export function launcherChain(): Link[] {
  const self = procStat(process.pid);
  if (!self) {
    // Without /proc: the trainer's own parent, when a package manager's script started it.
    return process.env.npm_lifecycle_event && process.ppid > 1 ? [{ pid: process.pid, ppid: process.ppid }] : [];
  }
  const chain: Link[] = [];
  for (let pid = process.pid, ppid = self.ppid; ppid > 1 && chain.length < 32; ) {
    const parent = procStat(ppid);
    if (!parent || parent.pgrp !== self.pgrp || !isLauncher(ppid, parent.ppid)) break;
    chain.push({ pid, ppid });
    pid = ppid;
    ppid = parent.ppid;
  }
  return chain;
}

/** The first link whose parent changed (the parent exited and the child was re-parented), or null. */
function brokenLink(chain: Link[]): Link | null {
  for (const link of chain) {
    const s = procStat(link.pid);
    if (s ? s.ppid !== link.ppid : !processExists(link.ppid)) return link;
  }
  return null;
}

/** Without /proc: whether a process exists (signal 0). */
function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Polls the launcher chain every `intervalMs`; when a launcher has exited, calls `onOrphaned`
 * (default: a line on stderr and SIGTERM to this process) once. Returns a function that stops watching.
 */
export function watchLauncher(opts: { intervalMs?: number; onOrphaned?: (pid: number) => void } = {}): () => void {
  const chain = launcherChain();
  if (chain.length === 0) return () => {};
  const onOrphaned = opts.onOrphaned ?? ((pid: number) => {
    process.stderr.write(`\nthe command that started this trainer (pid ${pid}) has exited: stopping as on SIGTERM\n`);
    // Before training starts nothing handles SIGTERM, and the signal would kill the process
    // outright; exiting instead runs the exit handlers (the run's lock is released).
    if (process.listenerCount("SIGTERM") > 0) process.kill(process.pid, "SIGTERM");
    else process.exit(143);
  });
  const timer = setInterval(() => {
    const broken = brokenLink(chain);
    if (!broken) return;
    clearInterval(timer);
    onOrphaned(broken.ppid);
  }, opts.intervalMs ?? 1000);
  timer.unref(); // never keeps a finished command alive
  return () => clearInterval(timer);
}
