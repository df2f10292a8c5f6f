import { describe, expect, it } from "vitest";
import { ArgumentError, GPT, Generator, ShapeError, Tensor, generate, gptConfig, manualSeed, nn, noGrad, optim, randn, sampleToken } from "../index.js";
import { assertClose, gradcheck } from "../testing/index.js";
import { gelu, linear } from "../index.js";
import { linearGelu, tokenPositionEmbedding } from "./gpt-ops.js";
import { erfAccurate } from "../kernels/js/gelu.js";
import { kernels } from "../kernels/kernels.js";
import { add, embedding, reshape } from "../index.js";

const tiny = { vocabSize: 5, blockSize: 4, nLayer: 1, nHead: 2, nEmbd: 4 };

function ids(n: number, V: number, seed: number): Int32Array {
  const g = new Generator(seed);
  return Int32Array.from({ length: n }, () => g.randint(V));
}

describe("GPTConfig", () => {
  it("fills nanoGPT-style defaults and validates fields", () => {
    const c = gptConfig({ vocabSize: 65 });
    expect(c).toEqual({
      vocabSize: 65, arch: "gpt2", blockSize: 64, nLayer: 4, nHead: 4, nEmbd: 128, dropout: 0, bias: true, tieWeights: false,
      nKvHead: 4, ffnHidden: 512, geluApproximate: "none", normEps: 1e-5, ropeTheta: 10000,
    });
    const l = gptConfig({ vocabSize: 65, arch: "llama", nEmbd: 96, nHead: 6 });
    expect([l.bias, l.nKvHead, l.ffnHidden]).toEqual([false, 6, 256]); // 8·96/3 = 256
    expect(() => gptConfig({ vocabSize: 5, nKvHead: 2 })).toThrow(/grouped-query attention needs arch "llama"/);
    expect(() => gptConfig({ vocabSize: 5, arch: "llama", nHead: 4, nKvHead: 3 })).toThrow(/nKvHead \(3\) must divide nHead \(4\)/);
    expect(() => gptConfig({ vocabSize: 5, arch: "llama", nEmbd: 12, nHead: 4 })).toThrow(/must be even for the rotary embedding/);
    expect(() => gptConfig({ vocabSize: 5, arch: "gpt3" as never })).toThrow(/arch must be "gpt2" or "llama"/);
    expect(gptConfig({ vocabSize: 3, nEmbd: 8, nHead: undefined }).nHead).toBe(4);
    expect(() => gptConfig({ vocabSize: 0 })).toThrow(/vocabSize must be a positive integer/);
    expect(() => gptConfig({ vocabSize: 5, nEmbd: 10, nHead: 4 })).toThrow(/multiple of nHead/);
    expect(() => gptConfig({ vocabSize: 5, dropout: 1 })).toThrow(ArgumentError);
  });
});

