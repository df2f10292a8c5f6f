/**
 * The GPT model as ONNX: token ids idx (batch, sequence) int64 → logits (batch, sequence, vocab),
 * the sequence length a dynamic axis of at most blockSize. Token + position embeddings (Gather,
 * and a Slice of the position table to the sequence length), pre-LN blocks of causal
 * self-attention (the mask a constant sliced to T×T) and an MLP with exact GELU, final
 * LayerNormalization and the LM head. A tied head reuses the embedding table. The GPT-2 layout
 * only: a model with other parts (rotary positions, RMSNorm) is refused naming the part.
 */
import { GPT, nn, Block, MLP, GPTTransformer } from "@chainrule/core";
import { DataType } from "./graph.js";
import { type LowerContext, type Value, gelu, isExactly, layerNorm, linear, unsupported } from "./layers.js";

/** The plain Linear at `path`, or a one-line refusal naming it (a LoRA layer must be merged first). */
function plainLinear(m: nn.Module, path: string): nn.Linear {
  if (isExactly(m, nn.Linear)) return m;
  throw unsupported(path, m, m instanceof nn.LoRALinear ? "merge the adapters first (nn.mergeLora; chainrule export merges them itself)" : "");
}

/** Refuses, naming it, any part of `model` that is not the GPT-2 layout's own class. */
function checkStructure(model: GPT): void {
  const expect = (m: nn.Module, cls: abstract new (...args: any[]) => nn.Module, path: string) => {
    if (!isExactly(m, cls)) throw unsupported(path, m);
  };
  expect(model.transformer, GPTTransformer, "transformer");
  if (!model.transformer.wpe) throw unsupported("transformer", model.transformer, "without a position-embedding table (rotary positions) it is not expressed");
  if (model.config.arch !== "gpt2") throw unsupported("transformer", model.transformer, `arch "${model.config.arch}" has no ONNX lowering (gpt2 only)`);
  model.transformer.h.children().forEach((b, i) => {
    const p = `transformer.h.${i}`;
    expect(b, Block, p);
    const block = b as Block;
    expect(block.attn, nn.CausalSelfAttention, `${p}.attn`);
    expect(block.mlp, MLP, `${p}.mlp`);
    for (const ln of ["ln_1", "ln_2"] as const) expect(block[ln], nn.LayerNorm, `${p}.${ln}`);
  });
  expect(model.transformer.ln_f, nn.LayerNorm, "transformer.ln_f");
}

/** Adds the GPT's graph: input `idx`, returns the logits value. */
export function lowerGpt(c: LowerContext, model: GPT): Value {
  checkStructure(model);
  const { g, w } = c;
  const { blockSize, nEmbd: C, nHead: H, vocabSize: V } = model.config;
  const hs = C / H;
  const tr = model.transformer;
  const idx = g.input("idx", DataType.INT64, ["batch", "sequence"]);

  // x = wte[idx] + wpe[0:T]  (B, T, C)
  const T = g.node("Slice", [g.node("Shape", [idx], { name: "idx_shape" }), g.ints("one", [1]), g.ints("two", [2])], { name: "T" }); // [T]
  const zero = g.ints("zero", [0]);
  const tok = g.node("Gather", [w.get(tr.wte.weight), idx], { name: "tok_emb", attrs: { axis: 0 } });
  const pos = g.node("Slice", [w.get((tr.wpe as nn.Embedding).weight), zero, T, zero], { name: "pos_emb" }); // gpt2 (checked) has the table
  let x: Value = { name: g.node("Add", [tok, pos], { name: "embeddings" }), dims: ["batch", "sequence", C] };

  // Causal mask: 0 on and below the diagonal, -inf above; sliced to (T, T).
  const maskData = new Float32Array(blockSize * blockSize);
  for (let i = 0; i < blockSize; i++) for (let j = i + 1; j < blockSize; j++) maskData[i * blockSize + j] = -Infinity;
  const TT = g.node("Concat", [T, T], { name: "TT", attrs: { axis: 0 } });
  const mask = g.node("Slice", [g.constant("causal_mask", maskData, [blockSize, blockSize]), g.ints("zeros2", [0, 0]), TT, g.ints("axes01", [0, 1])], { name: "mask" });
  const headShape = g.ints("head_shape", [0, 0, H, hs]); // (B, T, C) → (B, T, H, hs); 0 keeps a dimension
  const mergedShape = g.ints("merged_shape", [0, 0, C]);
  const split = g.ints("qkv_split", [C, C, C]);

  tr.h.children().forEach((b, i) => {
    const block = b as Block;
    const p = `transformer.h.${i}`;
    const attn = block.attn;
    const h1 = layerNorm(c, x, block.ln_1, `${p}.ln_1`);
    const cAttn = plainLinear(attn.c_attn, `${p}.attn.c_attn`);
    const qkv = linear(c, h1, cAttn.weight, cAttn.bias, `${p}.attn.c_attn`); // (B, T, 3C)
    const [q, k, v] = g.nodeOutputs("Split", [qkv.name, split], 3, { name: `${p}.attn.qkv`, attrs: { axis: 2 } });
    const heads = (t: string, perm: number[], name: string) => g.node("Transpose", [g.node("Reshape", [t, headShape])], { name: `${p}.attn.${name}`, attrs: { perm } });
    const qh = heads(q, [0, 2, 1, 3], "q"); // (B, H, T, hs)
    const kt = heads(k, [0, 2, 3, 1], "k_t"); // (B, H, hs, T)
    const vh = heads(v, [0, 2, 1, 3], "v"); // (B, H, T, hs)
    let att = g.node("Mul", [g.node("MatMul", [qh, kt]), g.scalar(1 / Math.sqrt(hs))]); // (B, H, T, T)
    att = g.node("Softmax", [g.node("Add", [att, mask])], { name: `${p}.attn.weights`, attrs: { axis: -1 } });
    const merged = g.node("Transpose", [g.node("MatMul", [att, vh])], { attrs: { perm: [0, 2, 1, 3] } }); // (B, T, H, hs)
    const y = g.node("Reshape", [merged, mergedShape], { name: `${p}.attn.heads` }); // (B, T, C)
    const proj = plainLinear(attn.c_proj, `${p}.attn.c_proj`);
    const a = linear(c, { name: y, dims: x.dims }, proj.weight, proj.bias, `${p}.attn.c_proj`);
    x = { name: g.node("Add", [x.name, a.name], { name: `${p}.attn_residual` }), dims: x.dims };

    const h2 = layerNorm(c, x, block.ln_2, `${p}.ln_2`);
    const fc = plainLinear(block.mlp.c_fc, `${p}.mlp.c_fc`), out = plainLinear(block.mlp.c_proj, `${p}.mlp.c_proj`);
    const hidden = gelu(c, linear(c, h2, fc.weight, fc.bias, `${p}.mlp.c_fc`), block.mlp.geluApproximate, `${p}.mlp.gelu`); // exact, or tanh (GPT-2's own)
    const m = linear(c, hidden, out.weight, out.bias, `${p}.mlp.c_proj`);
    x = { name: g.node("Add", [x.name, m.name], { name: `${p}.mlp_residual` }), dims: x.dims };
  });

  x = layerNorm(c, x, tr.ln_f as nn.LayerNorm, "transformer.ln_f"); // checked
  const head = plainLinear(model.lm_head, "lm_head");
  const logits = linear(c, x, head.weight, head.bias, "lm_head");
  return { name: logits.name, dims: ["batch", "sequence", V] };
}
