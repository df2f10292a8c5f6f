/**
 * The pool worker: one task = one rank's whole step (or its init / evaluate share). The thread keeps
 * its model replica (bound to the shared parameters) between tasks, but holds no
 * rank-specific state: the rank, its gradient slot and its optimizer chunk all
 * come with the task and live in shared memory, so piscina may run any rank on
 * any thread.
 */
import { threadId } from "node:worker_threads";
import { type BatchNormSync, BufferArena, type SimdKernels, Tensor, augmentRows, manualSeed, markGradsStale, nn, noGrad, optim, registerSimdMemory, zeroStaleGrads } from "@chainrule/core";
import { BELL, CONTROL, type DatasetViews, STAGE_DONE, STEP_DESC, STEP_RESULT, STAGE_GRAD, STAGE_REDUCE, STAGE_UPDATE, datasetViews, mixSeed } from "./layout.js";
import { type LossFn, buildModel, layoutDiff, resolveLoss } from "./spec.js";
import type {
  DatasetRef, EvalResult, EvalTask, InitResult, InitTask, OptimizerHyper, ServeTask, StepResult, StepTask, Task, WorkerContext,
} from "./types.js";

const { adamUpdate, sgdUpdate, scaleInPlace } = optim;

/** A barrier wait that ran out of time: names the ranks that had not arrived. */
class BarrierTimeout extends Error {
  constructor(message: string, readonly missing: number[]) {
    super(message);
    this.name = "BarrierTimeout";
  }
}

interface Scratch { xScratch: Float32Array; yScratch: Float32Array | Int32Array }

interface ThreadState {
  session: string;
  model: nn.Module;
  params: nn.Parameter[];
  /** The parameters that take gradients (fixed at init: the main thread's requiresGrad, checked). */
  trainable: nn.Parameter[];
  layout: nn.ParamLayoutEntry[];
  flat: Float32Array;
  grad: Float32Array;
  slots: Float32Array[];
  opt: Float32Array[];
  /** Gradient views per rank (one per parameter), made on first use. */
  gradViews: Map<number, Tensor[]>;
  boundRank: number;
  loss: LossFn;
  lossName: string;
  /** Cross-entropy's ignoreIndex (shards are weighted by counted targets), or null: weighted by rows. */
  ignoreIndex: number | null;
  control: Int32Array;
  exchange: Float64Array;
  /** Core's WebAssembly SIMD kernels over the shared memory (null: JS loops); core's adamUpdate uses them too, the memory being registered. */
  simd: SimdKernels | null;
  /** Bytes between consecutive slots / optimizer buffers. */
  region: number;
  /** The context the state was built from (byte offsets of the regions). */
  ctx: WorkerContext;
  /** Test hook: "update:<rank>:<step>" makes that rank throw as it starts updating parameters. */
  injectFailure: string | undefined;
  /** The reduce weights of the current step (a view on the shared memory, this rank's row, once bound). */
  weights: Float64Array;
  /** Byte address of `weights` in the shared memory. */
  weightsAt: number;
  /** Scratch rows for gathered (shuffled) shards in evaluation. */
  xScratch: Float32Array;
  yScratch: Float32Array | Int32Array;
  /** Scratch rows for the steps' gathered shards, one per command parity: the next step's rows are gathered while this step's are in use. */
  gathered: [Scratch, Scratch];
  /** Rows gathered ahead (while waiting at the last step's barrier): command seq, positions [a, b) of its batch. */
  prefetched: { seq: number; a: number; b: number };
  data: { ref: DatasetRef; views: DatasetViews } | null;
  /** The replica's buffer tensors (namedBuffers order), their canonical views, and per-rank working views. */
  bufTensors: Tensor[];
  bufCanon: Float32Array[];
  bufViews: Map<number, Float32Array[]>;
  /** -1: bound to the canonical buffers; r: to rank r's working copy. */
  bufBound: number;
  /** Augmented rows of the current micro-batch. */
  augScratch: Float32Array;
  /** Synchronised batch norm (null: per-worker statistics). */
  bnSync: SharedBatchNorm | null;
  /** Reuses activation buffers from one micro-batch to the next (no per-step garbage for V8 to collect). */
  arena: BufferArena;
}

let state: ThreadState | null = null;

