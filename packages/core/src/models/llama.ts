/**
 * The blocks of a Llama-style transformer, the `arch: "llama"` configuration of the GPT:
 * RMSNorm before attention and feed-forward, rotary position embeddings on queries and keys
 * (no position table), grouped-query attention (nKvHead key/value heads shared by nHead query
 * heads) and a SwiGLU feed-forward, with no biases by default. Projection names follow
 * Hugging Face's Llama (`q_proj`, `k_proj`, `v_proj`, `o_proj`, `gate_proj`, `up_proj`,
 * `down_proj`).
 */
import { ShapeError, fmtShape } from "../errors.js";
import { Tensor } from "../tensor/tensor.js";
import { Module, registerOwnModules } from "../nn/module.js";
import { Dropout, Linear } from "../nn/layers.js";
import { RMSNorm } from "../nn/norm.js";
import { causalAttention } from "../ops/attention.js";
import { add } from "../ops/elementwise.js";
import { packGroupedQkv, rmsNormRows, siluMul } from "./llama-ops.js";
import { reshape } from "../ops/shape.js";
import { rotaryEmbedding } from "../ops/rope.js";
import { attendCached, storeKV, type AttendScratch, type LayerKV } from "./kv-cache.js";
import type { GPTConfig } from "./gpt.js";

/** RMSNorm over the last dimension (Hugging Face's LlamaRMSNorm): nn.RMSNorm's parameters and names, one fused op. */
export class LlamaRMSNorm extends RMSNorm {
  constructor(size: number, eps: number) {
    super(size, { eps });
  }
  override forward(x: Tensor): Tensor {
    return rmsNormRows(x, this.weight!, this.eps!);
  }
}

/** Causal self-attention with RoPE and grouped-query heads: x (B, T, C) → (B, T, C). */
export class LlamaAttention extends Module {
  q_proj: Module;
  k_proj: Module;
  v_proj: Module;
  o_proj: Module;
  attn_dropout: Dropout;
  resid_dropout: Dropout;
  readonly nHead: number;
  readonly nKvHead: number;
  readonly headSize: number;
  readonly ropeTheta: number;

  constructor(cfg: GPTConfig) {
    super();
    const hs = cfg.nEmbd / cfg.nHead, kv = cfg.nKvHead * hs;
    this.q_proj = new Linear(cfg.nEmbd, cfg.nEmbd, { bias: cfg.bias });
    this.k_proj = new Linear(cfg.nEmbd, kv, { bias: cfg.bias });
    this.v_proj = new Linear(cfg.nEmbd, kv, { bias: cfg.bias });
    this.o_proj = new Linear(cfg.nEmbd, cfg.nEmbd, { bias: cfg.bias });
    this.attn_dropout = new Dropout(cfg.dropout);
    this.resid_dropout = new Dropout(cfg.dropout);
    this.nHead = cfg.nHead;
    this.nKvHead = cfg.nKvHead;
    this.headSize = hs;
    this.ropeTheta = cfg.ropeTheta;
  }

  forward(x: Tensor): Tensor {
    if (x.ndim !== 3 || x.shape[2] !== this.nHead * this.headSize) throw new ShapeError(`LlamaAttention: input must be (B, T, ${this.nHead * this.headSize}), got ${fmtShape(x.shape)}`);
    return this.forwardScope(() => {
      const { q, k, v } = this.project(x, 0); // (B, T, C), (B, T, Hkv·hs) × 2
      // Each key/value head repeated for its group of query heads, packed as [q | k | v] for the fused causal kernel.
      const qkv = packGroupedQkv(q, k, v, this.nHead, this.nKvHead); // (B, T, 3C)
      const y = causalAttention(qkv, this.nHead, { dropout: this.attn_dropout.p, training: this.training }); // (B, T, C)
      return this.resid_dropout.forward(this.o_proj.forward(y)); // (B, T, C)
    });
  }

