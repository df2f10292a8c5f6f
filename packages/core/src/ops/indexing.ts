import { ArgumentError, ShapeError, fmtShape } from "../errors.js";
import { Tensor } from "../tensor/tensor.js";
import { broadcastShapes, broadcastStrides, sizeOf } from "../tensor/shape.js";
import { defaultGenerator } from "../tensor/random.js";
import { type TensorLike, asTensor, result, sumToShape } from "./op.js";
import { mul } from "./elementwise.js";
import { checkOptions } from "../options.js";

/** Integer indices from a tensor of whole numbers, an Int32Array or a number array; checked against [0, limit). */
export function toIndices(idx: Tensor | Int32Array | readonly number[], limit: number, op: string): Int32Array {
  const src = idx instanceof Tensor ? idx.data : idx;
  if (src instanceof Int32Array) {
    for (let i = 0; i < src.length; i++) {
      if (src[i] < 0 || src[i] >= limit) throw new ArgumentError(`${op}: index ${src[i]} at position ${i} is out of range [0, ${limit})`);
    }
    return src;
  }
  const out = new Int32Array(src.length);
  for (let i = 0; i < src.length; i++) {
    const v = src[i];
    if (!Number.isInteger(v)) throw new ArgumentError(`${op}: index ${v} at position ${i} is not an integer`);
    if (v < 0 || v >= limit) throw new ArgumentError(`${op}: index ${v} at position ${i} is out of range [0, ${limit})`);
    out[i] = v;
  }
  return out;
}

/**
 * Gathers rows of `weight` (V, C) by integer indices of any shape → (...indices.shape, C).
 * `paddingIdx`: that row gets no gradient (PyTorch's padding_idx; negative counts from the end).
 */
export function embedding(indices: Tensor | Int32Array | readonly number[], weight: Tensor, opts: { paddingIdx?: number | null } = {}): Tensor {
  checkOptions("embedding", opts, ["paddingIdx"]);
  if (weight.ndim !== 2) throw new ShapeError(`embedding: weight must be 2-D (num, dim), got ${fmtShape(weight.shape)}`);
  const [V, C] = weight.shape;
  const padding = paddingRow("embedding", opts.paddingIdx, V);
  const idx = toIndices(indices, V, "embedding");
  const idxShape = indices instanceof Tensor ? indices.shape : [idx.length];
  const out = new Float32Array(idx.length * C);
  const w = weight.data;
  for (let i = 0; i < idx.length; i++) out.set(w.subarray(idx[i] * C, idx[i] * C + C), i * C);
  return result("embedding", out, [...idxShape, C], [weight], (g) => {
    const dw = new Float32Array(w.length);
    for (let i = 0; i < idx.length; i++) {
      if (idx[i] === padding) continue;
      const o = idx[i] * C, gi = i * C;
      for (let c = 0; c < C; c++) dw[o + c] += g[gi + c];
    }
    return [dw];
  });
}

/** The row index a paddingIdx names (-1: none), checked against V rows. */
export function paddingRow(op: string, paddingIdx: number | null | undefined, V: number): number {
  if (paddingIdx === undefined || paddingIdx === null) return -1;
  if (!Number.isInteger(paddingIdx) || paddingIdx < -V || paddingIdx >= V) throw new ArgumentError(`${op}: paddingIdx ${paddingIdx} is out of range [-${V}, ${V})`);
  return paddingIdx < 0 ? paddingIdx + V : paddingIdx;
}

/** Elementwise select with broadcasting: cond ≠ 0 ? a : b. */
export function where(cond: Tensor, x: TensorLike, y: TensorLike): Tensor {
  const a = asTensor(x), b = asTensor(y);
  const shape = broadcastShapes(broadcastShapes(cond.shape, a.shape, "where"), b.shape, "where");
  const n = sizeOf(shape);
  const cS = broadcastStrides(cond.shape, shape), aS = broadcastStrides(a.shape, shape), bS = broadcastStrides(b.shape, shape);
  const take = new Uint8Array(n);
  const out = new Float32Array(n);
  const nd = shape.length;
  const idx = new Array<number>(nd).fill(0);
  let ci = 0, ai = 0, bi = 0;
  for (let o = 0; o < n; o++) {
    const t = cond.data[ci] !== 0;
    take[o] = t ? 1 : 0;
    out[o] = t ? a.data[ai] : b.data[bi];
    for (let d = nd - 1; d >= 0; d--) {
      idx[d]++;
      ci += cS[d]; ai += aS[d]; bi += bS[d];
      if (idx[d] < shape[d]) break;
      ci -= cS[d] * shape[d]; ai -= aS[d] * shape[d]; bi -= bS[d] * shape[d];
      idx[d] = 0;
    }
  }
  return result("where", out, shape, [a, b], (g) => {
    let ga: Float32Array | null = null, gb: Float32Array | null = null;
    if (a.requiresGrad) {
      const t = new Float32Array(n);
      for (let i = 0; i < n; i++) t[i] = take[i] ? g[i] : 0;
      ga = sumToShape(t, shape, a.shape);
    }
    if (b.requiresGrad) {
      const t = new Float32Array(n);
      for (let i = 0; i < n; i++) t[i] = take[i] ? 0 : g[i];
      gb = sumToShape(t, shape, b.shape);
    }
    return [ga, gb];
  });
}

/** Fills positions where mask ≠ 0 with `value` (e.g. -Infinity before a softmax). */
export function maskedFill(x: Tensor, mask: Tensor, value: number): Tensor {
  return where(mask, value, x);
}

/**
 * Inverted dropout: zeroes each element with probability p (mask drawn from the
 * global seeded generator) and scales the rest by 1/(1-p). Identity when not training.
 */
export function dropout(x: Tensor, p = 0.5, training = true): Tensor {
  if (!(p >= 0 && p <= 1)) throw new ArgumentError(`dropout: probability must be in [0, 1], got ${p}`);
  if (!training || p === 0) return x;
  const scale = p === 1 ? 0 : 1 / (1 - p);
  const mask = new Float32Array(x.size);
  for (let i = 0; i < mask.length; i++) mask[i] = defaultGenerator.random() < p ? 0 : scale;
  const out = new Float32Array(x.size);
  for (let i = 0; i < out.length; i++) out[i] = x.data[i] * mask[i];
  return result("dropout", out, x.shape, [x], (g) => {
    const dx = new Float32Array(g.length);
    for (let i = 0; i < g.length; i++) dx[i] = g[i] * mask[i];
    return [dx];
  });
}

/**
 * Channel dropout of (N, C, ...): zeroes whole channels with probability p (one draw per
 * sample and channel) and scales the rest by 1/(1-p). Identity when not training.
 */
export function dropout2d(x: Tensor, p = 0.5, training = true): Tensor {
  if (!(p >= 0 && p <= 1)) throw new ArgumentError(`dropout2d: probability must be in [0, 1], got ${p}`);
  if (x.ndim < 2) throw new ShapeError(`dropout2d: input must be (N, C, ...), got ${fmtShape(x.shape)}`);
  if (!training || p === 0) return x;
  const [N, C] = x.shape;
  const scale = p === 1 ? 0 : 1 / (1 - p);
  const keep = new Float32Array(N * C);
  for (let i = 0; i < keep.length; i++) keep[i] = defaultGenerator.random() < p ? 0 : scale;
  return mul(x, new Tensor(keep, [N, C, ...x.shape.slice(2).map(() => 1)]));
}
