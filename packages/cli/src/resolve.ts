/** Shared by the commands: building the job from file + flags, the loss, the schedule, the model from a checkpoint. */
import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { type Dataset, optim, readCheckpoint, describeMismatch, type nn, CheckpointError, type CheckpointContents, useBackend } from "@chainrule/core";
import { CliError, UsageError } from "./errors.js";
import { type Job, BUILTIN_JOBS, DEFAULT_JOB, JobSchema, absolutizePaths, loadJobFile, parseJob, setPath } from "./job.js";
import { adaptationOf, buildJobModel, type ModelContext } from "./models.js";
import { JOB_FILE, resolveCheckpoint } from "./rundir.js";

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
      config = readCheckpoint(dir).state.config;
    } catch (e) {
      throw new CliError(`init.checkpoint: ${(e as Error).message}`);
    }
    const model = (config as { model?: unknown } | undefined)?.model;
    if (model) {
      raw.model = structuredClone(model);
      return;
    }
  }
  const data = raw.data as { type?: unknown } | undefined;
  if (data?.type === "text") raw.model = { type: "gpt" };
}

export function defaultLoss(job: Job, classification: boolean): string {
  return job.loss ?? (classification ? "crossEntropy" : "mseLoss");
}

/** lr at each 0-based step. */
export function makeSchedule(job: Job, totalSteps: number): (step: number) => number {
  const lr = job.optimizer.lr;
  const s = job.schedule;
  if (s.type === "constant") return () => lr;
  if (s.type === "step") {
    const sch = new optim.StepDecay(lr, s.stepSize, s.gamma);
    return (i) => sch.lrAt(i);
  }
  if (s.warmupSteps > totalSteps) throw new UsageError(`schedule.warmupSteps: ${s.warmupSteps} is more than the run's ${totalSteps} steps`);
  const sch = new optim.CosineWithWarmup(lr, s.warmupSteps, totalSteps, s.minLr);
  return (i) => sch.lrAt(i);
}

/** Applies the job's backend choice (and sets CHAINRULE_BACKEND so worker threads agree). */
export function applyBackend(job: Job): string {
  if (job.backend !== "auto") process.env.CHAINRULE_BACKEND = job.backend;
  try {
    const r = useBackend(job.backend);
    return r.reason;
  } catch (e) {
    throw new CliError(`backend: ${(e as Error).message}`);
  }
}

export function describeModel(job: Job, ctx: ModelContext, model: nn.Module): string {
  const d = ctx.inputShape.reduce((a, b) => a * b, 1);
  const n = model.numParameters().toLocaleString("en-US");
  switch (job.model.type) {
    case "mlp": return `MLP ${[d, ...job.model.hidden, ctx.outputSize].join("-")} (${n} parameters)`;
    case "linear": return `linear regression ${d}→${ctx.outputSize} (${n} parameters)`;
    case "logistic": return `logistic regression ${d}→${ctx.outputSize} (${n} parameters)`;
    case "cnn": {
      const m = job.model;
      return `CNN ${ctx.inputShape.join("×")} → conv ${(m.channels ?? [32, 64]).join(", ")}${m.batchNorm ? " (batch norm)" : ""} → ${m.hidden ?? 128} → ${ctx.outputSize} (${n} parameters)`;
    }
    case "module": return `${job.model.module}#${job.model.export} (${n} parameters)`;
    case "gpt": {
      const m = job.model;
      const trainable = model.parameters().filter((p) => p.requiresGrad).reduce((a, p) => a + p.size, 0);
      const tr = trainable < model.numParameters() ? `, ${trainable.toLocaleString("en-US")} trainable` : "";
      return `GPT ${m.nLayer} layers × ${m.nHead} heads × ${m.nEmbd} wide, context ${m.blockSize}, vocab ${ctx.outputSize} (${n} parameters${tr})`;
    }
  }
}

export interface CheckpointModel {
  job: Job;
  ctx: ModelContext;
  model: nn.Module;
  loss: string;
  classification: boolean;
  classNames?: string[];
  contents: CheckpointContents;
}

/** Rebuilds the model a checkpoint was trained with (from its stored job) and loads the weights. */
export async function modelFromCheckpoint(dir: string): Promise<CheckpointModel> {
  const contents = readCheckpoint(dir);
  const { state } = contents;
  if (!state.config) throw new CliError(`${dir}: the checkpoint has no job config (state.json "config"); was it written by chainrule train?`);
  const job = parseJob(state.config, join(dir, "state.json config"));
  const extra = (state.extra ?? {}) as { modelContext?: ModelContext; loss?: string; classification?: boolean; classNames?: string[] };
  if (!extra.modelContext) throw new CliError(`${dir}: state.json lacks extra.modelContext (input shape and outputs)`);
  const model = await buildJobModel({ model: job.model, ctx: extra.modelContext, adapt: adaptationOf(job) });
  const mismatch = describeMismatch(contents.tensors, model);
  if (mismatch) throw new CheckpointError(`checkpoint ${dir} does not match its model: ${mismatch}`);
  model.loadStateDict(contents.tensors);
  model.eval();
  return {
    job, ctx: extra.modelContext, model, loss: extra.loss ?? defaultLoss(job, extra.classification ?? true),
    classification: extra.classification ?? true, classNames: extra.classNames, contents,
  };
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

export function isClassification(ds: Dataset): boolean {
  return ds.targets instanceof Int32Array && ds.numClasses !== undefined;
}