  /** Generation with a key/value cache (eval, no graph); see CausalSelfAttention.forwardCached. */
  forwardCached(x: Tensor, layer: LayerKV, start: number, scratch: AttendScratch): Tensor {
    const n = x.shape[1], C = this.nHead * this.headSize, kvWidth = this.nKvHead * this.headSize;
    if (x.ndim !== 3 || x.shape[0] !== 1 || x.shape[2] !== C) throw new ShapeError(`LlamaAttention.forwardCached: input must be (1, T, ${C}), got ${fmtShape(x.shape)}`);
    const { q, k, v } = this.project(x, start);
    storeKV(layer, kvWidth, start, n, k.data, 0, 0, kvWidth, v.data);
    const y = new Float32Array(n * C);
    attendCached(y, C, q.data, 0, C, layer, start, n, this.nHead, this.nKvHead, this.headSize, scratch);
    return this.o_proj.forward(new Tensor(y, [1, n, C])); // (1, n, C)
  }

  /** q, k, v projections with the rotary embedding applied to q and k (rows at positions from `start`). */
  private project(x: Tensor, start: number): { q: Tensor; k: Tensor; v: Tensor } {
    const [B, T] = x.shape, hs = this.headSize;
    const rope = { positionOffset: start, theta: this.ropeTheta };
    const q = rotaryEmbedding(reshape(this.q_proj.forward(x), [B, T, this.nHead, hs]), rope); // (B, T, H, hs)
    const k = rotaryEmbedding(reshape(this.k_proj.forward(x), [B, T, this.nKvHead, hs]), rope); // (B, T, Hkv, hs)
    const v = this.v_proj.forward(x); // (B, T, Hkv·hs)
    return { q: reshape(q, [B, T, this.nHead * hs]), k: reshape(k, [B, T, this.nKvHead * hs]), v };
  }
}

/** SwiGLU feed-forward: down_proj(silu(gate_proj(x)) ⊙ up_proj(x)) → dropout. */
export class SwiGLU extends Module {
  gate_proj: Module;
  up_proj: Module;
  down_proj: Module;
  dropout: Dropout;
  constructor(cfg: GPTConfig) {
    super();
    this.gate_proj = new Linear(cfg.nEmbd, cfg.ffnHidden, { bias: cfg.bias });
    this.up_proj = new Linear(cfg.nEmbd, cfg.ffnHidden, { bias: cfg.bias });
    this.down_proj = new Linear(cfg.ffnHidden, cfg.nEmbd, { bias: cfg.bias });
    this.dropout = new Dropout(cfg.dropout);
  }
  forward(x: Tensor): Tensor {
    return this.forwardScope(() => {
      const h = siluMul(this.gate_proj.forward(x), this.up_proj.forward(x)); // (B, T, ffnHidden)
      return this.dropout.forward(this.down_proj.forward(h)); // (B, T, C)
    });
  }
}

/** Pre-norm Llama block: x + attn(ln_1(x)), then x + mlp(ln_2(x)), with RMSNorm. */
export class LlamaBlock extends Module {
  ln_1: LlamaRMSNorm;
  attn: LlamaAttention;
  ln_2: LlamaRMSNorm;
  mlp: SwiGLU;
  constructor(cfg: GPTConfig) {
    super();
    this.ln_1 = new LlamaRMSNorm(cfg.nEmbd, cfg.normEps);
    this.attn = new LlamaAttention(cfg);
    this.ln_2 = new LlamaRMSNorm(cfg.nEmbd, cfg.normEps);
    this.mlp = new SwiGLU(cfg);
  }
  forward(x: Tensor): Tensor {
    return this.forwardScope(() => {
      const h = add(x, this.attn.forward(this.ln_1.forward(x))); // (B, T, C)
      return add(h, this.mlp.forward(this.ln_2.forward(h))); // (B, T, C)
    });
  }
  forwardCached(x: Tensor, layer: LayerKV, start: number, scratch: AttendScratch): Tensor {
    const h = add(x, this.attn.forwardCached(this.ln_1.forward(x), layer, start, scratch));
    return add(h, this.mlp.forward(this.ln_2.forward(h)));
  }
}

registerOwnModules(LlamaRMSNorm, LlamaAttention, SwiGLU, LlamaBlock);
