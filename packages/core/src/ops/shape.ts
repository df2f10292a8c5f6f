import { ArgumentError, ShapeError, fmtShape } from "../errors.js";
import { Tensor } from "../tensor/tensor.js";
import { type Shape, normAxis, sizeOf } from "../tensor/shape.js";
import { kernels } from "../kernels/kernels.js";
import { result } from "./op.js";

/** Same data, new shape (one dimension may be -1). No copy: tensors are contiguous. */
export function reshape(x: Tensor, shape: Shape): Tensor {
  const s = [...shape];
  const neg = s.indexOf(-1);
  if (neg !== -1) {
    const rest = sizeOf(s.filter((_, i) => i !== neg));
    if (rest === 0 || x.size % rest !== 0) throw new ShapeError(`reshape: cannot reshape ${fmtShape(x.shape)} into ${fmtShape(shape)}`);
    s[neg] = x.size / rest;
  }
  if (s.some((d) => !Number.isInteger(d) || d < 0) || sizeOf(s) !== x.size) {
    throw new ShapeError(`reshape: cannot reshape ${fmtShape(x.shape)} (${x.size} elements) into ${fmtShape(shape)}`);
  }
  return result("reshape", x.data, s, [x], (g) => [g]);
}

export const view = reshape;

export function flatten(x: Tensor, startDim = 0, endDim = -1): Tensor {
  if (x.ndim === 0) return reshape(x, [1]);
  const s = normAxis(startDim, x.ndim, "flatten"), e = normAxis(endDim, x.ndim, "flatten");
  return reshape(x, [...x.shape.slice(0, s), sizeOf(x.shape.slice(s, e + 1)), ...x.shape.slice(e + 1)]);
}

export function unsqueeze(x: Tensor, axis: number): Tensor {
  const a = normAxis(axis, x.ndim + 1, "unsqueeze");
  const s = x.shape.slice();
  s.splice(a, 0, 1);
  return reshape(x, s);
}

export function squeeze(x: Tensor, axis?: number): Tensor {
  if (axis === undefined) return reshape(x, x.shape.filter((d) => d !== 1));
  const a = normAxis(axis, x.ndim, "squeeze");
  if (x.shape[a] !== 1) return x;
  const s = x.shape.slice();
  s.splice(a, 1);
  return reshape(x, s);
}

/** Reorders axes (copies into a new contiguous tensor). */
export function permute(x: Tensor, perm: readonly number[]): Tensor {
  if (perm.length !== x.ndim) throw new ArgumentError(`permute: ${perm.length} axes given for a tensor of shape ${fmtShape(x.shape)}`);
  const p = perm.map((d) => normAxis(d, x.ndim, "permute"));
  if (new Set(p).size !== p.length) throw new ArgumentError(`permute: axes [${perm.join(",")}] repeat`);
  const k = kernels();
  const shape = p.map((d) => x.shape[d]);
  const out = new Float32Array(x.size);
  k.permute(out, x.data, x.shape, p);
  const inverse = new Array<number>(p.length);
  for (let i = 0; i < p.length; i++) inverse[p[i]] = i;
  return result("permute", out, shape, [x], (g) => {
    const dx = new Float32Array(g.length);
    k.permute(dx, g, shape, inverse);
    return [dx];
  });
}

export function transpose(x: Tensor, dim0 = -2, dim1 = -1): Tensor {
  const a = normAxis(dim0, x.ndim, "transpose"), b = normAxis(dim1, x.ndim, "transpose");
  const perm = x.shape.map((_, i) => i);
  perm[a] = b;
  perm[b] = a;
  return permute(x, perm);
}

/** Elements start..end-1 (negative indices count from the end) along `axis`. */
export function slice(x: Tensor, axis: number, start: number, end?: number): Tensor {
  const ax = normAxis(axis, x.ndim, "slice");
  const n = x.shape[ax];
  let s = start < 0 ? start + n : start;
  let e = end === undefined ? n : end < 0 ? end + n : end;
  s = Math.max(0, Math.min(n, s));
  e = Math.max(s, Math.min(n, e));
  if (!Number.isInteger(s) || !Number.isInteger(e)) throw new ArgumentError(`slice: start/end must be integers, got ${start}, ${end}`);
  const outer = sizeOf(x.shape.slice(0, ax)), inner = sizeOf(x.shape.slice(ax + 1));
  const len = e - s;
  const shape = x.shape.slice();
  shape[ax] = len;
  const out = new Float32Array(outer * len * inner);
  for (let o = 0; o < outer; o++) out.set(x.data.subarray((o * n + s) * inner, (o * n + e) * inner), o * len * inner);
  return result("slice", out, shape, [x], (g) => {
    const dx = new Float32Array(x.size);
    for (let o = 0; o < outer; o++) dx.set(g.subarray(o * len * inner, (o + 1) * len * inner), (o * n + s) * inner);
    return [dx];
  });
}

