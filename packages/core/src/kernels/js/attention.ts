/**
 * Causal attention's softmax over H score matrices (T, T), forward and backward, with an optional
 * dropout mask (ops/attention.ts). Without dropout and with T a multiple of 4 the rows run in
 * WebAssembly SIMD (simd/attention.ts); the loops below are the reference.
 */
import type { Kernels } from "../kernels.js";
import { expNonPositive } from "./nn.js";
import { simdCausalSoftmax, simdCausalSoftmaxBackward, simdScoreBlocks } from "../simd/attention.js";

// The per-row loops live in plain top-level functions rather than in causalAttention and its
// backward closure (ops/attention.ts): those run a few times per step, so V8 would execute their
// long loops in the interpreter until on-stack replacement and then deoptimise on the code after
// them (measured: boxed doubles, ~MBs of garbage per step). These stay optimised.

/**
 * In place over H score matrices (T, T) at P[pb..]: row i ← softmax of its first i + 1 entries,
 * zeros after (the causal mask). With a dropout mask, Pd ← P ⊙ mask over the same range.
 */
export function causalSoftmax(P: Float32Array, pb: number, H: number, T: number, mask: Float32Array | null, Pd: Float32Array): void {
  if (mask === null && simdCausalSoftmax(P, pb, H, T)) return; // WebAssembly SIMD (simd/attention.ts)
  causalSoftmaxLoop(P, pb, H, T, mask, Pd);
}

/** causalSoftmax's TypeScript loop (the reference; with dropout, and the fallback without SIMD). */
export function causalSoftmaxLoop(P: Float32Array, pb: number, H: number, T: number, mask: Float32Array | null, Pd: Float32Array): void {
  for (let h = 0; h < H; h++) {
    const ph = pb + h * T * T;
    for (let i = 0; i < T; i++) {
      const row = ph + i * T;
      let m = -Infinity;
      for (let j = 0; j <= i; j++) if (P[row + j] > m) m = P[row + j];
      let s = 0;
      for (let j = 0; j <= i; j++) {
        const e = expNonPositive(P[row + j] - m);
        P[row + j] = e;
        s += e;
      }
      const inv = 1 / s;
      for (let j = 0; j <= i; j++) P[row + j] *= inv;
      P.fill(0, row + i + 1, row + T); // causal mask: future positions get zero weight
      if (mask !== null) for (let j = 0; j < T; j++) Pd[row + j] = P[row + j] * mask[row + j];
    }
  }
}

/**
 * In place over H gradient matrices (T, T) at dP[0..] (one batch element), with the
 * probabilities at P[pb..]: dP ← P ⊙ (dP·mask − Σ_j P·dP·mask) on j ≤ i, zero after.
 */
export function causalSoftmaxBackward(dP: Float32Array, P: Float32Array, pb: number, H: number, T: number, mask: Float32Array | null): void {
  if (mask === null && simdCausalSoftmaxBackward(dP, P, pb, H, T)) return; // WebAssembly SIMD (simd/attention.ts)
  causalSoftmaxBackwardLoop(dP, P, pb, H, T, mask);
}

/** causalSoftmaxBackward's TypeScript loop (the reference; with dropout, and the fallback without SIMD). */
export function causalSoftmaxBackwardLoop(dP: Float32Array, P: Float32Array, pb: number, H: number, T: number, mask: Float32Array | null): void {
  const TT = T * T;
  for (let h = 0; h < H; h++) {
    for (let i = 0; i < T; i++) {
      const row = h * TT + i * T, prow = pb + row;
      if (mask !== null) for (let j = 0; j <= i; j++) dP[row + j] *= mask[prow + j];
      let dot = 0;
      for (let j = 0; j <= i; j++) dot += P[prow + j] * dP[row + j];
      for (let j = 0; j <= i; j++) dP[row + j] = P[prow + j] * (dP[row + j] - dot);
      dP.fill(0, row + i + 1, row + T);
    }
  }
}

