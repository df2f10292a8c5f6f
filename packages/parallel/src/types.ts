/** Configuration types and the typed task protocol between the main thread and pool workers. */
import type { nn } from "@chainrule/core";
import type { Communicator } from "./mpi.js";
import type { GradientBucket, HostCombineRegion } from "./layout.js";
import type { SharedMemory } from "@chainrule/core/internal";

/** A model described by where to build it, so every worker builds the identical one. */
export interface ModelSpec {
  /** Module path (absolute, relative to cwd, or a file: URL) — `.ts` works in workers. */
  module: string | URL;
  /** Export to call: a factory `(options) => Module` (may be async) or a Module subclass (`new C(options)`). Default "default". */
  export?: string;
  /** Passed to the factory; must be structured-cloneable. */
  options?: unknown;
}

/** Built-in loss names (core's `F.*`, mean reduction), or a loss function exported by a module: `(output, target) => Tensor`. */
export type LossSpec =
  | "crossEntropy"
  | "nllLoss"
  | "mseLoss"
  | "l1Loss"
  | "binaryCrossEntropyWithLogits"
  | "binaryCrossEntropy"
  /** Cross-entropy over the targets that are not `ignoreIndex` (core's default -100 also applies to the plain name). */
  | { name: "crossEntropy"; ignoreIndex: number }
  | { module: string | URL; export: string };

/** A loss as sent to workers. */
export type LossRef = string | { name: "crossEntropy"; ignoreIndex: number } | { module: string; export: string };

export type OptimizerSpec =
  | { type: "sgd"; lr: number; momentum?: number; dampening?: number; nesterov?: boolean; weightDecay?: number }
  | { type: "adam" | "adamw"; lr?: number; betas?: [number, number]; eps?: number; weightDecay?: number }
  /** PyTorch's RMSprop; its defaults: lr 1e-2, alpha 0.99, eps 1e-8, weightDecay 0, momentum 0, centered false. */
  | { type: "rmsprop"; lr?: number; alpha?: number; eps?: number; weightDecay?: number; momentum?: number; centered?: boolean }
  /** PyTorch's Adagrad; its defaults: lr 1e-2, lrDecay 0, weightDecay 0, initialAccumulatorValue 0, eps 1e-10. */
  | { type: "adagrad"; lr?: number; lrDecay?: number; weightDecay?: number; initialAccumulatorValue?: number; eps?: number };

