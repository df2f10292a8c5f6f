/**
 * One rank of a data-parallel step, the same code wherever it runs: inside a worker thread
 * (worker.ts, one rank per thread) or inline in the calling thread (DataParallel with one worker).
 *
 * A replica is a model built from the job's description and bound to the shared memory: its
 * parameters are views of the one flat parameter array, its gradients views of its rank's slot.
 * A step, in named phases:
 *   enter           stage words, the start barrier (a step rung while the last ran), bindings
 *   computeGradient gather the shard's rows, augment, seed dropout, forward + backward per
 *                   micro-batch into this rank's slot (mean over its counted targets)
 *   (exchange)      counts and loss into the exchange, the gradient barrier; rank 0 then
 *                   settles the batch-norm buffers
 *   reduceAndUpdate reduce this rank's chunk over all slots (weights counted_k / Σ counted) and
 *                   update it with the optimizer (ZeRO-1); with clipping, a second barrier for
 *                   the global norm first
 * With several hosts, each parameter's gradient is counted ready as backward finishes it, the
 * host exchange (host-exchange.ts) reduces and combines it with the other hosts' bucket by bucket
 * meanwhile, and reduceAndUpdate waits for the exchange instead of reducing.
 */
import { existsSync, writeFileSync } from "node:fs";
import { BufferArena, Tensor, augmentRows, manualSeed, nn, noGrad, optim } from "@chainrule/core";
import { type SimdKernels, markGradsStale, registerSimdMemory, setLeafGradHook, zeroStaleGrads } from "@chainrule/core/internal";
import { CONTROL, type DatasetViews, HOSTX, HOST_TOTALS, STAGE_DONE, gradientSlots, waitBoundMs, STAGE_GRAD, STAGE_REDUCE, STAGE_UPDATE, mixSeed } from "./layout.js";
import { type LossFn, buildModel, layoutDiff, resolveLoss } from "./spec.js";
import type { Communicator } from "./mpi.js";
import { HostExchange, type HostSyncViews, exchangeFailure, hostSyncViews } from "./host-exchange.js";
import { reduceRange, sumOfSquares } from "./reduce.js";
import { SharedBatchNorm } from "./sync-batch-norm.js";
import type { OptimizerHyper, StepResult, StepTask, WorkerContext } from "./types.js";

const { adagradUpdate, adamUpdate, rmspropUpdate, sgdUpdate, scaleInPlace } = optim;

/** Floats per block of the fused reduce + update (6 arrays × 8 KiB stay in L2). */
const FUSED_BLOCK = 2048;

/** Built-in losses that take float targets (Int32 targets are converted for them); others get class indices as an Int32Array. */
const FLOAT_TARGET_LOSSES = new Set(["mseLoss", "l1Loss", "binaryCrossEntropyWithLogits", "binaryCrossEntropy"]);

/** Gathered rows of a shard. */
interface Scratch { xScratch: Float32Array; yScratch: Float32Array | Int32Array }

const newScratch = (): Scratch => ({ xScratch: new Float32Array(0), yScratch: new Float32Array(0) });

/** What evaluating a range of rows adds up to. */
export interface EvalSums { lossSum: number; correct: number; hasAccuracy: boolean; counted: number }

/** A barrier wait that ran out of time: names the ranks that had not arrived. */
export class BarrierTimeout extends Error {
  constructor(message: string, readonly missing: number[]) {
    super(message);
    this.name = "BarrierTimeout";
  }
}

