import { describe, expect, it } from "vitest";
import {
  ArgumentError, CharTokenizer, GPT, ShapeError, Tensor, TextBatchSampler, estimateLoss, loadCorpus, loadDefaultCorpus,
  manualSeed, nn, noGrad, optim, randn, shuffleLines, trainValSplit,
} from "../index.js";
import { assertClose, gradcheck } from "../testing/index.js";

const { LoRALinear, applyLora, loadLora, loraParameters, loraStateDict, mergeLora } = nn;

const small = { vocabSize: 9, blockSize: 6, nLayer: 2, nHead: 2, nEmbd: 8 };

function snapshot(model: nn.Module): Map<string, Float32Array> {
  return new Map(model.namedParameters().map(([n, p]) => [n, p.data.slice()]));
}

function trainSteps(model: GPT, steps: number, lr = 1e-2, seed = 0): void {
  const opt = new optim.AdamW(model.parameters(), { lr });
  const data = Int32Array.from({ length: 200 }, (_, i) => (i * 7 + (i >> 3)) % small.vocabSize);
  const sampler = new TextBatchSampler(data, 4, small.blockSize, seed);
  for (let s = 0; s < steps; s++) {
    const b = sampler.sample();
    opt.zeroGrad();
    model.loss(b.x, b.y, b.shape).backward();
    opt.step();
  }
}

describe("LoRALinear", () => {
  it("starts equal to the base layer (B = 0) with A kaiming-uniform and scale alpha/r", () => {
    manualSeed(0);
    const base = new nn.Linear(6, 5);
    const l = new LoRALinear(base, { rank: 2, alpha: 8 });
    expect(l.scaling).toBe(4);
    expect(l.lora_A.shape).toEqual([2, 6]);
    expect(l.lora_B.shape).toEqual([5, 2]);
    expect(l.lora_B.data.every((v) => v === 0)).toBe(true);
    const bound = 1 / Math.sqrt(6);
    expect(l.lora_A.data.every((v) => Math.abs(v) <= bound)).toBe(true);
    expect(l.lora_A.data.some((v) => v !== 0)).toBe(true);
    const x = randn([3, 6]);
    expect(Array.from(l.forward(x).data)).toEqual(Array.from(base.forward(x).data));
    expect(l.namedParameters().map(([n]) => n)).toEqual(["weight", "bias", "lora_A", "lora_B"]);
    expect(() => new LoRALinear(base, { rank: 0 })).toThrow(ArgumentError);
  });

  it("gradcheck: x W + b + scale·x Aᵀ Bᵀ with respect to x, A and B", () => {
    manualSeed(1);
    const l = new LoRALinear(new nn.Linear(4, 3), { rank: 2, alpha: 3 });
    for (let i = 0; i < l.lora_B.size; i++) l.lora_B.data[i] = 0.3 * (i - 2);
    const x = randn([2, 4], { requiresGrad: true });
    gradcheck(() => l.forward(x), [x, l.lora_A, l.lora_B, l.weight]);
  });

  it("adapter dropout acts on the adapter input only, and not in eval mode", () => {
    manualSeed(2);
    const base = new nn.Linear(8, 4);
    const l = new LoRALinear(base, { rank: 2, dropout: 0.5 });
    l.lora_B.data.fill(0.5);
    const x = randn([5, 8]);
    const a = l.forward(x), b = l.forward(x);
    expect(Array.from(a.data)).not.toEqual(Array.from(b.data)); // different masks in training
    l.eval();
    assertClose(l.forward(x), l.forward(x), { atol: 0 });
  });
});

