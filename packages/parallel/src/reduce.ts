/**
 * The sums of data-parallel training, in a fixed order so that a run repeats bit for bit:
 * ranks' gradient slots in rank order (within a host), hosts' gradients in host order.
 */
import { type HalfFormat, decodeHalf } from "@chainrule/core";
import type { SimdKernels } from "@chainrule/core/internal";

let scratch64 = new Float64Array(1024);

/** Float64 scratch of at least n values (shared by the blocked loops below; they never nest). */
function acc64(n: number): Float64Array {
  if (scratch64.length < n) scratch64 = new Float64Array(n);
  return scratch64;
}

/**
 * grad = Σ_k w_k · slot_k over [from, to), in fixed rank order. Returns Σ grad² when `norm`.
 * (The slots are not zeroed: the next step's backward overwrites them.)
 * With `simd` (core's kernels bound to the WebAssembly memory over g's buffer), two or more slots
 * evenly spaced in that memory and — for three or more — the weights there too, the kernels run
 * in place (reduce2 / reduceK, two floats per instruction), to the bits of the loops below.
 */
export function reduceRange(g: Float32Array, slots: Float32Array[], w: Float64Array, from: number, to: number, norm: boolean, simd?: SimdKernels | null): number {
  const W = slots.length;
  if (simd && to - from >= 2 && slotsInPlace(g, slots, w)) {
    const pairs = (to - from) >> 1, o = 4 * from, gAt = g.byteOffset + o, s0At = slots[0].byteOffset + o;
    if (W === 2) simd.reduce2(gAt, s0At, slots[1].byteOffset + o, pairs, w[0], w[1]);
    else simd.reduceK(gAt, s0At, pairs, W, slots[1].byteOffset - slots[0].byteOffset, w.byteOffset);
    if (from + 2 * pairs < to) reduceRange(g, slots, w, from + 2 * pairs, to, false);
    return norm ? sumOfSquares(g, from, to) : 0;
  }
  if (W === 1) {
    const s0 = slots[0], w0 = w[0];
    if (w0 === 1) g.set(s0.subarray(from, to), from);
    else for (let i = from; i < to; i++) g[i] = w0 * s0[i];
  } else if (W === 2) {
    const s0 = slots[0], s1 = slots[1], w0 = w[0], w1 = w[1];
    for (let i = from; i < to; i++) g[i] = w0 * s0[i] + w1 * s1[i];
  } else {
    // Fixed rank order, accumulated in float64, rounded once. Blocked so each slot's stretch stays in cache.
    const B = 1024, acc = acc64(B);
    for (let a = from; a < to; a += B) {
      const b = Math.min(a + B, to);
      for (let i = a; i < b; i++) acc[i - a] = 0;
      for (let k = 0; k < W; k++) {
        const sk = slots[k], wk = w[k];
        if (wk !== 0) for (let i = a; i < b; i++) acc[i - a] += wk * sk[i];
      }
      for (let i = a; i < b; i++) g[i] = acc[i - a];
    }
  }
  return norm ? sumOfSquares(g, from, to) : 0;
}

/** Whether the SIMD reduce reaches its operands: every slot in g's buffer, `stride` bytes apart, and the weights there for reduceK. */
function slotsInPlace(g: Float32Array, slots: Float32Array[], w: Float64Array): boolean {
  const W = slots.length, buf = g.buffer;
  if (W < 2 || (W > 2 && w.buffer !== buf)) return false;
  const s0 = slots[0].byteOffset, stride = slots[1].byteOffset - s0;
  for (let k = 0; k < W; k++) if (slots[k].buffer !== buf || slots[k].byteOffset !== s0 + k * stride) return false;
  return true;
}

export function sumOfSquares(g: Float32Array, from: number, to: number): number {
  let ss = 0;
  for (let i = from; i < to; i++) ss += g[i] * g[i];
  return ss;
}

/** The SIMD combine's operands: core's kernels bound to the memory that holds them, and H float64 there for the weights. */
export interface CombineKernels { kernels: SimdKernels; weights: Float64Array }

