import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { F, type Tensor, decodeSafetensors, encodeSafetensors, loadCheckpoint, manualSeed, nn, optim, rand, saveCheckpoint } from "../index.js";

/** An MLP big enough for the packed buffer to be a SIMD arena (≥ 4,096 values). */
function mlp(): nn.Sequential {
  manualSeed(3);
  return new nn.Sequential(new nn.Linear(40, 64), new nn.ReLU(), new nn.Linear(64, 32), new nn.ReLU(), new nn.Linear(32, 5));
}

/**
 * Rebinds every parameter to a view of one larger buffer, in reverse order, so no optimizer
 * can pack them: the reference path (one update per parameter, the TypeScript loops).
 */
function unpackable(m: nn.Module): nn.Module {
  const ps = m.parameters();
  const total = ps.reduce((n, p) => n + p.size, 0);
  const big = new Float32Array(total + 7);
  let off = 7;
  for (const p of [...ps].reverse()) {
    const v = big.subarray(off, off + p.size);
    v.set(p.data);
    p.data = v;
    off += p.size;
  }
  return m;
}

function train(m: nn.Module, opt: optim.Optimizer<any>, steps: number, seed = 4): number[] {
  manualSeed(seed);
  const x = rand([16, 40]);
  const y = new Int32Array(16).map((_, i) => i % 5);
  const losses: number[] = [];
  for (let s = 0; s < steps; s++) {
    opt.zeroGrad();
    const loss = F.crossEntropy(m.forward(x) as Tensor, y);
    loss.backward();
    opt.step();
    losses.push(loss.item());
  }
  return losses;
}

const values = (m: nn.Module) => m.parameters().map((p) => Array.from(p.data));

const makers: [string, (ps: nn.Parameter[] | optim.GroupSpec<any>[]) => optim.Optimizer<any>][] = [
  ["Adam", (ps) => new optim.Adam(ps as nn.Parameter[], { lr: 0.01 })],
  ["AdamW", (ps) => new optim.AdamW(ps as nn.Parameter[], { lr: 0.01, weightDecay: 0.1 })],
  ["SGD momentum", (ps) => new optim.SGD(ps as nn.Parameter[], { lr: 0.1, momentum: 0.9, weightDecay: 0.01 })],
];

describe("optimizers pack plain parameters when they are built", () => {
  for (const [name, make] of makers) {
    it(`${name}: packed and unpacked parameters train to the same bits, state included`, () => {
      const a = mlp(), b = unpackable(mlp());
      const oa = make(a.parameters()), ob = make(b.parameters());
      const ps = a.parameters();
      // One buffer, back to back in parameter order; b's views were left alone.
      for (let i = 1; i < ps.length; i++) {
        expect(ps[i].data.buffer).toBe(ps[0].data.buffer);
        expect(ps[i].data.byteOffset).toBe(ps[i - 1].data.byteOffset + ps[i - 1].data.byteLength);
        expect(ps[i].grad!.data.buffer).toBe(ps[0].grad!.data.buffer);
      }
      expect(b.parameters()[0].data.byteOffset).not.toBe(0);
      expect(train(a, oa, 5)).toEqual(train(b, ob, 5));
      expect(values(a)).toEqual(values(b));
      expect(oa.stateDict()).toEqual(ob.stateDict());
    });
  }

  it("two parameter groups: each one contiguous range with its own hyper-parameters, same bits as unpacked", () => {
    const groups = (m: nn.Module) => {
      const ps = m.parameters();
      return [{ params: ps.filter((_, i) => i % 2 === 0) }, { params: ps.filter((_, i) => i % 2 === 1), lr: 0.003, weightDecay: 0 }];
    };
    const a = mlp(), b = unpackable(mlp());
    const oa = new optim.AdamW(groups(a), { lr: 0.01 }), ob = new optim.AdamW(groups(b), { lr: 0.01 });
    const g1 = oa.paramGroups[1].params;
    expect(g1[1].data.byteOffset).toBe(g1[0].data.byteOffset + g1[0].data.byteLength);
    expect(train(a, oa, 4)).toEqual(train(b, ob, 4));
    expect(values(a)).toEqual(values(b));
  });

  it("zeroGrad clears every gradient", () => {
    const m = mlp();
    const opt = new optim.Adam(m.parameters());
    train(m, opt, 1);
    F.crossEntropy(m.forward(rand([2, 40])) as Tensor, [0, 1]).backward();
    expect(m.parameters().some((p) => p.grad!.data.some((v) => v !== 0))).toBe(true);
    opt.zeroGrad();
    expect(m.parameters().every((p) => p.grad!.data.every((v) => v === 0))).toBe(true);
  });

  it("keeps values and gradients computed before it was built", () => {
    const m = mlp();
    F.crossEntropy(m.forward(rand([2, 40])) as Tensor, [0, 1]).backward();
    const before = m.parameters().map((p) => [Array.from(p.data), Array.from(p.grad!.data)]);
    new optim.SGD(m.parameters());
    expect(m.parameters().map((p) => [Array.from(p.data), Array.from(p.grad!.data)])).toEqual(before);
  });

  it("leaves parameters already packed by nn.flattenParameters where they are", () => {
    const m = mlp();
    const flat = nn.flattenParameters(m);
    new optim.Adam(m.parameters());
    expect(m.parameters().every((p) => p.data.buffer === flat.data.buffer)).toBe(true);
  });

  it("nn.flattenParameters after the optimizer moves its state along; training goes on to the same bits", () => {
    const a = mlp(), b = unpackable(mlp());
    const oa = new optim.Adam(a.parameters(), { lr: 0.01 }), ob = new optim.Adam(b.parameters(), { lr: 0.01 });
    train(a, oa, 2);
    train(b, ob, 2);
    const flat = nn.flattenParameters(a);
    expect(train(a, oa, 3, 9)).toEqual(train(b, ob, 3, 9));
    expect(values(a)).toEqual(values(b));
    expect(Object.values(oa.stateDict().state["0"])[0]).toEqual(Object.values(ob.stateDict().state["0"])[0]);
    expect(a.parameters()[0].data.buffer).toBe(flat.data.buffer);
  });

  it("frozen parameters keep no gradient and their values; the rest trains to the unpacked bits", () => {
    const a = mlp(), b = unpackable(mlp());
    nn.freeze(a, /^0\./);
    nn.freeze(b, /^0\./);
    const frozen = Array.from(a.parameters()[0].data);
    const oa = new optim.Adam(a.parameters(), { lr: 0.01 }), ob = new optim.Adam(b.parameters(), { lr: 0.01 });
    expect(a.parameters()[0].grad).toBeNull();
    expect(train(a, oa, 3)).toEqual(train(b, ob, 3));
    expect(a.parameters()[0].grad).toBeNull();
    expect(Array.from(a.parameters()[0].data)).toEqual(frozen);
    expect(values(a)).toEqual(values(b));
  });
});

