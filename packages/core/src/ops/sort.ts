/** Ordering along an axis: cumsum, sort and topk (values with their indices). */
import { ArgumentError } from "../errors.js";
import { Tensor } from "../tensor/tensor.js";
import { normAxis, sizeOf } from "../tensor/shape.js";
import { result } from "./op.js";
import { checkOptions } from "../options.js";

/** x viewed as (outer, n, inner) around `axis`. */
function around(x: Tensor, axis: number, op: string): { a: number; outer: number; n: number; inner: number } {
  if (x.ndim === 0) throw new ArgumentError(`${op}: needs a tensor with at least one dimension, got a scalar`);
  const a = normAxis(axis, x.ndim, op);
  return { a, outer: sizeOf(x.shape.slice(0, a)), n: x.shape[a], inner: sizeOf(x.shape.slice(a + 1)) };
}

/** Running sum along `axis`; its gradient is the reversed running sum of the output's. */
export function cumsum(x: Tensor, axis: number): Tensor {
  const { outer, n, inner } = around(x, axis, "cumsum");
  const xd = x.data;
  const out = new Float32Array(x.size);
  for (let o = 0; o < outer; o++) {
    for (let j = 0; j < inner; j++) {
      let s = 0;
      for (let i = 0; i < n; i++) { const at = (o * n + i) * inner + j; s += xd[at]; out[at] = s; }
    }
  }
  return result("cumsum", out, x.shape, [x], (g) => {
    const dx = new Float32Array(x.size);
    for (let o = 0; o < outer; o++) {
      for (let j = 0; j < inner; j++) {
        let s = 0;
        for (let i = n - 1; i >= 0; i--) { const at = (o * n + i) * inner + j; s += g[at]; dx[at] = s; }
      }
    }
    return [dx];
  });
}

export interface SortResult {
  values: Tensor;
  /** Positions along the axis in the input, as a float tensor of integers (no gradient). */
  indices: Tensor;
}

/** NaN sorts as the largest value (PyTorch's order); equal values keep their input order. */
function ascending(a: number, b: number): number {
  if (a !== a) return b !== b ? 0 : 1;
  if (b !== b) return -1;
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * The first `k` positions of each slice along the axis in sorted order → values gathered from x
 * (the gradient flows back to those positions) and their indices.
 */
function ordered(op: string, x: Tensor, axis: number, k: number, descending: boolean): SortResult {
  const { a, outer, n, inner } = around(x, axis, op);
  const xd = x.data;
  const outShape = x.shape.slice();
  outShape[a] = k;
  const values = new Float32Array(outer * k * inner);
  const src = new Int32Array(outer * k * inner); // flat input element of each output
  const idx = new Float32Array(outer * k * inner);
  const order = Array.from({ length: n }, (_, i) => i);
  for (let o = 0; o < outer; o++) {
    for (let j = 0; j < inner; j++) {
      const at = (i: number) => (o * n + i) * inner + j;
      for (let i = 0; i < n; i++) order[i] = i;
      order.sort((p, q) => (descending ? ascending(xd[at(q)], xd[at(p)]) || p - q : ascending(xd[at(p)], xd[at(q)])));
      for (let i = 0; i < k; i++) {
        const dst = (o * k + i) * inner + j;
        src[dst] = at(order[i]);
        values[dst] = xd[src[dst]];
        idx[dst] = order[i];
      }
    }
  }
  const v = result(op, values, outShape, [x], (g) => {
    const dx = new Float32Array(x.size);
    for (let i = 0; i < g.length; i++) dx[src[i]] += g[i];
    return [dx];
  });
  return { values: v, indices: new Tensor(idx, outShape) };
}

/** Sorts along `axis` (default last), ascending unless `descending`; stable. */
export function sort(x: Tensor, axis = -1, opts: { descending?: boolean } = {}): SortResult {
  checkOptions("sort", opts, ["descending"]);
  const { n } = around(x, axis, "sort");
  return ordered("sort", x, axis, n, opts.descending ?? false);
}

/** The k largest (or, with `largest: false`, smallest) values along `axis` (default last), in sorted order. */
export function topk(x: Tensor, k: number, axis = -1, opts: { largest?: boolean } = {}): SortResult {
  checkOptions("topk", opts, ["largest"]);
  const { n } = around(x, axis, "topk");
  if (!Number.isInteger(k) || k < 0 || k > n) throw new ArgumentError(`topk: k must be an integer in [0, ${n}] (the axis size), got ${k}`);
  return ordered("topk", x, axis, k, opts.largest ?? true);
}
