import { ArgumentError } from "../errors.js";
import { Tensor } from "../tensor/tensor.js";
import { noGrad } from "../autograd/engine.js";
import { abs, add, div, exp, log, mul, neg, pow as powScalar, sqrt, sub } from "./elementwise.js";
import { reshape } from "./shape.js";
import { normAxis, sizeOf } from "../tensor/shape.js";
import { kernels } from "../kernels/kernels.js";
import { result } from "./op.js";
import { checkOptions } from "../options.js";

export interface ReduceOptions {
  keepDims?: boolean;
}

/** `{keepDims}` or PyTorch's positional keepdim (`sum(x, 1, true)`); unknown keys throw. */
export type KeepDims = ReduceOptions | boolean;

function keepDimsOf(op: string, opts: KeepDims | undefined): boolean {
  if (typeof opts === "boolean") return opts;
  checkOptions(op, opts, ["keepDims"]);
  return opts?.keepDims ?? false;
}

type Axes = number | readonly number[] | undefined;

function resolveAxes(axis: Axes, ndim: number, op: string): number[] {
  if (axis === undefined) return Array.from({ length: ndim }, (_, i) => i);
  const list = typeof axis === "number" ? [axis] : [...axis];
  // A 0-d tensor has one element: axis 0 or -1 reduce nothing (as in PyTorch).
  if (ndim === 0) {
    for (const a of list) normAxis(a, 1, op);
    return [];
  }
  return [...new Set(list.map((a) => normAxis(a, ndim, op)))].sort((a, b) => a - b);
}

function reducedShape(shape: readonly number[], axes: number[], keepDims: boolean): number[] {
  if (keepDims) return shape.map((d, i) => (axes.includes(i) ? 1 : d));
  return shape.filter((_, i) => !axes.includes(i));
}

/**
 * Copies `g` (reduced over `axes`, shape with those axes = 1) back over the full
 * `shape`, scaled by `scale` — the backward of sum and mean.
 */
function expandOver(g: Float32Array, shape: readonly number[], axes: number[], scale: number): Float32Array {
  const out = new Float32Array(sizeOf(shape));
  const nd = shape.length;
  const gStrides = new Array<number>(nd);
  let acc = 1;
  for (let d = nd - 1; d >= 0; d--) {
    gStrides[d] = axes.includes(d) ? 0 : acc;
    if (!axes.includes(d)) acc *= shape[d];
  }
  const idx = new Array<number>(nd).fill(0);
  let gi = 0;
  for (let o = 0; o < out.length; o++) {
    out[o] = g[gi] * scale;
    for (let d = nd - 1; d >= 0; d--) {
      idx[d]++;
      gi += gStrides[d];
      if (idx[d] < shape[d]) break;
      gi -= gStrides[d] * shape[d];
      idx[d] = 0;
    }
  }
  return out;
}

/** Sum over one axis, several, or all (default). */
export function sum(x: Tensor, axis?: Axes, opts: KeepDims = {}): Tensor {
  const keepDims = keepDimsOf("sum", opts);
  const axes = resolveAxes(axis, x.ndim, "sum");
  const k = kernels();
  let data = x.data;
  let shape = x.shape.slice();
  for (let i = axes.length - 1; i >= 0; i--) {
    const a = axes[i];
    const outer = sizeOf(shape.slice(0, a)), n = shape[a], inner = sizeOf(shape.slice(a + 1));
    const next = new Float32Array(outer * inner);
    k.sumAxis(next, data, outer, n, inner);
    data = next;
    shape[a] = 1;
  }
  if (axes.length === 0) data = data.slice();
  const outShape = reducedShape(x.shape, axes, keepDims);
  return result("sum", data, outShape, [x], (g) => [expandOver(g, x.shape, axes, 1)]);
}

export function mean(x: Tensor, axis?: Axes, opts: KeepDims = {}): Tensor {
  const keepDims = keepDimsOf("mean", opts);
  const axes = resolveAxes(axis, x.ndim, "mean");
  const count = sizeOf(axes.map((a) => x.shape[a]));
  const s = sum(x, axes, { keepDims });
  const out = new Float32Array(s.size);
  for (let i = 0; i < out.length; i++) out[i] = s.data[i] / count;
  return result("mean", out, s.shape, [x], (g) => [expandOver(g, x.shape, axes, 1 / count)]);
}