export class Replica {
  /** The parameters that take gradients (fixed at build: the main thread's requiresGrad, checked). */
  private readonly trainable: nn.Parameter[];
  private readonly params: nn.Parameter[];
  private readonly flat: Float32Array;
  /** The mean gradient (reduce output). */
  private readonly grad: Float32Array;
  private readonly slots: Float32Array[];
  private readonly opt: Float32Array[];
  /** Bytes between consecutive slots / optimizer buffers. */
  private readonly region: number;
  /** Core's WebAssembly SIMD kernels over the shared memory (null: JS loops). */
  private readonly simd: SimdKernels | null;
  private readonly control: Int32Array;
  private readonly exchange: Float64Array;
  /** Gradient views per rank (one per parameter), made on first use. */
  private readonly gradViews = new Map<number, Tensor[]>();
  private boundRank = 0;
  /** This rank's row of reduce weights (a view on the shared memory) and its byte address. */
  private weights: Float64Array;
  private weightsAt = -1;
  /** Scratch rows for the steps' shards, one per command parity (the next step's rows are gathered while this step's are in use), and for evaluation. */
  private readonly gathered: [Scratch, Scratch] = [newScratch(), newScratch()];
  private readonly evalScratch = newScratch();
  /** Rows gathered ahead (while waiting at the last step's barrier): command seq, positions [a, b) of its batch. */
  private readonly prefetched = { seq: -1, a: 0, b: 0 };
  /** Augmented rows of the current micro-batch. */
  private augScratch = new Float32Array(0);
  /** The model's buffer tensors (namedBuffers order), their canonical views, and per-rank working views. */
  private readonly bufTensors: Tensor[];
  private readonly bufCanon: Float32Array[];
  private readonly bufViews = new Map<number, Float32Array[]>();
  /** -1: bound to the canonical buffers; r: to rank r's working copy. */
  private bufBound = -1;
  /** Synchronised batch norm (null: per-worker statistics). */
  private readonly bnSync: SharedBatchNorm | null;
  /** Reuses activation buffers from one micro-batch to the next (no per-step garbage for V8 to collect). */
  private readonly arena = new BufferArena();
  /** With hosts: the exchange's shared words, and the exchange itself when this thread runs it (a communicator object). */
  private readonly hostSync: HostSyncViews | null;
  private readonly inlineExchange: HostExchange | null;
  /** With hosts: layout index of each trainable parameter, its bucket, whether this rank counted it ready this step. */
  private readonly paramIndex = new Map<Tensor, number>();
  private readonly bucketOf: Int32Array;
  private readonly counted: Uint8Array;
  /** DONE as this rank entered the step (the exchange makes it one more when the step's is complete). */
  private doneTicket = 0;
  private readonly countReady = (leaf: Tensor) => {
    const i = this.paramIndex.get(leaf);
    if (i !== undefined) this.countParam(i);
  };
  /**
   * Test hook: "update:<rank>:<step>" makes that rank throw as it starts updating parameters,
   * "reduce:<rank>:<step>" as it starts reducing (after the gradient barrier, before any update);
   * with CHAINRULE_PARALLEL_INJECT_ONCE=FILE only while FILE does not exist (the throw creates it).
   */
  private readonly injectFailure = process.env.CHAINRULE_PARALLEL_INJECT_FAILURE;
  private readonly injectOnce = process.env.CHAINRULE_PARALLEL_INJECT_ONCE;

  private constructor(
    readonly ctx: WorkerContext,
    readonly model: nn.Module,
    private readonly loss: { fn: LossFn; name: string; ignoreIndex: number | null },
    hosts: Communicator | null,
  ) {
    const P = ctx.numParams, buf = ctx.memory.buffer;
    this.region = Math.ceil((P * 4) / 64) * 64;
    this.flat = new Float32Array(buf, ctx.paramsAt, P);
    this.grad = new Float32Array(buf, ctx.gradAt, P);
    this.slots = gradientSlots(ctx, this.grad);
    this.opt = ctx.optBuffers.map((_, i) => new Float32Array(ctx.optMemory ?? buf, ctx.optAt + i * this.region, P));
    // Bind to the shared parameters (no copy); gradients go to slot 0 until a rank is bound.
    nn.flattenParameters(model, { dataBuffer: this.flat, gradBuffer: this.slots[0], copyValues: false });
    this.params = model.parameters();
    this.trainable = this.params.filter((p) => p.requiresGrad);
    this.simd = registerSimdMemory(ctx.memory);
    this.control = new Int32Array(ctx.control);
    this.exchange = new Float64Array(ctx.exchange);
    this.weights = new Float64Array(ctx.world);
    const B = ctx.buffers.reduce((a, b) => a + b.size, 0);
    this.bufCanon = this.cutBuffers(new Float32Array(buf, ctx.buffersAt, B));
    this.bufTensors = model.namedBuffers().map(([, t]) => t);
    this.bufTensors.forEach((t, i) => (t.data = this.bufCanon[i]));
    this.bnSync = ctx.syncBatchNorm ? new SharedBatchNorm(ctx) : null;
    if (this.bnSync) for (const [, m] of model.namedModules()) if (m instanceof nn.BatchNorm2d) m.sync = this.bnSync;
    this.hostSync = ctx.hosts > 1 ? hostSyncViews(ctx) : null;
    this.inlineExchange = ctx.hosts > 1 && hosts !== null ? new HostExchange(ctx, hosts) : null;
    this.bucketOf = new Int32Array(this.params.length).fill(-1);
    ctx.buckets.forEach((b, k) => b.params.forEach((i) => (this.bucketOf[i] = k)));
    this.params.forEach((p, i) => this.bucketOf[i] >= 0 && this.paramIndex.set(p, i));
    this.counted = new Uint8Array(this.params.length);
  }