export interface DataParallelOptions {
  model: ModelSpec;
  /** The loss; it must reduce by mean over rows (gradients are averaged with shard-size weights). */
  loss: LossSpec;
  optimizer: OptimizerSpec;
  /** Number of worker threads (ranks), ≥ 1; more than the cores is slower but correct. Default 1. */
  workers?: number;
  /** Seeds parameter init (the same in every worker) and dropout masks (per step and row offset). Default 0. */
  seed?: number;
  /** Clip the mean gradient to this global L2 norm (one extra exchange per step). */
  clipGradNorm?: number;
  /** Max rows per forward/backward in a worker; a shard is processed in micro-batches and gradients accumulate. Default: whole shard. */
  microBatchSize?: number;
  /**
   * Upper bound on each phase of a step or evaluate (ms); past it the call rejects naming the
   * worker, step and phase, and threads are terminated. Default "auto": 600000 for the first 10
   * steps, then max(60000, 20 × the median of the last 50 steps' wall times), so a hung worker is
   * reported in about a minute once the step time is known.
   */
  timeoutMs?: number | "auto";
  /** Upper bound on starting the threads and building the replicas (ms). Default 120000. */
  initTimeoutMs?: number;
  /**
   * Synchronised batch norm: every BatchNorm2d of the model normalises (in training) with the
   * statistics of the whole global batch, exchanged between the workers through shared memory
   * (one barrier per batch-norm layer in the forward and one in the backward). Default false:
   * each worker normalises with its own shard's statistics. Not with microBatchSize.
   */
  syncBatchNorm?: boolean;
  /**
   * Reuse each micro-batch's activation arrays in the next one (core's BufferArena): no per-step
   * garbage. Default true. Set false for a model whose forward keeps an op's output beyond the
   * step (a cache it builds lazily from ops inside forward), which the next step would overwrite.
   */
  reuseActivations?: boolean;
  /** Image augmentation of the training rows, done by each worker on its own shard (seeded per row). */
  augment?: AugmentSpec;
  /**
   * Train together with other processes (hosts), each with its own `workers`: "mpi" takes
   * MPI_COMM_WORLD (the program runs under mpirun: one process per host); the global batch is split
   * over hosts × workers ranks, and each host's reduced gradient is combined with the others' in
   * buckets, while backward goes on, summed in host order (host-exchange.ts). A Communicator
   * object (workers: 1 only) is another transport; its exchange runs after backward. Default:
   * this process alone.
   */
  hosts?: "mpi" | Communicator;
  /**
   * With hosts: the gradient crosses the network in buckets of about this many MiB (the last
   * parameters first), each sent as soon as every worker of the host has finished its gradient.
   * Smaller buckets start sooner and cost a network round trip each. Default 1.
   */
  bucketMiB?: number;
  /**
   * With hosts: what the gradient crosses the network as. "bf16" or "fp16" round each host's
   * gradient to 16-bit floats before sending (half the bytes; core's encodeHalf, round to nearest
   * even, as PyTorch DDP's bf16_compress_hook / fp16_compress_hook), and every host sums the same
   * decoded values in host order, its own included, so all still end each step with the same bits.
   * bfloat16 keeps float32's range with 8 significant bits; float16 keeps 11 but overflows beyond
   * ±65504 (that gradient becomes non-finite, as a float32 overflow would). Within a host the
   * reduce stays float32. Default "none": float32.
   */
  gradientCompression?: GradientCompression;
  /**
   * Per-group learning rates (fine-tuning): a parameter takes the lr of the first group whose
   * `match` its name matches (`namedParameters()` names, e.g. "lm_head.weight"); the others take
   * optimizer.lr. A group's lr follows a schedule as PyTorch's groups do: each step it is
   * scheduled lr × (group lr / optimizer.lr). Applied by each worker to its chunk (ZeRO-1).
   */
  paramGroups?: ParamGroupSpec[];
}

/** DataParallelOptions.gradientCompression: float32, or a 16-bit float format. */
export type GradientCompression = "none" | "bf16" | "fp16";

/** One group of DataParallelOptions.paramGroups. */
export interface ParamGroupSpec {
  /** A regular expression (or its source) tested against each parameter's name. */
  match: string | RegExp;
  /** The group's learning rate (> 0). */
  lr: number;
}

/** Seeded augmentation in the workers: row i of step s's global batch uses core's augmentSeed(seed, s, i). */
export interface AugmentSpec {
  /** Random-crop padding in pixels (0: none). */
  crop?: number;
  /** Horizontal flip: true (p = 0.5) or a probability. Leave off for digits and text. */
  flip?: boolean | number;
  /** (C, H, W) of a row; default the dataset's xShape when it has 3 dims ([H, W] → [1, H, W]). */
  imageShape?: [number, number, number];
}

/** Resolved optimizer hyper-parameters (what rules.ts takes). */
export type OptimizerHyper =
  | { type: "sgd"; lr: number; momentum: number; dampening: number; nesterov: boolean; weightDecay: number }
  | { type: "adam" | "adamw"; lr: number; beta1: number; beta2: number; eps: number; weightDecay: number; decoupled: boolean }
  | { type: "rmsprop"; lr: number; alpha: number; eps: number; weightDecay: number; momentum: number; centered: boolean }
  | { type: "adagrad"; lr: number; lrDecay: number; weightDecay: number; initialAccumulatorValue: number; eps: number };

// ---- protocol (main → worker tasks, worker → main results) ----

/** Serialisable view of a SharedDataset. */
export interface DatasetRef {
  x: SharedArrayBuffer; xOffset: number; xShape: number[];
  y: SharedArrayBuffer; yOffset: number; yShape: number[]; yInt: boolean;
  length: number;
}