/** Builds this thread's replica, or returns the difference between its layout and the main thread's. */
async function ensureState(ctx: WorkerContext): Promise<ThreadState | { mismatch: string; layout: nn.ParamLayoutEntry[] }> {
  if (state && state.session === ctx.session) return state;
  const model = await buildModel(ctx.model, ctx.seed);
  const layout = nn.paramLayout(model);
  const mismatch = layoutDiff(ctx.layout, layout) ?? trainableDiff(ctx, model);
  if (mismatch) return { mismatch, layout };
  const P = ctx.numParams;
  const buf = ctx.memory.buffer;
  const region = Math.ceil((P * 4) / 64) * 64;
  const flat = new Float32Array(buf, ctx.paramsAt, P);
  const slots = Array.from({ length: ctx.world }, (_, r) => new Float32Array(buf, ctx.slotsAt + r * region, P));
  // Bind the replica to the shared parameters (no copy); gradients go to slot 0 until a rank is bound.
  const fp = nn.flattenParameters(model, { dataBuffer: flat, gradBuffer: slots[0], copyValues: false });
  const { fn, name, ignoreIndex } = await resolveLoss(ctx.loss);
  const named = model.namedBuffers();
  const bufDiff = named.length !== ctx.buffers.length ? `${named.length} buffers vs ${ctx.buffers.length}`
    : named.map(([n, t], i) => (n !== ctx.buffers[i].name || t.size !== ctx.buffers[i].size ? `buffer ${i}: ${n} (${t.size}) vs ${ctx.buffers[i].name} (${ctx.buffers[i].size})` : null)).find((d) => d) ?? null;
  if (bufDiff) return { mismatch: bufDiff, layout };
  const B = ctx.buffers.reduce((a, b) => a + b.size, 0);
  const cut = (base: Float32Array) => { let at = 0; return ctx.buffers.map((b) => base.subarray(at, (at += b.size))); };
  const bufCanon = cut(new Float32Array(buf, ctx.buffersAt, B));
  named.forEach(([, t], i) => (t.data = bufCanon[i]));
  const bnSync = ctx.syncBatchNorm ? new SharedBatchNorm(ctx) : null;
  if (bnSync) for (const [, m] of model.namedModules()) if (m instanceof nn.BatchNorm2d) m.sync = bnSync;
  state = {
    session: ctx.session, model, params: model.parameters(), trainable: model.parameters().filter((p) => p.requiresGrad), layout: fp.layout, flat,
    grad: new Float32Array(buf, ctx.gradAt, P), slots,
    opt: ctx.optBuffers.map((_, i) => new Float32Array(buf, ctx.optAt + i * region, P)),
    simd: registerSimdMemory(ctx.memory), region, ctx, injectFailure: process.env.CHAINRULE_PARALLEL_INJECT_FAILURE,
    gradViews: new Map(), boundRank: 0, loss: fn, lossName: name, ignoreIndex,
    control: new Int32Array(ctx.control), exchange: new Float64Array(ctx.exchange), weights: new Float64Array(ctx.world), weightsAt: 0,
    xScratch: new Float32Array(0), yScratch: new Float32Array(0), data: null,
    gathered: [{ xScratch: new Float32Array(0), yScratch: new Float32Array(0) }, { xScratch: new Float32Array(0), yScratch: new Float32Array(0) }],
    prefetched: { seq: -1, a: 0, b: 0 },
    bufTensors: named.map(([, t]) => t), bufCanon, bufViews: new Map(), bufBound: -1, augScratch: new Float32Array(0), bnSync, arena: new BufferArena(),
  };
  return state;
}

/** Binds the replica's buffers to the canonical copy (rank -1: evaluation) or to rank r's working copy, copied from the canonical one. */
function bindBuffers(s: ThreadState, rank: number): void {
  if (s.bufTensors.length === 0) return;
  let views = rank < 0 ? s.bufCanon : s.bufViews.get(rank);
  if (!views) {
    const B = s.ctx.buffers.reduce((a, b) => a + b.size, 0), bregion = Math.ceil((B * 4) / 64) * 64;
    const base = new Float32Array(s.ctx.memory.buffer, s.ctx.bufSlotsAt + rank * bregion, B);
    let at = 0;
    views = s.ctx.buffers.map((b) => base.subarray(at, (at += b.size)));
    s.bufViews.set(rank, views);
  }
  if (rank >= 0) views.forEach((v, i) => v.set(s.bufCanon[i]));
  if (s.bufBound !== rank) {
    s.bufTensors.forEach((t, i) => (t.data = views![i]));
    s.bufBound = rank;
  }
}

/**
 * After the step's barrier, rank 0 sets the canonical buffers to the mean of the active ranks'
 * working copies (float64, rank order): with per-worker batch norm, the running statistics are
 * the average of the workers' (each updated with its own shard's statistics); with synchronised
 * batch norm all copies are equal and the mean is that value.
 */