describe("GPT structure and init", () => {
  it("has nanoGPT parameter names and the anchor's parameter count", () => {
    manualSeed(0);
    const m = new GPT({ vocabSize: 65 });
    const names = m.namedParameters().map(([n]) => n);
    expect(names.slice(0, 6)).toEqual([
      "transformer.wte.weight", "transformer.wpe.weight",
      "transformer.h.0.ln_1.weight", "transformer.h.0.ln_1.bias",
      "transformer.h.0.attn.c_attn.weight", "transformer.h.0.attn.c_attn.bias",
    ]);
    expect(names).toContain("transformer.h.3.mlp.c_proj.weight");
    expect(names.slice(-4)).toEqual(["transformer.ln_f.weight", "transformer.ln_f.bias", "lm_head.weight", "lm_head.bias"]);
    // torch_gpt.py (same config, untied head with bias) reports params=818241
    expect(m.numParameters()).toBe(818241);
  });

  it("initialises like nanoGPT: N(0, 0.02), residual projections N(0, 0.02/√(2L)), zero biases, unit LayerNorm", () => {
    manualSeed(1);
    const m = new GPT({ vocabSize: 65, nLayer: 4 });
    const std = (d: Float32Array) => Math.sqrt(d.reduce((a, v) => a + v * v, 0) / d.length);
    const p = Object.fromEntries(m.namedParameters());
    expect(std(p["transformer.h.0.mlp.c_fc.weight"].data)).toBeCloseTo(0.02, 3);
    expect(std(p["transformer.wte.weight"].data)).toBeCloseTo(0.02, 3);
    expect(std(p["transformer.h.0.mlp.c_proj.weight"].data)).toBeCloseTo(0.02 / Math.sqrt(8), 3);
    expect(std(p["transformer.h.1.attn.c_proj.weight"].data)).toBeCloseTo(0.02 / Math.sqrt(8), 3);
    expect(p["transformer.h.0.attn.c_attn.bias"].data.every((v) => v === 0)).toBe(true);
    expect(p["transformer.h.0.ln_1.weight"].data.every((v) => v === 1)).toBe(true);
    expect(p["transformer.ln_f.bias"].data.every((v) => v === 0)).toBe(true);
  });

  it("ties the head to the token embedding when asked (one parameter, gradients from both uses)", () => {
    manualSeed(2);
    const m = new GPT({ ...tiny, tieWeights: true });
    const head = m.lm_head as nn.Linear;
    expect(head.weight).toBe(m.transformer.wte.weight);
    expect(head.bias).toBeNull();
    expect(m.namedParameters().map(([n]) => n)).not.toContain("lm_head.weight");
    const untied = new GPT(tiny);
    expect(untied.numParameters() - m.numParameters()).toBe(5 * 4 + 5);
    const x = ids(8, 5, 3);
    m.loss(x, ids(8, 5, 4), [2, 4]).backward();
    expect(m.transformer.wte.weight.grad!.data.some((v) => v !== 0)).toBe(true);
  });

  it("same seed, same model; bias: false drops every bias", () => {
    manualSeed(5);
    const a = new GPT(tiny);
    manualSeed(5);
    const b = new GPT(tiny);
    a.parameters().forEach((p, i) => expect(Array.from(p.data)).toEqual(Array.from(b.parameters()[i].data)));
    const nb = new GPT({ ...tiny, bias: false });
    expect(nb.namedParameters().filter(([n]) => n.endsWith("bias"))).toEqual([]);
  });
});

describe("GPT forward", () => {
  it("maps (B, T) ids to (B, T, V) logits from a Tensor or an Int32Array with its shape", () => {
    manualSeed(3);
    const m = new GPT({ ...tiny, blockSize: 6 });
    const x = ids(12, 5, 1);
    const a = m.forward(x, [2, 6]);
    expect(a.shape).toEqual([2, 6, 5]);
    const b = m.forward(new Tensor(Float32Array.from(x), [2, 6]));
    expect(Array.from(b.data)).toEqual(Array.from(a.data));
    expect(m.forward(x.subarray(0, 3)).shape).toEqual([1, 3, 5]); // 1-D: one sequence
  });

  it("rejects bad input with clear errors", () => {
    const m = new GPT(tiny);
    expect(() => m.forward(ids(10, 5, 1), [2, 5])).toThrow(/exceeds blockSize 4/);
    expect(() => m.forward(ids(6, 5, 1), [2, 4])).toThrow(ShapeError);
    expect(() => m.forward(Int32Array.from([0, 7]), [1, 2])).toThrow(/out of range \[0, 5\)/);
    expect(() => m.forward(new Tensor(Float32Array.from([0, 1.5]), [1, 2]))).toThrow(/not an integer/);
    expect(() => m.loss(ids(8, 5, 1), ids(6, 5, 1), [2, 4])).toThrow(/8 positions in idx but 6 targets/);
  });

  it("is causal: changing a future token does not change earlier logits", () => {
    manualSeed(4);
    const m = new GPT({ vocabSize: 7, blockSize: 8, nLayer: 2, nHead: 2, nEmbd: 8 });
    const x = ids(8, 7, 2);
    const y = x.slice();
    y[5] = (y[5] + 1) % 7;
    const a = m.forward(x, [1, 8]).data, b = m.forward(y, [1, 8]).data;
    expect(Array.from(b.subarray(0, 5 * 7))).toEqual(Array.from(a.subarray(0, 5 * 7)));
    expect(Array.from(b.subarray(5 * 7))).not.toEqual(Array.from(a.subarray(5 * 7)));
  });

  it("fused attention and the primitive-op reference give the same logits and gradients", () => {
    manualSeed(6);
    const m = new GPT({ vocabSize: 7, blockSize: 8, nLayer: 2, nHead: 2, nEmbd: 8 });
    const x = ids(16, 7, 3), t = ids(16, 7, 4);
    const run = (fused: boolean) => {
      for (const b of m.transformer.h) (b as any).attn.fused = fused;
      m.parameters().forEach((p) => (p.grad = null));
      const loss = m.loss(x, t, [2, 8]);
      loss.backward();
      return { loss: loss.item(), grads: m.parameters().map((p) => p.grad!.data.slice()) };
    };
    const f = run(true), r = run(false);
    expect(f.loss).toBeCloseTo(r.loss, 6);
    f.grads.forEach((g, i) => assertClose(g, r.grads[i], { atol: 1e-6, rtol: 1e-4 }));
  });
});

