import { Tensor } from "../tensor/tensor.js";
import { normAxis, sizeOf } from "../tensor/shape.js";
import { kernels } from "../kernels/kernels.js";
import { result } from "./op.js";

export interface ReduceOptions {
  keepDims?: boolean;
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
export function sum(x: Tensor, axis?: Axes, opts: ReduceOptions = {}): Tensor {
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
  const outShape = reducedShape(x.shape, axes, opts.keepDims ?? false);
  return result("sum", data, outShape, [x], (g) => [expandOver(g, x.shape, axes, 1)]);
}

export function mean(x: Tensor, axis?: Axes, opts: ReduceOptions = {}): Tensor {
  const axes = resolveAxes(axis, x.ndim, "mean");
  const count = sizeOf(axes.map((a) => x.shape[a]));
  const s = sum(x, axes, opts);
  const out = new Float32Array(s.size);
  for (let i = 0; i < out.length; i++) out[i] = s.data[i] / count;
  return result("mean", out, s.shape, [x], (g) => [expandOver(g, x.shape, axes, 1 / count)]);
}

/** Max over one axis or all; the gradient flows to the first maximal element. */
export function max(x: Tensor, axis?: number, opts: ReduceOptions = {}): Tensor {
  const k = kernels();
  let outer: number, n: number, inner: number, outShape: number[];
  if (axis !== undefined && x.ndim === 0) normAxis(axis, 1, "max"); // axis 0 or -1 of a 0-d tensor: all of it
  if (axis === undefined || x.ndim === 0) {
    outer = 1; n = x.size; inner = 1;
    outShape = opts.keepDims ? x.shape.map(() => 1) : [];
  } else {
    const a = normAxis(axis, x.ndim, "max");
    outer = sizeOf(x.shape.slice(0, a)); n = x.shape[a]; inner = sizeOf(x.shape.slice(a + 1));
    outShape = reducedShape(x.shape, [a], opts.keepDims ?? false);
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
