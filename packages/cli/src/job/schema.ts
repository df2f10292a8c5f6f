/**
 * The job: everything a training run needs, as a typed, validated config with a
 * comment and a default per field (nanoGPT's GPTConfig + configurator style).
 * A job comes from a JSON file, a TypeScript module (`export default {...}`),
 * or a built-in job (builtin.ts), then command-line flags override fields
 * (load.ts); parse.ts validates it before any work, with errors naming the key path.
 */
import { z } from "zod";

const posInt = z.number().int().positive();
const nonNegInt = z.number().int().nonnegative();
/** A count (integer ≥ 1) or a fraction in (0, 1). */
const countOrFraction = z.number().positive().refine((v) => v < 1 || Number.isInteger(v), { message: "expected a fraction in (0, 1) or a whole number of rows" });

const ModelBranches = z.discriminatedUnion("type", [
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
    /** A GPT (core's GPT, nanoGPT layout; arch "llama": Llama's blocks); vocabSize comes from the tokenizer. */
    type: z.literal("gpt"),
    /** "gpt2": LayerNorm, learned positions, GELU MLP; "llama": RMSNorm, rotary positions, grouped-query attention, SwiGLU. */
    arch: z.enum(["gpt2", "llama"]).default("gpt2"),
    /** Longest context (position-embedding rows; the key/value cache's length). */
    blockSize: posInt.default(64),
    nLayer: posInt.default(4),
    /** Attention heads; must divide nEmbd. */
    nHead: posInt.default(4),
    /** Key/value heads (llama; divides nHead). Default nHead. */
    nKvHead: posInt.optional(),
    nEmbd: posInt.default(128),
    /** Feed-forward width. Default 4·nEmbd (gpt2), 8·nEmbd/3 rounded up to a multiple of 8 (llama). */
    ffnHidden: posInt.optional(),
    dropout: z.number().min(0).lt(1).default(0),
    /** Biases in Linear layers and LayerNorms. Default true for gpt2, false for llama. */
    bias: z.boolean().optional(),
    /** Share the token embedding with the LM head. */
    tieWeights: z.boolean().default(false),
    /** gpt2's GELU: "none" (exact) or "tanh" (GPT-2's own approximation). */
    geluApproximate: z.enum(["none", "tanh"]).default("none"),
    /** Epsilon of the LayerNorms (gpt2) or RMSNorms (llama). */
    normEps: z.number().positive().default(1e-5),
    /** Base of the rotary embedding's frequencies (llama). */
    ropeTheta: z.number().positive().default(10000),
  }),
  z.strictObject({
    type: z.literal("module"),
    /** Path of a .ts/.js module (relative to the job file) exporting a model factory or Module class: a file, never a data:, http: or other URL. */
    module: z.string().min(1).refine((m) => !/^[a-z][a-z0-9+.-]*:/i.test(m) || /^file:/i.test(m) || /^[a-z]:[\\/]/i.test(m), { message: "expected a file path (a module is imported from a file, never from a data:, http: or other URL)" }),
    export: z.string().min(1).default("default"),
    /** Passed to the factory (with inputShape and outputSize added). */
    options: z.record(z.string(), z.unknown()).default({}),
  }),
]);
/** The branches, with the defaults that depend on another field filled in (a llama has no biases unless asked). */
export const ModelConfig = ModelBranches.transform((m) => (m.type === "gpt" && m.bias === undefined ? { ...m, bias: m.arch !== "llama" } : m));
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
  z.strictObject({
    /** Character-level text for a GPT: windows of blockSize characters, next-character targets. */
    type: z.literal("text"),
    /** A corpus that installs with chainrule (default: female-names)... */
    corpus: z.enum(["female-names", "male-names"]).optional(),
    /** ...or any UTF-8 text file. */
    file: z.string().min(1).optional(),
    /** Window length (default: model.blockSize; at most model.blockSize). */
    blockSize: posInt.optional(),
    /** Distance between the starts of consecutive training windows (default: blockSize / 2). */
    stride: posInt.optional(),
    /** Trailing fraction of the text held out for validation. */
    valFraction: z.number().gt(0).lt(1).default(0.1),
    /** Shuffle the lines before splitting (default: true for the bundled name lists, which are alphabetical). */
    shuffleLines: z.boolean().optional(),
    splitSeed: nonNegInt.default(0),
  }),
]);
export type DataConfig = z.infer<typeof DataConfig>;

