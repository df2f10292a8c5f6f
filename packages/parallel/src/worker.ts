/**
 * The pool worker: one task = one rank's share of one phase. The thread keeps
 * its model replica (bound to the shared parameters) between tasks, but holds no
 * rank-specific state: the rank, its gradient slot and its optimizer chunk all
 * come with the task and live in shared memory, so piscina may run any rank on
 * any thread.
 */
import { threadId } from "node:worker_threads";
import { Tensor, manualSeed, nn, noGrad, optim } from "@chainrule/core";
import { type DatasetViews, datasetViews, mixSeed } from "./layout.js";
import { type LossFn, buildModel, layoutDiff, resolveLoss } from "./spec.js";
import type {
  DatasetRef, EvalResult, EvalTask, GradResult, GradTask, InitResult, InitTask, Task, UpdateResult, UpdateTask, WorkerContext,
} from "./types.js";

const { adamUpdate, sgdUpdate, sumOfSquares, scaleInPlace } = optim;

interface ThreadState {
  session: string;
  model: nn.Module;
  params: nn.Parameter[];
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
  /** Scratch rows for gathered (shuffled) shards. */
  xScratch: Float32Array;
  yScratch: Float32Array | Int32Array;
  data: { ref: DatasetRef; views: DatasetViews } | null;
}

let state: ThreadState | null = null;