  /** Builds the model described by `ctx` and binds it to the shared memory, or says how its layout differs from the main thread's. */
  static async build(ctx: WorkerContext, hosts: Communicator | null = null): Promise<Replica | { mismatch: string; layout: nn.ParamLayoutEntry[] }> {
    const model = await buildModel(ctx.model, ctx.seed);
    const layout = nn.paramLayout(model);
    const mismatch = layoutDiff(ctx.layout, layout) ?? trainableDiff(ctx, model) ?? buffersDiff(ctx, model);
    if (mismatch) return { mismatch, layout };
    // `hosts`: a communicator object this thread exchanges through; with MPI, the exchange thread does.
    return new Replica(ctx, model, await resolveLoss(ctx.loss), ctx.hosts > 1 ? hosts : null);
  }

  /** This rank's share of one optimizer step (see the file comment); `prefetchNext` runs while this rank waits at the gradient barrier. */
  step(t: StepTask, d: DatasetViews, prefetchNext: (() => void) | null = null): StepResult {
    const meet = this.barriers(t);
    this.enter(t, meet);
    const g = this.computeGradient(t, d);
    this.exchange[3 * t.rank + 1] = g.lossSum;
    meet("1", prefetchNext); // a rank that arrives first gathers the next step's rows meanwhile, if it was rung
    if (t.rank === 0) this.settleBuffers(t.active);
    const u = this.reduceAndUpdate(t, meet);
    Atomics.store(this.control, CONTROL.STAGE + t.rank, STAGE_DONE);
    let all = {};
    if (this.hostSync !== null && t.rank === 0) {
      const h = this.hostSync.totals;
      all = { hostsCounted: h[HOST_TOTALS.COUNTED], hostsLossSum: h[HOST_TOTALS.LOSS_SUM], hostsMs: h[HOST_TOTALS.MS], hostsStop: h[HOST_TOTALS.STOP] > 0, hostsExposedMs: u.exposedMs };
    }
    return { rank: t.rank, rows: t.end - t.start, counted: g.counted, lossSum: g.lossSum, gatherMs: g.gatherMs, computeMs: g.computeMs, waitMs: meet.waitMs, reduceMs: u.reduceMs, optMs: u.optMs, gradNorm: u.gradNorm, ...all };
  }

  /** Gathers the rows of batch positions [a, b) of command `seq` ahead of its step (they are in the scratch of its parity). */
  prefetch(seq: number, d: DatasetViews, idx: Int32Array, rowStart: number, a: number, b: number): void {
    rows(this.gathered[seq & 1], d, idx, rowStart, a, b);
    this.prefetched.seq = seq;
    this.prefetched.a = a;
    this.prefetched.b = b;
  }

  /**
   * Σ loss·counted and correct predictions over batch positions [start, end) (contiguous rows from
   * rowStart, or the rows at idx), no graph, eval mode, with the canonical buffers.
   */
  evaluate(d: DatasetViews, idx: Int32Array | null, rowStart: number, start: number, end: number, batchSize: number): EvalSums {
    this.bindBuffers(-1);
    const { fn, name, ignoreIndex } = this.loss;
    let lossSum = 0, correct = 0, hasAccuracy = false, counted = 0;
    const model = this.model;
    model.eval();
    try {
      noGrad(() => {
        for (let a = start; a < end; a += batchSize) this.inArena(() => {
          const b = Math.min(a + batchSize, end), m = b - a;
          const { x, y } = rows(this.evalScratch, d, idx, rowStart, a, b);
          const out = model.forward(new Tensor(x, [m, ...d.xShape]));
          const cm = ignoreIndex === null ? m : countedTargets(ignoreIndex, d, idx, rowStart, a, b);
          counted += cm;
          if (cm > 0) lossSum += fn(out, this.target(d, y, m)).item() * cm; // a mean over cm targets
          const C = out.size / m;
          if (y instanceof Int32Array && C > 1 && d.yRow === 1) {
            hasAccuracy = true;
            for (let i = 0; i < m; i++) {
              if (y[i] === ignoreIndex) continue;
              let best = 0;
              for (let c = 1; c < C; c++) if (out.data[i * C + c] > out.data[i * C + best]) best = c;
              if (best === y[i]) correct++;
            }
          } else if ((name === "binaryCrossEntropyWithLogits" || name === "binaryCrossEntropy") && out.size === y.length) {
            hasAccuracy = true;
            const th = name === "binaryCrossEntropy" ? 0.5 : 0;
            let hits = 0;
            for (let i = 0; i < y.length; i++) if ((out.data[i] > th) === (y[i] > 0.5)) hits++;
            correct += hits / d.yRow;
          }
        });
      });
    } finally {
      model.train();
    }
    return { lossSum, correct, hasAccuracy, counted };
  }

  // ---- the phases of a step ----

