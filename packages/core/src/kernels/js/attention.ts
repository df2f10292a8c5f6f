/**
 * Causal attention's softmax over H score matrices (T, T), forward and backward, with an optional
 * dropout mask (ops/attention.ts). Without dropout and with T a multiple of 4 the rows run in
 * WebAssembly SIMD (simd/attention.ts); the loops below are the reference.
 */
import { expNonPositive } from "./nn.js";
import { simdCausalSoftmax, simdCausalSoftmaxBackward } from "../simd/attention.js";

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