function averageBuffers(s: ThreadState, active: number): void {
  for (let i = 0; i < s.bufCanon.length; i++) {
    const out = s.bufCanon[i];
    if (active === 1) { out.set(s.bufViews.get(0)![i]); continue; }
    const src: Float32Array[] = [];
    for (let k = 0; k < active; k++) src.push(s.bufViews.get(k)?.[i] ?? slotView(s, k, i));
    for (let j = 0; j < out.length; j++) {
      let acc = 0;
      for (let k = 0; k < active; k++) acc += src[k][j];
      out[j] = acc / active;
    }
  }
}

/** Rank k's working copy of buffer i (a view; this thread may not have run rank k). */
function slotView(s: ThreadState, k: number, i: number): Float32Array {
  const B = s.ctx.buffers.reduce((a, b) => a + b.size, 0), bregion = Math.ceil((B * 4) / 64) * 64;
  let at = 0;
  for (let j = 0; j < i; j++) at += s.ctx.buffers[j].size;
  return new Float32Array(s.ctx.memory.buffer, s.ctx.bufSlotsAt + k * bregion + at * 4, s.ctx.buffers[i].size);
}

/**
 * Synchronised batch norm over shared memory. Each call (a BatchNorm2d forward or backward in
 * training) writes this rank's row — [element count, counted targets, C values, C values] in
 * float64 — into exchange parity (call & 1), meets the other active ranks at the BN barrier
 * (target call × active, bounded wait), then every rank combines all rows in rank order, so all
 * get the same numbers. Two parities suffice: a rank can only write call k+2's row after every
 * rank arrived at call k+1, i.e. finished reading call k's.
 */