/** Everything a worker needs to (re)build its state; sent with every task (SharedArrayBuffers are shared, not copied). */
export interface WorkerContext {
  /** Which pool this context belongs to (a new one after a failure); a worker rebuilds its replica when it changes. */
  poolId: string;
  world: number;
  seed: number;
  model: { module: string; export: string; options: unknown };
  loss: LossRef;
  numParams: number;
  /** The main thread's parameter layout; every worker's must match. */
  layout: nn.ParamLayoutEntry[];
  /** Chunk r of the flat range is [chunks[r], chunks[r+1]) (balanced over trainable floats, 16-float aligned). */
  chunks: number[];
  /** Per layout entry: requiresGrad in the main thread's model (frozen ones are never reduced or updated). */
  trainable: boolean[];
  /** Per rank: the trainable flat ranges inside its chunk, as [from, to, from, to, ...]. */
  segments: number[][];
  /** Flat ranges whose lr is scaled (paramGroups), as [from, to, scale, ...], ascending; empty: one lr. */
  lrRanges: number[];
  /**
   * One shared WebAssembly.Memory holds parameters, mean gradient, slots and optimizer
   * state (so the SIMD kernels can run over them); the regions below are byte offsets into it.
   */
  memory: SharedMemory;
  /** numParams floats: the parameters. */
  paramsAt: number;
  /** numParams floats: the mean gradient (reduce output). */
  gradAt: number;
  /** world × numParams floats: slot r is rank r's shard gradient (with one worker: gradAt, the slot is the mean). */
  slotsAt: number;
  /** Set when the slots (slotsAt is then an offset into it) or the optimizer state (optAt) did not fit the WebAssembly memory. */
  slotMemory: SharedArrayBuffer | null;
  optMemory: SharedArrayBuffer | null;
  /** Optimizer state, k × numParams floats (optimizerStateBuffers: sgd momentum 1; adam 2; rmsprop 1 to 3; adagrad 1). */
  optAt: number;
  /** (world + 1) × world float64: rank r's reduce weights at row r, the exchange thread's at row world (read by the SIMD reduce). */
  weightsAt: number;
  optBuffers: string[];
  /** Int32 control words (see CONTROL in layout.ts): init barrier, step barrier, per-rank arrival and stage. */
  control: SharedArrayBuffer;
  /** Float64 exchange: per rank [weight count, loss sum, Σg² of its chunk]. */
  exchange: SharedArrayBuffer;
  /** Step doorbell (Int32, see BELL in layout.ts): per-rank command words and the done count. */
  bell: SharedArrayBuffer;
  /** Float64 step description written by the main thread before ringing (see STEP_DESC in layout.ts). */
  stepDesc: SharedArrayBuffer;
  /** Float64 per-rank step results (STEP_RESULT.size values per rank). */
  stepResults: SharedArrayBuffer;
  /** Model buffers (batch-norm running statistics): names and sizes in namedBuffers() order, B floats in all. */
  buffers: { name: string; size: number }[];
  /** B floats: the buffers every replica evaluates with (and the main thread's model views). */
  buffersAt: number;
  /** (world + 1) × B floats: rank r's working copy during a step (averaged into `buffersAt` by rank 0 after the barrier); then the canonical copy as the step found it. */
  bufSlotsAt: number;
  /** Synchronised batch norm: float64 exchange rows (2 parities × world × bnRow) at bnAt. */
  syncBatchNorm: boolean;
  bnAt: number;
  bnRow: number;
  /** Hosts (processes under mpirun) training together, this one's index among them; 1 and 0 without. */
  hosts: number;
  hostRank: number;
  /** With hosts: the buckets the gradient crosses the network in, and the exchange's shared words (HOSTX, HOST_TOTALS in layout.ts) and failure message. */
  buckets: GradientBucket[];
  /** With hosts: the format the gradient crosses the network in (DataParallelOptions.gradientCompression). */
  gradientCompression: GradientCompression;
  /** With hosts: the combine's operands in the WebAssembly memory (layout.ts hostCombineRegion); null where they did not fit. */
  hostCombine: HostCombineRegion | null;
  hostSync: SharedArrayBuffer;
  hostTotals: SharedArrayBuffer;
  hostError: SharedArrayBuffer;
  /** Run forward/backward inside a BufferArena (DataParallelOptions.reuseActivations). */
  reuseActivations: boolean;
}

