/**
 * DataParallel: one model trained by `workers` ranks over shared memory — worker threads, or with
 * one worker the same replica code (replica.ts) inline in the calling thread: no pool, no threads,
 * the same memory layout, optimizer state and checkpoints, so a state resumes on any worker count.
 *
 * Memory (one shared WebAssembly.Memory, allocated once in init; regions 64-byte aligned):
 *   params  P floats        — the only copy of the parameters; every replica's Parameter.data is a view
 *   grad    P floats        — the mean gradient (reduce output); the main replica's .grad views it
 *   slots   world × P       — slot r: rank r's shard gradient (mean over its counted targets)
 *   opt     k × P           — optimizer state (optimizerStateBuffers: Adam expAvg, expAvgSq; SGD+momentum one buffer; ...),
 *                             chunk r touched only by rank r (ZeRO-1)
 *   weights world × world   — float64 reduce weights, row r written by rank r (SIMD reduce input)
 *
 * A step runs in each rank's step loop (one long piscina task per rank, rung through a shared
 * doorbell: no message per step; see post); the ranks meet at an in-worker barrier
 * (Atomics.wait with a timeout) between their forward/backward and the update:
 *   rank r: forward + backward on its shard into slot r (each parameter's first gradient
 *           overwrites the last step's: no zeroing pass) → barrier → reduce chunk r (trainable
 *           ranges only) over all slots in rank order with weights counted_k / Σ counted →
 *           [clipping: Σg², second barrier, norm] → optimizer on chunk r.
 * The main thread's await ends the step, bounded by `timeoutMs`; per-rank stage and step words in
 * shared memory tell, after a failure, the phase and whether parameters may have changed. The
 * next step may be rung while one runs (trainStep): it then starts with a barrier of its own.
 */
import { setMaxListeners } from "node:events";
import { Worker } from "node:worker_threads";
import { type Dataset, Generator, isShared, nn, toShared } from "@chainrule/core";
import { MAX_SHARED_MEMORY_BYTES, sharedMemory } from "@chainrule/core/internal";
import { Piscina } from "piscina";
import { type Phase, LayoutMismatchError, ParallelError, ParallelStepError, phaseTimedOut, stepAborted, workerFailed } from "./errors.js";
import {
  BELL, CONTROL, type DatasetViews, HOSTX, HOST_TOTALS, STAGE_GRAD, planMemory, STAGE_UPDATE, STEP_DESC, STEP_RESULT, datasetRef, gradientBuckets, hostCombineRegion, localViews, mixSeed,
  shardOffsets, trainableChunks, trainableRanges,
} from "./layout.js";
import { type Communicator, mpiWorld } from "./mpi.js";
import { Replica } from "./replica.js";
import { recordExchangeFailure } from "./host-exchange.js";
import { buildModel, layoutDiff, normalizeLoss, normalizeModel } from "./spec.js";
import type {
  AugmentSpec, DataParallelOptions, EvalResult, InitResult, OptimizerHyper, OptimizerSpec, ParamGroupSpec, StepResult, StepTask, Task, WorkerContext,
} from "./types.js";

/** Node's Atomics.waitAsync (ES2024; the project's lib is ES2022). */
const waitAsync = (Atomics as unknown as {
  waitAsync(a: Int32Array, i: number, v: number, ms: number): { async: false; value: string } | { async: true; value: Promise<string> };
}).waitAsync;

/**
 * The ranks' step loops and what they were started with. `fail` records the first loop's
 * `{ rank, cause }` and wakes the steps waiting (each checks `failure` when woken: no promise
 * raced per step, which would leave a reaction on a long-lived one per step, ~0.4 KB each).
 * `error` is the one error every step in flight when it failed rejects with.
 */
interface Serving {
  ds: Dataset;
  idx: SharedArrayBuffer;
  fixed: string;
  runs: (Promise<void> | null)[];
  failure: { error: unknown } | null;
  error: Promise<ParallelStepError> | null;
  fail: (e: unknown) => void;
}

function newServing(ds: Dataset, idx: SharedArrayBuffer, fixed: string, world: number, bell: Int32Array): Serving {
  const sv: Serving = {
    ds, idx, fixed, runs: new Array(world).fill(null), failure: null, error: null,
    fail: (e) => {
      sv.failure ??= { error: e };
      Atomics.notify(bell, BELL.DONE);
      Atomics.notify(bell, BELL.DONE + 1);
    },
  };
  return sv;
}

/** A step posted to the ranks and not yet completed (at most two: the next is rung while the last runs). */
interface InFlight {
  step: number;
  seq: number;
  /** When it was rung (performance.now()); it starts when the step before completes, if later. */
  postedAt: number;
  done: Promise<StepOutcome>;
}

/** How long a rank's step loop waits for the next step before it returns (and is started anew when one comes). */
const SERVE_IDLE_MS = 1000;

/** A batch: a whole dataset (core's `Dataset`), rows [start, end) of it, or the rows at `indices`. */
export type Batch = Dataset | { dataset: Dataset; indices: ArrayLike<number> } | { dataset: Dataset; start: number; end: number };

/** A learning rate per step: a number, a function of the 0-based step, or a core schedule (`lrAt`). */
export type LrSpec = number | ((step: number) => number) | { lrAt(step: number): number };

export interface StepOptions {
  /** Learning rate for this step (overrides the optimizer's lr). */
  lr?: number;
}

/** What `trainStep` resolves to. */
export interface StepOutcome {
  /** The step's number (optimizer steps taken, this one included). */
  step: number;
  /** Mean loss over the batch. */
  loss: number;
  stats: StepStats;
  /**
   * With several hosts: some host asked to stop (requestStop) by this step's exchange. Every host
   * reads the same value for the same step, so all can stop after the same step.
   */
  stop?: boolean;
}

/** Where the time of the last step went (ms; per-rank figures are the max over ranks). */
export interface StepStats {
  step: number;
  loss: number;
  rows: number;
  /**
   * Wall time of the step, main thread: from posting it, or — when it was posted while the step
   * before ran — from that step's completion, to its own.
   */
  wallMs: number;
  /** Forward + loss + backward (max over ranks). */
  computeMs: number;
  /** Forward + loss + backward of each rank, in rank order (shows how unevenly the ranks ran). */
  rankComputeMs: number[];
  /** Gathering shuffled rows (0 for contiguous batches). */
  gatherMs: number;
  /** Reduce-scatter of the gradient slots (and Σg² with clipping). */
  reduceMs: number;
  /** Optimizer update of the chunk. */
  optMs: number;
  /** Everything else: task dispatch, waiting for the slowest rank, messages. */
  syncMs: number;
  /** Time a rank spent waiting at the in-worker barrier(s) (max over ranks; part of syncMs). */
  waitMs: number;
  /** wallMs minus the longest rank's whole step: ringing the ranks, their waking, the main thread noticing them done. */
  dispatchMs: number;
  /** wallMs - computeMs: time outside forward/backward. */
  overheadMs: number;
  /** Global gradient norm before clipping (only with clipGradNorm). */
  gradNorm?: number;
  /**
   * With several hosts: ms of the exchange's work on the gradient's buckets, loss totals and
   * buffers (MPI calls, host-order sums, the host's reduce), most of it while backward runs.
   */
  hostsMs?: number;
  /** With several hosts: of that, the ms rank 0 waited for after its backward (not hidden behind backward). */
  hostsExposedMs?: number;
}

export interface StepInfo {
  /** Optimizer steps taken so far (this one included). */
  step: number;
  epoch: number;
  /** Batch index within the epoch, and batches per epoch. */
  batch: number;
  batches: number;
  loss: number;
  lr: number;
  rows: number;
  stats: StepStats;
}

export interface EpochInfo {
  epoch: number;
  /** Mean training loss over the epoch's rows (those run in this call). */
  loss: number;
  steps: number;
  seconds: number;
  samplesPerSec: number;
  validation?: EvalSummary;
}

export interface FitOptions {
  /** Total epochs (a resumed fit counts those already done). */
  epochs: number;
  batchSize: number;
  /** Reshuffle every epoch with a permutation drawn from (shuffleSeed, epoch). Default true. */
  shuffle?: boolean;
  /** Default: the DataParallel seed. */
  shuffleSeed?: number;
  /** Drop a last batch smaller than batchSize. Default false. */
  dropLast?: boolean;
  /** Resume: skip the first startStep batches (pass getState().step). Default 0. */
  startStep?: number;
  /** Learning rate per step; default the optimizer's lr. */
  lr?: LrSpec;
  /** Evaluated after each epoch and passed to onEpoch. */
  validation?: Dataset;
  onStep?: (info: StepInfo) => void | Promise<void>;
  onEpoch?: (info: EpochInfo) => void | Promise<void>;
  /** Stops after the current step when aborted. */
  signal?: AbortSignal;
}

