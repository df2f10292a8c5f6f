/**
 * The job: everything a training run needs, as a typed, validated config with a
 * comment and a default per field (nanoGPT's GPTConfig + configurator style).
 * A job comes from a JSON file, a TypeScript module (`export default {...}`),
 * or the built-in default, then command-line flags override fields; the whole
 * thing is validated by zod before any work, and errors name the key path.
 */
import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { dirname, isAbsolute, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { z } from "zod";
import { UsageError } from "./errors.js";

const posInt = z.number().int().positive();
const nonNegInt = z.number().int().nonnegative();
/** A count (integer ≥ 1) or a fraction in (0, 1). */
const countOrFraction = z.number().positive().refine((v) => v < 1 || Number.isInteger(v), { message: "expected a fraction in (0, 1) or a whole number of rows" });

export const ModelConfig = z.discriminatedUnion("type", [
  z.strictObject({ type: z.literal("linear") }),
  z.strictObject({ type: z.literal("logistic") }),
  z.strictObject({
    type: z.literal("mlp"),
    /** Hidden layer widths. */
    hidden: z.array(posInt).default([512, 256]),
    activation: z.enum(["relu", "gelu", "tanh", "sigmoid"]).default("relu"),
    /** Dropout after each hidden activation. */
    dropout: z.number().min(0).max(0.99).default(0),
  }),
  z.strictObject({
    type: z.literal("cnn"),
    channels: z.array(posInt).min(1).optional(),
    hidden: posInt.optional(),
    batchNorm: z.boolean().optional(),
    dropout: z.number().min(0).max(0.99).optional(),
  }),
  z.strictObject({
    type: z.literal("module"),
    /** Path of a .ts/.js module (relative to the job file) exporting a model factory or Module class. */
    module: z.string().min(1),
    export: z.string().min(1).default("default"),
    /** Passed to the factory (with inputShape and outputSize added). */
    options: z.record(z.string(), z.unknown()).default({}),
  }),
]);
export type ModelConfig = z.infer<typeof ModelConfig>;

export const DataConfig = z.discriminatedUnion("type", [
  z.strictObject({
    type: z.literal("mnist"),
    /** Held-out rows of the 10,000 embedded digits. */
    heldOut: countOrFraction.default(1000),
    /** Seed of the train/held-out split (fixed, independent of the training seed). */
    splitSeed: nonNegInt.default(0),
    /** Use only the first N training / held-out rows (quick runs). */
    limitTrain: posInt.optional(),
    limitHeldOut: posInt.optional(),
  }),
  z.strictObject({
    type: z.literal("idx"),
    /** A directory with {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] (MNIST / Fashion-MNIST layout)... */
    dir: z.string().optional(),
    /** ...or explicit files. */
    trainImages: z.string().optional(),
    trainLabels: z.string().optional(),
    testImages: z.string().optional(),
    testLabels: z.string().optional(),
    /** Without a test set: held-out rows split from the training set. */
    heldOut: countOrFraction.default(0.1),
    splitSeed: nonNegInt.default(0),
    limitTrain: posInt.optional(),
    limitHeldOut: posInt.optional(),
  }),
  z.strictObject({
    type: z.literal("csv"),
    path: z.string().min(1),
    /** Separate held-out CSV; without it, rows are split off `path`. */
    testPath: z.string().optional(),
    /** Label column: header name or 0-based index (negative from the end). */
    label: z.union([z.string(), z.number().int()]).default(-1),
    header: z.union([z.boolean(), z.literal("auto")]).default("auto"),
    delimiter: z.string().length(1).default(","),
    task: z.enum(["classification", "regression"]).optional(),
    heldOut: countOrFraction.default(0.2),
    splitSeed: nonNegInt.default(0),
    limitTrain: posInt.optional(),
    limitHeldOut: posInt.optional(),
  }),
]);
export type DataConfig = z.infer<typeof DataConfig>;

export const OptimizerConfig = z.discriminatedUnion("type", [
  z.strictObject({ type: z.literal("sgd"), lr: z.number().positive().default(0.01), momentum: z.number().min(0).lt(1).default(0), nesterov: z.boolean().default(false), weightDecay: z.number().min(0).default(0) }),
  z.strictObject({ type: z.literal("adam"), lr: z.number().positive().default(1e-3), betas: z.tuple([z.number().min(0).lt(1), z.number().min(0).lt(1)]).default([0.9, 0.999]), eps: z.number().positive().default(1e-8), weightDecay: z.number().min(0).default(0) }),
  z.strictObject({ type: z.literal("adamw"), lr: z.number().positive().default(1e-3), betas: z.tuple([z.number().min(0).lt(1), z.number().min(0).lt(1)]).default([0.9, 0.999]), eps: z.number().positive().default(1e-8), weightDecay: z.number().min(0).default(0.01) }),
]);
export type OptimizerConfig = z.infer<typeof OptimizerConfig>;

export const ScheduleConfig = z.discriminatedUnion("type", [
  z.strictObject({ type: z.literal("constant") }),
  /** Linear warm-up then cosine decay to minLr over the whole run. */
  z.strictObject({ type: z.literal("cosine"), warmupSteps: nonNegInt.default(0), minLr: z.number().min(0).default(0) }),
  /** lr × gamma every stepSize steps. */
  z.strictObject({ type: z.literal("step"), stepSize: posInt, gamma: z.number().positive().default(0.1) }),
]);

export const LOSSES = ["crossEntropy", "mseLoss", "l1Loss", "binaryCrossEntropyWithLogits"] as const;

export const JobSchema = z
  .strictObject({
    /** Run name: the default run directory is runs/<name> (else runs/<timestamp>). */
    name: z.string().regex(/^[\w.-]+$/, "expected letters, digits, '.', '_' or '-'").optional(),
    /** Seeds parameter init, shuffling and dropout. */
    seed: nonNegInt.default(0),
    model: ModelConfig.default({ type: "mlp", hidden: [512, 256], activation: "relu", dropout: 0 }),
    data: DataConfig.default({ type: "mnist", heldOut: 1000, splitSeed: 0 }),
    /** Default: crossEntropy for class labels, mseLoss for values. */
    loss: z.enum(LOSSES).optional(),
    optimizer: OptimizerConfig.default({ type: "adam", lr: 1e-3, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0 }),
    schedule: ScheduleConfig.default({ type: "constant" }),
    epochs: posInt.default(8),
    /** Global batch size (split across workers). */
    batchSize: posInt.default(128),
    /** Worker threads for data-parallel training ("auto": one per core, at most batchSize). 1 trains in the main thread. */
    workers: z.union([posInt, z.literal("auto")]).default("auto"),
    /** Clip the global gradient norm (off when absent). */
    clipGradNorm: z.number().positive().optional(),
    /** Kernel backend: auto picks the best available (see `chainrule info`). */
    backend: z.enum(["auto", "js", "blas"]).default("auto"),
    checkpoint: z
      .strictObject({
        /** Also checkpoint every N optimizer steps (0: only at epoch ends, interrupts and the end). */
        everySteps: nonNegInt.default(0),
        /** Checkpoint every N epochs. */
        everyEpochs: posInt.default(1),
        /** How many step checkpoints to keep (older ones are deleted). */
        keep: posInt.default(2),
      })
      .default({ everySteps: 0, everyEpochs: 1, keep: 2 }),
    log: z
      .strictObject({
        /** Write a metrics record every N steps. */
        everySteps: posInt.default(20),
      })
      .default({ everySteps: 20 }),
  })
  .superRefine((job, ctx) => {
    if (typeof job.workers === "number" && job.workers > job.batchSize) {
      ctx.addIssue({ code: "custom", path: ["workers"], message: `${job.workers} workers but batchSize is ${job.batchSize}: every worker needs at least one row of each batch` });
    }
    if (job.schedule.type === "cosine" && job.optimizer.lr < job.schedule.minLr) {
      ctx.addIssue({ code: "custom", path: ["schedule", "minLr"], message: `minLr ${job.schedule.minLr} is above optimizer.lr ${job.optimizer.lr}` });
    }
    if (job.data.type === "idx" && !job.data.dir && !(job.data.trainImages && job.data.trainLabels)) {
      ctx.addIssue({ code: "custom", path: ["data"], message: "idx data needs `dir` or both `trainImages` and `trainLabels`" });
    }
  });

export type Job = z.infer<typeof JobSchema>;

/**
 * `chainrule train` with no JOB: an MLP 784-512-256-10 on the embedded MNIST
 * digits (9,000 train / 1,000 held-out), Adam with a cosine schedule, on all
 * cores. About 96% held-out accuracy in under a minute on 2 cores.
 */
export const DEFAULT_JOB = {
  model: { type: "mlp", hidden: [512, 256] },
  data: { type: "mnist", heldOut: 1000 },
  optimizer: { type: "adam", lr: 1e-3 },
  schedule: { type: "cosine", warmupSteps: 0 },
  epochs: 15,
  batchSize: 64,
  workers: "auto",
} as const;
/** A job as written by a user (every field optional where it has a default). */
export type JobInput = z.input<typeof JobSchema>;

/** Identity, for typed `.ts` job modules: `export default defineJob({...})`. */
export function defineJob(job: JobInput): JobInput {
  return job;
}

function fmtPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const p of path) out += typeof p === "number" ? `[${p}]` : out ? `.${String(p)}` : String(p);
  return out || "(job)";
}