/** Scratch for H heads' scores gradient where no score blocks are available (kept between calls). */
let headScratch = new Float32Array(0);
function headsBuffer(len: number): Float32Array {
  if (headScratch.length < len) headScratch = new Float32Array(len);
  return headScratch;
}

/**
 * Kernels.causalAttentionForward over the backend's `gemm`: the scores GEMM of every head, the causal
 * softmax, the P·v GEMM of every head. With SIMD the scores go straight into score blocks in the
 * scratch memory (simd/attention.ts) where the softmax runs in place and the P·v GEMMs read them;
 * P is copied out once, for the backward. Otherwise (no SIMD, T not a multiple of 4, or blocks over
 * simd/attention.ts's limit) the same steps over P itself.
 */
export function causalAttentionForwardVia(gemm: Kernels["gemm"]): Kernels["causalAttentionForward"] {
  return function causalAttentionForward(qkv, base, P, pb, y, yb, H, T, hs, scale) {
    const C = H * hs, C3 = 3 * C, TT = T * T;
    const blocks = simdScoreBlocks(H, T);
    const S = blocks ? blocks.f32 : P, at = blocks ? blocks.at : pb;
    for (let h = 0; h < H; h++) {
      const q = base + h * hs;
      gemm(false, true, T, T, hs, scale, qkv, q, C3, qkv, q + C, C3, 0, S, at + h * TT, T); // scores (T, T) = scale · q kᵀ
    }
    if (blocks) {
      blocks.softmax();
      P.set(S.subarray(at, at + H * TT), pb);
    } else {
      causalSoftmax(P, pb, H, T, null, P);
    }
    for (let h = 0; h < H; h++) {
      gemm(false, false, T, hs, T, 1, S, at + h * TT, T, qkv, base + 2 * C + h * hs, C3, 0, y, yb + h * hs, C); // y_h (T, hs) = P v
    }
  };
}

/**
 * Kernels.causalAttentionBackward over the backend's `gemm`: for every head dP = dy·vᵀ (into the
 * score blocks with SIMD, else a scratch) and dv = Pᵀ·dy; dS = P ⊙ (dP − Σ P·dP) in place; then
 * dq = scale·dS·k and dk = scale·dSᵀ·q.
 */
export function causalAttentionBackwardVia(gemm: Kernels["gemm"]): Kernels["causalAttentionBackward"] {
  return function causalAttentionBackward(dqkv, dy, yb, qkv, base, P, pb, H, T, hs, scale) {
    const C = H * hs, C3 = 3 * C, TT = T * T;
    const blocks = simdScoreBlocks(H, T);
    const D = blocks ? blocks.f32 : headsBuffer(H * TT), at = blocks ? blocks.at : 0;
    for (let h = 0; h < H; h++) {
      const o = h * hs;
      gemm(false, true, T, T, hs, 1, dy, yb + o, C, qkv, base + 2 * C + o, C3, 0, D, at + h * TT, T); // dP = dy vᵀ
    }
    for (let h = 0; h < H; h++) {
      const o = h * hs;
      gemm(true, false, T, hs, T, 1, P, pb + h * TT, T, dy, yb + o, C, 0, dqkv, base + 2 * C + o, C3); // dv = Pᵀ dy
    }
    if (blocks) blocks.softmaxBackward(P, pb);
    else causalSoftmaxBackward(D, P, pb, H, T, null);
    for (let h = 0; h < H; h++) {
      const o = h * hs;
      gemm(false, false, T, hs, T, scale, D, at + h * TT, T, qkv, base + C + o, C3, 0, dqkv, base + o, C3); // dq = scale · dS k
    }
    for (let h = 0; h < H; h++) {
      const o = h * hs;
      gemm(true, false, T, hs, T, scale, D, at + h * TT, T, qkv, base + o, C3, 0, dqkv, base + C + o, C3); // dk = scale · dSᵀ q
    }
  };
}