describe("gradcheck through the attention path (tiny config)", () => {
  for (const fused of [true, false]) {
    it(`CausalSelfAttention (${fused ? "fused" : "reference"}): input and parameters`, () => {
      manualSeed(7);
      const att = new nn.CausalSelfAttention(4, 2, { blockSize: 3, fused });
      for (const p of att.parameters()) for (let i = 0; i < p.size; i++) p.data[i] = (p.data[i] + 0.1) * 2;
      const x = randn([2, 3, 4], { requiresGrad: true });
      gradcheck(() => att.forward(x), [x, ...att.parameters()]);
    });
  }

  it("whole tiny GPT loss with respect to every parameter", () => {
    manualSeed(8);
    const m = new GPT(tiny);
    // Larger weights than the 0.02 init so differences are well above float32 noise.
    for (const p of m.parameters()) if (p.ndim === 2) for (let i = 0; i < p.size; i++) p.data[i] *= 15;
    const x = ids(8, 5, 5), t = ids(8, 5, 6);
    gradcheck(() => m.loss(x, t, [2, 4]), m.parameters(), { atol: 2e-3 });
  });
});

describe("tokenPositionEmbedding (fused input embedding)", () => {
  it("equals embedding(ids, wte) + embedding(positions, wpe) in value and gradients (leaf and non-leaf tables)", () => {
    manualSeed(14);
    const B = 3, T = 4, V = 6, C = 5;
    const tok = ids(B * T, V, 15);
    const wte = randn([V, C], { requiresGrad: true }), wpe = randn([7, C], { requiresGrad: true });
    const wte2 = new Tensor(wte.data, wte.shape, true), wpe2 = new Tensor(wpe.data, wpe.shape, true);
    const y = tokenPositionEmbedding(tok, B, T, wte, wpe);
    const pos = Int32Array.from({ length: T }, (_, t) => t);
    const ref = add(reshape(embedding(tok, wte2), [B, T, C]), embedding(pos, wpe2));
    assertClose(y, ref, { atol: 0 });
    const g = randn([B, T, C]);
    y.backward(g);
    ref.backward(g);
    assertClose(wte.grad!, wte2.grad!, { atol: 1e-6 });
    assertClose(wpe.grad!, wpe2.grad!, { atol: 1e-6 });
    // Tables that are not leaves get their gradients returned, not sunk.
    gradcheck((a, b) => tokenPositionEmbedding(tok, B, T, a.mul(1.5), b.mul(0.5)).mul(g), [randn([V, C], { requiresGrad: true }), randn([T, C], { requiresGrad: true })]);
  });

  it("checks ids and table shapes", () => {
    const w = randn([5, 4]), p = randn([3, 4]);
    expect(() => tokenPositionEmbedding(Int32Array.from([0, 5]), 1, 2, w, p)).toThrow(/out of range \[0, 5\)/);
    expect(() => tokenPositionEmbedding(Int32Array.from([0, 1, 2, 3]), 1, 4, w, p)).toThrow(ShapeError);
    expect(() => tokenPositionEmbedding(Int32Array.from([0, 1]), 1, 2, w, randn([3, 2]))).toThrow(ShapeError);
  });
});

