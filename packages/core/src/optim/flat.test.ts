import { describe, expect, it } from "vitest";
import { F, manualSeed, nn, optim, rand } from "../index.js";

function model() {
  manualSeed(3);
  return new nn.Sequential(new nn.Linear(6, 5), new nn.ReLU(), new nn.Linear(5, 3));
}

function train(m: nn.Module, opt: optim.Optimizer<any>, steps: number): void {
  manualSeed(4);
  const x = rand([8, 6]);
  const y = new Int32Array([0, 1, 2, 0, 1, 2, 0, 1]);
  for (let s = 0; s < steps; s++) {
    opt.zeroGrad();
    F.crossEntropy(m.forward(x), y).backward();
    opt.step();
  }
}

const params = (m: nn.Module) => m.parameters().flatMap((p) => Array.from(p.data));

describe("optimizers over a flat parameter buffer", () => {
  const makers: [string, (ps: nn.Parameter[]) => optim.Optimizer<any>][] = [
    ["Adam", (ps) => new optim.Adam(ps, { lr: 0.01 })],
    ["AdamW", (ps) => new optim.AdamW(ps, { lr: 0.01, weightDecay: 0.1 })],
    ["SGD momentum", (ps) => new optim.SGD(ps, { lr: 0.1, momentum: 0.9, weightDecay: 0.01 })],
  ];
  for (const [name, make] of makers) {
    it(`${name}: one flat update gives bit-identical parameters and state to per-parameter updates`, () => {
      const a = model(), b = model();
      nn.flattenParameters(b);
      const oa = make(a.parameters()), ob = make(b.parameters());
      train(a, oa, 5);
      train(b, ob, 5);
      expect(params(b)).toEqual(params(a));
      expect(ob.stateDict()).toEqual(oa.stateDict());
    });
  }

  it("parameter views keep pointing into the flat buffer and state survives a save/load round trip", () => {
    const m = model();
    const flat = nn.flattenParameters(m);
    const opt = new optim.Adam(m.parameters(), { lr: 0.01 });
    train(m, opt, 2);
    const saved = opt.stateDict();
    const ref = model();
    nn.flattenParameters(ref);
    const optRef = new optim.Adam(ref.parameters(), { lr: 0.01 });
    train(ref, optRef, 4);
    // Resume m from its saved state in a fresh optimizer: same trajectory as 4 uninterrupted steps.
    const opt2 = new optim.Adam(m.parameters(), { lr: 0.01 });
    opt2.loadStateDict(saved);
    train(m, opt2, 2);
    expect(params(m)).toEqual(params(ref));
    expect(m.parameters()[0].data.buffer).toBe(flat.data.buffer);
  });

  it("zeroGrad clears the whole flat gradient buffer", () => {
    const m = model();
    const flat = nn.flattenParameters(m);
    const opt = new optim.SGD(m.parameters(), { lr: 0.1 });
    train(m, opt, 1);
    F.crossEntropy(m.forward(rand([2, 6])), [0, 1]).backward();
    expect(flat.grad.some((v) => v !== 0)).toBe(true);
    opt.zeroGrad();
    expect(flat.grad.every((v) => v === 0)).toBe(true);
  });
});
