import type { BinaryOp, UnaryOp } from "../kernels.js";
import { simdAdd, simdMul, simdRelu, simdReluBackward } from "../simd/elementwise.js";

/** From this many floats ReLU and accumulate run in WebAssembly SIMD (below, the call and copies cost more). */
const SIMD_MIN = 1024;

const SQRT1_2 = Math.SQRT1_2;
const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);
const GELU_C = Math.sqrt(2 / Math.PI);

/** erf with |error| < 1.2e-7 (Numerical Recipes' erfc Chebyshev fit), enough for float32. */
export function erf(x: number): number {
  const z = Math.abs(x);
  const t = 1 / (1 + 0.5 * z);
  const r =
    t *
    Math.exp(
      -z * z - 1.26551223 +
        t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 +
        t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))),
    );
  return x >= 0 ? 1 - r : r - 1;
}

export function unary(op: UnaryOp, out: Float32Array, x: Float32Array): void {
  const n = x.length;
  switch (op) {
    case "neg": for (let i = 0; i < n; i++) out[i] = -x[i]; break;
    case "exp": for (let i = 0; i < n; i++) out[i] = Math.exp(x[i]); break;
    case "log": for (let i = 0; i < n; i++) out[i] = Math.log(x[i]); break;
    case "sqrt": for (let i = 0; i < n; i++) out[i] = Math.sqrt(x[i]); break;
    case "abs": for (let i = 0; i < n; i++) out[i] = Math.abs(x[i]); break;
    case "relu": reluForward(out, x); break;
    case "sigmoid": for (let i = 0; i < n; i++) out[i] = 1 / (1 + Math.exp(-x[i])); break;
    case "tanh": for (let i = 0; i < n; i++) out[i] = Math.tanh(x[i]); break;
    case "gelu": for (let i = 0; i < n; i++) { const v = x[i]; out[i] = 0.5 * v * (1 + erf(v * SQRT1_2)); } break;
    case "geluTanh": for (let i = 0; i < n; i++) { const v = x[i]; out[i] = 0.5 * v * (1 + Math.tanh(GELU_C * (v + 0.044715 * v * v * v))); } break;
  }
}

export function unaryBackward(op: UnaryOp, dx: Float32Array, dout: Float32Array, x: Float32Array, y: Float32Array): void {
  const n = x.length;
  switch (op) {
    case "neg": for (let i = 0; i < n; i++) dx[i] = -dout[i]; break;
    case "exp": for (let i = 0; i < n; i++) dx[i] = dout[i] * y[i]; break;
    case "log": for (let i = 0; i < n; i++) dx[i] = dout[i] / x[i]; break;
    case "sqrt": for (let i = 0; i < n; i++) dx[i] = dout[i] * 0.5 / y[i]; break;
    case "abs": for (let i = 0; i < n; i++) dx[i] = dout[i] * Math.sign(x[i]); break;
    case "relu": reluBackward(dx, dout, x); break;
    case "sigmoid": for (let i = 0; i < n; i++) { const s = y[i]; dx[i] = dout[i] * s * (1 - s); } break;
    case "tanh": for (let i = 0; i < n; i++) { const t = y[i]; dx[i] = dout[i] * (1 - t * t); } break;
    case "gelu":
      for (let i = 0; i < n; i++) {
        const v = x[i];
        const cdf = 0.5 * (1 + erf(v * SQRT1_2));
        dx[i] = dout[i] * (cdf + v * INV_SQRT_2PI * Math.exp(-0.5 * v * v));
      }
      break;
    case "geluTanh":
      for (let i = 0; i < n; i++) {
        const v = x[i];
        const inner = GELU_C * (v + 0.044715 * v * v * v);
        const t = Math.tanh(inner);
        const dinner = GELU_C * (1 + 3 * 0.044715 * v * v);
        dx[i] = dout[i] * (0.5 * (1 + t) + 0.5 * v * (1 - t * t) * dinner);
      }
      break;
  }
}

/** Int32 views of float32 data (same memory), for branch-free selects on the bit patterns. */
function bits(a: Float32Array): Int32Array {
  return new Int32Array(a.buffer, a.byteOffset, a.length);
}

/**
 * out = max(x, 0), NaN kept, on the bit patterns without a branch: with random
 * signs, `v > 0 ? v : 0` mispredicts half the time and ran ~4x slower (bench/mlp.ts).
 * Kept: non-negative sign bit, or a NaN; zeroed (to +0): everything else.
 */
export function reluForward(out: Float32Array, x: Float32Array): void {
  const n = x.length;
  if (n >= SIMD_MIN && simdRelu(out, x, n)) return; // same bits, 4–5× faster (WebAssembly SIMD)
  const xb = bits(x), ob = bits(out);
  for (let i = 0; i < n; i++) {
    const b = xb[i];
    ob[i] = b & (~(b >> 31) | ((0x7f800000 - (b & 0x7fffffff)) >> 31));
  }
}

/** dx = x > 0 ? dout : 0, branch-free: x > 0 exactly when its bits are in [1, 0x7f800000] (+denormal ... +Inf). */
export function reluBackward(dx: Float32Array, dout: Float32Array, x: Float32Array): void {
  const n = x.length;
  if (n >= SIMD_MIN && simdReluBackward(dx, dout, x, n)) return;
  const xb = bits(x), gb = bits(dout), db = bits(dx);
  for (let i = 0; i < n; i++) {
    const b = xb[i];
    db[i] = gb[i] & (((0 - b) & (b - 0x7f800001)) >> 31);
  }
}

