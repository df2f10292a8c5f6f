/**
 * A GPT language model in the style of nanoGPT: token + learned position
 * embeddings, pre-LN transformer blocks, final LayerNorm, linear LM head.
 * Parameter names follow nanoGPT (`transformer.h.0.attn.c_attn.weight`, ...), so a
 * nanoGPT state dict with the same config loads by name.
 *
 * `arch: "llama"` builds the same container with Llama's blocks instead (llama.ts):
 * RMSNorm, rotary position embeddings (no `wpe`), grouped-query attention, SwiGLU.
 */
import { ArgumentError, ShapeError, fmtShape } from "../errors.js";
import { Tensor } from "../tensor/tensor.js";
import { Generator } from "../tensor/random.js";
import { noGrad } from "../autograd/engine.js";
import { Module, registerOwnModules } from "../nn/module.js";
import { Dropout, Embedding, LayerNorm, Linear, ModuleList, isPlainLinear } from "../nn/layers.js";
import { CausalSelfAttention } from "../nn/attention.js";
import { constant_, normal_ } from "../nn/init.js";
import { add, gelu } from "../ops/elementwise.js";
import { crossEntropy } from "../ops/loss.js";
import { linearResidual } from "../ops/matmul.js";
import { embedding } from "../ops/indexing.js";
import { reshape } from "../ops/shape.js";
import { linearGelu, tokenPositionEmbedding } from "./gpt-ops.js";
import { LlamaBlock, LlamaRMSNorm } from "./llama.js";
import { KVCache, newAttendScratch, type AttendScratch, type LayerKV } from "./kv-cache.js";

/** Model hyper-parameters (nanoGPT's GPTConfig). Every field but vocabSize has a default. */
export interface GPTConfig {
  /** Block design: "gpt2" (LayerNorm, learned positions, GELU MLP) or "llama" (RMSNorm, RoPE, grouped-query attention, SwiGLU). Default "gpt2". */
  arch: "gpt2" | "llama";
  /** Number of distinct tokens (the tokenizer's vocabulary size). */
  vocabSize: number;
  /** Longest context the model sees; sets the position-embedding table size. Default 64. */
  blockSize: number;
  /** Number of transformer blocks. Default 4. */
  nLayer: number;
  /** Attention heads per block; must divide nEmbd. Default 4. */
  nHead: number;
  /** Width of the residual stream (embedding size). Default 128. */
  nEmbd: number;
  /** Dropout probability on embeddings, attention weights and residual branches. Default 0. */
  dropout: number;
  /** Biases in Linear layers and LayerNorms (nanoGPT's `bias`). Default true. */
  bias: boolean;
  /** Share the token-embedding matrix with the LM head (nanoGPT does). Default false. */
  tieWeights: boolean;
  /** Key/value heads (llama; must divide nHead, each shared by nHead/nKvHead query heads). Default nHead; gpt2 needs nHead. */
  nKvHead: number;
  /** Feed-forward width. Default 4·nEmbd (gpt2), 8·nEmbd/3 rounded up to a multiple of 8 (llama). */
  ffnHidden: number;
  /** gpt2's GELU: "none" (exact, erf) or "tanh" (the approximation GPT-2 itself uses). Default "none". */
  geluApproximate: "none" | "tanh";
  /** Epsilon of the LayerNorms (gpt2) or RMSNorms (llama). Default 1e-5. */
  normEps: number;
  /** Base of the rotary embedding's frequencies (llama). Default 10000. */
  ropeTheta: number;
}

/** Defaults of the fields that do not depend on others (bias, nKvHead and ffnHidden do: see gptConfig). */
export const GPT_DEFAULTS: Omit<GPTConfig, "vocabSize" | "nKvHead" | "ffnHidden"> = {
  arch: "gpt2",
  blockSize: 64,
  nLayer: 4,
  nHead: 4,
  nEmbd: 128,
  dropout: 0,
  bias: true,
  tieWeights: false,
  geluApproximate: "none",
  normEps: 1e-5,
  ropeTheta: 10000,
};

