import { ArgumentError, ShapeError, fmtShape } from "../errors.js";
import { Tensor } from "../tensor/tensor.js";
import { Module, registerOwnModules } from "./module.js";
import { Dropout, Linear, isPlainLinear } from "./layers.js";
import { causalAttention } from "../ops/attention.js";
import { linearResidual, matmul } from "../ops/matmul.js";
import { add, mul } from "../ops/elementwise.js";
import { maskedFill } from "../ops/indexing.js";
import { permute, reshape, slice, transpose } from "../ops/shape.js";
import { softmax } from "../ops/softmax.js";
import { dropout } from "../ops/indexing.js";
import { attendCached, storeKV, type AttendScratch, type LayerKV } from "../models/kv-cache.js";

export interface CausalSelfAttentionOptions {
  /** Longest sequence the precomputed causal mask covers. */
  blockSize: number;
  /** Dropout on the attention weights and on the output projection. Default 0. */
  dropout?: number;
  /** Biases in the qkv and output projections. Default true. */
  bias?: boolean;
  /**
   * true (default): the fused `causalAttention` op (no permute copies, one pass for
   * scale + mask + softmax + dropout). false: the same maths from primitive ops
   * (split heads, batched matmul, maskedFill, softmax, dropout, merge heads), kept
   * as the readable reference the fused op is tested against.
   */
  fused?: boolean;
}

/**
 * Causal multi-head self-attention (nanoGPT's CausalSelfAttention; parameter names
 * `c_attn`, `c_proj` match it so nanoGPT state dicts load by name):
 * x (B, T, C) → qkv = c_attn(x) (B, T, 3C) → per head softmax(q kᵀ/√hs + causal mask) v
 * → merge heads (B, T, C) → c_proj → dropout.
 */
export class CausalSelfAttention extends Module {
  c_attn: Module;
  c_proj: Module;
  attn_dropout: Dropout;
  resid_dropout: Dropout;
  readonly nEmbd: number;
  readonly nHead: number;
  readonly blockSize: number;
  fused: boolean;
  /** (blockSize, blockSize) with 1 above the diagonal (positions a query may not see); reference path only. */
  private _mask: Tensor | null = null;

  constructor(nEmbd: number, nHead: number, opts: CausalSelfAttentionOptions) {
    super();
    if (!Number.isInteger(nHead) || nHead <= 0 || nEmbd % nHead !== 0) {
      throw new ArgumentError(`CausalSelfAttention: nEmbd (${nEmbd}) must be a multiple of nHead (${nHead})`);
    }
    const bias = opts.bias ?? true;
    this.c_attn = new Linear(nEmbd, 3 * nEmbd, { bias });
    this.c_proj = new Linear(nEmbd, nEmbd, { bias });
    this.attn_dropout = new Dropout(opts.dropout ?? 0);
    this.resid_dropout = new Dropout(opts.dropout ?? 0);
    this.nEmbd = nEmbd;
    this.nHead = nHead;
    this.blockSize = opts.blockSize;
    this.fused = opts.fused ?? true;
  }

  private causalMask(T: number): Tensor {
    if (this._mask === null) {
      const n = this.blockSize;
      const m = new Float32Array(n * n);
      for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) m[i * n + j] = 1;
      this._mask = new Tensor(m, [n, n]);
    }
    if (T === this.blockSize) return this._mask;
    return slice(slice(this._mask, 0, 0, T), 1, 0, T);
  }

  forward(x: Tensor): Tensor {
    return this.forwardScope(() => this.resid_dropout.forward(this.c_proj.forward(this.heads(x)))); // (B, T, C)
  }

  /**
   * residual + forward(x), the pre-LN block's `x + attn(ln_1(x))`: with a plain c_proj and no
   * active residual dropout, one linearResidual op (the projection's GEMM adds onto the residual).
   */
  forwardResidual(residual: Tensor, x: Tensor): Tensor {
    return this.forwardScope(() => {
      const proj = this.c_proj;
      if (isPlainLinear(proj) && !(this.training && this.resid_dropout.p > 0)) {
        return linearResidual(residual, this.heads(x), proj.weight, proj.bias); // (B, T, C)
      }
      return add(residual, this.forward(x));
    });
  }

  /**
   * Generation with a key/value cache (eval, no graph): x (1, n, C) holds the n positions after
   * the `start` already in `layer`; their keys and values are appended there, and each attends
   * to every cached position up to its own. Returns the projected output (1, n, C), what
   * forward gives for these positions of the whole sequence.
   */
  forwardCached(x: Tensor, layer: LayerKV, start: number, scratch: AttendScratch): Tensor {
    const C = this.nEmbd, n = x.shape[1];
    if (x.ndim !== 3 || x.shape[0] !== 1 || x.shape[2] !== C) throw new ShapeError(`CausalSelfAttention.forwardCached: input must be (1, T, ${C}), got ${fmtShape(x.shape)}`);
    const qkv = this.c_attn.forward(x).data; // (1, n, 3C)
    storeKV(layer, C, start, n, qkv, C, 2 * C, 3 * C);
    const y = new Float32Array(n * C);
    attendCached(y, C, qkv, 0, 3 * C, layer, start, n, this.nHead, this.nHead, C / this.nHead, scratch);
    return this.c_proj.forward(new Tensor(y, [1, n, C])); // (1, n, C)
  }

  /** Attention output with heads merged, before the output projection: (B, T, C). */
  private heads(x: Tensor): Tensor {
    if (x.ndim !== 3 || x.shape[2] !== this.nEmbd) throw new ShapeError(`CausalSelfAttention: input must be (B, T, ${this.nEmbd}), got ${fmtShape(x.shape)}`);
    const [B, T, C] = x.shape;
    if (T > this.blockSize) throw new ShapeError(`CausalSelfAttention: sequence length ${T} exceeds blockSize ${this.blockSize}`);
    const qkv = this.c_attn.forward(x); // (B, T, 3C)
    let y: Tensor;
    if (this.fused) {
      y = causalAttention(qkv, this.nHead, { dropout: this.attn_dropout.p, training: this.training }); // (B, T, C)
    } else {
      const H = this.nHead, hs = C / H;
      const heads = permute(reshape(qkv, [B, T, 3, H, hs]), [2, 0, 3, 1, 4]); // (3, B, H, T, hs)
      const [q, k, v] = [0, 1, 2].map((i) => reshape(slice(heads, 0, i, i + 1), [B, H, T, hs])); // (B, H, T, hs)
      let att = mul(matmul(q, transpose(k, -2, -1)), 1 / Math.sqrt(hs)); // (B, H, T, T)
      att = maskedFill(att, this.causalMask(T), -Infinity);
      att = dropout(softmax(att, -1), this.attn_dropout.p, this.training);
      y = reshape(permute(matmul(att, v), [0, 2, 1, 3]), [B, T, C]); // (B, H, T, hs) → (B, T, C)
    }
    return y;
  }
}

registerOwnModules(CausalSelfAttention);
