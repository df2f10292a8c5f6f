/**
 * General scaled dot-product attention, PyTorch's F.scaled_dot_product_attention, composed from
 * matmul, where, softmax and dropout (their gradients give its own). The GPT's fused causal
 * attention over packed qkv (ops/attention.ts) stays the fast path for the causal self-attention
 * of the models; this form covers masks, biases, cross-attention and non-causal attention.
 */
import { ArgumentError, ShapeError, fmtShape } from "../errors.js";
import { Tensor } from "../tensor/tensor.js";
import { add, mul } from "./elementwise.js";
import { matmul } from "./matmul.js";
import { transpose } from "./shape.js";
import { softmax } from "./softmax.js";
import { dropout, where } from "./indexing.js";
import { checkOptions } from "../options.js";

export interface ScaledDotProductAttentionOptions {
  /** Which scores to keep (1/true = attend, as PyTorch's boolean True): a 0/1 tensor broadcastable to the scores (..., Tq, Tk), or a Uint8Array of Tq·Tk or of all the scores. */
  mask?: Tensor | Uint8Array | null;
  /** Added to the scores (−Infinity allowed), broadcastable to (..., Tq, Tk). */
  attnBias?: Tensor | null;
  /** Query i attends to keys j ≤ i (top-left aligned, as PyTorch's is_causal). */
  isCausal?: boolean;
  /** Dropout probability on the attention weights (applied when > 0). */
  dropout?: number;
  /** Score scale; default 1/√D. */
  scale?: number;
}

/**
 * softmax(q·kᵀ·scale + bias, masked) · v for q (..., Tq, D), k (..., Tk, D), v (..., Tk, Dv) → (..., Tq, Dv).
 * A query whose keys are all masked gets NaN, as in PyTorch.
 */
export function scaledDotProductAttention(q: Tensor, k: Tensor, v: Tensor, opts: ScaledDotProductAttentionOptions = {}): Tensor {
  const op = "scaledDotProductAttention";
  checkOptions(op, opts, ["mask", "attnBias", "isCausal", "dropout", "scale"]);
  if (q.ndim < 2 || k.ndim < 2 || v.ndim < 2) throw new ShapeError(`${op}: q, k and v need at least 2 dimensions (..., T, D), got ${fmtShape(q.shape)}, ${fmtShape(k.shape)}, ${fmtShape(v.shape)}`);
  const D = q.shape[q.ndim - 1], Tq = q.shape[q.ndim - 2], Tk = k.shape[k.ndim - 2];
  if (k.shape[k.ndim - 1] !== D) throw new ShapeError(`${op}: q ${fmtShape(q.shape)} and k ${fmtShape(k.shape)} differ in their last dimension`);
  if (v.shape[v.ndim - 2] !== Tk) throw new ShapeError(`${op}: k ${fmtShape(k.shape)} and v ${fmtShape(v.shape)} have different numbers of keys`);
  const p = opts.dropout ?? 0;
  if (!(p >= 0 && p <= 1)) throw new ArgumentError(`${op}: dropout must be in [0, 1], got ${p}`);
  const scale = opts.scale ?? 1 / Math.sqrt(D);
  let scores = mul(matmul(q, transpose(k, -2, -1)), scale); // (..., Tq, Tk)
  if (opts.attnBias) scores = add(scores, opts.attnBias);
  if (opts.isCausal) {
    const keep = new Float32Array(Tq * Tk);
    for (let i = 0; i < Tq; i++) for (let j = 0; j <= Math.min(i, Tk - 1); j++) keep[i * Tk + j] = 1;
    scores = where(new Tensor(keep, [Tq, Tk]), scores, -Infinity);
  }
  if (opts.mask) scores = where(maskTensor(op, opts.mask, scores.shape), scores, -Infinity);
  let weights = softmax(scores, -1);
  if (p > 0) weights = dropout(weights, p, true);
  return matmul(weights, v);
}

function maskTensor(op: string, mask: Tensor | Uint8Array, scoreShape: readonly number[]): Tensor {
  if (mask instanceof Tensor) return mask;
  const [Tq, Tk] = scoreShape.slice(-2);
  const total = scoreShape.reduce((a, b) => a * b, 1);
  if (mask.length === Tq * Tk) return new Tensor(Float32Array.from(mask), [Tq, Tk]);
  if (mask.length === total) return new Tensor(Float32Array.from(mask), scoreShape);
  throw new ShapeError(`${op}: a Uint8Array mask must have Tq·Tk = ${Tq * Tk} or ${total} (all the scores ${fmtShape(scoreShape)}) entries, got ${mask.length}`);
}