/** Fills in defaults and validates; throws ArgumentError naming the bad field. */
export function gptConfig(cfg: Partial<GPTConfig> & { vocabSize: number }): GPTConfig {
  const given = stripUndefined(cfg);
  const arch = given.arch ?? GPT_DEFAULTS.arch;
  if (arch !== "gpt2" && arch !== "llama") throw new ArgumentError(`GPTConfig: arch must be "gpt2" or "llama", got ${JSON.stringify(arch)}`);
  const llama = arch === "llama";
  const nEmbd = given.nEmbd ?? GPT_DEFAULTS.nEmbd;
  const c: GPTConfig = {
    ...GPT_DEFAULTS,
    bias: !llama, // Llama's linears have no biases
    nKvHead: given.nHead ?? GPT_DEFAULTS.nHead,
    ffnHidden: llama ? Math.ceil((8 * nEmbd) / 3 / 8) * 8 : 4 * nEmbd,
    ...given,
  } as GPTConfig;
  for (const f of ["vocabSize", "blockSize", "nLayer", "nHead", "nEmbd", "nKvHead", "ffnHidden"] as const) {
    if (!Number.isInteger(c[f]) || c[f] <= 0) throw new ArgumentError(`GPTConfig: ${f} must be a positive integer, got ${c[f]}`);
  }
  if (c.nEmbd % c.nHead !== 0) throw new ArgumentError(`GPTConfig: nEmbd (${c.nEmbd}) must be a multiple of nHead (${c.nHead})`);
  if (c.nHead % c.nKvHead !== 0) throw new ArgumentError(`GPTConfig: nKvHead (${c.nKvHead}) must divide nHead (${c.nHead})`);
  if (!llama && c.nKvHead !== c.nHead) throw new ArgumentError(`GPTConfig: nKvHead (${c.nKvHead}) differs from nHead (${c.nHead}); grouped-query attention needs arch "llama"`);
  if (llama && (c.nEmbd / c.nHead) % 2 !== 0) throw new ArgumentError(`GPTConfig: the head size nEmbd/nHead (${c.nEmbd / c.nHead}) must be even for the rotary embedding`);
  if (!(c.dropout >= 0 && c.dropout < 1)) throw new ArgumentError(`GPTConfig: dropout must be in [0, 1), got ${c.dropout}`);
  if (c.geluApproximate !== "none" && c.geluApproximate !== "tanh") throw new ArgumentError(`GPTConfig: geluApproximate must be "none" or "tanh", got ${JSON.stringify(c.geluApproximate)}`);
  if (!(c.normEps > 0)) throw new ArgumentError(`GPTConfig: normEps must be > 0, got ${c.normEps}`);
  if (!(c.ropeTheta > 0) || !Number.isFinite(c.ropeTheta)) throw new ArgumentError(`GPTConfig: ropeTheta must be a finite number > 0, got ${c.ropeTheta}`);
  return c;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** Position-wise feed-forward: c_fc (C → ffnHidden, 4C by default) → GELU → c_proj (→ C) → dropout. */
export class MLP extends Module {
  c_fc: Module;
  c_proj: Module;
  dropout: Dropout;
  readonly geluApproximate: "none" | "tanh";
  constructor(cfg: GPTConfig) {
    super();
    this.c_fc = new Linear(cfg.nEmbd, cfg.ffnHidden, { bias: cfg.bias });
    this.c_proj = new Linear(cfg.ffnHidden, cfg.nEmbd, { bias: cfg.bias });
    this.dropout = new Dropout(cfg.dropout);
    this.geluApproximate = cfg.geluApproximate;
  }
  forward(x: Tensor): Tensor {
    return this.forwardScope(() => this.dropout.forward(this.c_proj.forward(this.expand(x)))); // (B, T, C)
  }

  /** residual + forward(x) (the block's second residual add), fused into c_proj's GEMM when c_proj is a plain Linear and dropout is inactive. */
  forwardResidual(residual: Tensor, x: Tensor): Tensor {
    return this.forwardScope(() => {
      const proj = this.c_proj;
      if (isPlainLinear(proj) && !(this.training && this.dropout.p > 0)) return linearResidual(residual, this.expand(x), proj.weight, proj.bias); // (B, T, C)
      return add(residual, this.forward(x));
    });
  }

  /** gelu(c_fc(x)): (B, T, ffnHidden). */
  private expand(x: Tensor): Tensor {
    // A plain Linear goes through the fused linear+GELU op (exact GELU); an adapted one (LoRA) or the tanh form through its own forward.
    const fc = this.c_fc;
    if (this.geluApproximate === "tanh") return gelu(fc.forward(x), { approximate: "tanh" });
    return isPlainLinear(fc) ? linearGelu(x, fc.weight, fc.bias) : gelu(fc.forward(x));
  }
}

/** Pre-LN transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x)). */
export class Block extends Module {
  ln_1: LayerNorm;
  attn: CausalSelfAttention;
  ln_2: LayerNorm;
  mlp: MLP;
  constructor(cfg: GPTConfig) {
    super();
    this.ln_1 = new LayerNorm(cfg.nEmbd, cfg.normEps, { bias: cfg.bias });
    this.attn = new CausalSelfAttention(cfg.nEmbd, cfg.nHead, { blockSize: cfg.blockSize, dropout: cfg.dropout, bias: cfg.bias });
    this.ln_2 = new LayerNorm(cfg.nEmbd, cfg.normEps, { bias: cfg.bias });
    this.mlp = new MLP(cfg);
  }
  forward(x: Tensor): Tensor {
    return this.forwardScope(() => {
      const h = this.attn.forwardResidual(x, this.ln_1.forward(x)); // x + attn(ln_1(x)), (B, T, C)
      return this.mlp.forwardResidual(h, this.ln_2.forward(h)); // h + mlp(ln_2(h)), (B, T, C)
    });
  }
  /** The block for x (1, n, C) at positions start.. with a key/value cache (see GPT.forwardCached). */
  forwardCached(x: Tensor, layer: LayerKV, start: number, scratch: AttendScratch): Tensor {
    const h = add(x, this.attn.forwardCached(this.ln_1.forward(x), layer, start, scratch)); // (1, n, C)
    return this.mlp.forwardResidual(h, this.ln_2.forward(h));
  }
}

/** The `transformer` container of nanoGPT (a ModuleDict there): wte, wpe (gpt2 only), drop, h, ln_f. */
export class GPTTransformer extends Module {
  wte: Embedding;
  wpe: Embedding | null;
  drop: Dropout;
  h: ModuleList;
  ln_f: LayerNorm | LlamaRMSNorm;
  constructor(cfg: GPTConfig) {
    super();
    const llama = cfg.arch === "llama";
    this.wte = new Embedding(cfg.vocabSize, cfg.nEmbd);
    this.wpe = llama ? null : new Embedding(cfg.blockSize, cfg.nEmbd);
    this.drop = new Dropout(cfg.dropout);
    this.h = new ModuleList(Array.from({ length: cfg.nLayer }, () => (llama ? new LlamaBlock(cfg) : new Block(cfg))));
    this.ln_f = llama ? new LlamaRMSNorm(cfg.nEmbd, cfg.normEps) : new LayerNorm(cfg.nEmbd, cfg.normEps, { bias: cfg.bias });
  }
  forward(): Tensor {
    throw new ArgumentError("GPTTransformer: has no forward of its own; call GPT.forward");
  }
}

/** Token ids as accepted by GPT.forward / loss: a (B, T) tensor of whole numbers, or an Int32Array with its shape. */
export type TokenBatch = Tensor | Int32Array;

export class GPT extends Module {
  readonly config: GPTConfig;
  transformer: GPTTransformer;
  lm_head: Module;

  constructor(config: Partial<GPTConfig> & { vocabSize: number }) {
    super();
    const cfg = gptConfig(config);
    this.config = cfg;
    this.transformer = new GPTTransformer(cfg);
    // The head has a bias only when untied (nanoGPT's head has none; the anchor's untied head has one).
    const head = new Linear(cfg.nEmbd, cfg.vocabSize, { bias: cfg.bias && !cfg.tieWeights });
    if (cfg.tieWeights) head.weight = this.transformer.wte.weight; // (V, C) is both the table and the head
    this.lm_head = head;
    this.resetParameters();
  }

  /**
   * nanoGPT's initialisation: Linear and Embedding weights N(0, 0.02), biases 0,
   * LayerNorm weight 1 / bias 0, and residual projections (`c_proj`) N(0, 0.02/√(2·nLayer)).
   * Draws from the global seeded generator, in parameter order.
   */
  resetParameters(): void {
    const residStd = 0.02 / Math.sqrt(2 * this.config.nLayer);
    for (const [name, p] of this.namedParameters()) {
      if (/(^|\.)ln_[0-9f]+\.weight$/.test(name)) constant_(p, 1);
      else if (name.endsWith(".bias") || name === "bias") constant_(p, 0);
      else if (/(c_proj|o_proj|down_proj)\.weight$/.test(name)) normal_(p, 0, residStd);
      else normal_(p, 0, 0.02);
    }
  }

  /** Number of parameters; like nanoGPT, position embeddings are left out unless `nonEmbedding` is false. */
  numParams(nonEmbedding = true): number {
    let n = this.numParameters();
    if (nonEmbedding && this.transformer.wpe) n -= this.transformer.wpe.weight.size;
    return n;
  }

  /**
   * idx (B, T) token ids → logits (B, T, vocabSize). Pass a Tensor of whole numbers
   * shaped (B, T), or an Int32Array plus its shape [B, T] (a 1-D array alone is one sequence).
   */
  forward(idx: TokenBatch, shape?: readonly number[]): Tensor {
    const [ids, B, T] = tokenBatch(idx, shape, "GPT.forward");
    if (T > this.config.blockSize) throw new ShapeError(`GPT.forward: sequence length ${T} exceeds blockSize ${this.config.blockSize}`);
    const tr = this.transformer;
    return this.forwardScope(() => {
      let x = tr.wpe
        ? tokenPositionEmbedding(ids, B, T, tr.wte.weight, tr.wpe.weight) // wte[ids] + wpe[t], (B, T, C)
        : reshape(embedding(ids, tr.wte.weight), [B, T, this.config.nEmbd]); // llama: positions enter through RoPE
      x = tr.drop.forward(x);
      for (const block of tr.h) x = block.forward(x); // (B, T, C)
      x = tr.ln_f.forward(x);
      return this.lm_head.forward(x); // (B, T, V)
    });
  }

  /** An empty key/value cache for forwardCached, holding up to blockSize positions. */
  newCache(): KVCache {
    const { nLayer, nKvHead, nEmbd, nHead, blockSize } = this.config;
    return new KVCache(nLayer, nKvHead * (nEmbd / nHead), blockSize);
  }

  /**
   * Logits (1, n, V) of n new tokens that follow the `cache.length` tokens already in `cache`,
   * appending their keys and values to it: what forward gives for those positions of the whole
   * sequence, at O(cache length) per token. Eval only (dropout is not applied) and builds no graph.
   */
  forwardCached(ids: ArrayLike<number>, cache: KVCache, scratch: AttendScratch = newAttendScratch()): Tensor {
    const n = ids.length, start = cache.length, C = this.config.nEmbd;
    if (n === 0) throw new ShapeError("GPT.forwardCached: no tokens");
    if (cache.nLayer !== this.config.nLayer || cache.capacity !== this.config.blockSize) throw new ShapeError(`GPT.forwardCached: the cache (${cache.nLayer} layers, ${cache.capacity} positions) was not made by this model's newCache()`);
    cache.checkRoom(n, "GPT.forwardCached");
    const tr = this.transformer;
    const wte = tr.wte.weight.data, wpe = tr.wpe?.weight.data;
    const V = this.config.vocabSize;
    const logits = noGrad(() => this.forwardScope(() => {
      const x0 = new Float32Array(n * C); // wte[ids] (+ wpe[start + i] for gpt2), (1, n, C)
      for (let i = 0; i < n; i++) {
        const id = ids[i];
        if (!Number.isInteger(id) || id < 0 || id >= V) throw new ArgumentError(`GPT.forwardCached: token id ${id} at position ${i} is out of range [0, ${V})`);
        for (let c = 0; c < C; c++) x0[i * C + c] = wte[id * C + c] + (wpe ? wpe[(start + i) * C + c] : 0);
      }
      let x = new Tensor(x0, [1, n, C]);
      let l = 0;
      for (const block of tr.h) x = (block as Block | LlamaBlock).forwardCached(x, cache.layers[l++], start, scratch); // (1, n, C)
      return this.lm_head.forward(tr.ln_f.forward(x)); // (1, n, V)
    }));
    cache.length = start + n;
    return logits;
  }

  /** Mean cross-entropy of next-token prediction: logits for idx against targets (same shape); `ignoreIndex` rows skipped. */
  loss(idx: TokenBatch, targets: TokenBatch, shape?: readonly number[], opts: { ignoreIndex?: number } = {}): Tensor {
    return this.lossAndLogits(idx, targets, shape, opts).loss;
  }

  lossAndLogits(idx: TokenBatch, targets: TokenBatch, shape?: readonly number[], opts: { ignoreIndex?: number } = {}): { loss: Tensor; logits: Tensor } {
    const logits = this.forward(idx, shape); // (B, T, V)
    const tSize = targets instanceof Tensor ? targets.size : targets.length;
    if (tSize !== logits.size / this.config.vocabSize) {
      throw new ShapeError(`GPT.loss: ${logits.size / this.config.vocabSize} positions in idx but ${tSize} targets`);
    }
    return { loss: crossEntropy(logits, targets, opts), logits };
  }
}

registerOwnModules(MLP, Block, GPTTransformer, GPT);

/** Normalises token input to (Int32Array, B, T), checking that ids are whole numbers. */
export function tokenBatch(idx: TokenBatch, shape: readonly number[] | undefined, op: string): [Int32Array, number, number] {
  let s: readonly number[];
  if (idx instanceof Tensor) s = shape ?? idx.shape;
  else s = shape ?? [1, idx.length];
  if (s.length === 1) s = [1, s[0]];
  if (s.length !== 2) throw new ShapeError(`${op}: token ids must be (B, T), got shape ${fmtShape(s)}`);
  const [B, T] = s;
  const n = idx instanceof Tensor ? idx.size : idx.length;
  if (B * T !== n || T === 0) throw new ShapeError(`${op}: ${n} token ids do not fill shape ${fmtShape(s)}`);
  if (!(idx instanceof Tensor)) return [idx, B, T];
  const ids = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const v = idx.data[i];
    if (!Number.isInteger(v)) throw new ArgumentError(`${op}: token id ${v} at position ${i} is not an integer`);
    ids[i] = v;
  }
  return [ids, B, T];
}

