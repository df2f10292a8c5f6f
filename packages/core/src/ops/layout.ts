/** Ops that rearrange or extend values: expand, repeat, flip, pad, tril and triu. */
import { ArgumentError, ShapeError, fmtShape } from "../errors.js";
import { Tensor } from "../tensor/tensor.js";
import { broadcastStrides, normAxis, sizeOf, stridesOf } from "../tensor/shape.js";
import { result, sumToShape } from "./op.js";
import { reshape } from "./shape.js";
import { where } from "./indexing.js";
import { checkOptions } from "../options.js";

/** out[o] = x[src[o]] (src -1: `fill`); the backward adds each output's gradient to its source. */
function mapped(op: string, x: Tensor, shape: number[], src: Int32Array, fill = 0): Tensor {
  const out = new Float32Array(src.length);
  for (let o = 0; o < src.length; o++) out[o] = src[o] < 0 ? fill : x.data[src[o]];
  return result(op, out, shape, [x], (g) => {
    const dx = new Float32Array(x.size);
    for (let o = 0; o < src.length; o++) if (src[o] >= 0) dx[src[o]] += g[o];
    return [dx];
  });
}

/** For each element of `shape`, in order: `visit(coord, flatIndex)`. */
function eachCoord(shape: readonly number[], visit: (coord: number[], o: number) => void): void {
  const n = sizeOf(shape), coord = new Array<number>(shape.length).fill(0);
  for (let o = 0; o < n; o++) {
    visit(coord, o);
    for (let d = shape.length - 1; d >= 0; d--) {
      if (++coord[d] < shape[d]) break;
      coord[d] = 0;
    }
  }
}

/** Broadcasts x to `shape` (-1 keeps a dimension), PyTorch's expand; the gradient sums back. */
export function expand(x: Tensor, shape: readonly number[]): Tensor {
  if (shape.length < x.ndim) throw new ShapeError(`expand: target ${fmtShape(shape)} has fewer dimensions than input ${fmtShape(x.shape)}`);
  const off = shape.length - x.ndim;
  const target = shape.map((d, i) => (d === -1 && i >= off ? x.shape[i - off] : d));
  for (let i = 0; i < target.length; i++) {
    const have = i >= off ? x.shape[i - off] : 1;
    if (!Number.isInteger(target[i]) || target[i] < 0 || (have !== 1 && have !== target[i])) {
      throw new ShapeError(`expand: cannot expand ${fmtShape(x.shape)} to ${fmtShape(shape)} (dimension ${i})`);
    }
  }
  const strides = broadcastStrides(x.shape, target);
  const out = new Float32Array(sizeOf(target));
  eachCoord(target, (c, o) => {
    let s = 0;
    for (let d = 0; d < c.length; d++) s += c[d] * strides[d];
    out[o] = x.data[s];
  });
  return result("expand", out, target, [x], (g) => [sumToShape(g, target, x.shape)]);
}

/** Tiles x `reps[i]` times along each dimension (reps may be longer than x's rank), PyTorch's repeat. */
export function repeat(x: Tensor, reps: readonly number[]): Tensor {
  if (reps.length < x.ndim) throw new ArgumentError(`repeat: ${reps.length} repeat counts for a tensor of ${x.ndim} dimensions`);
  if (reps.some((r) => !Number.isInteger(r) || r < 0)) throw new ArgumentError(`repeat: counts must be non-negative integers, got [${reps.join(",")}]`);
  const shape = [...new Array<number>(reps.length - x.ndim).fill(1), ...x.shape];
  // (s0, s1, ...) → (1, s0, 1, s1, ...) → expand to (r0, s0, r1, s1, ...) → (r0·s0, r1·s1, ...)
  const interleaved = shape.flatMap((s) => [1, s]);
  const expanded = shape.flatMap((s, i) => [reps[i], s]);
  return reshape(expand(reshape(x, interleaved), expanded), shape.map((s, i) => s * reps[i]));
}