describe("linearGelu (fused MLP expansion)", () => {
  it("its GELU table matches the exact GELU and its derivative to float32 precision", () => {
    expect(erfAccurate(1)).toBeCloseTo(0.8427007929497149, 15);
    expect(erfAccurate(-0.5)).toBeCloseTo(-0.5204998778130465, 15);
    expect(erfAccurate(4)).toBeCloseTo(0.9999999845827421, 15);
    const n = 40001;
    const v = Float32Array.from({ length: n }, (_, i) => -10 + i * 5e-4); // past both ends of the table
    const h = v.slice(), d = new Float32Array(n), h2 = v.slice();
    kernels().geluInPlaceWithGrad(h, d, n);
    kernels().geluInPlace(h2, n);
    for (let i = 0; i < n; i++) {
      const x = v[i], cdf = 0.5 * (1 + erfAccurate(x * Math.SQRT1_2)), pdf = Math.exp(-0.5 * x * x) / Math.sqrt(2 * Math.PI);
      expect(Math.abs(h[i] - x * cdf)).toBeLessThan(1e-6 * Math.max(1, Math.abs(x)));
      expect(Math.abs(d[i] - (cdf + x * pdf))).toBeLessThan(2e-7);
      expect(h2[i]).toBe(h[i]);
    }
    const nan = new Float32Array([NaN, Infinity, -Infinity]), dn = new Float32Array(3);
    kernels().geluInPlaceWithGrad(nan, dn, 3);
    expect(Array.from(nan)).toEqual([NaN, Infinity, 0]);
    expect(Array.from(dn)).toEqual([NaN, 1, 0]);
  });

  it("equals gelu(linear(x)) in value and gradient, with and without a graph", () => {
    manualSeed(11);
    const x = randn([3, 5, 6], { requiresGrad: true }), w = randn([7, 6], { requiresGrad: true }), b = randn([7], { requiresGrad: true });
    const x2 = new Tensor(x.data, x.shape, true), w2 = new Tensor(w.data, w.shape, true), b2 = new Tensor(b.data, b.shape, true);
    const y = linearGelu(x, w, b), ref = gelu(linear(x2, w2, b2));
    expect(y.shape).toEqual([3, 5, 7]);
    assertClose(y, ref, { atol: 1e-6, rtol: 1e-6 });
    assertClose(noGrad(() => linearGelu(x, w, b)), y, { atol: 0 });
    const g = randn([3, 5, 7]);
    y.backward(g);
    ref.backward(g);
    for (const [a, r] of [[x, x2], [w, w2], [b, b2]]) assertClose(a.grad!, r.grad!, { atol: 2e-6, rtol: 1e-5 });
    expect(linearGelu(x, w).shape).toEqual([3, 5, 7]);
  });

  it("its saved gelu' survives a retained graph, a second forward and buffer reuse", () => {
    manualSeed(13);
    const w = randn([64, 16], { requiresGrad: true }), b = randn([64], { requiresGrad: true });
    const xs = Array.from({ length: 4 }, () => randn([2, 8, 16], { requiresGrad: true }));
    const g = randn([2, 8, 64]);
    const refGrad = (x: Tensor) => {
      const x2 = new Tensor(x.data, x.shape, true);
      gelu(linear(x2, w.detach(), b.detach())).backward(g);
      return x2.grad!;
    };
    // (2·8, 64) = 1024 elements: gelu' lives in a pooled buffer.
    const y0 = linearGelu(xs[0], w, b), y1 = linearGelu(xs[1], w, b); // two forwards before any backward
    y0.backward(g, { retainGraph: true }); // must keep y0's gelu' intact ...
    const y2 = linearGelu(xs[2], w, b); // ... and out of the pool this forward draws from
    y0.backward(g); // the last use: gelu' is overwritten and pooled
    const y3 = linearGelu(xs[3], w, b); // may take that buffer
    for (const y of [y1, y2, y3]) y.backward(g);
    assertClose(xs[0].grad!, refGrad(xs[0]).mul(2), { atol: 1e-5, rtol: 1e-5 });
    for (const x of xs.slice(1)) assertClose(x.grad!, refGrad(x), { atol: 1e-5, rtol: 1e-5 });
  });

  it("gradcheck", () => {
    manualSeed(12);
    const x = randn([4, 3], { requiresGrad: true }), w = randn([5, 3], { requiresGrad: true }), b = randn([5], { requiresGrad: true });
    gradcheck(linearGelu, [x, w, b]);
  });

  it("rejects mismatched shapes", () => {
    expect(() => linearGelu(randn([2, 3]), randn([4, 5]))).toThrow(/last input dimension must be 5/);
    expect(() => linearGelu(randn([2, 3]), randn([4, 3]), randn([3]))).toThrow(ShapeError);
  });
});