export interface GenerateOptions {
  /** How many tokens to sample. */
  maxNewTokens: number;
  /** Divides the logits; < 1 sharpens, > 1 flattens; 0 means greedy (argmax). Default 1. */
  temperature?: number;
  /** Sample only among the k most likely tokens (ties at the k-th value are kept). Default: all. */
  topK?: number;
  /** Seed of the sampler's own Generator: same seed, same model, same prompt → same tokens. Default 0. */
  seed?: number;
  /** Called with each new token as soon as it is sampled (for streaming), with its index among the new tokens. */
  onToken?: (token: number, index: number) => void;
  /** Keep the keys and values of past positions (O(T) per token); false re-runs the whole window for each token. Default true. */
  kvCache?: boolean;
}

/**
 * Autoregressive sampling (nanoGPT's generate): takes the last position's logits, applies
 * temperature and top-k, samples from the softmax with its own seeded Generator (the global
 * one is left alone), and streams each token through `onToken`. With the key/value cache (the
 * default) each new token runs through the model alone; once the context outgrows blockSize,
 * each token re-runs the last blockSize tokens, as without the cache (the window moves, so
 * every position changes and nothing cached stays valid). Runs in eval mode without a graph and restores the model's mode
 * afterwards. Returns the new tokens (the prompt is not repeated). An empty prompt starts
 * from token 0.
 */