/** Reverses the order along the given axes. */
export function flip(x: Tensor, axes: number | readonly number[]): Tensor {
  const list = (typeof axes === "number" ? [axes] : [...axes]).map((a) => normAxis(a, x.ndim, "flip"));
  const strides = stridesOf(x.shape);
  const src = new Int32Array(x.size);
  eachCoord(x.shape, (c, o) => {
    let s = 0;
    for (let d = 0; d < c.length; d++) s += (list.includes(d) ? x.shape[d] - 1 - c[d] : c[d]) * strides[d];
    src[o] = s;
  });
  return mapped("flip", x, x.shape.slice(), src);
}

export interface PadOptions {
  /** "constant" (default) fills with `value`; "reflect" mirrors without repeating the edge. */
  mode?: "constant" | "reflect";
  value?: number;
}

/**
 * Pads the last dimensions, PyTorch's F.pad: `pads` = [left, right] for the last dimension,
 * then [left, right] for the one before, and so on.
 */
export function pad(x: Tensor, pads: readonly number[], opts: PadOptions = {}): Tensor {
  checkOptions("pad", opts, ["mode", "value"]);
  const mode = opts.mode ?? "constant", value = opts.value ?? 0;
  if (mode !== "constant" && mode !== "reflect") throw new ArgumentError(`pad: unknown mode '${mode}' (expected constant or reflect)`);
  if (pads.length % 2 !== 0 || pads.length / 2 > x.ndim) throw new ArgumentError(`pad: expected pairs for at most ${x.ndim} dimensions, got [${pads.join(",")}]`);
  if (pads.some((p) => !Number.isInteger(p) || p < 0)) throw new ArgumentError(`pad: padding must be non-negative integers, got [${pads.join(",")}]`);
  const before = new Array<number>(x.ndim).fill(0), after = new Array<number>(x.ndim).fill(0);
  for (let i = 0; i < pads.length / 2; i++) {
    const d = x.ndim - 1 - i;
    before[d] = pads[2 * i];
    after[d] = pads[2 * i + 1];
    if (mode === "reflect" && (before[d] >= x.shape[d] || after[d] >= x.shape[d])) {
      throw new ArgumentError(`pad: reflect padding [${before[d]},${after[d]}] must be smaller than dimension ${d} of input ${fmtShape(x.shape)}`);
    }
  }
  const shape = x.shape.map((s, d) => s + before[d] + after[d]);
  const strides = stridesOf(x.shape);
  const src = new Int32Array(sizeOf(shape));
  eachCoord(shape, (c, o) => {
    let s = 0;
    for (let d = 0; d < c.length; d++) {
      let i = c[d] - before[d];
      const n = x.shape[d];
      if (i < 0 || i >= n) {
        if (mode === "constant") { s = -1; break; }
        i = i < 0 ? -i : 2 * (n - 1) - i;
      }
      s += i * strides[d];
    }
    src[o] = s;
  });
  return mapped("pad", x, shape, src, value);
}

/** 1 where the last two coordinates (i, j) satisfy `keep(j - i)`, for a (rows, cols) plane. */
function triangleMask(op: string, x: Tensor, keep: (offset: number) => boolean): Tensor {
  if (x.ndim < 2) throw new ShapeError(`${op}: input must have at least 2 dimensions, got ${fmtShape(x.shape)}`);
  const [R, C] = x.shape.slice(-2);
  const m = new Float32Array(R * C);
  for (let i = 0; i < R; i++) for (let j = 0; j < C; j++) m[i * C + j] = keep(j - i) ? 1 : 0;
  return new Tensor(m, [R, C]);
}

/** The lower triangle (j ≤ i + diagonal) of the last two dimensions; the rest 0. */
export function tril(x: Tensor, diagonal = 0): Tensor {
  return where(triangleMask("tril", x, (o) => o <= diagonal), x, 0);
}

/** The upper triangle (j ≥ i + diagonal) of the last two dimensions; the rest 0. */
export function triu(x: Tensor, diagonal = 0): Tensor {
  return where(triangleMask("triu", x, (o) => o >= diagonal), x, 0);
}