/** Joins tensors along an existing axis. */
export function concat(xs: readonly Tensor[], axis = 0): Tensor {
  if (xs.length === 0) throw new ArgumentError("concat: needs at least one tensor");
  const ref = xs[0];
  const ax = normAxis(axis, ref.ndim, "concat");
  for (const t of xs) {
    if (t.ndim !== ref.ndim || t.shape.some((d, i) => i !== ax && d !== ref.shape[i])) {
      throw new ShapeError(`concat: shapes ${xs.map((u) => fmtShape(u.shape)).join(", ")} differ outside axis ${ax}`);
    }
  }
  const outer = sizeOf(ref.shape.slice(0, ax)), inner = sizeOf(ref.shape.slice(ax + 1));
  const lens = xs.map((t) => t.shape[ax]);
  const total = lens.reduce((p, c) => p + c, 0);
  const shape = ref.shape.slice();
  shape[ax] = total;
  const out = new Float32Array(outer * total * inner);
  let off = 0;
  for (let t = 0; t < xs.length; t++) {
    const chunk = lens[t] * inner;
    for (let o = 0; o < outer; o++) out.set(xs[t].data.subarray(o * chunk, (o + 1) * chunk), (o * total) * inner + off);
    off += chunk;
  }
  return result("concat", out, shape, [...xs], (g) => {
    const grads: (Float32Array | null)[] = [];
    let goff = 0;
    for (let t = 0; t < xs.length; t++) {
      const chunk = lens[t] * inner;
      if (xs[t].requiresGrad) {
        const dx = new Float32Array(xs[t].size);
        for (let o = 0; o < outer; o++) dx.set(g.subarray(o * total * inner + goff, o * total * inner + goff + chunk), o * chunk);
        grads.push(dx);
      } else grads.push(null);
      goff += chunk;
    }
    return grads;
  });
}

/** Joins same-shaped tensors along a new axis. */
export function stack(xs: readonly Tensor[], axis = 0): Tensor {
  if (xs.length === 0) throw new ArgumentError("stack: needs at least one tensor");
  for (const t of xs) {
    if (t.ndim !== xs[0].ndim || t.shape.some((d, i) => d !== xs[0].shape[i])) {
      throw new ShapeError(`stack: shapes ${xs.map((u) => fmtShape(u.shape)).join(", ")} differ`);
    }
  }
  const ax = normAxis(axis, xs[0].ndim + 1, "stack");
  return concat(xs.map((t) => unsqueeze(t, ax)), ax);
}

/** Splits into pieces of `size` (number) or the given sizes (array) along `axis`. */
export function split(x: Tensor, sizes: number | readonly number[], axis = 0): Tensor[] {
  const ax = normAxis(axis, x.ndim, "split");
  const n = x.shape[ax];
  const bad = (typeof sizes === "number" ? [sizes] : sizes).find((d) => !Number.isInteger(d) || d < 0 || (typeof sizes === "number" && d === 0));
  if (bad !== undefined) throw new ArgumentError(`split: sizes must be ${typeof sizes === "number" ? "a positive integer" : "non-negative integers"}, got ${bad}`);
  const list = typeof sizes === "number" ? Array.from({ length: Math.ceil(n / sizes) }, (_, i) => Math.min(sizes, n - i * sizes)) : [...sizes];
  if (list.reduce((p, c) => p + c, 0) !== n) throw new ShapeError(`split: sizes [${list.join(",")}] do not add up to dimension ${ax} of ${fmtShape(x.shape)}`);
  const out: Tensor[] = [];
  let s = 0;
  for (const len of list) {
    out.push(slice(x, ax, s, s + len));
    s += len;
  }
  return out;
}