describe("applyLora", () => {
  it("wraps matching Linear layers by name, keeps base names, freezes everything else", () => {
    manualSeed(3);
    const m = new GPT(small);
    const before = m.namedParameters().map(([n]) => n);
    const names = applyLora(m, { rank: 2, alpha: 4, targets: /attn\.c_attn$/ });
    expect(names).toEqual(["transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"]);
    const after = m.namedParameters();
    // base parameter names unchanged (a base checkpoint still loads by name), adapters added
    expect(after.map(([n]) => n).filter((n) => !n.includes("lora_"))).toEqual(before);
    expect(after.filter(([, p]) => p.requiresGrad).map(([n]) => n)).toEqual([
      "transformer.h.0.attn.c_attn.lora_A", "transformer.h.0.attn.c_attn.lora_B",
      "transformer.h.1.attn.c_attn.lora_A", "transformer.h.1.attn.c_attn.lora_B",
    ]);
    expect(Object.keys(loraStateDict(m))).toEqual(after.filter(([, p]) => p.requiresGrad).map(([n]) => n));
    expect(() => applyLora(m, { rank: 2, targets: "no_such_layer" })).toThrow(/no Linear layer name matches/);
  });

  it("refuses a weight tied to another parameter", () => {
    const m = new GPT({ ...small, tieWeights: true });
    expect(() => applyLora(m, { rank: 2, targets: "lm_head" })).toThrow(/tied/);
  });

  it("training: only adapters get gradients and change; base weights stay bit-identical", () => {
    manualSeed(4);
    const m = new GPT(small);
    trainSteps(m, 5); // a "pretrained" base
    applyLora(m, { rank: 2, alpha: 2, targets: "c_attn|c_fc" });
    const before = snapshot(m);
    // one step by hand: which parameters receive gradients? (clear those left by pretraining first)
    for (const p of m.parameters()) p.grad = null;
    const x = Int32Array.from({ length: 12 }, (_, i) => i % 9);
    m.loss(x, x.map((v) => (v + 1) % 9), [2, 6]).backward();
    for (const [n, p] of m.namedParameters()) {
      if (n.includes("lora_")) expect(p.grad, n).not.toBeNull();
      else expect(p.grad, n).toBeNull();
    }
    // lora_B is zero at first, so only B gets a non-zero gradient on step 1; after training both move
    trainSteps(m, 20, 1e-2, 1);
    for (const [n, p] of m.namedParameters()) {
      const same = Array.from(p.data).every((v, i) => Object.is(v, before.get(n)![i]));
      if (n.includes("lora_")) expect(same, `${n} should change`).toBe(false);
      else expect(same, `${n} should be bit-identical`).toBe(true);
    }
  });

  it("per-group learning rates: a group at lr 0 stays put while the other trains", () => {
    manualSeed(5);
    const m = new GPT(small);
    applyLora(m, { rank: 2, targets: "c_attn" });
    const layers = nn.loraLayers(m);
    const A = layers.map(([, l]) => l.lora_A), B = layers.map(([, l]) => l.lora_B);
    const a0 = A.map((p) => p.data.slice());
    const opt = new optim.AdamW([{ params: A, lr: 0 }, { params: B, lr: 1e-2 }]);
    const x = Int32Array.from({ length: 12 }, (_, i) => (i * 5) % 9);
    for (let s = 0; s < 3; s++) {
      opt.zeroGrad();
      m.loss(x, x.map((v) => (v + 2) % 9), [2, 6]).backward();
      opt.step();
    }
    A.forEach((p, i) => expect(Array.from(p.data)).toEqual(Array.from(a0[i])));
    expect(B.every((p) => p.data.some((v) => v !== 0))).toBe(true);
  });
});