/**
 * dst += src over dst.length (the autograd engine's gradient sums): in WebAssembly SIMD from
 * SIMD_MIN floats (4–5× the loop, copies included; the same bits), else this loop.
 */
export function accumulate(dst: Float32Array, src: Float32Array): void {
  const n = dst.length;
  if (n >= SIMD_MIN && simdAdd(dst, dst, src, n)) return;
  for (let j = 0; j < n; j++) dst[j] += src[j];
}

/**
 * out = a ⊙ b over the first n floats (out may alias a or b): in WebAssembly SIMD (the same bits;
 * 0.36 ms for 393k floats, copies included, against the loop's 1.8 ms), else this loop.
 */
export function mul(out: Float32Array, a: Float32Array, b: Float32Array, n: number): void {
  if (simdMul(out, a, b, n)) return;
  for (let i = 0; i < n; i++) out[i] = a[i] * b[i];
}

function apply(op: BinaryOp, a: number, b: number): number {
  switch (op) {
    case "add": return a + b;
    case "sub": return a - b;
    case "mul": return a * b;
    case "div": return a / b;
  }
}

export function binary(
  op: BinaryOp, out: Float32Array, outShape: readonly number[],
  a: Float32Array, aStrides: readonly number[], b: Float32Array, bStrides: readonly number[],
): void {
  const n = out.length;
  // Fast paths: same shape, and one side a scalar.
  if (a.length === n && b.length === n) {
    switch (op) {
      case "add": for (let i = 0; i < n; i++) out[i] = a[i] + b[i]; return;
      case "sub": for (let i = 0; i < n; i++) out[i] = a[i] - b[i]; return;
      case "mul": for (let i = 0; i < n; i++) out[i] = a[i] * b[i]; return;
      case "div": for (let i = 0; i < n; i++) out[i] = a[i] / b[i]; return;
    }
  }
  if (b.length === 1 && a.length === n) {
    const s = b[0];
    switch (op) {
      case "add": for (let i = 0; i < n; i++) out[i] = a[i] + s; return;
      case "sub": for (let i = 0; i < n; i++) out[i] = a[i] - s; return;
      case "mul": for (let i = 0; i < n; i++) out[i] = a[i] * s; return;
      case "div": for (let i = 0; i < n; i++) out[i] = a[i] / s; return;
    }
  }
  // General case: walk the output with an odometer over all but the last dim.
  const nd = outShape.length;
  const last = nd === 0 ? 1 : outShape[nd - 1];
  const as = nd === 0 ? 0 : aStrides[nd - 1];
  const bs = nd === 0 ? 0 : bStrides[nd - 1];
  const idx = new Array<number>(Math.max(nd - 1, 0)).fill(0);
  let ao = 0, bo = 0;
  for (let o = 0; o < n; o += last) {
    for (let j = 0; j < last; j++) out[o + j] = apply(op, a[ao + j * as], b[bo + j * bs]);
    for (let d = nd - 2; d >= 0; d--) {
      idx[d]++;
      ao += aStrides[d];
      bo += bStrides[d];
      if (idx[d] < outShape[d]) break;
      ao -= aStrides[d] * outShape[d];
      bo -= bStrides[d] * outShape[d];
      idx[d] = 0;
    }
  }
}

export function permute(out: Float32Array, x: Float32Array, shape: readonly number[], perm: readonly number[]): void {
  const nd = shape.length;
  const inStrides = new Array<number>(nd);
  let acc = 1;
  for (let i = nd - 1; i >= 0; i--) { inStrides[i] = acc; acc *= shape[i]; }
  const outShape = perm.map((p) => shape[p]);
  const srcStrides = perm.map((p) => inStrides[p]); // stride in x for each output dim
  const n = out.length;
  if (nd === 0) { out[0] = x[0]; return; }
  const last = outShape[nd - 1];
  const ls = srcStrides[nd - 1];
  const idx = new Array<number>(nd).fill(0);
  let src = 0;
  for (let o = 0; o < n; o += last) {
    for (let j = 0; j < last; j++) out[o + j] = x[src + j * ls];
    for (let d = nd - 2; d >= 0; d--) {
      idx[d]++;
      src += srcStrides[d];
      if (idx[d] < outShape[d]) break;
      src -= srcStrides[d] * outShape[d];
      idx[d] = 0;
    }
  }
}

export function addRowVector(out: Float32Array, bias: Float32Array, rows: number, cols: number): void {
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    for (let c = 0; c < cols; c++) out[o + c] += bias[c];
  }
}

/**
 * out[c] (+)= Σ_r x[r, c]. Four rows per pass over `out`, summed in float64 and rounded once,
 * so `out` is read and written a quarter as often (the bias gradient of every linear layer).
 */
export function sumRows(out: Float32Array, x: Float32Array, rows: number, cols: number, accumulate = false): void {
  if (!accumulate) out.fill(0, 0, cols);
  let r = 0;
  for (; r + 4 <= rows; r += 4) {
    const o0 = r * cols, o1 = o0 + cols, o2 = o1 + cols, o3 = o2 + cols;
    for (let c = 0; c < cols; c++) out[c] += (x[o0 + c] + x[o1 + c]) + (x[o2 + c] + x[o3 + c]);
  }
  for (; r < rows; r++) {
    const o = r * cols;
    for (let c = 0; c < cols; c++) out[c] += x[o + c];
  }
}