  /** The step's barriers, numbered on from the step's base; with one rank there is nobody to wait for. */
  private barriers(t: StepTask): ((label: string, whileWaiting?: (() => void) | null) => void) & { waitMs: number } {
    const { world } = this.ctx, bound = waitBoundMs(this.control);
    let n = t.barrierBase;
    const meet = (label: string, whileWaiting: (() => void) | null = null) => {
      if (world > 1) meet.waitMs += barrier(this.control, world, t.rank, ++n, label, t.step, bound, whileWaiting);
    };
    meet.waitMs = 0;
    return meet;
  }

  private enter(t: StepTask, meet: (label: string) => void): void {
    const c = this.control, { world } = this.ctx;
    // Before stepOf says this step: the main thread trusts the copy only once it does.
    if (t.rank === 0) this.keepStepBuffers();
    Atomics.store(c, CONTROL.stepOf(world) + t.rank, t.step);
    Atomics.store(c, CONTROL.STAGE + t.rank, STAGE_GRAD);
    // Rung while the step before still ran: every rank must have updated its chunk before any reads the parameters.
    if (t.startBarrier) meet("start");
    this.bindRank(t.rank);
    this.bindBuffers(t.rank);
    this.model.train();
    // This rank's slot still holds its last gradient: the first gradient this step writes into each
    // parameter's view overwrites it, and what no backward reaches is zeroed below. Cheaper than
    // zeroing the slots after the reduce (a write pass over P floats, and backward's GEMMs read them).
    markGradsStale(this.trainable);
  }

  /** Forward and backward over this rank's shard, micro-batch by micro-batch, into its slot. */
  private computeGradient(t: StepTask, d: DatasetViews): { counted: number; lossSum: number; gatherMs: number; computeMs: number } {
    const { ignoreIndex } = this.loss, seed = this.ctx.seed;
    const n = t.end - t.start, mb = t.microBatchSize > 0 ? t.microBatchSize : n;
    const scratch = this.gathered[t.seq & 1], pre = this.prefetched;
    // The slot holds this shard's mean gradient over its counted targets: each micro-batch's
    // mean loss is weighted by its share of them. Counting needs the targets first.
    const counted = ignoreIndex === null ? n : countedTargets(ignoreIndex, d, t.idx, t.rowStart, t.start, t.end);
    this.exchange[3 * t.rank] = counted; // the reduce weights this rank's slot by counted / Σ counted
    if (this.hostSync !== null) this.enterExchange(t);
    this.bnSync?.begin(t.rank, t.active, t.step, counted);
    const aug = t.augment;
    if (aug && aug.shape[0] * aug.shape[1] * aug.shape[2] !== d.xRow) throw new Error(`augment: image shape [${aug.shape}] does not match rows of ${d.xRow} values`);
    let lossSum = 0, gatherMs = 0, computeMs = 0;
    for (let a = t.start; a < t.end; a += mb) {
      const b = Math.min(a + mb, t.end), m = b - a;
      const g0 = performance.now();
      const ready = pre.seq === t.seq && pre.a === a && pre.b === b; // gathered while this rank waited at the last step's barrier
      if (ready) pre.seq = -1;
      let { x: xs, y } = rows(scratch, d, t.idx, t.rowStart, a, b, !ready);
      if (aug) {
        // Seeded by (seed, step, position in the global batch): the same whatever the number of workers.
        if (this.augScratch.length < m * d.xRow) this.augScratch = new Float32Array(m * d.xRow);
        xs = augmentRows(xs, this.augScratch, m, aug.shape, { crop: aug.crop, flip: aug.flip }, seed, t.step, a);
      }
      const g1 = performance.now();
      const cm = ignoreIndex === null ? m : countedTargets(ignoreIndex, d, t.idx, t.rowStart, a, b);
      if (cm === 0 && this.bnSync && m > 0) throw new Error(`step ${t.step}: syncBatchNorm needs counted targets in every non-empty shard (rows ${a}..${b} are all ignoreIndex)`);
      if (cm > 0) {
        manualSeed(mixSeed(seed, t.step, a)); // dropout masks: fixed by step and batch position
        // The last micro-batch's backward finishes gradients: with hosts, each is counted ready as it is.
        const hook = this.hostSync !== null && b === t.end;
        lossSum += this.inArena(() => {
          const out = this.model.forward(new Tensor(xs, [m, ...d.xShape]));
          const loss = this.loss.fn(out, this.target(d, y, m));
          if (hook) setLeafGradHook(this.countReady);
          try {
            if (cm === counted) loss.backward();
            else loss.backward(new Float32Array([cm / counted]));
          } finally {
            if (hook) setLeafGradHook(null);
          }
          return loss.item() * cm;
        });
      }
      gatherMs += g1 - g0;
      computeMs += performance.now() - g1;
    }
    zeroStaleGrads(this.trainable); // parameters no gradient reached (unused in the forward, or an empty shard)
    if (this.hostSync !== null) for (let i = 0; i < this.params.length; i++) if (this.bucketOf[i] >= 0) this.countParam(i);
    return { counted, lossSum, gatherMs, computeMs };
  }