/** Max over one axis or all; the gradient flows to the first maximal element. */
export function max(x: Tensor, axis?: number, opts: KeepDims = {}): Tensor {
  const keepDims = keepDimsOf("max", opts);
  const k = kernels();
  let outer: number, n: number, inner: number, outShape: number[];
  if (axis !== undefined && x.ndim === 0) normAxis(axis, 1, "max"); // axis 0 or -1 of a 0-d tensor: all of it
  if (axis === undefined || x.ndim === 0) {
    outer = 1; n = x.size; inner = 1;
    outShape = keepDims ? x.shape.map(() => 1) : [];
  } else {
    const a = normAxis(axis, x.ndim, "max");
    outer = sizeOf(x.shape.slice(0, a)); n = x.shape[a]; inner = sizeOf(x.shape.slice(a + 1));
    outShape = reducedShape(x.shape, [a], keepDims);
  }
  const out = new Float32Array(outer * inner);
  const arg = new Int32Array(outer * inner);
  k.maxAxis(out, arg, x.data, outer, n, inner);
  return result("max", out, outShape, [x], (g) => {
    const dx = new Float32Array(x.size);
    for (let o = 0; o < outer; o++) for (let j = 0; j < inner; j++) dx[(o * n + arg[o * inner + j]) * inner + j] += g[o * inner + j];
    return [dx];
  });
}

/** Indices of the maximum along an axis (no gradient), as a float tensor of integers. */
export function argmax(x: Tensor, axis = -1): Tensor {
  const a = normAxis(axis, x.ndim, "argmax");
  const outer = sizeOf(x.shape.slice(0, a)), n = x.shape[a], inner = sizeOf(x.shape.slice(a + 1));
  const out = new Float32Array(outer * inner);
  const arg = new Int32Array(outer * inner);
  kernels().maxAxis(out, arg, x.data, outer, n, inner);
  return new Tensor(Float32Array.from(arg), reducedShape(x.shape, [a], false));
}

/** Min over one axis or all (max of -x); the gradient flows to the first minimal element. */
export function min(x: Tensor, axis?: number, opts: KeepDims = {}): Tensor {
  return neg(max(neg(x), axis, opts));
}

/** Indices of the minimum along an axis (the first one), as a float tensor of integers. */
export function argmin(x: Tensor, axis = -1): Tensor {
  return argmax(noGrad(() => neg(x)), axis);
}

/** x viewed as (outer, n, inner) around axis `axis`, or (1, size, 1) for all of it. */
function axisView(x: Tensor, axis: number | undefined, keepDims: boolean, op: string): { outer: number; n: number; inner: number; outShape: number[] } {
  if (axis === undefined || x.ndim === 0) {
    if (axis !== undefined) normAxis(axis, 1, op);
    return { outer: 1, n: x.size, inner: 1, outShape: keepDims ? x.shape.map(() => 1) : [] };
  }
  const a = normAxis(axis, x.ndim, op);
  return { outer: sizeOf(x.shape.slice(0, a)), n: x.shape[a], inner: sizeOf(x.shape.slice(a + 1)), outShape: reducedShape(x.shape, [a], keepDims) };
}

/** Product over one axis or all; the gradient is the product of the others (exact with zeros). */
export function prod(x: Tensor, axis?: number, opts: KeepDims = {}): Tensor {
  const { outer, n, inner, outShape } = axisView(x, axis, keepDimsOf("prod", opts), "prod");
  const xd = x.data;
  const out = new Float32Array(outer * inner);
  for (let o = 0; o < outer; o++) {
    for (let j = 0; j < inner; j++) {
      let p = 1;
      for (let i = 0; i < n; i++) p *= xd[(o * n + i) * inner + j];
      out[o * inner + j] = p;
    }
  }
  return result("prod", out, outShape, [x], (g) => {
    const dx = new Float32Array(x.size);
    for (let o = 0; o < outer; o++) {
      for (let j = 0; j < inner; j++) {
        // dx_i = g·(Π_{k<i} x_k)·(Π_{k>i} x_k): prefix products forward, suffix products backward.
        let prefix = 1;
        for (let i = 0; i < n; i++) { const at = (o * n + i) * inner + j; dx[at] = prefix; prefix *= xd[at]; }
        let suffix = g[o * inner + j];
        for (let i = n - 1; i >= 0; i--) { const at = (o * n + i) * inner + j; dx[at] *= suffix; suffix *= xd[at]; }
      }
    }
    return [dx];
  });
}