export interface InitTask { kind: "init"; ctx: WorkerContext; rank: number; timeoutMs: number }
export interface InitResult { rank: number; threadId: number; mismatch: string | null }

/**
 * One rank's share of a step (replica.ts): forward/backward on its shard into its slot, the
 * gradient barrier, reduce-scatter of its chunk, (with clipping, a second barrier for the global
 * norm), optimizer on its chunk. A worker's step loop reads it from the step description; the
 * inline replica gets it directly.
 */
export interface StepTask {
  rank: number; step: number;
  /** The doorbell command this step came with (its parity picks the scratch rows, description and result row). */
  seq: number;
  /** Row indices of the global batch, or null for contiguous rows starting at rowStart. */
  idx: Int32Array | null;
  /** The barrier count this step's barriers start from, and whether it starts with one (rung while the step before ran). */
  barrierBase: number;
  startBarrier: boolean;
  /** This shard is positions [start, end) of the global batch. */
  start: number; end: number; rowStart: number;
  microBatchSize: number;
  hyper: OptimizerHyper;
  /** Global-norm clipping bound, or 0 for none. */
  clip: number;
  /** Ranks whose shard has rows this step (0 .. active-1): they meet at the batch-norm syncs and their buffers are averaged. */
  active: number;
  /** Augmentation of this shard's rows, or null. */
  augment: { crop: number; flip: number; shape: [number, number, number] } | null;
}
export interface StepResult {
  rank: number; rows: number;
  /** Targets the loss averaged over (rows, or for cross-entropy the targets ≠ ignoreIndex), and Σ loss·counted. */
  counted: number; lossSum: number;
  gatherMs: number; computeMs: number;
  /** Waiting at the barrier(s) for the other ranks. */
  waitMs: number;
  reduceMs: number; optMs: number;
  /** Rank 0 only: global gradient norm (with clipping). */
  gradNorm: number;
  /** The rank's whole step as its step loop timed it. */
  stepMs?: number;
  /** Rank 0 with several hosts: counted targets and loss sum over all hosts. */
  hostsCounted?: number;
  /** Rank 0 with several hosts: ms of the exchange's work (reduce, MPI calls, host-order sums), and of it the ms rank 0 waited for after its backward. */
  hostsMs?: number;
  hostsExposedMs?: number;
  hostsStop?: boolean;
  hostsLossSum?: number;
}

/**
 * A loop that runs this rank's steps as the main thread rings the doorbell (no message per
 * step): everything constant across steps comes here; per-step values come through the
 * shared step description. The loop returns after `idleMs` without a step (or on STOP).
 */
export interface ServeTask {
  kind: "serve";
  poolId: string;
  rank: number;
  /** The last command this rank has handled; the loop runs commands after it. */
  seen: number;
  data: DatasetRef;
  /** The shared index buffer that steps with indices use. */
  idx: SharedArrayBuffer;
  microBatchSize: number;
  /** The optimizer (its lr is replaced per step). */
  hyper: OptimizerHyper;
  clip: number;
  augment: StepTask["augment"];
  idleMs: number;
}

export interface EvalTask {
  kind: "eval"; ctx: WorkerContext; rank: number;
  data: DatasetRef; idx: SharedArrayBuffer | null; start: number; end: number; rowStart: number; batchSize: number;
}
export interface EvalResult { rank: number; rows: number; lossSum: number; correct: number; hasAccuracy: boolean; /** Rows (targets) the loss counts: not ignoreIndex. */ counted: number }

export type Task = InitTask | ServeTask | EvalTask;