/**
 * out[outAt + i] = Σ_h w[h] · all[h·stride + allAt + i] for i in [0, n): the hosts' values in host
 * order, accumulated in float64 and rounded once — the same bits whichever host computes it.
 * With `simd`, and `out` and `all` in the memory its kernels are bound to, the kernels run in place
 * (two floats per instruction), to the bits of the loops below (a NaN stays NaN, but which of two
 * NaNs' payloads a sum keeps is not fixed: JavaScript's JIT may swap an addition's operands).
 */
export function combineHosts(out: Float32Array, outAt: number, all: Float32Array, stride: number, allAt: number, n: number, w: readonly number[], simd?: CombineKernels | null): void {
  const H = w.length;
  if (simd && out.buffer === simd.weights.buffer && all.buffer === simd.weights.buffer && simd.weights.length >= H && n >= 2) {
    const pairs = n >> 1, o = out.byteOffset + 4 * outAt, a = all.byteOffset + 4 * allAt;
    if (H === 2) simd.kernels.reduce2(o, a, a + 4 * stride, pairs, w[0], w[1]);
    else {
      for (let h = 0; h < H; h++) simd.weights[h] = w[h];
      simd.kernels.combineK(o, a, pairs, H, 4 * stride, simd.weights.byteOffset);
    }
    if (2 * pairs < n) combineHosts(out, outAt + 2 * pairs, all, stride, allAt + 2 * pairs, n - 2 * pairs, w);
    return;
  }
  if (H === 2) {
    // The common case, unrolled: w0·a + w1·b, as reduceRange's two slots (1 host × 2 workers). The
    // loop below computes (0 + w0·a) + w1·b: the same bits except that it turns −0 + −0 into +0.
    const w0 = w[0], w1 = w[1], b = stride + allAt;
    for (let i = 0; i < n; i++) out[outAt + i] = w0 * all[allAt + i] + w1 * all[b + i];
    return;
  }
  // Blocked so each host's stretch stays in cache, as reduceRange does for the slots.
  const B = 1024, acc = acc64(B);
  for (let a = 0; a < n; a += B) {
    const m = Math.min(B, n - a);
    acc.fill(0, 0, m);
    for (let h = 0; h < H; h++) {
      const wh = w[h], o = h * stride + allAt + a;
      for (let i = 0; i < m; i++) acc[i] += wh * all[o + i];
    }
    for (let i = 0; i < m; i++) out[outAt + a + i] = acc[i];
  }
}

let decoded = new Float32Array(1024);

/**
 * combineHosts over the hosts' values sent as 16-bit floats (`format`, gradientCompression):
 * halves[h·stride + allAt + i] widened exactly, then combined — the bits of decoding them with
 * core's decodeHalf and combining. With `simd` and the operands in its memory, one fused pass
 * (widen, weigh and sum four values at a time); else decoded into a scratch array first.
 */
export function combineHostHalves(format: HalfFormat, out: Float32Array, outAt: number, halves: Uint16Array, stride: number, allAt: number, n: number, w: readonly number[], simd?: CombineKernels | null): void {
  const H = w.length;
  if (simd && out.buffer === simd.weights.buffer && halves.buffer === simd.weights.buffer && simd.weights.length >= H && n >= 4) {
    const quads = n >> 2, k = simd.kernels;
    for (let h = 0; h < H; h++) simd.weights[h] = w[h];
    const fused = format === "bf16" ? k.combineBf16 : k.combineFp16;
    fused(out.byteOffset + 4 * outAt, halves.byteOffset + 2 * allAt, quads, H, 2 * stride, simd.weights.byteOffset, H === 2 ? 0 : 1);
    if (4 * quads < n) combineHostHalves(format, out, outAt + 4 * quads, halves, stride, allAt + 4 * quads, n - 4 * quads, w);
    return;
  }
  if (decoded.length < H * n) decoded = new Float32Array(H * n);
  for (let h = 0; h < H; h++) decodeHalf(format, decoded.subarray(h * n, (h + 1) * n), halves.subarray(h * stride + allAt, h * stride + allAt + n));
  combineHosts(out, outAt, decoded, n, 0, n, w);
}