export interface VarianceOptions extends ReduceOptions {
  /** Divide by N - correction (default 1: the unbiased estimate; 0: the population variance). */
  correction?: number;
}

/** Variance over axes (default all), Σ(x - mean)² / (N - correction), PyTorch's torch.var. */
export function variance(x: Tensor, axis?: Axes, opts: VarianceOptions = {}): Tensor {
  checkOptions("var", opts, ["keepDims", "correction"]);
  const correction = opts.correction ?? 1;
  if (!(correction >= 0)) throw new ArgumentError(`var: correction must be ≥ 0, got ${correction}`);
  const axes = resolveAxes(axis, x.ndim, "var");
  const count = sizeOf(axes.map((a) => x.shape[a]));
  const d = sub(x, mean(x, axes, { keepDims: true }));
  return div(sum(mul(d, d), axes, { keepDims: opts.keepDims ?? false }), Math.max(count - correction, 0));
}

/** √variance (same options). */
export function std(x: Tensor, axis?: Axes, opts: VarianceOptions = {}): Tensor {
  return sqrt(variance(x, axis, opts));
}

/** log Σ exp(x) over axes (default all), stably (the max subtracted first); its gradient is softmax. */
export function logsumexp(x: Tensor, axis?: Axes, opts: KeepDims = {}): Tensor {
  const keepDims = keepDimsOf("logsumexp", opts);
  const axes = resolveAxes(axis, x.ndim, "logsumexp");
  // m: the max over the axes, a constant (rows of -Infinity use 0, so the result is -Infinity, not NaN).
  const m = noGrad(() => {
    let t = x;
    for (const a of axes) t = max(t, a, { keepDims: true });
    return new Tensor(t.data.map((v) => (Number.isFinite(v) ? v : 0)), t.shape);
  });
  const s = log(sum(exp(sub(x, m)), axes, { keepDims: true }));
  const out = add(s, m);
  return keepDims ? out : reshape(out, reducedShape(x.shape, axes, false));
}

/**
 * The p-norm over axes (default all): p = 2 (default), 1, Infinity, or any p > 0.
 * At a zero vector the gradient is 0 (PyTorch's subgradient); with p = Infinity ties share it evenly.
 */
export function norm(x: Tensor, p = 2, axis?: Axes, opts: KeepDims = {}): Tensor {
  if (!(p > 0)) throw new ArgumentError(`norm: p must be positive (1, 2, Infinity, ...), got ${p}`);
  const keepDims = keepDimsOf("norm", opts);
  const axes = resolveAxes(axis, x.ndim, "norm");
  const a = abs(x);
  if (p === Infinity) {
    // max over the axes with even gradient sharing between ties: mask / count.
    const m = noGrad(() => { let t = a; for (const ax of axes) t = max(t, ax, { keepDims: true }); return t; });
    const hits = noGrad(() => new Tensor(Float32Array.from(broadcastTo(m, x.shape), (v, i) => (a.data[i] === v ? 1 : 0)), x.shape));
    const share = div(hits, sum(hits, axes, { keepDims: true }));
    return sum(mul(a, share), axes, { keepDims });
  }
  if (p === 1) return sum(a, axes, { keepDims });
  const s = sum(powScalar(a, p), axes, { keepDims });
  return normRoot(s, 1 / p);
}

/** s^q whose gradient is 0 where s = 0 (the p-norm of a zero vector). */
function normRoot(s: Tensor, q: number): Tensor {
  const out = Float32Array.from(s.data, (v) => Math.pow(v, q));
  return result("norm", out, s.shape, [s], (g) => [Float32Array.from(g, (gi, i) => (s.data[i] === 0 ? 0 : gi * q * out[i] / s.data[i]))]);
}

/** A (keepDims-reduced) tensor's values repeated over the full `shape`. */
function broadcastTo(t: Tensor, shape: readonly number[]): Float32Array {
  return expandOver(t.data, shape, shape.map((d, i) => i).filter((i) => t.shape[i] === 1 && shape[i] !== 1), 1);
}
