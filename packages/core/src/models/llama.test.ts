import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { F, GPT, LlamaBlock, Tensor, gptConfig, manualSeed, mul, randn, rotaryEmbedding, silu } from "../index.js";
import { assertClose, gradcheck } from "../testing/index.js";
import { packGroupedQkv, rmsNormRows, siluMul } from "./llama-ops.js";

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
    // Projections at std 0.06: larger weights saturate the softmax, and float32 central differences stop resolving the gradient.
    for (const p of block.parameters()) if (p.ndim === 2) for (let i = 0; i < p.size; i++) p.data[i] *= 3;
    const x = randn([2, 3, 8], { requiresGrad: true });
    gradcheck(() => block.forward(x), [x, ...block.parameters()], { atol: 2e-3 });
  });

  it("the fused rmsNormRows, siluMul and packGroupedQkv equal their composites in value and gradient, and pass gradcheck", () => {
    manualSeed(9);
    const x = randn([3, 4, 6], { requiresGrad: true }), w = randn([6], { requiresGrad: true });
    const x2 = new Tensor(Float32Array.from(x.data), x.shape, true), w2 = new Tensor(Float32Array.from(w.data), w.shape, true);
    const fused = rmsNormRows(x, w, 1e-5), composite = F.rmsNorm(x2, 6, w2, 1e-5);
    assertClose(fused, composite, { atol: 1e-6 });
    project(fused).backward();
    project(composite).backward();
    assertClose(x.grad!, x2.grad!, { atol: 1e-5 });
    assertClose(w.grad!, w2.grad!, { atol: 1e-5 });
    gradcheck((a, b) => rmsNormRows(a, b, 1e-5), [randn([2, 5], { requiresGrad: true }), randn([5], { requiresGrad: true })]);

    const a = randn([4, 5], { requiresGrad: true }), b = randn([4, 5], { requiresGrad: true });
    const a2 = new Tensor(Float32Array.from(a.data), a.shape, true), b2 = new Tensor(Float32Array.from(b.data), b.shape, true);
    const y = siluMul(a, b), y2 = mul(silu(a2), b2);
    assertClose(y, y2, { atol: 1e-6 });
    project(y).backward();
    project(y2).backward();
    assertClose(a.grad!, a2.grad!, { atol: 1e-6 });
    assertClose(b.grad!, b2.grad!, { atol: 1e-6 });
    gradcheck(siluMul, [randn([3, 4], { requiresGrad: true }), randn([3, 4], { requiresGrad: true })]);
    expect(() => siluMul(randn([2, 3]), randn([3, 2]))).toThrow(/siluMul: shapes \[2, ?3\] and \[3, ?2\] differ/);
    expect(() => rmsNormRows(randn([2, 3]), randn([4]), 1e-5)).toThrow(/rmsNormRows: weight \[4\] must be \[3\]/);

    // packGroupedQkv: key/value head g fills the slots of query heads 2g and 2g + 1
    const q = randn([2, 3, 8], { requiresGrad: true }), k = randn([2, 3, 4], { requiresGrad: true }), v = randn([2, 3, 4], { requiresGrad: true });
    const packed = packGroupedQkv(q, k, v, 4, 2); // hs 2
    expect(packed.shape).toEqual([2, 3, 24]);
    const row = Array.from(packed.data.subarray(24, 48)), kRow = Array.from(k.data.subarray(4, 8)), vRow = Array.from(v.data.subarray(4, 8));
    expect(row.slice(0, 8)).toEqual(Array.from(q.data.subarray(8, 16)));
    expect(row.slice(8, 16)).toEqual([...kRow.slice(0, 2), ...kRow.slice(0, 2), ...kRow.slice(2, 4), ...kRow.slice(2, 4)]);
    expect(row.slice(16, 24)).toEqual([...vRow.slice(0, 2), ...vRow.slice(0, 2), ...vRow.slice(2, 4), ...vRow.slice(2, 4)]);
    gradcheck((a, b, c) => packGroupedQkv(a, b, c, 4, 2), [q, k, v]);
    expect(() => packGroupedQkv(q, k, v, 4, 3)).toThrow(/packGroupedQkv: .* do not fit 4 query and 3 key\/value heads/);
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