export function generate(model: GPT, prompt: ArrayLike<number>, opts: GenerateOptions): number[] {
  const { maxNewTokens } = opts;
  const temperature = opts.temperature ?? 1;
  const V = model.config.vocabSize;
  const topK = opts.topK === undefined ? V : Math.min(opts.topK, V);
  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 0) throw new ArgumentError(`generate: maxNewTokens must be a non-negative integer, got ${maxNewTokens}`);
  if (!(temperature >= 0) || !Number.isFinite(temperature)) throw new ArgumentError(`generate: temperature must be a finite number ≥ 0, got ${temperature}`);
  if (!Number.isInteger(topK) || topK < 1) throw new ArgumentError(`generate: topK must be a positive integer, got ${opts.topK}`);
  const ctx: number[] = prompt.length > 0 ? Array.from(prompt) : [0];
  ctx.forEach((t, i) => {
    if (!Number.isInteger(t) || t < 0 || t >= V) throw new ArgumentError(`generate: prompt token ${t} at position ${i} is out of range [0, ${V})`);
  });
  const gen = new Generator(opts.seed ?? 0);
  const wasTraining = model.training;
  model.eval();
  const out: number[] = [];
  const probs = new Float64Array(V);
  const cache = opts.kvCache ?? true ? model.newCache() : null;
  const scratch = newAttendScratch();
  try {
    noGrad(() => {
      for (let n = 0; n < maxNewTokens; n++) {
        const next = sampleToken(nextTokenLogits(model, ctx, cache, scratch), temperature, topK, gen, probs);
        ctx.push(next);
        out.push(next);
        opts.onToken?.(next, n);
      }
    });
  } finally {
    model.train(wasTraining);
  }
  return out;
}

