/** Per-group learning rates in DataParallel (paramGroups) against core's optimizers with parameter groups. */
import { describe, expect, test } from "vitest";
import { F, Tensor, manualSeed, nn, optim } from "@chainrule/core";
import { DataParallel, ParallelError } from "@chainrule/parallel";
import { groupLrRanges } from "../packages/parallel/src/data-parallel.ts";
import { mlp } from "./fixtures/parallel-models.ts";
import { MODELS, batches, makeData, relDiff } from "./fixtures/parallel-data.ts";

const D = 6, H = 12, C = 4, N = 70, BS = 24, SEED = 3;
const SIZES = [D, H, H, C];
// The MLP's names are "0.weight", "0.bias", "2.weight", ...: the first layer at 10x, the last bias at 1/10 of the base lr.
const GROUPS = [{ match: "^0\\.", lr: 0.1 }, { match: "^4\\.bias$", lr: 0.001 }];

/** Core's loop: the same groups as optimizer parameter groups, a step schedule applied to every group by its ratio. */
function reference(type: "sgd" | "adam", baseLr: number, idx: Int32Array[], lrAt: (s: number) => number): Float32Array {
  manualSeed(SEED);
  const model = mlp({ sizes: SIZES });
  const res = GROUPS.map((g) => new RegExp(g.match));
  const groups: nn.Parameter[][] = [[], [], []];
  for (const [name, p] of model.namedParameters()) {
    const i = res.findIndex((re) => re.test(name));
    groups[i < 0 ? 2 : i].push(p);
  }
  const lrs = [...GROUPS.map((g) => g.lr), baseLr];
  const specs = groups.map((params, i) => ({ params, lr: lrs[i] }));
  const o = type === "sgd" ? new optim.SGD(specs, { lr: baseLr, momentum: 0.9 }) : new optim.Adam(specs, { lr: baseLr });
  const ds = makeData(N, D, C);
  idx.forEach((b, s) => {
    const x = new Float32Array(b.length * D), y = new Int32Array(b.length);
    b.forEach((r, i) => { x.set(ds.inputs.subarray(r * D, (r + 1) * D), i * D); y[i] = ds.targets[r]; });
    o.zeroGrad();
    F.crossEntropy(model.forward(new Tensor(x, [b.length, D])), y).backward();
    o.paramGroups.forEach((g, i) => (g.hyper.lr = lrs[i] * (lrAt(s + 1) / baseLr)));
    o.step();
  });
  return nn.flattenParameters(model).data;
}

describe.each([["sgd", 0.05], ["adam", 0.01]] as const)("paramGroups with %s", (type, baseLr) => {
  const idx = batches(N, BS, 10); // the last batch of each epoch is uneven (70 = 2·24 + 22)
  const lrAt = (s: number) => (s <= 5 ? baseLr : baseLr / 2);
  const ref = reference(type, baseLr, idx, lrAt);
  test.each([1, 2, 3])("%i workers match core's parameter groups after 10 steps (a schedule halving every group's lr)", async (w) => {
    const ds = makeData(N, D, C);
    const optimizer = type === "sgd" ? { type, lr: baseLr, momentum: 0.9 } : { type, lr: baseLr };
    const dp = new DataParallel({ model: { module: MODELS, export: "mlp", options: { sizes: SIZES } }, loss: "crossEntropy", optimizer, workers: w, seed: SEED, paramGroups: GROUPS });
    const plain = new DataParallel({ model: { module: MODELS, export: "mlp", options: { sizes: SIZES } }, loss: "crossEntropy", optimizer, workers: w, seed: SEED });
    try {
      await dp.init();
      await plain.init();
      for (let s = 0; s < idx.length; s++) {
        await dp.step({ dataset: ds, indices: idx[s] }, { lr: lrAt(s + 1) });
        await plain.step({ dataset: ds, indices: idx[s] }, { lr: lrAt(s + 1) });
      }
      expect(relDiff(dp.params, ref)).toBeLessThan(w === 1 ? 1e-6 : 1e-5);
      expect(relDiff(plain.params, ref)).toBeGreaterThan(1e-3); // the groups made a difference
    } finally {
      await dp.close();
      await plain.close();
    }
  });
});

describe("groupLrRanges", () => {
  const layout = [{ offset: 0, size: 4 }, { offset: 4, size: 2 }, { offset: 6, size: 3 }, { offset: 9, size: 0 }, { offset: 9, size: 5 }];
  const names = ["a.weight", "a.bias", "b.weight", "c.weight", "c.bias"];
  test("first match wins, neighbours with one scale merge, scale-1 parameters are left out", () => {
    expect(groupLrRanges([{ match: "^a\\.", lr: 0.2 }, { match: "bias", lr: 0.05 }], names, layout, 0.1)).toEqual([0, 6, 2, 9, 14, 0.5]);
    expect(groupLrRanges([{ match: /^b/, lr: 0.1 }], names, layout, 0.1)).toEqual([]);
    expect(groupLrRanges([], names, layout, 0.1)).toEqual([]);
  });
  test("bad groups are errors naming the group", () => {
    expect(() => groupLrRanges([{ match: "(", lr: 0.1 }], names, layout, 0.1)).toThrow(/paramGroups\[0\]\.match is not a regular expression/);
    expect(() => groupLrRanges([{ match: "a", lr: 0 }], names, layout, 0.1)).toThrow(ParallelError);
    expect(() => groupLrRanges([{ match: "a", lr: 0.1 }], names, layout, 0)).toThrow(/optimizer\.lr > 0/);
  });
});