describe("training", () => {
  it("overfits a tiny corpus: loss near 0", () => {
    manualSeed(9);
    // Every character is distinct, so each one determines the next: the loss can reach 0.
    const text = "abcdefghijklmnopqrstuvwxyz.\n";
    const chars = Array.from(new Set(text)).sort();
    const data = Int32Array.from(Array.from(text.repeat(4)), (c) => chars.indexOf(c));
    const m = new GPT({ vocabSize: chars.length, blockSize: 16, nLayer: 2, nHead: 2, nEmbd: 32 });
    const opt = new optim.AdamW(m.parameters(), { lr: 1e-2, weightDecay: 0 });
    const gen = new Generator(0);
    const B = 8, T = 16;
    let first = 0, last = 0;
    for (let step = 0; step < 80; step++) {
      const x = new Int32Array(B * T), y = new Int32Array(B * T);
      for (let b = 0; b < B; b++) {
        const s = gen.randint(data.length - T - 1);
        x.set(data.subarray(s, s + T), b * T);
        y.set(data.subarray(s + 1, s + T + 1), b * T);
      }
      opt.zeroGrad();
      const loss = m.loss(x, y, [B, T]);
      loss.backward();
      opt.step();
      if (step === 0) first = loss.item();
      last = loss.item();
    }
    expect(first).toBeGreaterThan(2.5); // ≈ ln(vocab) at init
    expect(last).toBeLessThan(0.05);
  });
});

describe("generate", () => {
  manualSeed(10);
  const m = new GPT({ vocabSize: 11, blockSize: 6, nLayer: 1, nHead: 2, nEmbd: 8 });
  for (const p of m.parameters()) if (p.ndim === 2) for (let i = 0; i < p.size; i++) p.data[i] *= 20; // peaked, varied logits

  it("same seed, same tokens; another seed, other tokens; streams through onToken", () => {
    const streamed: number[] = [];
    const a = generate(m, [1, 2], { maxNewTokens: 30, seed: 42, onToken: (t, i) => { expect(i).toBe(streamed.length); streamed.push(t); } });
    const b = generate(m, [1, 2], { maxNewTokens: 30, seed: 42 });
    const c = generate(m, [1, 2], { maxNewTokens: 30, seed: 43 });
    expect(a).toHaveLength(30);
    expect(b).toEqual(a);
    expect(streamed).toEqual(a);
    expect(c).not.toEqual(a);
    expect(a.every((t) => Number.isInteger(t) && t >= 0 && t < 11)).toBe(true);
  });

  it("topK = 1 (and temperature 0) is greedy decoding, cropping the context to blockSize", () => {
    const greedy: number[] = [];
    const ctx = [3];
    noGrad(() => {
      for (let n = 0; n < 12; n++) {
        const w = Int32Array.from(ctx.slice(-6));
        const logits = m.forward(w, [1, w.length]).data.subarray((w.length - 1) * 11);
        let best = 0;
        for (let i = 1; i < 11; i++) if (logits[i] > logits[best]) best = i;
        ctx.push(best);
        greedy.push(best);
      }
    });
    expect(generate(m, [3], { maxNewTokens: 12, topK: 1, seed: 1 })).toEqual(greedy);
    expect(generate(m, [3], { maxNewTokens: 12, topK: 1, seed: 2 })).toEqual(greedy);
    expect(generate(m, [3], { maxNewTokens: 12, temperature: 0 })).toEqual(greedy);
  });

  it("leaves the global generator and the model's mode alone", () => {
    m.train();
    manualSeed(99);
    generate(m, [0], { maxNewTokens: 3, seed: 5 });
    const after = Array.from(randn([4]).data);
    manualSeed(99);
    expect(Array.from(randn([4]).data)).toEqual(after);
    expect(m.training).toBe(true);
  });

  it("sampleToken respects topK and temperature", () => {
    const logits = Float32Array.from([0, 5, 4, -1, 4.5]);
    const g = new Generator(0);
    const seen = new Set<number>();
    for (let i = 0; i < 300; i++) seen.add(sampleToken(logits, 1, 2, g));
    expect([...seen].sort()).toEqual([1, 4]);
    const counts = [0, 0, 0, 0, 0];
    for (let i = 0; i < 300; i++) counts[sampleToken(logits, 100, 5, g)]++;
    expect(Math.min(...counts)).toBeGreaterThan(20); // very high temperature: near uniform
  });

  it("validates its options", () => {
    expect(() => generate(m, [1], { maxNewTokens: -1 })).toThrow(ArgumentError);
    expect(() => generate(m, [1], { maxNewTokens: 1, topK: 0 })).toThrow(/topK/);
    expect(() => generate(m, [1], { maxNewTokens: 1, temperature: -1 })).toThrow(/temperature/);
    expect(() => generate(m, [11], { maxNewTokens: 1 })).toThrow(/out of range/);
  });
});