  /** With hosts, at the start of computing: this step's counts begin, and the exchange may start once every rank entered. */
  private enterExchange(t: StepTask): void {
    const { sync, totals } = this.hostSync!;
    if (t.rank === 0) totals[HOST_TOTALS.ACTIVE] = t.active;
    this.counted.fill(0);
    this.doneTicket = Atomics.load(sync, HOSTX.DONE);
    Atomics.add(sync, HOSTX.ENTERED, 1);
    Atomics.notify(sync, HOSTX.ENTERED);
  }

  /** Counts parameter i's gradient final on this rank (once a step), zeroed first if no backward wrote it. */
  private countParam(i: number): void {
    if (this.counted[i] !== 0) return;
    this.counted[i] = 1;
    const p = this.params[i];
    zeroStaleGrads([p]);
    const b = this.bucketOf[i], sync = this.hostSync!.sync;
    if (Atomics.add(sync, HOSTX.READY + b, 1) + 1 === this.ctx.buckets[b].params.length * this.ctx.world) Atomics.notify(sync, HOSTX.READY + b);
  }

  /** With hosts: waits (bounded) until the exchange has completed this step; returns the ms waited. */
  private awaitExchange(t: StepTask): number {
    const { sync } = this.hostSync!, t0 = performance.now(), bound = waitBoundMs(this.control), deadline = t0 + bound;
    this.inlineExchange?.runStep();
    for (let v = Atomics.load(sync, HOSTX.DONE); v === this.doneTicket; v = Atomics.load(sync, HOSTX.DONE)) {
      if (Atomics.load(sync, HOSTX.FAILED) !== 0) break;
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`step ${t.step}: the exchange with the other hosts did not complete within ${bound} ms`);
      Atomics.wait(sync, HOSTX.DONE, v, Math.min(left, 1000));
    }
    if (Atomics.load(sync, HOSTX.FAILED) !== 0) throw new Error(`step ${t.step}: ${exchangeFailure(this.hostSync!)}`);
    return performance.now() - t0;
  }

  /** Rank 0, after the gradient barrier: resets the batch-norm exchange and averages the ranks' buffers into the canonical copy. */
  private settleBuffers(active: number): void {
    // No rank is in a batch-norm exchange of this step any more, and none can start the next step's before rank 0 arrives at a later barrier.
    Atomics.store(this.control, CONTROL.BN, 0);
    if (this.bufTensors.length > 0 && active > 0) this.averageBuffers(active); // a host without rows this step keeps its buffers
    if (this.hostSync !== null) {
      Atomics.add(this.hostSync.sync, HOSTX.SETTLED, 1); // the exchange sends the buffers next
      Atomics.notify(this.hostSync.sync, HOSTX.SETTLED);
    }
  }

  /** Reduce-scatter of this rank's chunk over all slots in rank order, then the optimizer on it. */
  private reduceAndUpdate(t: StepTask, meet: (label: string) => void): { reduceMs: number; optMs: number; gradNorm: number; exposedMs: number } {
    const r = t.rank, x = this.exchange, { world, segments } = this.ctx;
    Atomics.store(this.control, CONTROL.STAGE + r, STAGE_REDUCE);
    this.injectFailureAt("reduce", r, t.step);
    const t0 = performance.now();
    let total = 0;
    for (let k = 0; k < world; k++) total += x[3 * k];
    const w = this.weightsRow(r);
    for (let k = 0; k < world; k++) w[k] = total > 0 ? x[3 * k] / total : 0;
    const seg = segments[r], h = t.hyper;
    let reduceMs = 0, optMs = 0, gradNorm = 0, exposedMs = 0;
    const hosts = this.hostSync !== null;
    if (hosts) reduceMs = exposedMs = this.awaitExchange(t); // the exchange reduced and combined the gradient
    if (t.clip <= 0 && (hosts || this.slots[0] === this.grad)) {
      // Reduced already (hosts), or one rank: its slot is the mean gradient, nothing to reduce.
      this.beginUpdate(r, t.step);
      const t2 = performance.now();
      for (let i = 0; i < seg.length; i += 2) this.update(h, seg[i], seg[i + 1], t.step);
      return { reduceMs, optMs: performance.now() - t2, gradNorm, exposedMs };
    }
    if (t.clip <= 0) {
      // Reduce and update block by block, so each block's slots, mean gradient and optimizer
      // state are still in cache when the update reads them (one pass over memory, not two).
      this.beginUpdate(r, t.step); // parameters change from the first block on
      for (let i = 0; i < seg.length; i += 2) {
        for (let a = seg[i], end = seg[i + 1]; a < end; a += FUSED_BLOCK) {
          const b = Math.min(a + FUSED_BLOCK, end);
          const t1 = performance.now();
          this.reduce(w, a, b, false);
          const t2 = performance.now();
          this.update(h, a, b, t.step);
          optMs += performance.now() - t2;
          reduceMs += t2 - t1;
        }
      }
      return { reduceMs, optMs, gradNorm, exposedMs };
    }
    // Clipping needs the global norm before any update: reduce the whole chunk, meet, scale, update.
    let ss = 0;
    for (let i = 0; i < seg.length; i += 2) ss += hosts ? sumOfSquares(this.grad, seg[i], seg[i + 1]) : this.reduce(w, seg[i], seg[i + 1], true);
    reduceMs = performance.now() - t0;
    x[3 * r + 2] = ss;
    meet("2");
    const t1 = performance.now();
    let tot = 0;
    for (let k = 0; k < world; k++) tot += x[3 * k + 2]; // rank order: every rank computes the same norm
    gradNorm = Math.sqrt(tot);
    const coef = t.clip / (gradNorm + 1e-6);
    if (coef < 1) for (let i = 0; i < seg.length; i += 2) scaleInPlace(this.grad, coef, seg[i], seg[i + 1]);
    reduceMs += performance.now() - t1;
    this.beginUpdate(r, t.step);
    const t2 = performance.now();
    for (let i = 0; i < seg.length; i += 2) this.update(h, seg[i], seg[i + 1], t.step);
    optMs = performance.now() - t2;
    return { reduceMs, optMs, gradNorm, exposedMs };
  }

  // ---- helpers of the phases ----

  private inArena<T>(fn: () => T): T {
    return this.ctx.reuseActivations ? this.arena.run(fn) : fn();
  }

  private target(d: DatasetViews, y: Float32Array | Int32Array, m: number): Tensor | Int32Array {
    if (y instanceof Int32Array && !FLOAT_TARGET_LOSSES.has(this.loss.name)) return y;
    return new Tensor(y instanceof Float32Array ? y : Float32Array.from(y), [m, ...d.yShape]);
  }

  private bindRank(rank: number): void {
    if (this.boundRank === rank) return;
    let views = this.gradViews.get(rank);
    if (!views) {
      const slot = this.slots[rank];
      views = nn.paramLayout(this.model).map((e) => new Tensor(slot.subarray(e.offset, e.offset + e.size), e.shape));
      this.gradViews.set(rank, views);
    }
    this.params.forEach((p, i) => (p.grad = views![i]));
    this.boundRank = rank;
  }

  /** Splits a concatenation of the model's buffers into one view per buffer. */
  private cutBuffers(base: Float32Array): Float32Array[] {
    let at = 0;
    return this.ctx.buffers.map((b) => base.subarray(at, (at += b.size)));
  }

  /** Rank r's working copy of the buffers (views into its slot; this thread may not have run rank r); slot `world`: see keepStepBuffers. */
  private bufferSlot(rank: number): Float32Array[] {
    let views = this.bufViews.get(rank);
    if (!views) {
      const B = this.ctx.buffers.reduce((a, b) => a + b.size, 0), bregion = Math.ceil((B * 4) / 64) * 64;
      views = this.cutBuffers(new Float32Array(this.ctx.memory.buffer, this.ctx.bufSlotsAt + rank * bregion, B));
      this.bufViews.set(rank, views);
    }
    return views;
  }

  /**
   * Rank 0, entering a step: copies the canonical buffers into slot `world`, as the step finds
   * them. Rank 0 averages the ranks' copies into the canonical ones after the gradient barrier,
   * before any update; a step that fails in between is retried, and the main thread puts these
   * back first (DataParallel.restoreStepBuffers).
   */
  private keepStepBuffers(): void {
    if (this.bufTensors.length === 0) return;
    const kept = this.bufferSlot(this.ctx.world);
    kept.forEach((v, i) => v.set(this.bufCanon[i]));
  }

  /** Binds the model's buffers to the canonical copy (rank -1: evaluation) or to rank r's working copy, copied from the canonical one. */
  private bindBuffers(rank: number): void {
    if (this.bufTensors.length === 0) return;
    const views = rank < 0 ? this.bufCanon : this.bufferSlot(rank);
    if (rank >= 0) views.forEach((v, i) => v.set(this.bufCanon[i]));
    if (this.bufBound !== rank) {
      this.bufTensors.forEach((t, i) => (t.data = views[i]));
      this.bufBound = rank;
    }
  }

  /**
   * Sets the canonical buffers to the mean of the active ranks' working copies (float64, rank
   * order): with per-worker batch norm, the running statistics are the average of the workers'
   * (each updated with its own shard's statistics); with synchronised batch norm all copies are
   * equal and the mean is that value.
   */
  private averageBuffers(active: number): void {
    const slots = Array.from({ length: active }, (_, k) => this.bufferSlot(k));
    for (let i = 0; i < this.bufCanon.length; i++) {
      const out = this.bufCanon[i];
      if (active === 1) { out.set(slots[0][i]); continue; }
      for (let j = 0; j < out.length; j++) {
        let acc = 0;
        for (let k = 0; k < active; k++) acc += slots[k][i][j];
        out[j] = acc / active;
      }
    }
  }

  private weightsRow(r: number): Float64Array {
    const at = this.ctx.weightsAt + r * this.ctx.world * 8;
    if (this.weightsAt !== at) {
      this.weightsAt = at;
      this.weights = new Float64Array(this.ctx.memory.buffer, at, this.ctx.world);
    }
    return this.weights;
  }

  /** The reduce of [from, to): SIMD (bit-identical to reduceRange), else JS. Returns Σ grad² when `norm`. */
  private reduce(w: Float64Array, from: number, to: number, norm: boolean): number {
    const k = this.simd, W = this.slots.length, { gradAt, slotsAt } = this.ctx;
    if (this.slots[0] === this.grad) return norm ? sumOfSquares(this.grad, from, to) : 0; // one rank: the slot is the mean
    if (k === null || this.ctx.slotMemory !== null) return reduceRange(this.grad, this.slots, w, from, to, norm); // the same bits as SIMD
    const pairs = (to - from) >> 1, tail = from + 2 * pairs, o = 4 * from;
    if (W === 1) k.reduce1(gradAt + o, slotsAt + o, pairs, w[0]);
    else if (W === 2) k.reduce2(gradAt + o, slotsAt + o, slotsAt + o + this.region, pairs, w[0], w[1]);
    else k.reduceK(gradAt + o, slotsAt + o, pairs, W, this.region, this.weightsAt);
    if (tail < to) reduceRange(this.grad, this.slots, w, tail, to, false);
    return norm ? sumOfSquares(this.grad, from, to) : 0;
  }

  /** Marks rank r as updating parameters (a failure from here on reports them maybe changed); the test hook throws here. */
  private beginUpdate(r: number, step: number): void {
    Atomics.store(this.control, CONTROL.STAGE + r, STAGE_UPDATE);
    this.injectFailureAt("update", r, step);
  }

  private injectFailureAt(stage: "reduce" | "update", r: number, step: number): void {
    if (this.injectFailure === `${stage}:${r}:${step}` && !(this.injectOnce && existsSync(this.injectOnce))) {
      if (this.injectOnce) writeFileSync(this.injectOnce, "");
      throw new Error(`injected failure (CHAINRULE_PARALLEL_INJECT_FAILURE=${this.injectFailure})`);
    }
  }

  /** The optimizer step over [from, to) of the mean gradient, split where paramGroups scale the learning rate (ctx.lrRanges). */
  private update(h: OptimizerHyper, from: number, to: number, step: number): void {
    const lr = this.ctx.lrRanges;
    let a = from;
    for (let i = 0; i < lr.length && a < to; i += 3) {
      const rf = lr[i], rt = lr[i + 1];
      if (rt <= a) continue;
      if (rf >= to) break;
      if (rf > a) this.updateRange(h, a, rf, step);
      const b = Math.min(rt, to);
      this.updateRange({ ...h, lr: h.lr * lr[i + 2] }, Math.max(a, rf), b, step);
      a = b;
    }
    if (a < to) this.updateRange(h, a, to, step);
  }

  /** The update rule of `h` over [from, to); the state buffers are in optimizerStateBuffers' order. */
  private updateRange(h: OptimizerHyper, from: number, to: number, step: number): void {
    const [p, g, opt] = [this.flat, this.grad, this.opt];
    switch (h.type) {
      case "sgd": return sgdUpdate(p, g, opt.length > 0 ? opt[0] : null, from, to, h, step === 1);
      case "adam": case "adamw": return adamUpdate(p, g, opt[0], opt[1], from, to, h, step);
      case "rmsprop": {
        const gradAvg = h.centered ? opt[1] : null, momentum = h.momentum > 0 ? opt[h.centered ? 2 : 1] : null;
        return rmspropUpdate(p, g, opt[0], gradAvg, momentum, from, to, h);
      }
      case "adagrad": return adagradUpdate(p, g, opt[0], from, to, h, step);
    }
  }
}