/** Builds this thread's replica, or returns the difference between its layout and the main thread's. */
async function ensureState(ctx: WorkerContext): Promise<ThreadState | { mismatch: string; layout: nn.ParamLayoutEntry[] }> {
  if (state && state.session === ctx.session) return state;
  const model = await buildModel(ctx.model, ctx.seed);
  const layout = nn.paramLayout(model);
  const mismatch = layoutDiff(ctx.layout, layout);
  if (mismatch) return { mismatch, layout };
  const P = ctx.numParams;
  const flat = new Float32Array(ctx.params, 0, P);
  const slots = Array.from({ length: ctx.world }, (_, r) => new Float32Array(ctx.slots, r * P * 4, P));
  // Bind the replica to the shared parameters (no copy); gradients go to slot 0 until a rank is bound.
  const fp = nn.flattenParameters(model, { dataBuffer: flat, gradBuffer: slots[0], copyValues: false });
  const { fn, name } = await resolveLoss(ctx.loss);
  state = {
    session: ctx.session, model, params: model.parameters(), layout: fp.layout, flat,
    grad: new Float32Array(ctx.grad, 0, P), slots,
    opt: ctx.optBuffers.map((_, i) => new Float32Array(ctx.opt, i * P * 4, P)),
    gradViews: new Map(), boundRank: 0, loss: fn, lossName: name,
    xScratch: new Float32Array(0), yScratch: new Float32Array(0), data: null,
  };
  return state;
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
 * contiguous range of the dataset, else gathered into scratch.
 */
function rows(s: ThreadState, d: DatasetViews, idx: Int32Array | null, rowStart: number, a: number, b: number): { x: Float32Array; y: Float32Array | Int32Array } {
  const m = b - a;
  if (idx === null) {
    const r0 = rowStart + a;
    return { x: d.x.subarray(r0 * d.xRow, (r0 + m) * d.xRow), y: d.y.subarray(r0 * d.yRow, (r0 + m) * d.yRow) };
  }
  if (s.xScratch.length < m * d.xRow) s.xScratch = new Float32Array(m * d.xRow);
  const yInt = d.y instanceof Int32Array;
  if (s.yScratch.length < m * d.yRow || (s.yScratch instanceof Int32Array) !== yInt) s.yScratch = yInt ? new Int32Array(m * d.yRow) : new Float32Array(m * d.yRow);
  const x = s.xScratch.subarray(0, m * d.xRow), y = s.yScratch.subarray(0, m * d.yRow);
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

async function grad(t: GradTask): Promise<GradResult> {
  const s = await ready(t.ctx);
  const t0 = performance.now();
  s.slots[t.rank].fill(0);
  bindRank(s, t.rank);
  s.model.train();
  const t1 = performance.now();
  const n = t.end - t.start;
  const d = viewsFor(s, t.data);
  const idx = t.idx ? new Int32Array(t.idx) : null;
  const mb = t.microBatchSize > 0 ? t.microBatchSize : n;
  let lossSum = 0, gatherMs = 0, computeMs = 0;
  for (let a = t.start; a < t.end; a += mb) {
    const b = Math.min(a + mb, t.end), m = b - a;
    const g0 = performance.now();
    const { x, y } = rows(s, d, idx, t.rowStart, a, b);
    const g1 = performance.now();
    manualSeed(mixSeed(t.ctx.seed, t.step, a)); // dropout masks: fixed by step and batch position
    const out = s.model.forward(new Tensor(x, [m, ...d.ref.xShape]));
    const loss = s.loss(out, target(s, d, y, m));
    // The shard's mean gradient: each micro-batch's mean loss weighted by its share of the shard.
    if (m === n) loss.backward();
    else loss.backward(new Float32Array([m / n]));
    lossSum += loss.item() * m;
    gatherMs += g1 - g0;
    computeMs += performance.now() - g1;
  }
  return { rank: t.rank, rows: n, lossSum, zeroMs: t1 - t0, gatherMs, computeMs };
}

function reduce(s: ThreadState, w: number[], from: number, to: number): void {
  const g = s.grad;
  const act = w.map((wk, k) => [wk, k] as const).filter(([wk]) => wk !== 0);
  if (act.length === 1) {
    const [w0, k0] = act[0], s0 = s.slots[k0];
    for (let i = from; i < to; i++) g[i] = w0 * s0[i];
  } else if (act.length === 2) {
    const [w0, k0] = act[0], [w1, k1] = act[1], s0 = s.slots[k0], s1 = s.slots[k1];
    for (let i = from; i < to; i++) g[i] = w0 * s0[i] + w1 * s1[i];
  } else {
    // Fixed rank order, accumulated in float64, rounded once.
    const ws = act.map(([wk]) => wk), ss = act.map(([, k]) => s.slots[k]), K = act.length;
    for (let i = from; i < to; i++) {
      let acc = 0;
      for (let k = 0; k < K; k++) acc += ws[k] * ss[k][i];
      g[i] = acc;
    }
  }
}

async function update(t: UpdateTask): Promise<UpdateResult> {
  const s = await ready(t.ctx);
  const from = t.ctx.chunks[t.rank], to = t.ctx.chunks[t.rank + 1];
  const t0 = performance.now();
  if (t.weights) reduce(s, t.weights, from, to);
  const sumsq = t.norm ? sumOfSquares(s.grad, from, to) : 0;
  const t1 = performance.now();
  if (t.apply) {
    if (t.scale !== 1) scaleInPlace(s.grad, t.scale, from, to);
    const h = t.hyper;
    if (h.type === "sgd") sgdUpdate(s.flat, s.grad, s.opt.length > 0 ? s.opt[0] : null, from, to, h, t.step === 1);
    else adamUpdate(s.flat, s.grad, s.opt[0], s.opt[1], from, to, h, t.step);
  }
  return { rank: t.rank, sumsq, reduceMs: t1 - t0, optMs: performance.now() - t1 };
}

/** Σ loss·rows and correct predictions over batch positions [start, end), no graph, eval mode. Shared with the comlink evaluator. */
export function evalRange(
  model: nn.Module, loss: LossFn, lossName: string, d: DatasetViews, scratch: { xScratch: Float32Array; yScratch: Float32Array | Int32Array },
  idx: Int32Array | null, rowStart: number, start: number, end: number, batchSize: number,
): { lossSum: number; correct: number; hasAccuracy: boolean } {
  let lossSum = 0, correct = 0, hasAccuracy = false;
  const s = { ...scratch, lossName } as ThreadState;
  model.eval();
  try {
    noGrad(() => {
      for (let a = start; a < end; a += batchSize) {
        const b = Math.min(a + batchSize, end), m = b - a;
        const { x, y } = rows(s, d, idx, rowStart, a, b);
        const out = model.forward(new Tensor(x, [m, ...d.ref.xShape]));
        lossSum += loss(out, target(s, d, y, m)).item() * m;
        const C = out.size / m;
        if (y instanceof Int32Array && C > 1 && d.yRow === 1) {
          hasAccuracy = true;
          for (let i = 0; i < m; i++) {
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
      }
    });
  } finally {
    model.train();
  }
  return { lossSum, correct, hasAccuracy };
}

async function evaluate(t: EvalTask): Promise<EvalResult> {
  const s = await ready(t.ctx);
  const d = viewsFor(s, t.data);
  const idx = t.idx ? new Int32Array(t.idx) : null;
  const r = evalRange(s.model, s.loss, s.lossName, d, s, idx, t.rowStart, t.start, t.end, t.batchSize);
  return { rank: t.rank, rows: t.end - t.start, ...r };
}

export default async function run(task: Task): Promise<unknown> {
  switch (task.kind) {
    case "init": return init(task);
    case "grad": return grad(task);
    case "update": return update(task);
    case "eval": return evaluate(task);
  }
}