export interface FitResult {
  steps: number;
  epochs: EpochInfo[];
  stopped: boolean;
}

export interface EvalSummary {
  /** Mean loss over the rows. */
  loss: number;
  /** Fraction correct (class-index targets, or binary losses), else undefined. */
  accuracy?: number;
  rows: number;
}

/**
 * Everything needed to resume: bit-for-bit with the same worker count, data and seed; on another
 * worker count the same up to the order of the gradient reduce (float rounding).
 */
export interface DataParallelState {
  format: "chainrule.dataparallel/1";
  /** Optimizer steps taken. */
  step: number;
  layout: nn.ParamLayoutEntry[];
  params: Float32Array;
  optimizer: { hyper: OptimizerHyper; buffers: Record<string, Float32Array> };
  /** The model's buffers (batch-norm running statistics), namedBuffers() order, concatenated; absent: none / older states. */
  buffers?: Float32Array;
}

function resolveHyper(o: OptimizerSpec): OptimizerHyper {
  const lr = o.lr ?? 1e-3;
  if (o.type === "sgd") {
    const h = { type: "sgd" as const, lr, momentum: o.momentum ?? 0, dampening: o.dampening ?? 0, nesterov: o.nesterov ?? false, weightDecay: o.weightDecay ?? 0 };
    if (h.nesterov && (h.momentum <= 0 || h.dampening !== 0)) throw new ParallelError("DataParallel: nesterov needs momentum > 0 and dampening 0");
    return h;
  }
  if (o.type === "adam" || o.type === "adamw") {
    const [beta1, beta2] = o.betas ?? [0.9, 0.999];
    if (!(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1)) throw new ParallelError(`DataParallel: betas must be in [0, 1), got [${beta1}, ${beta2}]`);
    return { type: o.type, lr, beta1, beta2, eps: o.eps ?? 1e-8, weightDecay: o.weightDecay ?? (o.type === "adamw" ? 0.01 : 0), decoupled: o.type === "adamw" };
  }
  if (o.type === "rmsprop") {
    const h = { type: "rmsprop" as const, lr: o.lr ?? 1e-2, alpha: o.alpha ?? 0.99, eps: o.eps ?? 1e-8, weightDecay: o.weightDecay ?? 0, momentum: o.momentum ?? 0, centered: o.centered ?? false };
    if (!(h.alpha >= 0 && h.alpha <= 1)) throw new ParallelError(`DataParallel: rmsprop alpha must be in [0, 1], got ${h.alpha}`);
    checkNonNegative("rmsprop", { eps: h.eps, weightDecay: h.weightDecay, momentum: h.momentum });
    return h;
  }
  if (o.type === "adagrad") {
    const h = { type: "adagrad" as const, lr: o.lr ?? 1e-2, lrDecay: o.lrDecay ?? 0, weightDecay: o.weightDecay ?? 0, initialAccumulatorValue: o.initialAccumulatorValue ?? 0, eps: o.eps ?? 1e-10 };
    checkNonNegative("adagrad", { lrDecay: h.lrDecay, weightDecay: h.weightDecay, initialAccumulatorValue: h.initialAccumulatorValue, eps: h.eps });
    return h;
  }
  throw new ParallelError(`DataParallel: unknown optimizer type '${(o as { type: string }).type}' (expected sgd, adam, adamw, rmsprop or adagrad)`);
}

function checkNonNegative(optimizer: string, values: Record<string, number>): void {
  for (const [k, v] of Object.entries(values)) {
    if (!(typeof v === "number" && Number.isFinite(v) && v >= 0)) throw new ParallelError(`DataParallel: ${optimizer} ${k} must be a finite number ≥ 0, got ${v}`);
  }
}

function augmentDefaults(a: AugmentSpec): { crop: number; flip: number } {
  const crop = a.crop ?? 0, flip = a.flip === true ? 0.5 : a.flip === false || a.flip === undefined ? 0 : a.flip;
  if (!Number.isInteger(crop) || crop < 0) throw new ParallelError(`DataParallel: augment.crop must be a non-negative integer, got ${crop}`);
  if (!(flip >= 0 && flip <= 1)) throw new ParallelError(`DataParallel: augment.flip must be a boolean or a probability in [0, 1], got ${a.flip}`);
  return { crop, flip };
}

/** (C, H, W) of a dataset row for augmentation. */
function imageShapeOf(xShape: number[]): [number, number, number] {
  if (xShape.length === 3) return [xShape[0], xShape[1], xShape[2]];
  if (xShape.length === 2) return [1, xShape[0], xShape[1]];
  throw new ParallelError(`DataParallel: augment needs image rows (C, H, W) or (H, W), the dataset's rows are [${xShape}]; set augment.imageShape`);
}

/** The step tasks' augmentation: fixed, "fromData" (shape from each batch's dataset), or null (none). */
function resolveAugment(a: AugmentSpec | undefined): StepTask["augment"] | "fromData" | null {
  if (!a) return null;
  const d = augmentDefaults(a);
  if (d.crop === 0 && d.flip === 0) return null;
  if (!a.imageShape) return "fromData";
  if (a.imageShape.length !== 3 || a.imageShape.some((v) => !Number.isInteger(v) || v <= 0)) throw new ParallelError(`DataParallel: augment.imageShape must be [C, H, W], got [${a.imageShape}]`);
  return { ...d, shape: [...a.imageShape] as [number, number, number] };
}

/**
 * paramGroups as flat ranges [from, to, scale, ...] (scale = group lr / base lr), ascending, only
 * where the scale is not 1. The first group whose pattern matches a parameter's name is its group.
 */
export function groupLrRanges(groups: readonly ParamGroupSpec[], names: readonly string[], layout: readonly { offset: number; size: number }[], baseLr: number): number[] {
  if (groups.length === 0) return [];
  const res = groups.map((g, i) => {
    if (!(typeof g.lr === "number" && Number.isFinite(g.lr) && g.lr > 0)) throw new ParallelError(`DataParallel: paramGroups[${i}].lr must be a finite number > 0, got ${g.lr}`);
    if (g.match instanceof RegExp) return g.match;
    try {
      return new RegExp(g.match);
    } catch (e) {
      throw new ParallelError(`DataParallel: paramGroups[${i}].match is not a regular expression: ${(e as Error).message}`);
    }
  });
  if (!(baseLr > 0)) throw new ParallelError(`DataParallel: paramGroups need optimizer.lr > 0 (group lrs are scaled by lr / optimizer.lr), got ${baseLr}`);
  const out: number[] = [];
  names.forEach((name, i) => {
    const g = res.findIndex((re) => re.test(name));
    const scale = g < 0 ? 1 : groups[g].lr / baseLr;
    const { offset, size } = layout[i];
    if (scale === 1 || size === 0) return;
    const n = out.length;
    if (n > 0 && out[n - 2] === offset && out[n - 1] === scale) out[n - 2] = offset + size; // merge neighbours
    else out.push(offset, offset + size, scale);
  });
  return out;
}

function checkLr(lr: number): void {
  if (typeof lr !== "number" || !Number.isFinite(lr) || lr < 0) throw new ParallelError(`DataParallel: learning rate must be a finite number ≥ 0, got ${lr}`);
}

function lrAt(spec: LrSpec | undefined, step: number): number | undefined {
  if (spec === undefined) return undefined;
  if (typeof spec === "number") return spec;
  if (typeof spec === "function") return spec(step);
  return spec.lrAt(step);
}

/**
 * The optimizer's state buffers, P floats each, named as core's optimizers name them: Adam's two
 * moments, SGD's momentum (none without), RMSprop's squared-gradient average (and the gradient
 * average when centered, the momentum with momentum), Adagrad's squared-gradient sum.
 */
export function optimizerStateBuffers(o: { type: OptimizerSpec["type"]; momentum?: number; centered?: boolean }): string[] {
  switch (o.type) {
    case "sgd": return (o.momentum ?? 0) > 0 ? ["momentumBuffer"] : [];
    case "adam": case "adamw": return ["expAvg", "expAvgSq"];
    case "rmsprop": return ["squareAvg", ...(o.centered ? ["gradAvg"] : []), ...((o.momentum ?? 0) > 0 ? ["momentumBuffer"] : [])];
    case "adagrad": return ["sum"];
  }
}

/**
 * The most workers whose shared memory (parameters, mean gradient, one gradient slot per worker,
 * `optimizerBuffers` state buffers, each P floats) fits WebAssembly's 4 GiB, with 16 MiB left for
 * model buffers and control rows: the fast layout, where the reduce runs SIMD in place. More
 * workers train too, with their gradient slots in plain shared memory (see planMemory).
 */
export function maxWorkersFor(numParams: number, optimizerBuffers: number): number {
  const region = Math.ceil((numParams * 4) / 64) * 64;
  return Math.max(0, Math.floor((MAX_SHARED_MEMORY_BYTES - (16 << 20)) / Math.max(region, 64)) - 2 - optimizerBuffers);
}