export const OptimizerConfig = z.discriminatedUnion("type", [
  z.strictObject({ type: z.literal("sgd"), lr: z.number().positive().default(0.01), momentum: z.number().min(0).lt(1).default(0), nesterov: z.boolean().default(false), weightDecay: z.number().min(0).default(0) }),
  z.strictObject({ type: z.literal("adam"), lr: z.number().positive().default(1e-3), betas: z.tuple([z.number().min(0).lt(1), z.number().min(0).lt(1)]).default([0.9, 0.999]), eps: z.number().positive().default(1e-8), weightDecay: z.number().min(0).default(0) }),
  z.strictObject({ type: z.literal("adamw"), lr: z.number().positive().default(1e-3), betas: z.tuple([z.number().min(0).lt(1), z.number().min(0).lt(1)]).default([0.9, 0.999]), eps: z.number().positive().default(1e-8), weightDecay: z.number().min(0).default(0.01) }),
  /** PyTorch's RMSprop, its option names and defaults. */
  z.strictObject({ type: z.literal("rmsprop"), lr: z.number().positive().default(1e-2), alpha: z.number().min(0).max(1).default(0.99), eps: z.number().positive().default(1e-8), weightDecay: z.number().min(0).default(0), momentum: z.number().min(0).default(0), centered: z.boolean().default(false) }),
  /** PyTorch's Adagrad, its option names and defaults. */
  z.strictObject({ type: z.literal("adagrad"), lr: z.number().positive().default(1e-2), lrDecay: z.number().min(0).default(0), weightDecay: z.number().min(0).default(0), initialAccumulatorValue: z.number().min(0).default(0), eps: z.number().positive().default(1e-10) }),
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

/**
 * Held-out figures measured after each epoch that a best checkpoint or early stopping can watch,
 * named as in metrics.jsonl: the loss, a classifier's accuracy, a regression's MSE, MAE and R².
 */
export const MONITORED_METRICS = ["heldOutLoss", "heldOutAccuracy", "heldOutMse", "heldOutMae", "heldOutR2"] as const;
export type MonitoredMetric = (typeof MONITORED_METRICS)[number];
/** The figures where higher is better; lower is, for the others. */
export const HIGHER_IS_BETTER: readonly MonitoredMetric[] = ["heldOutAccuracy", "heldOutR2"];

/** A watched held-out figure, and which way is better: "max" or "min" (default: higher accuracy and R², lower loss and errors). */
const watched = { metric: z.enum(MONITORED_METRICS).default("heldOutLoss"), mode: z.enum(["min", "max"]).optional() };
const withMode = <M extends { metric: MonitoredMetric; mode?: "min" | "max" }>(m: M): M & { mode: "min" | "max" } =>
  ({ ...m, mode: m.mode ?? (HIGHER_IS_BETTER.includes(m.metric) ? "max" : "min") });

/** Keep the checkpoint with the best held-out figure beside the last `keep` (Lightning's ModelCheckpoint). */
const KeepBestConfig = z.strictObject(watched).transform(withMode);

/**
 * End the run when the held-out figure has not improved by more than minDelta for `patience`
 * epochs in a row (Lightning's EarlyStopping).
 */
const EarlyStoppingConfig = z
  .strictObject({ ...watched, patience: posInt.default(3), minDelta: z.number().min(0).default(0) })
  .transform(withMode);

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
    /** Worker threads for data-parallel training ("auto": one per core, at most batchSize, each shard ≥ 4M forward multiply-adds). 1 trains in the main thread. */
    workers: z.union([posInt, z.literal("auto")], { error: 'expected a whole number ≥ 1 or "auto"' }).default("auto"),
    /** Clip the global gradient norm (off when absent). */
    clipGradNorm: z.number().positive().optional(),
    /**
     * Restarts after a worker fails (throws, dies, runs out of memory, times out) before the run
     * gives up, as torchrun's --max-restarts: a fresh pool continues from the failed step (the
     * parameters were not touched) or from the last checkpoint.
     */
    maxRestarts: nonNegInt.default(0),
    /**
     * Seconds a step may take before the run stops naming the worker that holds it up; "auto":
     * 600 s for the first 10 steps, then max(60 s, 20 × the median step).
     */
    stepTimeout: z.union([z.literal("auto"), z.number().positive()]).default("auto"),
    /** Under mpirun: the gradient crosses the network between hosts in buckets of this many MiB, each sent while backward goes on. */
    bucketMiB: z.number().positive().default(1),
    /**
     * Under mpirun: what the gradient crosses the network between hosts as: float32 ("none"), or
     * rounded to bfloat16 / float16 (half the bytes; every host still ends each step with the same bits).
     */
    gradientCompression: z.enum(["none", "bf16", "fp16"]).default("none"),
    /** Image augmentation of the training rows (each worker augments its own shard, seeded by (seed, step, row position)). */
    augment: z
      .strictObject({
        /** Random crop after zero padding by this many pixels (0: none). */
        crop: nonNegInt.default(0),
        /** Random horizontal flip (p = 0.5); off for digits and text. */
        flip: z.boolean().default(false),
      })
      .optional(),
    /** Batch norm over the whole global batch (statistics exchanged between workers); default: per-worker statistics. */
    syncBatchNorm: z.boolean().default(false),
    /**
     * Reuse a step's activation arrays in the next step (core's BufferArena): no per-step garbage.
     * Turn off for a custom model whose forward keeps an op's output across steps.
     */
    reuseActivations: z.boolean().default(true),
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
        /** Also keep the checkpoint with the best held-out figure, as checkpoints/best-step-N. */
        keepBest: KeepBestConfig.optional(),
      })
      .default({ everySteps: 0, everyEpochs: 1, keep: 2 }),
    /** Fine-tuning: start from a checkpoint's weights (by name; strict: false reports and allows missing/unexpected keys). */
    init: z.strictObject({ checkpoint: z.string().min(1), strict: z.boolean().default(false) }).optional(),
    /** LoRA adapters on the Linear layers whose names match `targets` (a regular expression); everything else is frozen. */
    lora: z
      .strictObject({
        rank: posInt.default(8),
        /** The update is scaled by alpha / rank (default: rank). */
        alpha: z.number().positive().optional(),
        dropout: z.number().min(0).lt(1).default(0),
        targets: z.string().min(1).default("attn\\.(c_attn|c_proj|q_proj|k_proj|v_proj|o_proj)|mlp\\.(c_fc|c_proj|gate_proj|up_proj|down_proj)"),
      })
      .optional(),
    /** Freeze parameters whose names match any of these regular expressions. */
    freeze: z.array(z.string().min(1)).default([]),
    /** Learning rates per parameter group: the first `match` (regular expression) a name matches sets its lr; others use optimizer.lr. Schedules scale every group alike. */
    paramGroups: z.array(z.strictObject({ match: z.string().min(1), lr: z.number().positive() })).optional(),
    /** Text generated at the end of a GPT run (and `chainrule generate` defaults). */
    sample: z
      .strictObject({
        tokens: nonNegInt.default(200),
        prompt: z.string().default(""),
        temperature: z.number().min(0).default(0.8),
        topK: posInt.optional(),
        seed: nonNegInt.default(0),
      })
      .default({ tokens: 200, prompt: "", temperature: 0.8, seed: 0 }),
    /**
     * Stop the run (exit 1, keeping the last checkpoint) when the loss stays above `factor` × the
     * lowest running median it reached for `steps` steps in a row; false trains on. A non-finite
     * loss, gradient or parameter stops the run either way.
     */
    divergence: z
      .union([z.literal(false), z.strictObject({ factor: z.number().gt(1).default(10), steps: posInt.default(10) })])
      .default({ factor: 10, steps: 10 }),
    /** Stop when the held-out figure stops improving (off when absent). */
    earlyStopping: EarlyStoppingConfig.optional(),
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
    const isText = job.data.type === "text", isGpt = job.model.type === "gpt";
    if (job.model.type === "gpt" && job.model.nEmbd % job.model.nHead !== 0) {
      ctx.addIssue({ code: "custom", path: ["model", "nHead"], message: `nHead ${job.model.nHead} does not divide nEmbd ${job.model.nEmbd} (each head gets nEmbd / nHead channels)` });
    }
    if (job.model.type === "gpt" && job.model.nKvHead !== undefined) {
      const { arch, nHead, nKvHead } = job.model;
      if (nHead % nKvHead !== 0) ctx.addIssue({ code: "custom", path: ["model", "nKvHead"], message: `nKvHead ${nKvHead} does not divide nHead ${nHead} (each key/value head serves nHead / nKvHead query heads)` });
      else if (arch !== "llama" && nKvHead !== nHead) ctx.addIssue({ code: "custom", path: ["model", "nKvHead"], message: `grouped-query attention (nKvHead ${nKvHead} < nHead ${nHead}) needs arch "llama"` });
    }
    if (job.model.type === "gpt" && job.model.arch === "llama" && (job.model.nEmbd / job.model.nHead) % 2 !== 0) {
      ctx.addIssue({ code: "custom", path: ["model", "nHead"], message: `the head size nEmbd / nHead = ${job.model.nEmbd / job.model.nHead} must be even for the rotary embedding` });
    }
    if (isText !== isGpt) {
      ctx.addIssue({ code: "custom", path: isText ? ["model", "type"] : ["data", "type"], message: isText ? `text data needs model.type "gpt", got "${job.model.type}"` : `a gpt model needs data.type "text", got "${job.data.type}"` });
    }
    if (job.data.type === "text" && isGpt) {
      if (job.data.corpus && job.data.file) ctx.addIssue({ code: "custom", path: ["data"], message: "give either `corpus` or `file`, not both" });
      const bs = job.data.blockSize ?? (job.model as { blockSize: number }).blockSize;
      if (bs > (job.model as { blockSize: number }).blockSize) ctx.addIssue({ code: "custom", path: ["data", "blockSize"], message: `${bs} is more than model.blockSize ${(job.model as { blockSize: number }).blockSize}` });
    }
    const regexes: [PropertyKey[], string][] = [
      ...job.freeze.map((p, i): [PropertyKey[], string] => [["freeze", i], p]),
      ...(job.paramGroups ?? []).map((g, i): [PropertyKey[], string] => [["paramGroups", i, "match"], g.match]),
      ...(job.lora ? [[["lora", "targets"], job.lora.targets] as [PropertyKey[], string]] : []),
    ];
    for (const [path, re] of regexes) {
      try {
        new RegExp(re);
      } catch (e) {
        ctx.addIssue({ code: "custom", path, message: `not a regular expression: ${(e as Error).message}` });
      }
    }
    if (job.augment && (job.augment.crop > 0 || job.augment.flip) && job.model.type === "gpt") {
      ctx.addIssue({ code: "custom", path: ["augment"], message: "image augmentation needs image data (not text)" });
    }
    for (const [path, m] of [[["checkpoint", "keepBest", "metric"], job.checkpoint.keepBest], [["earlyStopping", "metric"], job.earlyStopping]] as const) {
      if (!m || m.metric === "heldOutLoss" || !isGpt) continue;
      const figure = m.metric === "heldOutAccuracy" ? "held-out accuracy" : `${m.metric}, a regression's figure`;
      ctx.addIssue({ code: "custom", path: [...path], message: `a GPT has no ${figure} (watch heldOutLoss, the validation loss)` });
    }
    if (job.data.type === "idx" && !job.data.dir && !(job.data.trainImages && job.data.trainLabels)) {
      ctx.addIssue({ code: "custom", path: ["data"], message: "idx data needs `dir` or both `trainImages` and `trainLabels`" });
    }
  });

export type Job = z.infer<typeof JobSchema>;

/** A job as written by a user (every field optional where it has a default). */
export type JobInput = z.input<typeof JobSchema>;

/** Identity, for typed `.ts` job modules: `export default defineJob({...})`. */
export function defineJob(job: JobInput): JobInput {
  return job;
}

/** The loss a job trains with: its own, or cross-entropy for class labels and MSE for values. */
export function defaultLoss(job: Job, classification: boolean): string {
  return job.loss ?? (classification ? "crossEntropy" : "mseLoss");
}
