import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { GPT, LlamaBlock, Tensor, gptConfig, manualSeed, randn, rotaryEmbedding } from "../index.js";
import { assertClose, gradcheck } from "../testing/index.js";

/** Values PyTorch computed with the Llama block written by hand in fixtures/llama.py. */
interface Values { shape: number[]; data: number[] }
const fx = JSON.parse(readFileSync(new URL("./fixtures/llama.json", import.meta.url), "utf8")) as {
  config: { nEmbd: number; nHead: number; nKvHead: number; ffnHidden: number; normEps: number; ropeTheta: number };
  rope: { start: number; x: Values; out: Values; grad: Values };
  block: { params: Record<string, Values>; x: Values; out: Values; grads: Record<string, Values> };
  model: { vocabSize: number; nLayer: number; blockSize: number; ids: number[]; targets: number[]; shape: [number, number]; params: Record<string, Values>; logits: Values; loss: number; grads: Record<string, Values> };
};

const tensor = (v: Values, requiresGrad = false) => new Tensor(Float32Array.from(v.data), v.shape, requiresGrad);
/** sum(r · out) with r[i] = cos(i), the fixture's projection. */
const project = (t: Tensor) => t.mul(new Tensor(Float32Array.from({ length: t.size }, (_, i) => Math.cos(i)), t.shape)).sum();
const stateDict = (params: Record<string, Values>) => Object.fromEntries(Object.entries(params).map(([k, v]) => [k, tensor(v)]));

describe("llama blocks against PyTorch", () => {
  it("rotaryEmbedding: values and gradient from a position offset", () => {
    const x = tensor(fx.rope.x, true);
    const y = rotaryEmbedding(x, { positionOffset: fx.rope.start });
    assertClose(y, fx.rope.out.data, { atol: 1e-6 });
    project(y).backward();
    assertClose(x.grad!, fx.rope.grad.data, { atol: 1e-6 });
    gradcheck((a) => rotaryEmbedding(a, { positionOffset: 2, theta: 100 }), [randn([2, 3, 2, 4], { requiresGrad: true })]);
  });

  it("rotaryEmbedding rejects an odd head size and a bad offset, naming them", () => {
    expect(() => rotaryEmbedding(randn([1, 2, 2, 3]))).toThrow(/rotaryEmbedding: input must be \(B, T, heads, headSize\) with an even headSize, got \[1, ?2, ?2, ?3\]/);
    expect(() => rotaryEmbedding(randn([1, 2, 2, 4]), { positionOffset: -1 })).toThrow(/positionOffset must be a non-negative integer/);
    expect(() => rotaryEmbedding(randn([1, 2, 2, 4]), { thetta: 5 } as never)).toThrow(/unknown option 'thetta'/);
  });

  it("a block (grouped-query attention, RoPE, SwiGLU, RMSNorm): output and every gradient", () => {
    const cfg = gptConfig({ vocabSize: 1, blockSize: 8, arch: "llama", ...fx.config });
    const block = new LlamaBlock(cfg);
    block.loadStateDict(stateDict(fx.block.params));
    const x = tensor(fx.block.x, true);
    const y = block.forward(x);
    assertClose(y, fx.block.out.data, { atol: 2e-5 });
    project(y).backward();
    assertClose(x.grad!, fx.block.grads.x.data, { atol: 2e-5 });
    for (const [name, p] of block.namedParameters()) assertClose(p.grad!, fx.block.grads[name].data, { atol: 5e-5 });
  });

  it("a 2-layer model: logits, loss and every parameter's gradient", () => {
    const { vocabSize, nLayer, blockSize, ids, targets, shape } = fx.model;
    const m = new GPT({ vocabSize, nLayer, blockSize, arch: "llama", ...fx.config });
    m.loadStateDict(stateDict(fx.model.params));
    const { loss, logits } = m.lossAndLogits(Int32Array.from(ids), Int32Array.from(targets), shape);
    assertClose(logits, fx.model.logits.data, { atol: 2e-5 });
    expect(loss.item()).toBeCloseTo(fx.model.loss, 5);
    loss.backward();
    for (const [name, p] of m.namedParameters()) assertClose(p.grad!, fx.model.grads[name].data, { atol: 2e-5 });
  });

  it("gradcheck of a tiny llama block, input and parameters", () => {
    manualSeed(7);
    const block = new LlamaBlock(gptConfig({ vocabSize: 1, blockSize: 4, arch: "llama", nEmbd: 8, nHead: 2, nKvHead: 1, ffnHidden: 6 }));
    for (const p of block.parameters()) for (let i = 0; i < p.size; i++) p.data[i] = p.data[i] * 10 + 0.1;
    const x = randn([2, 3, 8], { requiresGrad: true });
    gradcheck(() => block.forward(x), [x, ...block.parameters()], { atol: 2e-3 });
  });

  it("has Llama's parameter names and no position table or biases", () => {
    manualSeed(8);
    const m = new GPT({ vocabSize: 9, arch: "llama", nEmbd: 16, nHead: 4, nKvHead: 2, nLayer: 1 });
    expect(m.namedParameters().map(([n, p]) => `${n} ${p.shape.join("x")}`)).toEqual([
      "transformer.wte.weight 9x16",
      "transformer.h.0.ln_1.weight 16", "transformer.h.0.attn.q_proj.weight 16x16",
      "transformer.h.0.attn.k_proj.weight 8x16", "transformer.h.0.attn.v_proj.weight 8x16", "transformer.h.0.attn.o_proj.weight 16x16",
      "transformer.h.0.ln_2.weight 16", "transformer.h.0.mlp.gate_proj.weight 48x16", "transformer.h.0.mlp.up_proj.weight 48x16",
      "transformer.h.0.mlp.down_proj.weight 16x48", "transformer.ln_f.weight 16", "lm_head.weight 9x16",
    ]);
  });
});