/** Which parameter's requiresGrad differs between this replica and the main thread's model, or null. */
function trainableDiff(ctx: WorkerContext, model: nn.Module): string | null {
  const named = model.namedParameters();
  for (let i = 0; i < named.length; i++) {
    const [name, p] = named[i];
    if (p.requiresGrad !== ctx.trainable[i]) return `parameter ${i}: ${name} has requiresGrad ${p.requiresGrad} here but ${ctx.trainable[i]} in the main thread`;
  }
  return null;
}

/** How this replica's buffers (names, sizes) differ from the main thread's, or null. */
function buffersDiff(ctx: WorkerContext, model: nn.Module): string | null {
  const named = model.namedBuffers();
  if (named.length !== ctx.buffers.length) return `${named.length} buffers vs ${ctx.buffers.length}`;
  for (let i = 0; i < named.length; i++) {
    const [n, t] = named[i], b = ctx.buffers[i];
    if (n !== b.name || t.size !== b.size) return `buffer ${i}: ${n} (${t.size}) vs ${b.name} (${b.size})`;
  }
  return null;
}

/**
 * Rows for batch positions [a, b): a view when the batch is a contiguous range of the dataset,
 * else gathered into scratch (`copy` false: they are there already).
 */
function rows(s: Scratch, d: DatasetViews, idx: Int32Array | null, rowStart: number, a: number, b: number, copy = true): { x: Float32Array; y: Float32Array | Int32Array } {
  const m = b - a;
  if (idx === null) {
    const r0 = rowStart + a;
    return { x: d.x.subarray(r0 * d.xRow, (r0 + m) * d.xRow), y: d.y.subarray(r0 * d.yRow, (r0 + m) * d.yRow) };
  }
  if (s.xScratch.length < m * d.xRow) s.xScratch = new Float32Array(m * d.xRow);
  const yInt = d.y instanceof Int32Array;
  if (s.yScratch.length < m * d.yRow || (s.yScratch instanceof Int32Array) !== yInt) s.yScratch = yInt ? new Int32Array(m * d.yRow) : new Float32Array(m * d.yRow);
  const x = s.xScratch.subarray(0, m * d.xRow), y = s.yScratch.subarray(0, m * d.yRow);
  if (!copy) return { x, y };
  for (let i = 0; i < m; i++) {
    const r = idx[a + i];
    x.set(d.x.subarray(r * d.xRow, (r + 1) * d.xRow), i * d.xRow);
    if (d.yRow === 1) y[i] = d.y[r];
    else y.set(d.y.subarray(r * d.yRow, (r + 1) * d.yRow) as Float32Array & Int32Array, i * d.yRow);
  }
  return { x, y };
}