class SharedBatchNorm implements BatchNormSync {
  private rank = 0;
  private active = 1;
  private step = 0;
  private counted = 0;
  private calls = 0;
  private readonly x: Float64Array;
  private readonly c: Int32Array;
  constructor(private readonly ctx: WorkerContext) {
    this.x = new Float64Array(ctx.memory.buffer, ctx.bnAt, 2 * ctx.world * ctx.bnRow);
    this.c = new Int32Array(ctx.control);
  }
  begin(rank: number, active: number, step: number, counted: number): void {
    this.rank = rank;
    this.active = active;
    this.step = step;
    this.counted = counted;
    this.calls = 0;
  }
  /** Publishes this rank's row (a, b: C values each), waits for the others; returns the exchange parity's base. */
  private exchange(head: number, a: Float64Array, b: Float64Array): number {
    const k = ++this.calls, { world, bnRow } = this.ctx, C = a.length;
    if (2 + 2 * C > bnRow) throw new Error(`syncBatchNorm: ${C} channels, the exchange holds ${(bnRow - 2) / 2}`);
    const base = (k & 1) * world * bnRow, row = base + this.rank * bnRow, x = this.x;
    x[row] = head;
    x[row + 1] = this.counted;
    x.set(a, row + 2);
    x.set(b, row + 2 + C);
    const target = k * this.active, c = this.c, t0 = performance.now(), timeout = this.ctx.barrierTimeoutMs;
    if (Atomics.add(c, CONTROL.BN, 1) + 1 >= target) Atomics.notify(c, CONTROL.BN);
    else {
      for (let v = Atomics.load(c, CONTROL.BN); v < target; v = Atomics.load(c, CONTROL.BN)) {
        const left = t0 + timeout - performance.now();
        if (left <= 0) throw new Error(`step ${this.step}: batch-norm sync ${k} timed out after ${timeout} ms (${v - (k - 1) * this.active} of ${this.active} workers arrived)`);
        Atomics.wait(c, CONTROL.BN, v, left);
      }
    }
    return base;
  }
  forward(count: number, mean: Float64Array, m2: Float64Array): { count: number; mean: Float64Array; variance: Float64Array } {
    const C = mean.length, base = this.exchange(count, mean, m2), { bnRow } = this.ctx, x = this.x;
    const gm = new Float64Array(C), gm2 = new Float64Array(C);
    let n = 0;
    for (let r = 0; r < this.active; r++) {
      const row = base + r * bnRow, nk = x[row];
      if (nk === 0) continue;
      const nn2 = n + nk;
      for (let ch = 0; ch < C; ch++) {
        const d = x[row + 2 + ch] - gm[ch];
        gm[ch] += (d * nk) / nn2;
        gm2[ch] += x[row + 2 + C + ch] + (d * d * n * nk) / nn2;
      }
      n = nn2;
    }
    const variance = gm2.map((v) => (n > 0 ? v / n : 0));
    return { count: n, mean: gm, variance };
  }
  backward(sdy: Float64Array, sdyx: Float64Array): { sdy: Float64Array; sdyx: Float64Array } {
    const C = sdy.length, base = this.exchange(0, sdy, sdyx), { bnRow } = this.ctx, x = this.x;
    if (!(this.counted > 0)) throw new Error(`step ${this.step}: syncBatchNorm on a shard without counted targets`);
    const gs = new Float64Array(C), gx = new Float64Array(C);
    for (let r = 0; r < this.active; r++) {
      const row = base + r * bnRow, w = x[row + 1] / this.counted;
      for (let ch = 0; ch < C; ch++) {
        gs[ch] += w * x[row + 2 + ch];
        gx[ch] += w * x[row + 2 + C + ch];
      }
    }
    return { sdy: gs, sdyx: gx };
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

async function ready(ctx: WorkerContext): Promise<ThreadState> {
  const s = await ensureState(ctx);
  if ("mismatch" in s) throw new Error(`this thread's model layout differs from the main thread's: ${s.mismatch}`);
  return s;
}

function bindRank(s: ThreadState, rank: number): void {
  if (s.boundRank === rank) return;
  let views = s.gradViews.get(rank);
  if (!views) {
    const slot = s.slots[rank];
    views = s.layout.map((e) => new Tensor(slot.subarray(e.offset, e.offset + e.size), e.shape));
    s.gradViews.set(rank, views);
  }
  s.params.forEach((p, i) => (p.grad = views![i]));
  s.boundRank = rank;
}

function viewsFor(s: ThreadState, ref: DatasetRef): DatasetViews {
  if (s.data && s.data.ref.x === ref.x && s.data.ref.y === ref.y && s.data.ref.xOffset === ref.xOffset && s.data.ref.length === ref.length) return s.data.views;
  const views = datasetViews(ref);
  s.data = { ref, views };
  return views;
}

/**
 * Rows for batch positions [a, b) of this task: a view when the batch is a
 * contiguous range of the dataset, else gathered into scratch (`copy` false: they are there already).
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
    else y.set(d.y.subarray(r * d.yRow, (r + 1) * d.yRow) as any, i * d.yRow);
  }
  return { x, y };
}

/** Built-in losses that take float targets (Int32 targets are converted for them); others get class indices as an Int32Array. */
const FLOAT_TARGET_LOSSES = new Set(["mseLoss", "l1Loss", "binaryCrossEntropyWithLogits", "binaryCrossEntropy"]);

function target(s: ThreadState, d: DatasetViews, y: Float32Array | Int32Array, m: number): Tensor | Int32Array {
  if (y instanceof Int32Array && !FLOAT_TARGET_LOSSES.has(s.lossName)) return y;
  return new Tensor(y instanceof Float32Array ? y : Float32Array.from(y), [m, ...d.ref.yShape]);
}

async function init(t: InitTask): Promise<InitResult> {
  const s = await ensureState(t.ctx);
  // Barrier: hold this thread until all ranks have built, so each init ran on its own thread.
  const c = new Int32Array(t.ctx.control);
  Atomics.add(c, 0, 1);
  Atomics.notify(c, 0);
  const deadline = Date.now() + t.timeoutMs;
  for (let v = Atomics.load(c, 0); v < t.ctx.world; v = Atomics.load(c, 0)) {
    const left = deadline - Date.now();
    if (left <= 0) throw new Error(`init barrier: ${v} of ${t.ctx.world} workers arrived within ${t.timeoutMs} ms`);
    Atomics.wait(c, 0, v, left);
  }
  return { rank: t.rank, threadId, layout: s.layout, mismatch: "mismatch" in s ? s.mismatch : null };
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
function barrier(c: Int32Array, world: number, rank: number, n: number, label: string, step: number, timeoutMs: number, whileWaiting: (() => void) | null = null): number {
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

/**
 * grad = Σ_k w_k · slot_k over [from, to), in fixed rank order. Returns Σ grad² when `norm`.
 * (The slots are not zeroed: the next step's backward overwrites them; see step.)
 */
function reduceRange(g: Float32Array, slots: Float32Array[], w: Float64Array, from: number, to: number, norm: boolean): number {
  const W = slots.length;
  let ss = 0;
  if (W === 1) {
    const s0 = slots[0], w0 = w[0];
    if (w0 === 1) g.set(s0.subarray(from, to), from);
    else for (let i = from; i < to; i++) g[i] = w0 * s0[i];
  } else if (W === 2) {
    const s0 = slots[0], s1 = slots[1], w0 = w[0], w1 = w[1];
    for (let i = from; i < to; i++) g[i] = w0 * s0[i] + w1 * s1[i];
  } else {
    // Fixed rank order, accumulated in float64, rounded once. Blocked so each slot's stretch stays in cache.
    const B = 1024;
    for (let a = from; a < to; a += B) {
      const b = Math.min(a + B, to);
      const acc = reduceScratch(b - a);
      for (let i = a; i < b; i++) acc[i - a] = 0;
      for (let k = 0; k < W; k++) {
        const sk = slots[k], wk = w[k];
        if (wk !== 0) for (let i = a; i < b; i++) acc[i - a] += wk * sk[i];
      }
      for (let i = a; i < b; i++) g[i] = acc[i - a];
    }
  }
  if (norm) for (let i = from; i < to; i++) ss += g[i] * g[i];
  return ss;
}

/** The reduce of [from, to): SIMD for 1 or 2 ranks (bit-identical to reduceRange), else JS. */
function reduceSeg(s: ThreadState, w: Float64Array, from: number, to: number, norm: boolean): number {
  const k = s.simd, W = s.slots.length;
  if (k === null) return reduceRange(s.grad, s.slots, w, from, to, norm);
  const pairs = (to - from) >> 1, tail = from + 2 * pairs, o = 4 * from;
  const slot0 = s.ctx.slotsAt + o;
  if (W === 1) k.reduce1(s.ctx.gradAt + o, slot0, pairs, w[0]);
  else if (W === 2) k.reduce2(s.ctx.gradAt + o, slot0, slot0 + s.region, pairs, w[0], w[1]);
  else k.reduceK(s.ctx.gradAt + o, slot0, pairs, W, s.region, s.weightsAt);
  if (tail < to) reduceRange(s.grad, s.slots, w, tail, to, false);
  let ss = 0;
  if (norm) for (let i = from, g = s.grad; i < to; i++) ss += g[i] * g[i];
  return ss;
}

/** Marks rank r as updating parameters (a failure from here on reports them maybe changed); the test hook throws here. */
function beginUpdate(s: ThreadState, r: number, step: number): void {
  Atomics.store(s.control, CONTROL.STAGE + r, STAGE_UPDATE);
  if (s.injectFailure === `update:${r}:${step}`) throw new Error(`injected failure (CHAINRULE_PARALLEL_INJECT_FAILURE=${s.injectFailure})`);
}

/** Floats per block of the fused reduce + update (6 arrays × 8 KiB stay in L2). */
const FUSED_BLOCK = 2048;

/**
 * The optimizer step over [from, to) of the mean gradient (SIMD in place: the memory is registered),
 * split where paramGroups scale the learning rate (ctx.lrRanges).
 */
function update(s: ThreadState, h: OptimizerHyper, from: number, to: number, step: number): void {
  const lr = s.ctx.lrRanges;
  let a = from;
  for (let i = 0; i < lr.length && a < to; i += 3) {
    const rf = lr[i], rt = lr[i + 1];
    if (rt <= a) continue;
    if (rf >= to) break;
    if (rf > a) updateRange(s, h, a, rf, step);
    const b = Math.min(rt, to);
    updateRange(s, { ...h, lr: h.lr * lr[i + 2] }, Math.max(a, rf), b, step);
    a = b;
  }
  if (a < to) updateRange(s, h, a, to, step);
}

function updateRange(s: ThreadState, h: OptimizerHyper, from: number, to: number, step: number): void {
  if (h.type === "sgd") sgdUpdate(s.flat, s.grad, s.opt.length > 0 ? s.opt[0] : null, from, to, h, step === 1);
  else adamUpdate(s.flat, s.grad, s.opt[0], s.opt[1], from, to, h, step);
}

let scratch64 = new Float64Array(1024);
function reduceScratch(n: number): Float64Array {
  if (scratch64.length < n) scratch64 = new Float64Array(n);
  return scratch64;
}

async function step(t: StepTask, prefetchNext: (() => void) | null = null): Promise<StepResult> {
  // Every thread built its state in init (the init barrier saw `world` threads), so a step
  // task carries only the session id, not the context (no per-step clone of the layout).
  const s = state;
  if (s === null || s.session !== t.session) throw new Error(`this thread holds no replica for pool session ${t.session} (it did not take part in init)`);
  const ctx = s.ctx, { world } = ctx, r = t.rank;
  const c = s.control, x = s.exchange;
  let barriers = t.barrierBase, waitMs = 0;
  const meet = (label: string, whileWaiting: (() => void) | null = null) => {
    waitMs += barrier(c, world, r, ++barriers, label, t.step, ctx.barrierTimeoutMs, whileWaiting);
  };
  Atomics.store(c, CONTROL.stepOf(world) + r, t.step);
  Atomics.store(c, CONTROL.STAGE + r, STAGE_GRAD);
  // Rung while the step before still ran: every rank must have updated its chunk before any reads the parameters.
  if (t.startBarrier) meet("start");
  bindRank(s, r);
  bindBuffers(s, r);
  s.model.train();
  // This rank's slot still holds its last gradient: the first gradient this step writes into each
  // parameter's view overwrites it, and what no backward reaches is zeroed below. Cheaper than
  // zeroing the slots after the reduce (a write pass over P floats, and backward's GEMMs read them).
  markGradsStale(s.trainable);
  const n = t.end - t.start;
  const d = viewsFor(s, t.data);
  const idx = t.idx ? new Int32Array(t.idx, 4 * t.idxAt) : null;
  const mb = t.microBatchSize > 0 ? t.microBatchSize : n;
  const scratch = s.gathered[t.seq & 1], pre = s.prefetched;
  // The slot holds this shard's mean gradient over its counted targets: each micro-batch's
  // mean loss is weighted by its share of them. Counting needs the targets first.
  const counted = s.ignoreIndex === null ? n : countedTargets(s.ignoreIndex, d, idx, t.rowStart, t.start, t.end);
  s.bnSync?.begin(r, t.active, t.step, counted);
  const aug = t.augment;
  if (aug && aug.shape[0] * aug.shape[1] * aug.shape[2] !== d.xRow) throw new Error(`augment: image shape [${aug.shape}] does not match rows of ${d.xRow} values`);
  let lossSum = 0, gatherMs = 0, computeMs = 0;
  for (let a = t.start; a < t.end; a += mb) {
    const b = Math.min(a + mb, t.end), m = b - a;
    const g0 = performance.now();
    const ready = pre.seq === t.seq && pre.a === a && pre.b === b; // gathered while this rank waited at the last step's barrier
    if (ready) pre.seq = -1;
    let { x: xs, y } = rows(scratch, d, idx, t.rowStart, a, b, !ready);
    if (aug) {
      // Seeded by (seed, step, position in the global batch): the same whatever the number of workers.
      if (s.augScratch.length < m * d.xRow) s.augScratch = new Float32Array(m * d.xRow);
      xs = augmentRows(xs, s.augScratch, m, aug.shape, { crop: aug.crop, flip: aug.flip }, ctx.seed, t.step, a);
    }
    const g1 = performance.now();
    const cm = s.ignoreIndex === null ? m : countedTargets(s.ignoreIndex, d, idx, t.rowStart, a, b);
    if (cm === 0 && s.bnSync && m > 0) throw new Error(`step ${t.step}: syncBatchNorm needs counted targets in every non-empty shard (rows ${a}..${b} are all ignoreIndex)`);
    if (cm > 0) {
      manualSeed(mixSeed(ctx.seed, t.step, a)); // dropout masks: fixed by step and batch position
      const fwdBwd = () => {
        const out = s.model.forward(new Tensor(xs, [m, ...d.ref.xShape]));
        const loss = s.loss(out, target(s, d, y, m));
        if (cm === counted) loss.backward();
        else loss.backward(new Float32Array([cm / counted]));
        return loss.item() * cm;
      };
      // Activations live in the arena: the next micro-batch reuses them (nothing outlives backward).
      lossSum += ctx.reuseActivations ? s.arena.run(fwdBwd) : fwdBwd();
    }
    gatherMs += g1 - g0;
    computeMs += performance.now() - g1;
  }
  zeroStaleGrads(s.trainable); // parameters no gradient reached (unused in the forward, or an empty shard)
  x[3 * r] = counted;
  x[3 * r + 1] = lossSum;
  meet("1", prefetchNext); // a rank that arrives first gathers the next step's rows meanwhile, if it was rung
  // No rank is in a batch-norm exchange of this step any more, and none can start the next step's before rank 0 arrives at a later barrier.
  if (r === 0) Atomics.store(c, CONTROL.BN, 0);
  if (r === 0 && s.bufTensors.length > 0) averageBuffers(s, t.active);

  // Reduce-scatter of this rank's chunk: weights counted_k / Σ counted, in rank order.
  Atomics.store(c, CONTROL.STAGE + r, STAGE_REDUCE);
  const t0 = performance.now();
  let total = 0;
  for (let k = 0; k < world; k++) total += x[3 * k];
  if (s.weightsAt !== ctx.weightsAt + r * world * 8) {
    s.weightsAt = ctx.weightsAt + r * world * 8;
    s.weights = new Float64Array(ctx.memory.buffer, s.weightsAt, world);
  }
  const w = s.weights;
  for (let k = 0; k < world; k++) w[k] = total > 0 ? x[3 * k] / total : 0;
  const seg = ctx.segments[r];
  const clip = t.clip > 0;
  const h = t.hyper;
  let reduceMs = 0, gradNorm = 0, optMs = 0;
  if (!clip) {
    // Reduce and update block by block, so each block's slots, mean gradient and optimizer
    // state are still in cache when the update reads them (one pass over memory, not two).
    beginUpdate(s, r, t.step); // parameters change from the first block on
    for (let i = 0; i < seg.length; i += 2) {
      for (let a = seg[i], end = seg[i + 1]; a < end; a += FUSED_BLOCK) {
        const b = Math.min(a + FUSED_BLOCK, end);
        const t1 = performance.now();
        reduceSeg(s, w, a, b, false);
        const t2 = performance.now();
        update(s, h, a, b, t.step);
        optMs += performance.now() - t2;
        reduceMs += t2 - t1;
      }
    }
  } else {
    // Clipping needs the global norm before any update: reduce the whole chunk, meet, scale, update.
    let ss = 0;
    for (let i = 0; i < seg.length; i += 2) ss += reduceSeg(s, w, seg[i], seg[i + 1], true);
    reduceMs = performance.now() - t0;
    x[3 * r + 2] = ss;
    meet("2");
    const t1 = performance.now();
    let tot = 0;
    for (let k = 0; k < world; k++) tot += x[3 * k + 2]; // rank order: every rank computes the same norm
    gradNorm = Math.sqrt(tot);
    const coef = t.clip / (gradNorm + 1e-6);
    if (coef < 1) for (let i = 0; i < seg.length; i += 2) scaleInPlace(s.grad, coef, seg[i], seg[i + 1]);
    reduceMs += performance.now() - t1;
    beginUpdate(s, r, t.step);
    const t2 = performance.now();
    for (let i = 0; i < seg.length; i += 2) update(s, h, seg[i], seg[i + 1], t.step);
    optMs = performance.now() - t2;
  }
  Atomics.store(c, CONTROL.STAGE + r, STAGE_DONE);
  return { rank: r, rows: n, counted, lossSum, gatherMs, computeMs, waitMs, reduceMs, optMs, gradNorm };
}

/**
 * Runs this rank's steps as the main thread rings the doorbell: wait on the rank's command word
 * (bounded by `idleMs`), read the step description, run the step, write the result row, count
 * the rank done. Commands run in order, one after another: the main thread may ring the next
 * one while this rank still runs the last (at most one ahead; descriptions, result rows and done
 * counts alternate by the command's parity). A step that throws ends the loop with that error
 * (the task rejects). After `idleMs` without a command the loop marks its word EXITED —
 * compareExchange, so a command that arrives at that moment is never lost — and returns; the
 * main thread then starts a new loop.
 */
async function serve(t: ServeTask): Promise<void> {
  const s = state;
  if (s === null || s.session !== t.session) throw new Error(`this thread holds no replica for pool session ${t.session} (it did not take part in init)`);
  const ctx = s.ctx, W = ctx.world, r = t.rank;
  const bell = new Int32Array(ctx.bell), desc = new Float64Array(ctx.stepDesc), out = new Float64Array(ctx.stepResults);
  const word = BELL.SEQ + r, descSize = STEP_DESC.size(W);
  const d = viewsFor(s, t.data);
  let seq = t.seen;
  // While waiting at a step's gradient barrier: if the next step was rung already, gather its rows (shuffled batches, one micro-batch).
  const prefetchNext = () => {
    if (Atomics.load(bell, word) <= seq) return;
    const nx = ((seq + 1) & 1) * descSize;
    if (!desc[nx + STEP_DESC.HAS_IDX]) return;
    const a = desc[nx + STEP_DESC.OFFSETS + r], b = desc[nx + STEP_DESC.OFFSETS + r + 1];
    if (b <= a || (t.microBatchSize > 0 && t.microBatchSize < b - a)) return;
    rows(s.gathered[(seq + 1) & 1], d, new Int32Array(t.idx, 4 * desc[nx + STEP_DESC.IDX_AT]), desc[nx + STEP_DESC.ROW_START], a, b);
    s.prefetched.seq = seq + 1;
    s.prefetched.a = a;
    s.prefetched.b = b;
  };
  for (let seen = t.seen; ;) {
    let cmd = Atomics.load(bell, word);
    if (cmd === seen) {
      Atomics.wait(bell, word, seen, t.idleMs);
      cmd = Atomics.load(bell, word);
      if (cmd === seen) {
        if (Atomics.compareExchange(bell, word, seen, BELL.EXITED) === seen) return;
        cmd = Atomics.load(bell, word);
      }
    }
    if (cmd === BELL.STOP) return;
    seq = ++seen;
    const at = (seq & 1) * descSize, row = ((seq & 1) * W + r) * STEP_RESULT.size;
    const t0 = performance.now();
    const res = await step({
      session: t.session, rank: r, seq, step: desc[at + STEP_DESC.STEP], data: t.data, idx: desc[at + STEP_DESC.HAS_IDX] ? t.idx : null,
      idxAt: desc[at + STEP_DESC.IDX_AT], start: desc[at + STEP_DESC.OFFSETS + r], end: desc[at + STEP_DESC.OFFSETS + r + 1], rowStart: desc[at + STEP_DESC.ROW_START],
      microBatchSize: t.microBatchSize, hyper: { ...t.hyper, lr: desc[at + STEP_DESC.LR] }, clip: t.clip, active: desc[at + STEP_DESC.ACTIVE], augment: t.augment,
      barrierBase: desc[at + STEP_DESC.BARRIER_BASE], startBarrier: desc[at + STEP_DESC.START_BARRIER] === 1,
    }, W > 1 ? prefetchNext : null);
    out[row + STEP_RESULT.ROWS] = res.rows;
    out[row + STEP_RESULT.COUNTED] = res.counted;
    out[row + STEP_RESULT.LOSS_SUM] = res.lossSum;
    out[row + STEP_RESULT.GATHER_MS] = res.gatherMs;
    out[row + STEP_RESULT.COMPUTE_MS] = res.computeMs;
    out[row + STEP_RESULT.WAIT_MS] = res.waitMs;
    out[row + STEP_RESULT.REDUCE_MS] = res.reduceMs;
    out[row + STEP_RESULT.OPT_MS] = res.optMs;
    out[row + STEP_RESULT.GRAD_NORM] = res.gradNorm;
    out[row + STEP_RESULT.STEP_MS] = performance.now() - t0;
    out[row + STEP_RESULT.STEP] = desc[at + STEP_DESC.STEP];
    const done = BELL.DONE + (seq & 1);
    if (Atomics.add(bell, done, 1) + 1 >= W) Atomics.notify(bell, done);
  }
}

/**
 * Σ loss·rows and correct predictions over batch positions [start, end), no graph, eval mode.
 * Shared with the comlink evaluator. With an arena, each batch reuses the previous one's activations.
 */
export function evalRange(
  model: nn.Module, loss: LossFn, lossName: string, d: DatasetViews, scratch: { xScratch: Float32Array; yScratch: Float32Array | Int32Array },
  idx: Int32Array | null, rowStart: number, start: number, end: number, batchSize: number, ignoreIndex: number | null = null,
  arena: BufferArena | null = null,
): { lossSum: number; correct: number; hasAccuracy: boolean; counted: number } {
  let lossSum = 0, correct = 0, hasAccuracy = false, counted = 0;
  const s = { ...scratch, lossName } as ThreadState;
  const inArena = (fn: () => void) => (arena ? arena.run(fn) : fn());
  model.eval();
  try {
    noGrad(() => {
      for (let a = start; a < end; a += batchSize) inArena(() => {
        const b = Math.min(a + batchSize, end), m = b - a;
        const { x, y } = rows(s, d, idx, rowStart, a, b);
        const out = model.forward(new Tensor(x, [m, ...d.ref.xShape]));
        const cm = ignoreIndex === null ? m : countedTargets(ignoreIndex, d, idx, rowStart, a, b);
        counted += cm;
        if (cm > 0) lossSum += loss(out, target(s, d, y, m)).item() * cm; // a mean over cm targets
        const C = out.size / m;
        if (y instanceof Int32Array && C > 1 && d.yRow === 1) {
          hasAccuracy = true;
          for (let i = 0; i < m; i++) {
            if (y[i] === ignoreIndex) continue;
            let best = 0;
            for (let c = 1; c < C; c++) if (out.data[i * C + c] > out.data[i * C + best]) best = c;
            if (best === y[i]) correct++;
          }
        } else if ((lossName === "binaryCrossEntropyWithLogits" || lossName === "binaryCrossEntropy") && out.size === y.length) {
          hasAccuracy = true;
          const th = lossName === "binaryCrossEntropy" ? 0.5 : 0;
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

async function evaluate(t: EvalTask): Promise<EvalResult> {
  const s = await ready(t.ctx);
  bindBuffers(s, -1);
  const d = viewsFor(s, t.data);
  const idx = t.idx ? new Int32Array(t.idx) : null;
  const r = evalRange(s.model, s.loss, s.lossName, d, s, idx, t.rowStart, t.start, t.end, t.batchSize, s.ignoreIndex, s.ctx.reuseActivations ? s.arena : null);
  return { rank: t.rank, rows: t.end - t.start, ...r };
}

export default async function run(task: Task): Promise<unknown> {
  switch (task.kind) {
    case "init": return init(task);
    case "serve": return serve(task);
    case "eval": return evaluate(task);
  }
}
