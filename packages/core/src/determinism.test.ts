import { describe, it, expect } from "vitest";
import { F, manualSeed, nn, optim, randint, randn } from "./index.js";

/** A small MLP with dropout, trained a few Adam steps on shuffled mini-batches: everything random comes from the seed. */
function trainRun(seed: number): Float32Array[] {
  manualSeed(seed);
  const model = new nn.Sequential(new nn.Linear(4, 16), new nn.GELU(), new nn.Dropout(0.2), new nn.Linear(16, 3));
  const x = randn([64, 4]);
  const y = randint(0, 3, [64]);
  const opt = new optim.AdamW(model.parameters(), { lr: 1e-2 });
  for (let step = 0; step < 5; step++) {
    const rows = Array.from(randint(0, 64, [16]).data); // a random mini-batch
    const xs = F.embedding(rows, x); // gather its rows: (16, 4)
    const ys = rows.map((r) => y.data[r]);
    opt.zeroGrad();
    F.crossEntropy(model.forward(xs), ys).backward();
    opt.step();
  }
  return model.parameters().map((p) => p.data.slice());
}

describe("reproducibility", () => {
  it("two runs with the same seed give bit-identical parameters; another seed does not", () => {
    const a = trainRun(123), b = trainRun(123), c = trainRun(124);
    expect(a.length).toBe(4);
    a.forEach((pa, i) => expect(Array.from(b[i])).toEqual(Array.from(pa)));
    expect(Array.from(c[0])).not.toEqual(Array.from(a[0]));
  });
});
