/** Indexing along an axis: gather, scatter, scatterAdd, indexSelect, and oneHot. */
import { ArgumentError, ShapeError, fmtShape } from "../errors.js";
import { Tensor } from "../tensor/tensor.js";
import { normAxis, sizeOf, stridesOf } from "../tensor/shape.js";
import { result } from "./op.js";
import { toIndices } from "./indexing.js";

type Indices = Tensor | Int32Array | readonly number[];

/**
 * For each element of `index` (same number of dimensions as x, each dimension at most x's
 * outside `axis`): the flat offset in x of x[..., index[...], ...] (the index replaces the
 * coordinate on `axis`), and the flat offset of the same coordinates in a tensor of `srcShape`.
 */
function offsets(op: string, xShape: readonly number[], axis: number, index: Tensor, srcShape?: readonly number[]): { inX: Int32Array; inSrc: Int32Array | null } {
  if (index.ndim !== xShape.length) throw new ShapeError(`${op}: index ${fmtShape(index.shape)} must have as many dimensions as input ${fmtShape(xShape)}`);
  const a = normAxis(axis, xShape.length, op);
  for (let d = 0; d < xShape.length; d++) {
    if (d !== a && index.shape[d] > xShape[d]) throw new ShapeError(`${op}: index ${fmtShape(index.shape)} is larger than input ${fmtShape(xShape)} in dimension ${d}`);
    if (srcShape && index.shape[d] > srcShape[d]) throw new ShapeError(`${op}: index ${fmtShape(index.shape)} is larger than src ${fmtShape(srcShape)} in dimension ${d}`);
  }
  const idx = toIndices(index, xShape[a], op);
  const xs = stridesOf(xShape), ss = srcShape ? stridesOf(srcShape) : null;
  const n = idx.length, nd = xShape.length;
  const inX = new Int32Array(n), inSrc = ss ? new Int32Array(n) : null;
  const coord = new Array<number>(nd).fill(0);
  for (let i = 0; i < n; i++) {
    let ox = 0, os = 0;
    for (let d = 0; d < nd; d++) {
      ox += (d === a ? idx[i] : coord[d]) * xs[d];
      if (ss) os += coord[d] * ss[d];
    }
    inX[i] = ox;
    if (inSrc) inSrc[i] = os;
    for (let d = nd - 1; d >= 0; d--) {
      if (++coord[d] < index.shape[d]) break;
      coord[d] = 0;
    }
  }
  return { inX, inSrc };
}

function asIndexTensor(index: Indices): Tensor {
  return index instanceof Tensor ? index : new Tensor(Float32Array.from(index), [index.length]);
}

/** out[i][j] = x[i][index[i][j]] for axis 1 (any rank, any axis): PyTorch's torch.gather. */
export function gather(x: Tensor, axis: number, index: Indices): Tensor {
  const it = asIndexTensor(index);
  const { inX } = offsets("gather", x.shape, axis, it);
  const out = new Float32Array(inX.length);
  for (let i = 0; i < inX.length; i++) out[i] = x.data[inX[i]];
  return result("gather", out, it.shape, [x], (g) => {
    const dx = new Float32Array(x.size);
    for (let i = 0; i < inX.length; i++) dx[inX[i]] += g[i];
    return [dx];
  });
}

/** A copy of x with src written at the indexed positions (src: a tensor at least index's size, or a number). */
export function scatter(x: Tensor, axis: number, index: Indices, src: Tensor | number): Tensor {
  return scatterOp("scatter", x, axis, index, src, false);
}

/** x with src added at the indexed positions; repeated indices add up. */
export function scatterAdd(x: Tensor, axis: number, index: Indices, src: Tensor): Tensor {
  return scatterOp("scatterAdd", x, axis, index, src, true);
}

function scatterOp(op: string, x: Tensor, axis: number, index: Indices, srcIn: Tensor | number, add: boolean): Tensor {
  const it = asIndexTensor(index);
  const src = typeof srcIn === "number" ? null : srcIn;
  if (src && src.ndim !== x.ndim) throw new ShapeError(`${op}: src ${fmtShape(src.shape)} must have as many dimensions as input ${fmtShape(x.shape)}`);
  const { inX, inSrc } = offsets(op, x.shape, axis, it, src?.shape);
  const out = x.data.slice();
  for (let i = 0; i < inX.length; i++) {
    const v = src ? src.data[inSrc![i]] : (srcIn as number);
    out[inX[i]] = add ? out[inX[i]] + v : v;
  }
  return result(op, out, x.shape, src ? [x, src] : [x], (g) => {
    let dx: Float32Array | null = null, ds: Float32Array | null = null;
    if (x.requiresGrad) {
      dx = g.slice();
      if (!add) for (let i = 0; i < inX.length; i++) dx[inX[i]] = 0; // overwritten: x had no say
    }
    if (src?.requiresGrad) {
      ds = new Float32Array(src.size);
      for (let i = 0; i < inX.length; i++) ds[inSrc![i]] += g[inX[i]];
    }
    return src ? [dx, ds] : [dx];
  });
}

/** The slices of x at the given positions along `axis` (PyTorch's index_select). */
export function indexSelect(x: Tensor, axis: number, index: Indices): Tensor {
  if (x.ndim === 0) throw new ShapeError("indexSelect: input must have at least one dimension");
  const a = normAxis(axis, x.ndim, "indexSelect");
  if (index instanceof Tensor && index.ndim > 1) throw new ShapeError(`indexSelect: index must be 1-D, got ${fmtShape(index.shape)}`);
  const n = x.shape[a];
  const idx = toIndices(index, n, "indexSelect");
  const outer = sizeOf(x.shape.slice(0, a)), inner = sizeOf(x.shape.slice(a + 1)), m = idx.length;
  const shape = x.shape.slice();
  shape[a] = m;
  const out = new Float32Array(outer * m * inner);
  for (let o = 0; o < outer; o++) for (let i = 0; i < m; i++) out.set(x.data.subarray((o * n + idx[i]) * inner, (o * n + idx[i] + 1) * inner), (o * m + i) * inner);
  return result("indexSelect", out, shape, [x], (g) => {
    const dx = new Float32Array(x.size);
    for (let o = 0; o < outer; o++) {
      for (let i = 0; i < m; i++) {
        const d = (o * n + idx[i]) * inner, s = (o * m + i) * inner;
        for (let j = 0; j < inner; j++) dx[d + j] += g[s + j];
      }
    }
    return [dx];
  });
}

/** One-hot rows (..., numClasses) of integer indices; numClasses -1: the largest index + 1. */
export function oneHot(indices: Indices, numClasses = -1): Tensor {
  const it = asIndexTensor(indices);
  let C = numClasses;
  if (C === -1) C = it.size === 0 ? 0 : Math.max(...it.data) + 1;
  if (!Number.isInteger(C) || C < 0) throw new ArgumentError(`oneHot: numClasses must be a non-negative integer or -1, got ${numClasses}`);
  const idx = toIndices(it, C, "oneHot");
  const out = new Float32Array(idx.length * C);
  for (let i = 0; i < idx.length; i++) out[i * C + idx[i]] = 1;
  return new Tensor(out, [...it.shape, C]);
}