function fmtBytes(n: number): string {
  return n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(1)} GiB` : `${(n / 2 ** 20).toFixed(1)} MiB`;
}

/** The WebAssembly memory's size limit: 4 GiB, or less with CHAINRULE_SHARED_MEMORY_BYTES (which moves big regions out sooner). */
function sharedMemoryCap(): number {
  const v = Number(process.env.CHAINRULE_SHARED_MEMORY_BYTES);
  return v > 0 ? Math.min(v, MAX_SHARED_MEMORY_BYTES) : MAX_SHARED_MEMORY_BYTES;
}

/** The automatic step timeout: firstMs until afterSteps steps, then max(minMs, factor × the median of the last `window` steps). */
const AUTO_TIMEOUT = { firstMs: 600_000, afterSteps: 10, window: 50, minMs: 60_000, factor: 20 } as const;

const WORKER = new URL("./worker-entry.mjs", import.meta.url).href;
const EXCHANGE_THREAD = new URL("./exchange-entry.mjs", import.meta.url);
let pools = 0;

export class DataParallel {
  /** Number of ranks (worker threads). */
  readonly world: number;
  readonly seed: number;
  /** Statistics of the last step. */
  lastStats: StepStats | null = null;

  private readonly opts: DataParallelOptions;
  private hyper: OptimizerHyper;
  private readonly clip: number | undefined;
  private readonly microBatchSize: number;
  /** The bound on each phase of a step now (see DataParallelOptions.timeoutMs); adapted after each step when automatic. */
  private timeoutMs: number;
  private readonly autoTimeout: boolean;
  /** Wall times of the last steps (ms), for the automatic timeout. */
  private readonly recentStepMs: number[] = [];
  private readonly initTimeoutMs: number;
  private readonly augment: StepTask["augment"] | "fromData" | null;
  /** The canonical model buffers (shared; the main model's buffer tensors view them). */
  private bufs: Float32Array = new Float32Array(0);
  /** The canonical buffers as the current step found them (copied by rank 0 as it enters the step). */
  private stepBufs: Float32Array = new Float32Array(0);
  private mainModel: nn.Module | null = null;
  private flat: nn.FlatParameters | null = null;
  private ctx: WorkerContext | null = null;
  /** Views of the context's control words, doorbell, step descriptions (one per parity) and result rows; made once, in init. */
  private views: { control: Int32Array; bell: Int32Array; desc: [Float64Array, Float64Array]; results: Float64Array } | null = null;
  private optViews: Record<string, Float32Array> = {};
  private pool: Piscina | null = null;
  /** Indices of shuffled batches: two halves of `idxHalf` ints, one per command parity. */
  private idxBuf = new Int32Array(new SharedArrayBuffer(8));
  private idxHalf = 1;
  /** The other hosts (null: this one alone), their number and this host's index. */
  private readonly comm: Communicator | null = null;
  /** With hosts through MPI: the thread that exchanges the gradient with them (host-exchange.ts). */
  private exchangeThread: Worker | null = null;
  /** With one worker: the replica that runs the steps in this thread (null: worker threads). */
  private inline: Replica | null = null;
  /** The inline replica's views of the datasets it saw; shared copies made for the threads of datasets that were not. */
  private views1 = new WeakMap<Dataset, DatasetViews>();
  private sharedCopies = new WeakMap<Dataset, Dataset>();
  /** The ranks' step loops (see `post`) and what they were started with; null: none running. */
  private serving: Serving | null = null;
  /** The last doorbell command (steps rung so far in this process's pools). */
  private seq = 0;
  private _step = 0;
  private queue: Promise<unknown> = Promise.resolve();
  /** Steps posted and not yet completed, oldest first (at most two). */
  private inflight: InFlight[] = [];
  /** The barrier count the next step's barriers start from (CONTROL.BARRIER counts on while steps follow each other). */
  private barrierCount = 0;
  /** When the last step completed (performance.now()). */
  private lastDoneAt = 0;
  private posting = false;
  /** With hosts: the step that failed (after it no step may run: the other hosts are mid-exchange). */
  private hostsBroken: { step: number; message: string } | null = null;
  private closed = false;

  constructor(opts: DataParallelOptions) {
    const w = opts.workers ?? 1;
    if (!Number.isInteger(w) || w < 1) throw new ParallelError(`DataParallel: workers must be an integer ≥ 1, got ${w}`);
    if (opts.clipGradNorm !== undefined && !(opts.clipGradNorm > 0)) throw new ParallelError(`DataParallel: clipGradNorm must be > 0, got ${opts.clipGradNorm}`);
    if (opts.microBatchSize !== undefined && !(Number.isInteger(opts.microBatchSize) && opts.microBatchSize > 0)) {
      throw new ParallelError(`DataParallel: microBatchSize must be a positive integer, got ${opts.microBatchSize}`);
    }
    this.opts = opts;
    this.world = w;
    this.seed = opts.seed ?? 0;
    this.hyper = resolveHyper(opts.optimizer);
    checkLr(this.hyper.lr);
    this.clip = opts.clipGradNorm;
    this.microBatchSize = opts.microBatchSize ?? 0;
    const t = opts.timeoutMs ?? "auto";
    if (t !== "auto" && !(t > 0)) throw new ParallelError(`DataParallel: timeoutMs must be > 0 or "auto", got ${t}`);
    this.autoTimeout = t === "auto";
    this.timeoutMs = t === "auto" ? AUTO_TIMEOUT.firstMs : t;
    this.initTimeoutMs = opts.initTimeoutMs ?? 120_000;
    if (opts.syncBatchNorm && this.microBatchSize > 0) throw new ParallelError("DataParallel: syncBatchNorm does not work with microBatchSize (each micro-batch would need its own exchange)");
    this.augment = resolveAugment(opts.augment);
    if (opts.hosts !== undefined) {
      if (opts.hosts !== "mpi" && w > 1) throw new ParallelError(`DataParallel: a communicator object works with workers: 1; worker threads reach other hosts through MPI (hosts: "mpi")`);
      this.comm = opts.hosts === "mpi" ? mpiWorld() : opts.hosts;
      if (this.comm.size > 1 && opts.syncBatchNorm) throw new ParallelError("DataParallel: syncBatchNorm works within one host; with several hosts each worker's batch norm uses its own shard");
    }
    if (opts.bucketMiB !== undefined && !(opts.bucketMiB > 0)) throw new ParallelError(`DataParallel: bucketMiB must be > 0, got ${opts.bucketMiB}`);
    const gc = opts.gradientCompression;
    if (gc !== undefined && gc !== "none" && gc !== "bf16" && gc !== "fp16") throw new ParallelError(`DataParallel: gradientCompression must be "none", "bf16" or "fp16", got ${JSON.stringify(gc)}`);
    normalizeLoss(opts.loss); // validates the name early
  }

  /** Builds the model (main-thread replica), allocates shared memory, starts the workers and checks their layouts. */
  async init(): Promise<void> {
    return this.enqueue(async () => {
      this.checkOpen();
      if (this.ctx) {
        if (!this.pool && !this.inline) await this.startPool(); // after a failure
        return;
      }
      const model = normalizeModel(this.opts.model);
      const m = await buildModel(model, this.seed);
      const P = nn.paramLayout(m).reduce((n, e) => n + e.size, 0);
      const optBuffers = optimizerStateBuffers(this.hyper);
      // One shared WebAssembly.Memory: params | grad | slots (world) | optimizer state, each region
      // 64-byte aligned, then the small regions; what does not fit in 4 GiB moves to plain shared memory.
      const region = Math.ceil((P * 4) / 64) * 64, W = this.world, k = optBuffers.length;
      // Model buffers (batch-norm running statistics): canonical copy + one working copy per rank +
      // the canonical copy as the current step found it (restored when a step fails before updating);
      // synchronised batch norm: float64 exchange rows (count, counted weight, C means, C M2s), two parities.
      const named = m.namedBuffers();
      const buffers = named.map(([name, t]) => ({ name, size: t.size }));
      const B = buffers.reduce((n, b) => n + b.size, 0), bregion = Math.ceil((B * 4) / 64) * 64;
      let maxC = 0;
      for (const [, mod] of m.namedModules()) if (mod instanceof nn.BatchNorm2d) maxC = Math.max(maxC, mod.numFeatures);
      const syncBatchNorm = !!this.opts.syncBatchNorm && W > 1 && maxC > 0;
      const bnRow = 2 + 2 * maxC;
      const smallBytes = 64 + 8 * (W + 1) * W + 64 + (2 + W) * bregion + (syncBatchNorm ? 8 * 2 * W * bnRow : 0);
      // With hosts, the combine's operands go last, where its SIMD kernel reaches them, when they fit.
      const trainable = m.namedParameters().map(([, p]) => p.requiresGrad);
      const buckets = this.hosts > 1 ? gradientBuckets(nn.paramLayout(m), trainable, Math.max(1, Math.round(((this.opts.bucketMiB ?? 1) * 2 ** 20) / 4))) : [];
      const combineBytes = this.hosts > 1 ? hostCombineRegion(0, this.hosts, buckets).end + 64 : 0;
      const cap = sharedMemoryCap();
      let plan = planMemory(P, W, k, smallBytes + combineBytes, cap);
      const combineInside = plan !== null && combineBytes > 0;
      plan ??= planMemory(P, W, k, smallBytes, cap);
      if (plan === null) {
        throw new ParallelError(
          `DataParallel: ${P.toLocaleString("en-US")} parameters need ${fmtBytes(2 * region + smallBytes)} of shared WebAssembly memory ` +
          `for the parameters and the mean gradient alone, above its ${fmtBytes(cap)}: use a smaller model`);
      }
      const { paramsAt, gradAt, slotsAt, optAt } = plan;
      const slotMemory = plan.slotsOutside ? new SharedArrayBuffer(W * region) : null;
      const optMemory = plan.optOutside && k > 0 ? new SharedArrayBuffer(k * region) : null;
      const weightsAt = Math.ceil(plan.end / 64) * 64;
      const buffersAt = Math.ceil((weightsAt + 8 * (W + 1) * W) / 64) * 64, bufSlotsAt = buffersAt + bregion;
      const bnAt = bufSlotsAt + (W + 1) * bregion;
      const combine = combineInside ? hostCombineRegion(bnAt + (syncBatchNorm ? 8 * 2 * W * bnRow : 0), this.hosts, buckets) : null;
      const bytes = combine?.end ?? bnAt + (syncBatchNorm ? 8 * 2 * W * bnRow : 0);
      const memory = sharedMemory(bytes);
      const buf = memory.buffer;
      this.bufs = new Float32Array(buf, buffersAt, B);
      this.stepBufs = new Float32Array(buf, bufSlotsAt + W * bregion, B);
      let at = 0;
      for (const [, t] of named) {
        // The main replica's buffers become views of the canonical copy (checkpoints read them, loadStateDict writes them).
        const v = this.bufs.subarray(at, at + t.size);
        v.set(t.data);
        t.data = v;
        at += t.size;
      }
      // Copies the seeded init into shared memory; every parameter becomes a view.
      const flat = nn.flattenParameters(m, { dataBuffer: new Float32Array(buf, paramsAt, P), gradBuffer: new Float32Array(buf, gradAt, P), copyValues: true });
      this.optViews = Object.fromEntries(optBuffers.map((n, i) => [n, new Float32Array(optMemory ?? buf, optAt + i * region, P)]));
      if (this.hyper.type === "adagrad") this.optViews.sum.fill(this.hyper.initialAccumulatorValue); // Adagrad's sum starts there
      this.mainModel = m;
      this.flat = flat;
      // Frozen parameters (requiresGrad false in the built model) are never reduced or updated;
      // chunks are balanced over the trainable floats.
      const { chunks, segments } = trainableChunks(P, trainableRanges(flat.layout, trainable), this.world);
      const lrRanges = groupLrRanges(this.opts.paramGroups ?? [], m.namedParameters().map(([name]) => name), flat.layout, this.hyper.lr);
      this.ctx = {
        poolId: "", world: this.world, seed: this.seed, model, loss: normalizeLoss(this.opts.loss), numParams: P, layout: flat.layout,
        chunks, trainable, segments, lrRanges,
        memory, paramsAt, gradAt, slotsAt, optAt, weightsAt, optBuffers, slotMemory, optMemory,
        control: new SharedArrayBuffer(4 * CONTROL.size(this.world)),
        exchange: new SharedArrayBuffer(8 * 3 * this.world),
        bell: new SharedArrayBuffer(4 * BELL.size(this.world)),
        stepDesc: new SharedArrayBuffer(8 * 2 * STEP_DESC.size(this.world)),
        stepResults: new SharedArrayBuffer(8 * 2 * STEP_RESULT.size * this.world),
        buffers, buffersAt, bufSlotsAt, syncBatchNorm, bnAt, bnRow, reuseActivations: this.opts.reuseActivations ?? true,
        hosts: this.hosts, hostRank: this.hostRank,
        buckets, gradientCompression: this.opts.gradientCompression ?? "none", hostCombine: combine,
        hostSync: new SharedArrayBuffer(0), hostTotals: new SharedArrayBuffer(8 * HOST_TOTALS.size), hostError: new SharedArrayBuffer(512),
      };
      this.ctx.hostSync = new SharedArrayBuffer(4 * HOSTX.size(this.ctx.buckets.length));
      const c = this.ctx, descSize = STEP_DESC.size(this.world);
      this.views = {
        control: new Int32Array(c.control), bell: new Int32Array(c.bell), results: new Float64Array(c.stepResults),
        desc: [new Float64Array(c.stepDesc, 0, descSize), new Float64Array(c.stepDesc, 8 * descSize, descSize)],
      };
      this.publishWaitBound();
      if (this.world === 1) await this.buildInline();
      else await this.startPool();
      if (this.hosts > 1 && this.opts.hosts === "mpi") this.startExchangeThread();
    });
  }

  /** Starts the thread that runs this host's exchange with the others through MPI; a thread that cannot start fails the next step with why. */
  private startExchangeThread(): void {
    const ctx = this.ctx!;
    const thread = new Worker(EXCHANGE_THREAD, { workerData: ctx });
    thread.on("error", (e) => recordExchangeFailure(ctx, `host ${this.hostRank} exchange thread: ${e.message}`));
    thread.unref(); // waiting for steps must not keep a finished program alive
    this.exchangeThread = thread;
  }

  /** The main thread's replica: its parameters are views of the shared parameters (stateDict() for checkpoints). */
  get model(): nn.Module {
    return this.ready().model;
  }

  /** The flat parameters (shared; live). */
  get params(): Float32Array {
    return this.ready().flat.data;
  }

  /** The model's buffers (batch-norm running statistics), namedBuffers() order, concatenated (shared; live). */
  get buffers(): Float32Array {
    this.ready();
    return this.bufs;
  }

  /** The mean gradient of the last step (shared; live). */
  get grad(): Float32Array {
    return this.ready().flat.grad;
  }

  get layout(): nn.ParamLayoutEntry[] {
    return this.ready().flat.layout;
  }

  get numParameters(): number {
    return this.ready().flat.data.length;
  }

  /** Hosts training together (processes under mpirun; 1 without) and this one's index. */
  get hosts(): number {
    return this.comm?.size ?? 1;
  }

  get hostRank(): number {
    return this.comm?.rank ?? 0;
  }

  /**
   * Asks every host to stop: the next exchange tells the others, and from the step whose
   * StepOutcome says `stop`, each host posts nothing more (what is posted completes everywhere).
   * `fit` does this when its signal aborts; the request holds until the next `fit`.
   */
  requestStop(): void {
    this.ready();
    Atomics.store(this.views!.control, CONTROL.STOP, 1);
  }

  /** The bound on each phase of a step now (ms): the timeoutMs given, or the automatic one as it stands. */
  get stepTimeoutMs(): number {
    return this.timeoutMs;
  }

  /**
   * The oldest step in flight on worker threads: its number, how long it has run, and the ranks
   * holding it up (behind the others at the step's barriers) with the stage each is in — what a
   * progress display shows while a step is overdue. Null when no step is in flight (or with one worker, whose steps run in this thread).
   */
  pendingStep(): { step: number; elapsedMs: number; waitingFor: { rank: number; stage: Phase | "idle" }[] } | null {
    const f = this.inflight[0];
    if (!f || this.inline) return null;
    const W = this.world, out = this.views!.results, p = f.seq & 1;
    const running: number[] = [];
    for (let r = 0; r < W; r++) if (out[(p * W + r) * STEP_RESULT.size + STEP_RESULT.STEP] !== f.step) running.push(r);
    // The ranks the others wait for: behind at the barriers (all still running, if none is).
    const waitingFor = running.length === 0 ? [] : this.laggards(running).map((rank) => ({ rank, stage: this.stageOf(rank) }));
    return { step: f.step, elapsedMs: performance.now() - Math.max(f.postedAt, this.lastDoneAt), waitingFor };
  }

  /**
   * Ends the steps in flight now instead of waiting for them (a hung worker, a user who pressed
   * Ctrl-C): the worker threads are terminated and the steps reject with a ParallelStepError that
   * names `reason` and the workers they waited for. The next step starts a fresh pool. With one
   * worker the step runs in this thread, so there is nothing to abort from here.
   */
  abort(reason: string): void {
    if (this.serving !== null && this.inflight.some((f) => this.doneCount(f.seq) < this.world)) this.serving.fail({ aborted: reason });
  }

  /** Optimizer steps taken. */
  get stepCount(): number {
    return this._step;
  }

  /** Live worker threads (0 after close or after a failed step). */
  get threads(): number {
    return this.pool?.threads.length ?? 0;
  }

  /** Runs one optimizer step on `batch`; resolves to its mean loss. Steps run in the order they are called (see trainStep). */
  step(batch: Batch, opts: StepOptions = {}): Promise<number> {
    return this.trainStep(batch, opts).then((o) => o.loss);
  }

  /**
   * Posts one optimizer step on `batch`; resolves to its loss and timings when it completes.
   * Steps run in the order they are posted. Post the next step before awaiting the last (as
   * `fit` does) and the workers start it as soon as the last is done, without a round trip
   * through the main thread, and gather its shuffled rows while they wait at the last step's
   * barrier. At most two steps are in flight: a third post waits for the oldest. If a step
   * fails, the step posted behind it rejects with the same error (it never started).
   */
  trainStep(batch: Batch, opts: StepOptions = {}): Promise<StepOutcome> {
    // Wrapped: an async function returning a promise would resolve only when that one does.
    return this.enqueue(() => this.post(batch, opts), true).then((posted) => posted.done);
  }

  /**
   * Trains for `epochs`, reshuffling each epoch from (shuffleSeed, epoch). Keeps the next step
   * posted while it awaits the current one (see trainStep), so `onStep` runs while the workers
   * compute; when `signal` aborts, the step already posted still completes (and gets its onStep).
   */
  async fit(dataset: Dataset, o: FitOptions): Promise<FitResult> {
    this.ready();
    await this.queue.catch(() => {});
    await this.drain();
    Atomics.store(this.views!.control, CONTROL.STOP, 0); // a stop requested before this fit ended the last one
    const N = dataset.length, B = o.batchSize;
    if (!Number.isInteger(B) || B < 1) throw new ParallelError(`fit: batchSize must be a positive integer, got ${B}`);
    const perEpoch = o.dropLast ? Math.floor(N / B) : Math.ceil(N / B);
    if (perEpoch < 1) throw new ParallelError(`fit: ${N} rows make no batch of ${B} with dropLast`);
    const start = o.startStep ?? 0;
    const shuffle = o.shuffle ?? true, shuffleSeed = o.shuffleSeed ?? this.seed;
    const epochs: EpochInfo[] = [];
    let steps = 0;
    for (let epoch = Math.floor(start / perEpoch); epoch < o.epochs; epoch++) {
      const perm = shuffle ? new Generator(mixSeed(shuffleSeed, epoch)).permutation(N) : null;
      const t0 = performance.now();
      let lossSum = 0, rows = 0, epochSteps = 0, stopped = false;
      const posted: { b: number; lr: number | undefined; rows: number; out: Promise<StepOutcome> }[] = [];
      let next = epoch === Math.floor(start / perEpoch) ? start % perEpoch : 0, stepIndex = this._step;
      while (posted.length > 0 || (next < perEpoch && !stopped)) {
        while (next < perEpoch && posted.length < 2 && !stopped) {
          const a = next * B, e = Math.min(a + B, N);
          const lr = lrAt(o.lr, stepIndex++);
          const batch: Batch = perm ? { dataset, indices: perm.subarray(a, e) } : { dataset, start: a, end: e };
          const out = this.trainStep(batch, { lr });
          out.catch(() => {}); // a step behind a failed one rejects too; the failed one is thrown below
          posted.push({ b: next++, lr, rows: e - a, out });
        }
        const cur = posted.shift()!;
        const { step, loss, stats, stop } = await cur.out;
        lossSum += loss * cur.rows;
        rows += cur.rows;
        steps++;
        epochSteps++;
        await o.onStep?.({ step, epoch, batch: cur.b, batches: perEpoch, loss, lr: cur.lr ?? this.hyper.lr, rows: cur.rows, stats });
        // Posts nothing more; what is posted completes. With hosts, an abort is a request that the
        // next exchange tells every host, and all stop after the step whose outcome says so.
        if (this.hosts > 1) {
          if (o.signal?.aborted) this.requestStop();
          if (stop) stopped = true;
        } else if (o.signal?.aborted) stopped = true;
      }
      if (stopped) return { steps, epochs, stopped: true };
      const seconds = (performance.now() - t0) / 1000;
      const info: EpochInfo = { epoch, loss: lossSum / rows, steps: epochSteps, seconds, samplesPerSec: rows / seconds };
      if (o.validation) info.validation = await this.evaluate(o.validation);
      epochs.push(info);
      await o.onEpoch?.(info);
    }
    return { steps, epochs, stopped: false };
  }

  /** Mean loss (and accuracy where it applies) over a dataset, sharded across the workers, without gradients, in eval mode. */
  evaluate(dataset: Dataset, opts: { batchSize?: number } = {}): Promise<EvalSummary> {
    return this.enqueue(async () => {
      const n = dataset.length, batchSize = opts.batchSize ?? 1024;
      const sums = (res: { lossSum: number; correct: number; counted: number; hasAccuracy: boolean }[]): EvalSummary => {
        let lossSum = 0, correct = 0, counted = 0;
        for (const r of res) { lossSum += r.lossSum; correct += r.correct; counted += r.counted; }
        return { loss: lossSum / counted, accuracy: res.some((r) => r.hasAccuracy) ? correct / counted : undefined, rows: n };
      };
      if (this.inline) {
        this.checkOpen();
        try {
          return sums([this.inline.evaluate(localViews(dataset), null, 0, 0, n, batchSize)]);
        } catch (e) {
          throw workerFailed(0, 0, "eval", false, e);
        }
      }
      await this.ensurePool();
      await this.stopServing(); // the threads are needed for eval tasks
      const ctx = this.ctx!, offs = shardOffsets(n, this.world), data = datasetRef(this.forThreads(dataset));
      // An evaluation's length follows the dataset, not a step's: the automatic bound does not apply.
      const bound = this.autoTimeout ? AUTO_TIMEOUT.firstMs : this.timeoutMs;
      return sums(await this.runPhase<EvalResult>("eval", 0, false, (r) => ({ kind: "eval", ctx, rank: r, data, idx: null, start: offs[r], end: offs[r + 1], rowStart: 0, batchSize }), bound));
    });
  }

  /** A copy of parameters, optimizer state and step count. Call between steps. */
  getState(): DataParallelState {
    const { flat } = this.ready();
    if (this.busy) throw new ParallelError("getState: a step is running; await it first");
    return {
      format: "chainrule.dataparallel/1",
      step: this._step,
      layout: flat.layout.map((e) => ({ ...e, shape: [...e.shape] })),
      params: flat.data.slice(),
      optimizer: { hyper: { ...this.hyper }, buffers: Object.fromEntries(Object.entries(this.optViews).map(([k, v]) => [k, v.slice()])) },
      ...(this.bufs.length > 0 ? { buffers: this.bufs.slice() } : {}),
    };
  }

  /** Restores a state from getState() (after init). Checks the layout and optimizer before copying anything. */
  setState(s: DataParallelState): void {
    const { flat } = this.ready();
    if (this.busy) throw new ParallelError("setState: a step is running; await it first");
    if (s.format !== "chainrule.dataparallel/1") throw new ParallelError(`setState: unknown state format '${s.format}'`);
    const diff = layoutDiff(flat.layout, s.layout);
    if (diff) throw new LayoutMismatchError(`setState: the state's parameter layout differs from the model's: ${diff}`);
    if (s.params.length !== flat.data.length) throw new ParallelError(`setState: ${s.params.length} parameter values, model has ${flat.data.length}`);
    if (s.optimizer.hyper.type !== this.hyper.type) throw new ParallelError(`setState: state is for optimizer ${s.optimizer.hyper.type}, this one is ${this.hyper.type}`);
    const names = Object.keys(this.optViews);
    for (const n of names) {
      const b = s.optimizer.buffers[n];
      if (!b || b.length !== flat.data.length) throw new ParallelError(`setState: optimizer buffer '${n}' is missing or has the wrong length`);
    }
    if (!Number.isInteger(s.step) || s.step < 0) throw new ParallelError(`setState: bad step ${s.step}`);
    if (s.buffers !== undefined && s.buffers.length !== this.bufs.length) throw new ParallelError(`setState: ${s.buffers.length} buffer values, the model has ${this.bufs.length}`);
    flat.data.set(s.params);
    if (s.buffers !== undefined) this.bufs.set(s.buffers);
    for (const n of names) this.optViews[n].set(s.optimizer.buffers[n]);
    this.hyper = { ...s.optimizer.hyper };
    this._step = s.step;
  }

  /** Waits for the steps in flight, then terminates the workers. Idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    await this.queue.catch(() => {});
    await this.drain();
    await this.destroyPool();
    if (this.exchangeThread) {
      const sync = new Int32Array(this.ctx!.hostSync);
      Atomics.store(sync, HOSTX.QUIT, 1);
      Atomics.notify(sync, HOSTX.ENTERED);
      await this.exchangeThread.terminate();
      this.exchangeThread = null;
    }
  }

  // ---- internals ----

  private ready(): { model: nn.Module; flat: nn.FlatParameters } {
    if (!this.mainModel || !this.flat) throw new ParallelError("DataParallel: call `await init()` first");
    return { model: this.mainModel, flat: this.flat };
  }

  private checkOpen(): void {
    if (this.closed) throw new ParallelError("DataParallel: closed");
  }

  /** A step is being posted or is in flight. */
  private get busy(): boolean {
    return this.posting || this.inflight.length > 0;
  }

  /** Runs `fn` after everything enqueued before it; unless `post` (a step), also after every step in flight completed. */
  private enqueue<T>(fn: () => Promise<T>, post = false): Promise<T> {
    const run = this.queue.catch(() => {}).then(async () => {
      if (!post) await this.drain();
      this.posting = true;
      try {
        return await fn();
      } finally {
        this.posting = false;
      }
    });
    this.queue = run;
    return run;
  }

  /** Waits until no step is in flight (failed ones included). */
  private drain(): Promise<void> {
    return this.settle(0);
  }

  /** Waits until at most `most` steps are in flight, the oldest settling first. */
  private async settle(most: number): Promise<void> {
    while (this.inflight.length > most) await this.inflight[0].done.catch(() => {});
  }

  private async startPool(): Promise<void> {
    const ctx = this.ctx!;
    ctx.poolId = `${process.pid}.${++pools}`;
    this.views!.control.fill(0);
    this.publishWaitBound();
    this.pool = new Piscina({
      filename: WORKER, minThreads: this.world, maxThreads: this.world, idleTimeout: 2 ** 31 - 1,
      concurrentTasksPerWorker: 1, recordTiming: false,
    });
    this.pool.on("error", () => {}); // a thread error outside a task: surfaced by the task that it breaks
    const res = await this.runPhase<InitResult>("init", 0, false, (r) => ({ kind: "init", ctx, rank: r, timeoutMs: this.initTimeoutMs }), this.initTimeoutMs);
    const bad = res.find((r) => r.mismatch !== null);
    if (bad) {
      await this.destroyPool();
      throw new LayoutMismatchError(`init: worker ${bad.rank} (thread ${bad.threadId}) built a model whose layout differs from the main thread's: ${bad.mismatch}`);
    }
    const threads = new Set(res.map((r) => r.threadId));
    if (threads.size !== this.world) {
      await this.destroyPool();
      throw new ParallelError(`init: ${this.world} ranks ran on only ${threads.size} threads`);
    }
  }

  private async ensurePool(): Promise<void> {
    this.checkOpen();
    this.ready();
    if (!this.pool) await this.startPool();
  }

  /**
   * With timeoutMs "auto": after the first steps, max(60 s, 20 × the median recent step). Not with
   * hosts: between steps a host may wait on another's checkpoint or evaluation, which a step's
   * time does not bound.
   */
  private adaptTimeout(wallMs: number): void {
    if (!this.autoTimeout || this.hosts > 1) return;
    const recent = this.recentStepMs;
    recent.push(wallMs);
    if (recent.length > AUTO_TIMEOUT.window) recent.shift();
    if (this._step < AUTO_TIMEOUT.afterSteps) return;
    const sorted = [...recent].sort((a, b) => a - b);
    const next = Math.max(AUTO_TIMEOUT.minMs, Math.ceil(AUTO_TIMEOUT.factor * sorted[sorted.length >> 1]));
    if (next !== this.timeoutMs) {
      this.timeoutMs = next;
      this.publishWaitBound();
    }
  }

  /** Tells the ranks how long to wait at a barrier or for the host exchange: the step timeout and a margin, so the main thread's deadline names the late rank first. */
  private publishWaitBound(): void {
    Atomics.store(this.views!.control, CONTROL.WAIT_MS, Math.min(2 ** 31 - 1, this.timeoutMs + 5000));
  }

  private async destroyPool(): Promise<void> {
    const p = this.pool;
    this.pool = null;
    this.serving = null; // terminating the threads ends the step loops (their promises reject, handled)
    if (p) await p.destroy();
  }

  /** Runs one task per rank; the main thread's await is the barrier. Any failure or timeout destroys the pool. */
  private async runPhase<R>(phase: Phase, step: number, paramsModified: boolean, task: (rank: number) => Task, timeoutMs = this.timeoutMs): Promise<R[]> {
    const pool = this.pool!;
    const ac = new AbortController();
    setMaxListeners(this.world + 1, ac.signal); // one abort listener per rank's task (Node warns past 10)
    const pending = new Set<number>();
    const runs = Array.from({ length: this.world }, (_, r) => {
      pending.add(r);
      return pool.run(task(r), { signal: ac.signal }).then(
        (v) => { pending.delete(r); return v as R; },
        (e) => { throw { rank: r, cause: e }; },
      );
    });
    runs.forEach((p) => p.catch(() => {}));
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject({ timeout: true }), timeoutMs);
    });
    try {
      return await Promise.race([Promise.all(runs), timeout]);
    } catch (e) {
      ac.abort();
      throw await this.failure(e, phase, step, paramsModified, [...pending], timeoutMs);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * After a task rejected (`{ rank, cause }`) or timed out (`{ timeout: true }`): destroys the pool
   * (every thread stops, so the control words are final) and returns the error to throw, naming
   * the failing (or hung) worker, the step, the phase and whether parameters may have changed.
   */
  private async failure(e: unknown, phase: Phase, step: number, paramsModified: boolean, pending: number[], timeoutMs: number): Promise<ParallelStepError> {
    const err = await this.describeFailure(e, phase, step, paramsModified, pending, timeoutMs);
    if (this.hosts > 1 && phase === "grad") this.hostsBroken = { step, message: err.message };
    return err;
  }

  private async describeFailure(e: unknown, phase: Phase, step: number, paramsModified: boolean, pending: number[], timeoutMs: number): Promise<ParallelStepError> {
    let ranks = [...pending].sort((a, b) => a - b);
    await this.destroyPool();
    const stepTask = phase === "grad";
    if (stepTask) paramsModified = this.anyRankUpdating(step);
    if (stepTask && !paramsModified) this.restoreStepBuffers(step);
    if ((e as { timeout?: boolean }).timeout) {
      if (stepTask) ranks = this.laggards(ranks);
      return phaseTimedOut(ranks, step, stepTask ? this.stageOf(ranks[0]) : phase, paramsModified, timeoutMs);
    }
    const aborted = (e as { aborted?: string }).aborted;
    if (aborted !== undefined) {
      if (stepTask) ranks = this.laggards(ranks);
      return stepAborted(aborted, ranks, step, stepTask && ranks.length > 0 ? this.stageOf(ranks[0]) : phase, paramsModified);
    }
    const { rank, cause } = e as { rank: number; cause: unknown };
    if (stepTask && /barrier \S+ timed out/.test(String((cause as Error)?.message))) {
      // A rank gave up waiting for its peers: report the peers that never arrived.
      const late = this.laggards(ranks);
      return phaseTimedOut(late, step, this.stageOf(late[0]), paramsModified, timeoutMs);
    }
    return workerFailed(rank, step, stepTask ? this.stageOf(rank) : phase, paramsModified, cause);
  }

  /**
   * Posts one step to the ranks' step loops: writes its description (and indices) to shared memory
   * in the halves of the command's parity, rings each rank's doorbell word and returns the step's
   * completion, which waits (Atomics.waitAsync, bounded by `timeoutMs`) until all ranks counted
   * themselves done and reads their result rows. No message per step — a piscina task per rank
   * and step cost ~0.2–0.3 ms of dispatch here, the doorbell ~0.05. When a step is still in
   * flight the new one is rung at once, marked to start with a barrier (no rank reads the
   * parameters before every rank updated its chunk of them). A loop is started (a piscina task)
   * for a rank that has none or whose loop gave up idling; loops are restarted when what they
   * were started with changes (dataset, index buffer, optimizer, augmentation), after the steps
   * in flight. A rank's error rejects its loop's task, which fails the step in flight and the
   * one posted behind it.
   */
  private async post(batch: Batch, opts: StepOptions): Promise<{ done: Promise<StepOutcome> }> {
    if (this.hostsBroken !== null) {
      throw new ParallelError(`DataParallel: step ${this.hostsBroken.step} failed with ${this.hosts} hosts (${this.hostsBroken.message.split("\n")[0]}); the hosts' exchange cannot go on from a step some of them did not finish: end the job and resume it from a checkpoint`);
    }
    const b = this.resolveBatch(batch);
    if (b.n === 0) throw new ParallelError("step: empty batch");
    const hyper = { ...this.hyper, lr: opts.lr ?? this.hyper.lr };
    checkLr(hyper.lr);
    const augment = this.augment === "fromData" ? { ...augmentDefaults(this.opts.augment!), shape: imageShapeOf(b.ds.inputShape) } : this.augment;
    if (this.inline) {
      this.checkOpen();
      let done: Promise<StepOutcome>;
      try {
        done = Promise.resolve(this.stepInline(this.inline, b, hyper, augment));
      } catch (e) {
        done = Promise.reject(e);
        done.catch(() => {}); // the caller handles it
      }
      return { done };
    }
    const ds = this.forThreads(b.ds), { indices, n, rowStart } = b;
    const clip = this.clip ?? 0, microBatchSize = this.microBatchSize;
    const { lr, ...rest } = hyper;
    const fixed = JSON.stringify({ rest, augment, clip, microBatchSize });
    for (;;) {
      await this.settle(1); // at most two in flight
      if (this.serving?.failure && this.inflight.length === 0) await this.destroyPool(); // an abort that came as the last step completed
      await this.ensurePool();
      // What restarts the loops (or outgrows the index buffer) waits for the steps in flight, as
      // does a step behind one that failed (its pool is gone, or going).
      const restart = this.serving !== null && (this.serving.ds !== ds || this.serving.fixed !== fixed);
      const grow = indices !== null && n > this.idxHalf;
      const failed = this.inflight.length > 0 && (this.serving === null || this.serving.failure !== null);
      if ((restart || grow || failed) && this.inflight.length > 0) {
        await this.drain();
        continue;
      }
      if (grow) {
        this.idxHalf = n;
        this.idxBuf = new Int32Array(new SharedArrayBuffer(8 * n));
      }
      if (restart || grow) {
        await this.stopServing();
        continue;
      }
      break; // from here to the ring nothing awaits: the pool and its loops are the ones checked
    }
    const ctx = this.ctx!, W = this.world, pool = this.pool!;
    const idxBuf = this.idxBuf.buffer as SharedArrayBuffer;
    const { bell, control: c } = this.views!;
    const sv = (this.serving ??= newServing(ds, idxBuf, fixed, W, bell));
    const prev = this.inflight.at(-1);
    if (!prev) {
      // Nothing in flight: every rank is idle, so the control words can start afresh.
      this.barrierCount = 0;
      Atomics.store(c, CONTROL.BARRIER, 0);
      Atomics.store(c, CONTROL.BN, 0);
      for (let r = 0; r < W; r++) {
        Atomics.store(c, CONTROL.STAGE + r, 0);
        Atomics.store(c, CONTROL.arrivedAt(W) + r, 0);
        Atomics.store(c, CONTROL.stepOf(W) + r, 0);
      }
    }
    const step = (prev ? prev.step : this._step) + 1;
    const seq = ++this.seq, p = seq & 1;
    const desc = this.views!.desc[p];
    const idxAt = p * this.idxHalf;
    if (indices) this.idxBuf.set(indices, idxAt);
    const offs = this.shards(n);
    desc[STEP_DESC.STEP] = step;
    desc[STEP_DESC.ROW_START] = rowStart;
    desc[STEP_DESC.LR] = lr;
    desc[STEP_DESC.ACTIVE] = activeRanks(offs);
    desc[STEP_DESC.HAS_IDX] = indices ? 1 : 0;
    desc[STEP_DESC.BARRIER_BASE] = this.barrierCount;
    desc[STEP_DESC.START_BARRIER] = prev ? 1 : 0;
    desc[STEP_DESC.IDX_AT] = idxAt;
    for (let r = 0; r <= W; r++) desc[STEP_DESC.OFFSETS + r] = offs[r];
    this.barrierCount += (prev ? 1 : 0) + 1 + (clip > 0 ? 1 : 0);
    Atomics.store(bell, BELL.DONE + p, 0);
    const data = datasetRef(ds);
    for (let r = 0; r < W; r++) {
      const word = BELL.SEQ + r;
      if (sv.runs[r] !== null && Atomics.compareExchange(bell, word, seq - 1, seq) === seq - 1) {
        Atomics.notify(bell, word);
        continue;
      }
      // No loop for this rank, or it gave up idling (its word says EXITED): start one that runs `seq` first.
      Atomics.store(bell, word, seq);
      const run: Promise<void> = pool.run({ kind: "serve", poolId: ctx.poolId, rank: r, seen: seq - 1, data, idx: idxBuf, microBatchSize, hyper, clip, augment, idleMs: SERVE_IDLE_MS })
        .then(() => { if (sv.runs[r] === run) sv.runs[r] = null; }, (cause) => { throw { rank: r, cause }; });
      run.catch(sv.fail); // once per loop, not once per step
      sv.runs[r] = run;
    }
    const postedAt = performance.now();
    const entry: InFlight = { step, seq, postedAt, done: null! };
    entry.done = this.complete(entry, sv, n, postedAt, prev?.done ?? null).finally(() => {
      this.inflight.splice(this.inflight.indexOf(entry), 1);
    });
    entry.done.catch(() => {}); // the caller handles it; an unawaited step must not crash the process
    this.inflight.push(entry);
    return { done: entry.done };
  }

  /** Ranks that counted themselves done with command `seq` (all of them: it completed). */
  private doneCount(seq: number): number {
    return Atomics.load(this.views!.bell, BELL.DONE + (seq & 1));
  }

  /**
   * Waits for a posted step, reads its result rows, records it. A step posted behind another
   * waits for that one first: it cannot start before, so its deadline starts then.
   */
  private async complete(f: InFlight, sv: Serving, n: number, postedAt: number, prev: Promise<StepOutcome> | null): Promise<StepOutcome> {
    const W = this.world, p = f.seq & 1, { bell, results: out } = this.views!;
    if (prev) await prev.catch(() => {});
    const deadline = performance.now() + this.timeoutMs;
    try {
      for (;;) {
        if (sv.failure || sv.error) throw sv.failure?.error; // a failed step before this one: its error is thrown below
        const v = Atomics.load(bell, BELL.DONE + p);
        if (v >= W) break;
        const left = deadline - performance.now();
        if (left <= 0) throw { timeout: true };
        const w = waitAsync(bell, BELL.DONE + p, v, left);
        if (w.async) await w.value;
      }
    } catch (e) {
      // A later step's failure wakes this one too: if it completed, it stands.
      if (this.doneCount(f.seq) < W) {
        if (!sv.error) {
          // The step named is the oldest one in flight that did not complete; the step behind it never started.
          const failed = this.inflight.find((g) => this.doneCount(g.seq) < W) ?? f;
          const pending: number[] = [];
          for (let r = 0; r < W; r++) if (out[((failed.seq & 1) * W + r) * STEP_RESULT.size + STEP_RESULT.STEP] !== failed.step) pending.push(r);
          sv.error = this.failure(e, "grad", failed.step, false, pending, this.timeoutMs);
        }
        throw await sv.error;
      }
    }
    const now = performance.now();
    const wallMs = now - (prev ? Math.max(postedAt, this.lastDoneAt) : postedAt);
    this.lastDoneAt = now;
    this._step = f.step;
    this.adaptTimeout(wallMs);
    // One pass over the ranks' result rows (rank order): sums, and the max of each per-rank time.
    let loss = 0, counted = 0, computeMs = 0, gatherMs = 0, reduceMs = 0, optMs = 0, waitMs = 0, stepMs = 0, fwdMs = 0, updMs = 0;
    const rankComputeMs: number[] = [];
    for (let r = 0; r < W; r++) {
      const o = (p * W + r) * STEP_RESULT.size, R = STEP_RESULT;
      loss += out[o + R.LOSS_SUM];
      counted += out[o + R.COUNTED];
      rankComputeMs.push(out[o + R.COMPUTE_MS]);
      computeMs = Math.max(computeMs, out[o + R.COMPUTE_MS]);
      gatherMs = Math.max(gatherMs, out[o + R.GATHER_MS]);
      reduceMs = Math.max(reduceMs, out[o + R.REDUCE_MS]);
      optMs = Math.max(optMs, out[o + R.OPT_MS]);
      waitMs = Math.max(waitMs, out[o + R.WAIT_MS]);
      stepMs = Math.max(stepMs, out[o + R.STEP_MS]);
      fwdMs = Math.max(fwdMs, out[o + R.GATHER_MS] + out[o + R.COMPUTE_MS]);
      updMs = Math.max(updMs, out[o + R.REDUCE_MS] + out[o + R.OPT_MS]);
    }
    if (this.hosts > 1) {
      // Rank 0 combined the hosts: its row holds the loss over all of them.
      loss = out[p * W * STEP_RESULT.size + STEP_RESULT.HOSTS_LOSS_SUM];
      counted = out[p * W * STEP_RESULT.size + STEP_RESULT.HOSTS_COUNTED];
    }
    loss /= counted;
    const stats: StepStats = {
      step: f.step, loss, rows: n, wallMs, computeMs, rankComputeMs, gatherMs, reduceMs, optMs,
      waitMs, dispatchMs: Math.max(0, wallMs - stepMs), syncMs: Math.max(0, wallMs - fwdMs - updMs), overheadMs: wallMs - computeMs,
      gradNorm: this.clip !== undefined ? out[p * W * STEP_RESULT.size + STEP_RESULT.GRAD_NORM] : undefined,
      hostsMs: this.hosts > 1 ? out[p * W * STEP_RESULT.size + STEP_RESULT.HOSTS_MS] : undefined,
      hostsExposedMs: this.hosts > 1 ? out[p * W * STEP_RESULT.size + STEP_RESULT.HOSTS_EXPOSED_MS] : undefined,
    };
    this.lastStats = stats;
    return { step: f.step, loss, stats, stop: this.hosts > 1 ? out[p * W * STEP_RESULT.size + STEP_RESULT.HOSTS_STOP] > 0 : undefined };
  }

  /** Ends the ranks' step loops (between steps), so the threads take other tasks; bounded wait. */
  private async stopServing(): Promise<void> {
    const sv = this.serving;
    if (!sv) return;
    this.serving = null;
    const bell = this.views!.bell;
    for (let r = 0; r < this.world; r++) {
      Atomics.store(bell, BELL.SEQ + r, BELL.STOP);
      Atomics.notify(bell, BELL.SEQ + r);
    }
    let timer: NodeJS.Timeout | undefined;
    const stopped = await Promise.race([
      Promise.all(sv.runs.map((p) => p?.catch(() => {}))).then(() => true),
      new Promise<false>((resolve) => { timer = setTimeout(() => resolve(false), 10_000); }),
    ]);
    clearTimeout(timer);
    if (!stopped) await this.destroyPool(); // cannot happen between steps; never hang on it
  }

  /**
   * After step `step` failed before any rank updated a parameter (all threads stopped): puts the
   * model buffers back as the step found them. Rank 0 may already have averaged the ranks'
   * running statistics into them; without this a retried step would start from those, and end
   * with parameters bit-identical to an uninterrupted run's but running statistics that differ.
   */
  private restoreStepBuffers(step: number): void {
    // Rank 0 says it entered this step only after keeping the buffers; before that they are untouched.
    if (this.stepBufs.length > 0 && Atomics.load(this.views!.control, CONTROL.stepOf(this.world)) === step) this.bufs.set(this.stepBufs);
  }

  /** After step `step` failed: did any rank start updating parameters in it (its stage reached update, or it went on to a later step)? */
  private anyRankUpdating(step: number): boolean {
    const c = this.views!.control, W = this.world;
    for (let r = 0; r < W; r++) {
      const at = Atomics.load(c, CONTROL.stepOf(W) + r);
      if (at > step || (at === step && Atomics.load(c, CONTROL.STAGE + r) >= STAGE_UPDATE)) return true;
    }
    return false;
  }

  /** The phase rank r was in when the step failed. */
  private stageOf(r: number): Phase {
    const st = Atomics.load(this.views!.control, CONTROL.STAGE + r);
    return st <= STAGE_GRAD ? "grad" : st < STAGE_UPDATE ? "reduce" : "update";
  }

  /**
   * Of the ranks still running when a step failed, those that had not reached the barrier the
   * others were waiting at (the ones that hung); all of them when none was waiting.
   */
  private laggards(pending: number[]): number[] {
    const c = this.views!.control, at = CONTROL.arrivedAt(this.world);
    let most = 0;
    for (let r = 0; r < this.world; r++) most = Math.max(most, Atomics.load(c, at + r));
    const behind = pending.filter((r) => Atomics.load(c, at + r) < most);
    return behind.length > 0 ? behind : pending.length > 0 ? pending : Array.from({ length: this.world }, (_, r) => r);
  }

  /** The batch's dataset and rows (indices checked, not yet copied). */
  private resolveBatch(batch: Batch): ResolvedBatch {
    if ("inputs" in batch) return { ds: batch, indices: null, n: batch.length, rowStart: 0 };
    const ds = batch.dataset;
    if ("indices" in batch) {
      const ix = batch.indices, n = ix.length;
      for (let i = 0; i < n; i++) {
        const v = ix[i];
        if (!Number.isInteger(v) || v < 0 || v >= ds.length) throw new ParallelError(`step: batch index ${v} at position ${i} is out of range [0, ${ds.length})`);
      }
      return { ds, indices: ix, n, rowStart: 0 };
    }
    const { start, end } = batch;
    if (!(Number.isInteger(start) && Number.isInteger(end) && 0 <= start && start <= end && end <= ds.length)) {
      throw new ParallelError(`step: rows [${start}, ${end}) are not inside [0, ${ds.length})`);
    }
    return { ds, indices: null, n: end - start, rowStart: start };
  }

  /**
   * This host's shard offsets (world + 1) of a batch of n rows: the batch split over hosts × workers
   * ranks as it is over workers on one host, host h taking ranks h·world .. (h+1)·world − 1.
   */
  private shards(n: number): number[] {
    if (this.hosts === 1) return shardOffsets(n, this.world);
    return shardOffsets(n, this.hosts * this.world).slice(this.hostRank * this.world, (this.hostRank + 1) * this.world + 1);
  }

  /** Builds the one replica of a one-worker DataParallel in this thread (no pool). */
  private async buildInline(): Promise<void> {
    // A communicator object is used by this thread; MPI by the exchange thread.
    const built = await Replica.build(this.ctx!, this.opts.hosts === "mpi" ? null : this.comm);
    if (!(built instanceof Replica)) throw new LayoutMismatchError(`init: the replica built a model whose layout differs from the main model's: ${built.mismatch}`);
    this.inline = built;
  }

  /** One step by the inline replica: the same code a worker's step loop runs, with one rank. */
  private stepInline(rep: Replica, b: ResolvedBatch, hyper: OptimizerHyper, augment: StepTask["augment"]): StepOutcome {
    const step = this._step + 1, t0 = performance.now(), offs = this.shards(b.n);
    const idx = b.indices === null ? null : b.indices instanceof Int32Array ? b.indices : Int32Array.from(b.indices);
    let r: StepResult;
    try {
      r = rep.step({
        rank: 0, step, seq: step, idx, barrierBase: 0, startBarrier: false, start: offs[0], end: offs[1], rowStart: b.rowStart,
        microBatchSize: this.microBatchSize, hyper, clip: this.clip ?? 0, active: activeRanks(offs), augment,
      }, this.localViewsOf(b.ds));
    } catch (e) {
      const phase = this.stageOf(0);
      if (phase !== "update") this.restoreStepBuffers(step);
      const err = workerFailed(0, step, phase, phase === "update", e);
      if (this.hosts > 1) this.hostsBroken = { step, message: err.message };
      throw err;
    }
    const wallMs = performance.now() - t0;
    this._step = step;
    this.lastDoneAt = performance.now();
    this.adaptTimeout(wallMs); // with hosts, the bound on waiting for the exchange
    const loss = r.hostsCounted !== undefined ? r.hostsLossSum! / r.hostsCounted : r.lossSum / r.counted;
    const stats: StepStats = {
      step, loss, rows: b.n, wallMs, computeMs: r.computeMs, rankComputeMs: [r.computeMs], gatherMs: r.gatherMs, reduceMs: r.reduceMs, optMs: r.optMs,
      waitMs: 0, dispatchMs: 0, syncMs: Math.max(0, wallMs - r.gatherMs - r.computeMs - r.reduceMs - r.optMs), overheadMs: wallMs - r.computeMs,
      gradNorm: this.clip !== undefined ? r.gradNorm : undefined,
      hostsMs: r.hostsMs,
      hostsExposedMs: r.hostsExposedMs,
    };
    this.lastStats = stats;
    return { step, loss, stats, stop: r.hostsStop };
  }

  /** The inline replica's views of a dataset (made once per dataset). */
  private localViewsOf(ds: Dataset): DatasetViews {
    let v = this.views1.get(ds);
    if (!v) this.views1.set(ds, (v = localViews(ds)));
    return v;
  }

  /** The dataset on shared memory, for the worker threads (copied once when it is not). */
  private forThreads(ds: Dataset): Dataset {
    if (isShared(ds)) return ds;
    let s = this.sharedCopies.get(ds);
    if (!s) this.sharedCopies.set(ds, (s = toShared(ds)));
    return s;
  }
}

/** Ranks whose shard has rows (the first ones: shards only get smaller). */
function activeRanks(offs: number[]): number {
  let n = 0;
  while (n + 1 < offs.length && offs[n + 1] > offs[n]) n++;
  return n;
}

interface ResolvedBatch { ds: Dataset; indices: ArrayLike<number> | null; n: number; rowStart: number }
