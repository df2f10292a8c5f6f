import { ArgumentError, ShapeError, fmtShape } from "../errors.js";
import { Tensor } from "../tensor/tensor.js";
import { outputBuffer } from "../tensor/arena.js";
import { type Generator, defaultGenerator } from "../tensor/random.js";
import { kernels } from "../kernels/kernels.js";
import { result } from "./op.js";
import { gradBuffer, graphFreedAfterBackward, isGradEnabled, releaseGradBuffer } from "../autograd/engine.js";

export interface CausalAttentionOptions {
  /** Dropout probability on the attention weights (applied only when `training`). */
  dropout?: number;
  training?: boolean;
  /** Source of the dropout mask; the global seeded generator by default (like `dropout`). */
  generator?: Generator;
}

/**
 * Fused causal multi-head self-attention over a packed qkv projection.
 *
 * qkv (B, T, 3C) holds, per position, [q | k | v], each C = nHead·hs wide with
 * head h at columns h·hs..(h+1)·hs (the layout `Linear(C, 3C)` produces).
 * Returns y (B, T, C) with heads merged, i.e. what
 *   softmax(mask(q kᵀ / √hs)) · v, heads split to (B, H, T, hs) and merged back,
 * computes in PyTorch, but without any permute copy: each (b, h) product is a
 * strided GEMM reading q, k, v in place (leading dimension 3C) and writing y in
 * place (leading dimension C). Scale, causal mask, softmax and dropout are one
 * pass over each score row, and only the j ≤ i half of each row is touched.
 *
 * Saved for backward: the attention probabilities P (B, H, T, T) and the dropout mask.
 */
export function causalAttention(qkv: Tensor, nHead: number, opts: CausalAttentionOptions = {}): Tensor {
  if (qkv.ndim !== 3) throw new ShapeError(`causalAttention: qkv must be (B, T, 3C), got ${fmtShape(qkv.shape)}`);
  const [B, T, C3] = qkv.shape;
  if (!Number.isInteger(nHead) || nHead <= 0) throw new ArgumentError(`causalAttention: nHead must be a positive integer, got ${nHead}`);
  if (C3 % (3 * nHead) !== 0) throw new ShapeError(`causalAttention: last dimension ${C3} of qkv ${fmtShape(qkv.shape)} is not 3 × nHead (${nHead}) × head size`);
  const p = opts.dropout ?? 0;
  if (!(p >= 0 && p < 1)) throw new ArgumentError(`causalAttention: dropout must be in [0, 1), got ${p}`);
  const C = C3 / 3, H = nHead, hs = C / H, TT = T * T;
  const scale = 1 / Math.sqrt(hs);
  const k = kernels();
  const x = qkv.data;

  // P, the mask and Pd are saved for backward only (no tensor exposes them): pooled buffers,
  // every element written below, handed back by the backward that frees the graph.
  const P = gradBuffer(B * H * TT); // softmax probabilities, zero above the diagonal
  const useDrop = (opts.training ?? true) && p > 0;
  let mask: Float32Array | null = null; // 0 or 1/(1-p) per weight
  let Pd = P; // probabilities after dropout (what multiplies v)
  if (useDrop) {
    const gen = opts.generator ?? defaultGenerator;
    const keep = 1 / (1 - p);
    mask = gradBuffer(B * H * TT);
    Pd = gradBuffer(B * H * TT);
    for (let i = 0; i < mask.length; i++) mask[i] = gen.random() < p ? 0 : keep;
  }
  const y = outputBuffer(B * T * C); // every head's columns written with beta = 0

  for (let b = 0; b < B; b++) {
    const base = b * T * C3;
    const pb = b * H * TT;
    if (mask === null) {
      // the three steps below head by head, the scores kept where the softmax runs (kernels.ts)
      k.causalAttentionForward(x, base, P, pb, y, b * T * C, H, T, hs, scale);
    } else {
      // scores (H, T, T) = scale · q kᵀ, one GEMM per head over the packed layout.
      k.gemmStridedBatched(false, true, T, T, hs, scale, x, base, C3, hs, x, base + C, C3, hs, 0, P, pb, T, TT, H);
      k.causalSoftmax(P, pb, H, T, mask, Pd);
      // y[b, :, h] (T, hs) = Pd (T, T) · v (T, hs), written straight into merged-head layout.
      k.gemmStridedBatched(false, false, T, hs, T, 1, Pd, pb, T, TT, x, base + 2 * C, C3, hs, 0, y, b * T * C, C, hs, H);
    }
  }

  const needGrad = isGradEnabled() && qkv.requiresGrad;
  if (!needGrad) {
    releaseGradBuffer(P); // no backward will read them
    if (mask !== null) { releaseGradBuffer(mask); releaseGradBuffer(Pd); }
  }
  return result("causalAttention", y, [B, T, C], [qkv], (dy) => {
    const dqkv = gradBuffer(qkv.size); // every element written below (three GEMMs with beta = 0)
    if (mask === null) {
      for (let b = 0; b < B; b++) k.causalAttentionBackward(dqkv, dy, b * T * C, x, b * T * C3, P, b * H * TT, H, T, hs, scale);
    } else {
      const dP = gradBuffer(H * TT); // one batch element at a time; scratch, handed back at the end
      for (let b = 0; b < B; b++) {
        const base = b * T * C3;
        const pb = b * H * TT;
        const yb = b * T * C;
        // dPd = dy · vᵀ ; dv = Pdᵀ · dy
        k.gemmStridedBatched(false, true, T, T, hs, 1, dy, yb, C, hs, x, base + 2 * C, C3, hs, 0, dP, 0, T, TT, H);
        k.gemmStridedBatched(true, false, T, hs, T, 1, Pd, pb, T, TT, dy, yb, C, hs, 0, dqkv, base + 2 * C, C3, hs, H);
        // Through dropout and the causal softmax: dS = P ⊙ (dP − Σ_j P·dP), zero above the diagonal.
        k.causalSoftmaxBackward(dP, P, pb, H, T, mask);
        // dq = scale · dS · k ; dk = scale · dSᵀ · q
        k.gemmStridedBatched(false, false, T, hs, T, scale, dP, 0, T, TT, x, base + C, C3, hs, 0, dqkv, base, C3, hs, H);
        k.gemmStridedBatched(true, false, T, hs, T, scale, dP, 0, T, TT, x, base, C3, hs, 0, dqkv, base + C, C3, hs, H);
      }
      releaseGradBuffer(dP);
    }
    if (graphFreedAfterBackward()) {
      releaseGradBuffer(P);
      if (mask !== null) { releaseGradBuffer(mask); releaseGradBuffer(Pd); }
    }
    return [dqkv];
  });
}