describe("save, load and merge adapters", () => {
  it("loraStateDict → loadLora into a fresh adapted model reproduces its outputs", () => {
    manualSeed(6);
    const m = new GPT(small);
    const baseState = Object.fromEntries(Object.entries(m.stateDict()).map(([k, t]) => [k, t.clone()]));
    applyLora(m, { rank: 3, alpha: 6, targets: "attn" });
    trainSteps(m, 10);
    const saved = Object.fromEntries(Object.entries(loraStateDict(m)).map(([k, t]) => [k, t.clone()]));

    manualSeed(123); // a different init everywhere
    const m2 = new GPT(small);
    m2.loadStateDict(baseState);
    applyLora(m2, { rank: 3, alpha: 6, targets: "attn" });
    expect(loadLora(m2, saved)).toEqual({ missingKeys: [], unexpectedKeys: [] });
    const x = Int32Array.from({ length: 12 }, (_, i) => (i * 4) % 9);
    assertClose(m2.forward(x, [2, 6]), m.forward(x, [2, 6]), { atol: 0 });

    // errors: wrong rank, missing keys, no adapters
    const m3 = new GPT(small);
    applyLora(m3, { rank: 2, alpha: 6, targets: "attn" });
    expect(() => loadLora(m3, saved)).toThrow(ShapeError);
    const partial = { ...saved };
    delete partial["transformer.h.0.attn.c_proj.lora_A"];
    expect(() => loadLora(m2, partial)).toThrow(/missing keys \[transformer.h.0.attn.c_proj.lora_A\]/);
    expect(loadLora(m2, partial, { strict: false }).missingKeys).toEqual(["transformer.h.0.attn.c_proj.lora_A"]);
    expect(() => loadLora(new GPT(small), saved)).toThrow(/no LoRA adapters/);
  });

  it("mergeLora folds B·A·scale into the base weights: same outputs (1e-5), plain Linear layers again", () => {
    manualSeed(7);
    const m = new GPT(small);
    applyLora(m, { rank: 2, alpha: 5, targets: /c_attn|c_proj|c_fc/ });
    trainSteps(m, 15);
    m.eval();
    const x = Int32Array.from({ length: 12 }, (_, i) => (i * 3 + 1) % 9);
    const withAdapters = noGrad(() => m.forward(x, [2, 6])).data.slice();
    const merged = mergeLora(m);
    expect(merged).toHaveLength(8); // c_attn, attn.c_proj, c_fc, mlp.c_proj in 2 blocks
    expect(nn.loraLayers(m)).toEqual([]);
    expect(m.namedParameters().some(([n]) => n.includes("lora_"))).toBe(false);
    expect(m.transformer.h.at(0)).toBeDefined();
    expect((m.transformer.h.at(0) as any).attn.c_attn).toBeInstanceOf(nn.Linear);
    assertClose(noGrad(() => m.forward(x, [2, 6])), withAdapters, { atol: 1e-5, rtol: 0 });
    // the merged weights are ordinary state: they load into a plain GPT
    const plain = new GPT(small);
    plain.loadStateDict(m.stateDict());
    assertClose(plain.eval().forward(x, [2, 6]), withAdapters, { atol: 1e-5, rtol: 0 });
  });
});

describe("LoRA fine-tuning a pretrained tiny GPT on a second corpus", () => {
  it("lowers validation loss on the new corpus while the base weights stay unchanged", () => {
    manualSeed(8);
    const female = shuffleLines(loadDefaultCorpus(), 1);
    const male = shuffleLines(loadCorpus("male-names"), 2);
    const tok = CharTokenizer.fromText(female);
    const cfg = { vocabSize: tok.vocabSize, blockSize: 16, nLayer: 2, nHead: 2, nEmbd: 32 };
    const m = new GPT(cfg);

    // Pretrain on corpus 1.
    const pre = new TextBatchSampler(trainValSplit(tok.encode(female)).train, 16, 16, 0);
    const opt = new optim.AdamW(m.parameters(), { lr: 3e-3 });
    for (let s = 0; s < 150; s++) {
      const b = pre.sample();
      opt.zeroGrad();
      m.loss(b.x, b.y, b.shape).backward();
      opt.step();
    }

    // Fine-tune adapters on corpus 2.
    const { train, val } = trainValSplit(tok.encode(male));
    const valLoss = () => {
      const vs = new TextBatchSampler(val, 32, 16, 99); // the same validation batches every time
      return estimateLoss(m, () => vs.sample(), 4);
    };
    applyLora(m, { rank: 4, alpha: 8, targets: /c_attn|c_fc/ });
    const base = snapshot(m);
    const before = valLoss();
    const ft = new TextBatchSampler(train, 16, 16, 1);
    const fopt = new optim.AdamW(loraParameters(m), { lr: 1e-2, weightDecay: 0 });
    for (let s = 0; s < 100; s++) {
      const b = ft.sample();
      fopt.zeroGrad();
      m.loss(b.x, b.y, b.shape).backward();
      fopt.step();
    }
    const after = valLoss();
    console.log(`LoRA fine-tune: validation loss on male names ${before.toFixed(3)} → ${after.toFixed(3)}`);
    expect(after).toBeLessThan(before - 0.05);
    for (const [n, p] of m.namedParameters()) {
      if (n.includes("lora_")) continue;
      expect(Array.from(p.data).every((v, i) => Object.is(v, base.get(n)![i])), `${n} unchanged`).toBe(true);
    }
  });
});

// keep the Tensor import used for type-only contexts in older TS configs
void Tensor;