/** How many targets of batch positions [a, b) are not `ignoreIndex` (what a cross-entropy mean divides by). */
export function countedTargets(ignoreIndex: number, d: DatasetViews, idx: Int32Array | null, rowStart: number, a: number, b: number): number {
  const y = d.y, R = d.yRow;
  let n = 0;
  for (let i = a; i < b; i++) {
    const r = idx === null ? rowStart + i : idx[i];
    for (let j = r * R, e = j + R; j < e; j++) if (y[j] !== ignoreIndex) n++;
  }
  return n;
}

/**
 * Waits until all ranks have reached barrier number `n` (BARRIER counts on across the steps of a
 * run of step loops; `label` names it within the step), bounded by `timeoutMs`; on timeout throws
 * naming the ranks it waited on. `whileWaiting` runs once if the others have not all arrived yet
 * (work that fills the wait). Returns the ms from arriving to leaving.
 */
function barrier(c: Int32Array, world: number, rank: number, n: number, label: string, step: number, timeoutMs: number, whileWaiting: (() => void) | null): number {
  const t0 = performance.now();
  Atomics.store(c, CONTROL.arrivedAt(world) + rank, n);
  const target = n * world;
  if (Atomics.add(c, CONTROL.BARRIER, 1) + 1 >= target) {
    Atomics.notify(c, CONTROL.BARRIER);
    return performance.now() - t0;
  }
  whileWaiting?.();
  const deadline = t0 + timeoutMs;
  for (let v = Atomics.load(c, CONTROL.BARRIER); v < target; v = Atomics.load(c, CONTROL.BARRIER)) {
    const left = deadline - performance.now();
    if (left <= 0) {
      const missing: number[] = [];
      for (let r = 0; r < world; r++) if (Atomics.load(c, CONTROL.arrivedAt(world) + r) < n) missing.push(r);
      throw new BarrierTimeout(`step ${step}: barrier ${label} timed out after ${timeoutMs} ms waiting for worker${missing.length === 1 ? "" : "s"} ${missing.join(", ")}`, missing);
    }
    Atomics.wait(c, CONTROL.BARRIER, v, left);
  }
  return performance.now() - t0;
}