function describeValue(v: unknown): string {
  if (v === undefined) return "nothing";
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 40 ? `${s.slice(0, 37)}...` : s;
}

function getAt(obj: unknown, path: readonly PropertyKey[]): unknown {
  let cur: any = obj;
  for (const p of path) cur = cur == null ? undefined : cur[p as any];
  return cur;
}

/** One line per zod issue: `key.path: what was expected (got X)`. */
export function formatIssue(issue: z.core.$ZodIssue, input: unknown): string {
  const path = fmtPath(issue.path);
  const got = getAt(input, issue.path);
  switch (issue.code) {
    case "unrecognized_keys":
      return issue.keys.map((k) => `${fmtPath([...issue.path, k])}: unknown key`).join("; ");
    case "invalid_type":
      return `${path}: expected ${issue.expected === "int" ? "an integer" : issue.expected}, got ${describeValue(got)}`;
    case "invalid_union": {
      const options = (issue as any).options as unknown[] | undefined;
      if (options) return `${path}: expected one of ${options.map((o) => JSON.stringify(o)).join(", ")}, got ${describeValue(got)}`;
      return `${path}: ${issue.message} (got ${describeValue(got)})`;
    }
    case "too_small":
    case "too_big": {
      const i = issue as any;
      const op = issue.code === "too_small" ? (i.inclusive ? "≥" : ">") : i.inclusive ? "≤" : "<";
      const what = i.origin === "array" ? "a list with length" : i.origin === "string" ? "a string with length" : "a number";
      return `${path}: expected ${what} ${op} ${i.minimum ?? i.maximum}, got ${describeValue(got)}`;
    }
    case "custom":
      return `${path}: ${issue.message}`;
    case "invalid_value":
      return `${path}: expected one of ${issue.values.map((v) => JSON.stringify(v)).join(", ")}, got ${describeValue(got)}`;
    default:
      return `${path}: ${issue.message.replace(/^Too (small|big): /, "")}${got !== undefined && typeof got !== "object" ? ` (got ${describeValue(got)})` : ""}`;
  }
}

/** Validates a raw job; throws a one-line UsageError naming the first problems. */
export function parseJob(raw: unknown, source: string): Job {
  const r = JobSchema.safeParse(raw);
  if (r.success) return r.data;
  const lines = r.error.issues.map((i) => formatIssue(i, raw));
  const more = lines.length > 3 ? ` (and ${lines.length - 3} more)` : "";
  throw new UsageError(`${source}: ${lines.slice(0, 3).join("; ")}${more}`);
}

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
}

/** The number of worker threads a job asks for. */
export function resolveWorkers(job: Job): number {
  return job.workers === "auto" ? Math.max(1, Math.min(availableParallelism(), job.batchSize)) : job.workers;
}