describe("packed parameters stay the model's parameters", () => {
  const dir = mkdtempSync(join(tmpdir(), "chainrule-pack-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("stateDict, loadStateDict and safetensors read and write the packed values in place", () => {
    const m = mlp();
    const opt = new optim.Adam(m.parameters(), { lr: 0.01 });
    train(m, opt, 2);
    const sd = m.stateDict();
    for (const [k, p] of m.namedParameters()) expect(sd[k].data).toBe(p.data);
    const bytes = encodeSafetensors(sd);
    const buffer = m.parameters()[0].data.buffer;
    const other = mlp();
    new optim.SGD(other.parameters());
    other.loadStateDict(decodeSafetensors(bytes).tensors);
    expect(values(other)).toEqual(values(m));
    expect(other.parameters()[0].data.buffer).not.toBe(buffer);
    m.loadStateDict(mlp().stateDict());
    expect(m.parameters()[0].data.buffer).toBe(buffer);
    expect(values(m)).toEqual(values(mlp()));
  });

  it("a checkpoint resumes to the bits of uninterrupted training", () => {
    const ref = mlp(), optRef = new optim.Adam(ref.parameters(), { lr: 0.01 });
    train(ref, optRef, 2);
    train(ref, optRef, 2, 7);
    const m = mlp(), opt = new optim.Adam(m.parameters(), { lr: 0.01 });
    train(m, opt, 2);
    saveCheckpoint(join(dir, "ck"), { model: m, optimizer: opt, step: 2 });
    const r = mlp(), optR = new optim.Adam(r.parameters(), { lr: 0.01 });
    loadCheckpoint(join(dir, "ck"), { model: r, optimizer: optR });
    train(r, optR, 2, 7);
    expect(values(r)).toEqual(values(ref));
  });

  it("LoRA: an optimizer over the adapters packs them alone, and merging writes the base weights in place", () => {
    const make = () => {
      const m = mlp();
      nn.applyLora(m, { targets: /^[02]$/, rank: 2 });
      return m;
    };
    const a = make(), b = make();
    const oa = new optim.Adam(nn.loraParameters(a), { lr: 0.05 });
    const ob = new optim.Adam(nn.loraParameters(unpackable(b)), { lr: 0.05 });
    const [A, B] = nn.loraParameters(a);
    expect(B.data.buffer).toBe(A.data.buffer);
    expect(a.parameters()[0].data.buffer).not.toBe(A.data.buffer); // base weights untouched
    expect(train(a, oa, 3)).toEqual(train(b, ob, 3));
    const base = (a as any)["0"].weight.data as Float32Array;
    nn.mergeLora(a);
    nn.mergeLora(b);
    expect((a as any)["0"].weight.data).toBe(base);
    expect(values(a)).toEqual(values(b));
  });
});