/**
 * The logits (V) of the token after `context`, without a graph: with `cache`, the tokens the
 * cache does not hold yet run through forwardCached while the context fits blockSize; past it
 * (or without a cache) the last blockSize tokens run whole, as the window moves and nothing
 * cached stays valid.
 */
export function nextTokenLogits(model: GPT, context: readonly number[], cache: KVCache | null, scratch: AttendScratch = newAttendScratch()): Float32Array {
  const V = model.config.vocabSize, blockSize = model.config.blockSize;
  let logits: Float32Array, rows: number;
  if (cache && context.length <= blockSize) {
    const fresh = context.slice(cache.length); // the prompt, then the last sampled token
    logits = model.forwardCached(fresh, cache, scratch).data; // (1, fresh, V)
    rows = fresh.length;
  } else {
    const window = Int32Array.from(context.slice(-blockSize));
    logits = model.forward(window, [1, window.length]).data; // (1, T, V)
    rows = window.length;
  }
  return logits.subarray((rows - 1) * V, rows * V);
}

/** One draw from softmax(logits / temperature) restricted to the top k; greedy when temperature is 0 or k is 1. */
export function sampleToken(logits: Float32Array, temperature: number, topK: number, gen: Generator, scratch = new Float64Array(logits.length)): number {
  const V = logits.length;
  if (temperature === 0 || topK === 1) {
    let best = 0;
    for (let i = 1; i < V; i++) if (logits[i] > logits[best]) best = i;
    return best;
  }
  let threshold = -Infinity;
  if (topK < V) threshold = Float32Array.from(logits).sort()[V - topK]; // the k-th largest
  let m = -Infinity;
  for (let i = 0; i < V; i++) if (logits[i] >= threshold && logits[i] > m) m = logits[i];
  let s = 0;
  for (let i = 0; i < V; i++) {
    const e = logits[i] >= threshold ? Math.exp((logits[i] - m) / temperature) : 0;
    scratch[i] = e;
    s += e;
  }
  let r = gen.random() * s;
  let last = 0;
  for (let i = 0; i < V; i++) {
    if (scratch[i] === 0) continue;
    last = i;
    r -= scratch[i];
    if (r < 0) return i;
  }
  return last; // rounding left r ≥ 0: the last candidate
}

/**
 * Mean loss over `iters` random batches drawn by `sample` (nanoGPT's estimate_loss),
 * in eval mode without a graph; the model's mode is restored afterwards.
 */
export function estimateLoss(model: GPT, sample: () => { x: Int32Array; y: Int32Array; shape: [number, number] }, iters = 10): number {
  const wasTraining = model.training;
  model.eval();
  try {
    return noGrad(() => {
      let total = 0;
      for (let i = 0; i < iters; i++) {
        const b = sample();
        total += model.loss(b.x, b.y, b.shape).item();
      }
      return total / iters;
    });
  } finally {
    model.train(wasTraining);
  }
}
