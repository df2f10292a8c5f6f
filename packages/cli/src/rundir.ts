/**
 * A run directory:
 *   job.json                 the resolved job (every default filled in)
 *   metrics.jsonl            one JSON record per logged step / epoch / event
 *   checkpoints/step-NNNNNNNN/{model.safetensors,state.json,SHA256SUMS}
 *   checkpoints/best-step-NNNNNNNN/   the best held-out figure's checkpoint (checkpoint.keepBest)
 *   summary.json             final metrics, wall time, throughput, checkpoint
 *   plots/                   written by `chainrule plot`
 * A checkpoint directory is assembled under a temporary name and renamed into
 * place, so a kill at any moment leaves every earlier checkpoint intact; the temporaries such
 * a kill leaves behind are removed when the run next starts (removeStaleTemporaries).
 */
import { appendFileSync, copyFileSync, existsSync, linkSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { randomBytes } from "node:crypto";
import { MODEL_FILE, STATE_FILE, fsyncDirSync, writeFileAtomicSync } from "@chainrule/core";
import { CliError } from "./errors.js";

export const JOB_FILE = "job.json";
export const METRICS_FILE = "metrics.jsonl";
export const CHECKPOINTS = "checkpoints";

/** runs/<name>, or runs/<YYYYMMDD-HHMMSS> (with a suffix if taken). */
export function defaultRunDir(name: string | undefined, root = "runs"): string {
  if (name) {
    let dir = join(root, name);
    for (let i = 2; existsSync(dir); i++) dir = join(root, `${name}-${i}`);
    return dir;
  }
  const d = new Date();
  const p = (n: number) => String(n).padStart(2, "0");
  const stamp = `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
  let dir = join(root, stamp);
  for (let i = 2; existsSync(dir); i++) dir = join(root, `${stamp}-${i}`);
  return dir;
}

/** Creates a fresh run directory; refuses to reuse an existing one. */
export function createRunDir(dir: string): void {
  mkdirSync(resolve(dir, ".."), { recursive: true });
  try {
    mkdirSync(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EEXIST") throw runDirExists(dir);
    throw e;
  }
  mkdirSync(join(dir, CHECKPOINTS));
}

export function runDirExists(dir: string): CliError {
  return new CliError(`run directory ${dir} already exists; pass --resume to continue it, or --out NEW_DIR (nothing was overwritten)`);
}

export function writeJson(path: string, value: unknown): void {
  writeFileAtomicSync(path, JSON.stringify(value, null, 2) + "\n");
}

export function stepDirName(step: number): string {
  return `step-${String(step).padStart(8, "0")}`;
}

/** Checkpoint directories of a run, oldest first. */
export function listCheckpoints(runDir: string): string[] {
  const dir = join(runDir, CHECKPOINTS);
  if (!existsSync(dir)) return [];
  return readdirSync(dir).filter((n) => /^step-\d+$/.test(n)).sort().map((n) => join(dir, n));
}

/** A checkpoint path from a run directory (its latest) or a checkpoint directory itself. */
export function resolveCheckpoint(path: string): string {
  if (!existsSync(path)) throw new CliError(`${path}: no such checkpoint or run directory`);
  if (!statSync(path).isDirectory()) throw new CliError(`${path}: expected a checkpoint directory (with ${MODEL_FILE} and ${STATE_FILE}) or a run directory`);
  if (existsSync(join(path, MODEL_FILE)) || existsSync(join(path, STATE_FILE))) return path;
  const all = listCheckpoints(path);
  if (all.length === 0) throw new CliError(`${path}: no checkpoints (expected ${MODEL_FILE} + ${STATE_FILE}, or a run directory with ${CHECKPOINTS}/step-*)`);
  return all[all.length - 1];
}

/**
 * Writes a checkpoint as runDir/checkpoints/step-N: `write(tmpDir)` fills a temporary
 * directory, which is then renamed into place; older checkpoints beyond `keep` are removed.
 */
export function commitCheckpoint(runDir: string, step: number, keep: number, write: (dir: string) => void): string {
  const final = commitDirectory(runDir, stepDirName(step), write);
  const all = listCheckpoints(runDir);
  for (const old of all.slice(0, Math.max(0, all.length - keep))) if (old !== final) rmSync(old, { recursive: true, force: true });
  return final;
}

/** The best checkpoint's directory name for a step (beside the step-N ones, which `keep` does not count it among). */
export function bestDirName(step: number): string {
  return `best-${stepDirName(step)}`;
}

/**
 * Writes the best checkpoint as runDir/checkpoints/best-step-N (atomically, as commitCheckpoint
 * does), then removes the previous best: a complete best checkpoint exists at every moment.
 */
export function commitBestCheckpoint(runDir: string, step: number, write: (dir: string) => void): string {
  const final = commitDirectory(runDir, bestDirName(step), write);
  const root = join(runDir, CHECKPOINTS);
  for (const n of readdirSync(root)) if (/^best-step-\d+$/.test(n) && join(root, n) !== final) rmSync(join(root, n), { recursive: true, force: true });
  return final;
}

/**
 * Hard-links a finished checkpoint's files (SHA256SUMS included) into `dir`: the best checkpoint
 * and the step checkpoint of one step share their bytes. Files of a checkpoint are never modified
 * in place (a save replaces them by rename), so sharing them is safe; a file system without hard
 * links gets copies.
 */
export function linkCheckpointFiles(from: string, dir: string): void {
  for (const name of readdirSync(from)) {
    try {
      linkSync(join(from, name), join(dir, name));
    } catch {
      copyFileSync(join(from, name), join(dir, name));
    }
  }
}

/** Fills checkpoints/.tmp-NAME-XXXX with `write` (a whole checkpoint, SHA256SUMS included: saveCheckpoint's) and renames it to checkpoints/NAME. */
function commitDirectory(runDir: string, name: string, write: (dir: string) => void): string {
  const root = join(runDir, CHECKPOINTS);
  mkdirSync(root, { recursive: true });
  const final = join(root, name);
  const tmp = join(root, `.tmp-${name}-${randomBytes(4).toString("hex")}`);
  mkdirSync(tmp);
  try {
    write(tmp);
    fsyncDirSync(tmp);
    if (existsSync(final)) rmSync(final, { recursive: true, force: true }); // same step written again (e.g. interrupt right after an epoch end)
    renameSync(tmp, final);
    fsyncDirSync(root);
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  return final;
}

/**
 * Removes what a killed run left half-written: checkpoints/.tmp-step-* directories and the
 * `.<name>.<pid>.<hex>.tmp` files of atomic writes. Only while holding the run's lock (no other
 * writer). Returns the paths removed.
 */
export function removeStaleTemporaries(runDir: string): string[] {
  const removed: string[] = [];
  for (const [dir, pattern] of [[join(runDir, CHECKPOINTS), /^\.tmp-(best-)?step-\d+-[0-9a-f]+$/], [runDir, /^\..+\.\d+\.[0-9a-f]+\.tmp$/]] as const) {
    if (!existsSync(dir)) continue;
    for (const name of readdirSync(dir)) {
      if (!pattern.test(name)) continue;
      rmSync(join(dir, name), { recursive: true, force: true });
      removed.push(join(dir, name));
    }
  }
  return removed;
}

/** Appends JSON records to metrics.jsonl. */
export class MetricsLog {
  readonly path: string;
  constructor(runDir: string) {
    this.path = join(runDir, METRICS_FILE);
  }
  write(record: Record<string, unknown>): void {
    appendFileSync(this.path, JSON.stringify(record) + "\n");
  }
  /** On resume: drop records logged after the checkpoint being resumed (they will be logged again). */
  truncateAfter(step: number): void {
    if (!existsSync(this.path)) return;
    const kept = readMetrics(this.path).filter((r) => typeof r.step !== "number" || (r.step as number) <= step);
    writeFileAtomicSync(this.path, kept.map((r) => JSON.stringify(r) + "\n").join(""));
  }
}

export function readMetrics(path: string): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  readFileSync(path, "utf8").split("\n").forEach((line, i) => {
    if (!line.trim()) return;
    try {
      out.push(JSON.parse(line));
    } catch {
      throw new CliError(`${path}:${i + 1}: not a JSON record`);
    }
  });
  return out;
}
