/**
 * The raw job of a command: from a job file (JSON or a module), a built-in job or the default,
 * with flags and --set overrides applied; and the job a run directory was trained with.
 */
import { existsSync, readFileSync } from "node:fs";
import { dirname, isAbsolute, join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { readCheckpoint } from "@chainrule/core";
import { CliError, UsageError } from "../errors.js";
import { JOB_FILE, resolveCheckpoint } from "../rundir.js";
import { BUILTIN_JOBS, DEFAULT_JOB } from "./builtin.js";
import { JobSchema } from "./schema.js";

/** Reads a job file: JSON, or a .ts/.js/.mjs module whose default export (or `job` export) is the job. */
export async function loadJobFile(path: string): Promise<{ raw: Record<string, unknown>; dir: string }> {
  const abs = resolve(path);
  const dir = dirname(abs);
  if (/\.(ts|mts|js|mjs)$/.test(path)) {
    let mod: Record<string, unknown>;
    try {
      mod = await import(pathToFileURL(abs).href);
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      if (err.code === "ERR_MODULE_NOT_FOUND" && String(err.message).includes(abs)) throw new UsageError(`${path}: no such job file`);
      throw new UsageError(`${path}: cannot load the job module (${(e as Error).message.split("\n")[0]})`);
    }
    let job = mod.default ?? mod.job;
    if (typeof job === "function") job = await (job as () => unknown)();
    if (!job || typeof job !== "object") throw new UsageError(`${path}: the module must export a job object as default (or as \`job\`)`);
    return { raw: structuredClone(job) as Record<string, unknown>, dir };
  }
  let text: string;
  try {
    text = readFileSync(abs, "utf8");
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new UsageError(`${path}: ${err.code === "ENOENT" ? "no such job file" : err.message}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new UsageError(`${path}: invalid JSON (${(e as Error).message})`);
  }
  if (!raw || typeof raw !== "object" || Array.isArray(raw)) throw new UsageError(`${path}: a job must be a JSON object`);
  return { raw: raw as Record<string, unknown>, dir };
}

/** Sets `path` (dotted) in a raw job object to `value`, creating objects on the way. */
export function setPath(obj: Record<string, unknown>, path: string, value: unknown): void {
  const keys = path.split(".");
  let cur: any = obj;
  for (const k of keys.slice(0, -1)) {
    if (cur[k] === undefined) cur[k] = {};
    else if (typeof cur[k] !== "object" || cur[k] === null) throw new UsageError(`--set ${path}: '${k}' is not an object in the job`);
    cur = cur[k];
  }
  cur[keys[keys.length - 1]] = value;
}

/** Makes paths in the job absolute (relative to the job file's directory), so the run's job.json is self-contained. */
export function absolutizePaths(raw: Record<string, unknown>, baseDir: string): void {
  const fix = (o: any, keys: string[]) => {
    if (!o || typeof o !== "object") return;
    for (const k of keys) if (typeof o[k] === "string" && !isAbsolute(o[k]) && !/^(file|data):/.test(o[k])) o[k] = resolve(baseDir, o[k]);
  };
  fix(raw.data, ["path", "testPath", "dir", "trainImages", "trainLabels", "testImages", "testLabels"]);
  fix(raw.model, ["module"]);
  fix(raw.data, ["file"]);
  fix(raw.init, ["checkpoint"]);
}

/** Flag → job key path. */
export const FLAG_KEYS: Record<string, string> = {
  workers: "workers",
  epochs: "epochs",
  "batch-size": "batchSize",
  lr: "optimizer.lr",
  seed: "seed",
  backend: "backend",
  name: "name",
  "checkpoint-every": "checkpoint.everySteps",
  "step-timeout": "stepTimeout",
  "max-restarts": "maxRestarts",
};

/** A flag's text as a JSON value where it parses ("12" → 12, "auto" → "auto"). */
export function flagValue(v: string): unknown {
  if (v === "") return v;
  try {
    return JSON.parse(v);
  } catch {
    return v;
  }
}

/**
 * Overriding one field of a section the job leaves to its default (e.g. --lr, or
 * --set data.limitTrain=500 on the default job) keeps the default's type.
 */
function seedSection(raw: Record<string, unknown>, key: string): void {
  const section = key.split(".")[0];
  if (!key.includes(".") || raw[section] !== undefined) return;
  const def = (JobSchema.parse({}) as Record<string, unknown>)[section];
  if (def && typeof def === "object" && "type" in def) raw[section] = { type: (def as { type: string }).type };
}

export interface RawJob {
  raw: Record<string, unknown>;
  source: string;
}

/** The raw job from JOB (or the default job, {}), with flags and --set overrides applied. Not yet validated. */
export async function rawJob(jobPath: string | undefined, flags: Record<string, string | undefined>, sets: string[]): Promise<RawJob> {
  let raw: Record<string, unknown> = structuredClone(DEFAULT_JOB) as unknown as Record<string, unknown>;
  let source = "default job";
  if (jobPath && BUILTIN_JOBS[jobPath] && !existsSync(jobPath)) {
    raw = structuredClone(BUILTIN_JOBS[jobPath]) as Record<string, unknown>;
    source = `built-in job ${jobPath}`;
  } else if (jobPath) {
    const f = await loadJobFile(jobPath);
    raw = f.raw;
    absolutizePaths(raw, f.dir);
    source = jobPath;
  }
  const used: string[] = [];
  for (const [flag, key] of Object.entries(FLAG_KEYS)) {
    const v = flags[flag];
    if (v === undefined) continue;
    seedSection(raw, key);
    setPath(raw, key, flagValue(v));
    used.push(`--${flag}`);
  }
  for (const s of sets) {
    const eq = s.indexOf("=");
    if (eq <= 0) throw new UsageError(`--set ${s}: expected KEY.PATH=VALUE (e.g. --set data.limitTrain=500)`);
    const key = s.slice(0, eq);
    let v = flagValue(s.slice(eq + 1));
    if (/(^|\.)(path|testPath|dir|trainImages|trainLabels|testImages|testLabels|module|file|checkpoint)$/.test(key) && typeof v === "string") v = resolve(v);
    seedSection(raw, key);
    setPath(raw, key, v);
    used.push(`--set ${key}`);
  }
  if (used.length) source += ` (with ${used.join(", ")})`;
  inheritModel(raw);
  return { raw, source };
}

/**
 * A job without `model`: text data means a GPT, and a job that starts from a
 * checkpoint (`init`) gets the checkpoint's own model (so a fine-tuning job names
 * only what changes: data, LoRA, optimizer).
 */
function inheritModel(raw: Record<string, unknown>): void {
  if (raw.model !== undefined) return;
  const init = raw.init as { checkpoint?: unknown } | undefined;
  if (init && typeof init.checkpoint === "string") {
    const dir = resolveCheckpoint(init.checkpoint);
    let config: unknown;
    try {
      config = readCheckpoint(dir, { optimizerState: false }).state.config;
    } catch (e) {
      throw new CliError(`init.checkpoint: ${(e as Error).message}`);
    }
    const model = (config as { model?: { type?: unknown; module?: unknown } } | undefined)?.model;
    // A checkpoint never runs code: a user-code model must be named by the job itself.
    if (model?.type === "module") {
      throw new UsageError(`init.checkpoint ${dir}: its model is your own code (model.module ${String(model.module)}); name it in the job's model ({"type": "module", "module": FILE, ...}) to fine-tune it`);
    }
    if (model) {
      raw.model = structuredClone(model);
      return;
    }
  }
  const data = raw.data as { type?: unknown } | undefined;
  if (data?.type === "text") raw.model = { type: "gpt" };
}

/** Reads RUN_DIR/job.json. */
export function readRunJob(runDir: string): Record<string, unknown> {
  const p = join(runDir, JOB_FILE);
  if (!existsSync(p)) throw new CliError(`${runDir}: not a run directory (no ${JOB_FILE})`);
  try {
    return JSON.parse(readFileSync(p, "utf8"));
  } catch (e) {
    throw new CliError(`${p}: invalid JSON (${(e as Error).message})`);
  }
}

/** First key path where two resolved jobs differ, ignoring keys a resume may change. */
export function firstDifference(a: unknown, b: unknown, path = "", ignore = new Set<string>()): string | null {
  if (ignore.has(path)) return null;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) {
    return JSON.stringify(a) === JSON.stringify(b) ? null : `${path || "(job)"} (${JSON.stringify(a)} vs ${JSON.stringify(b)})`;
  }
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  for (const k of keys) {
    const d = firstDifference((a as any)[k], (b as any)[k], path ? `${path}.${k}` : k, ignore);
    if (d) return d;
  }
  return null;
}
