import { afterEach, describe, expect, it } from "vitest";
import { F, Tensor, manualSeed, nn } from "../index.js";
import { markGradsStale, setLeafGradHook } from "../internal.js";

afterEach(() => setLeafGradHook(null));

describe("setLeafGradHook", () => {
  it("calls each parameter once, output layer first, with its gradient already final", () => {
    manualSeed(1);
    const model = new nn.Sequential(new nn.Linear(6, 5), new nn.ReLU(), new nn.Linear(5, 3));
    const names = new Map(model.namedParameters().map(([n, p]) => [p as Tensor, n]));
    const x = new Tensor(Float32Array.from({ length: 24 }, (_, i) => Math.sin(i)), [4, 6]);
    const y = new Int32Array([0, 2, 1, 2]);
    const seen: [string, Float32Array][] = [];
    setLeafGradHook((leaf) => seen.push([names.get(leaf)!, leaf.grad!.data.slice()]));
    F.crossEntropy(model.forward(x), y).backward();
    const order = seen.map(([n]) => n);
    expect([...order].sort()).toEqual(["0.bias", "0.weight", "2.bias", "2.weight"]);
    expect(Math.max(order.indexOf("2.bias"), order.indexOf("2.weight"))).toBeLessThan(Math.min(order.indexOf("0.bias"), order.indexOf("0.weight")));
    const params = Object.fromEntries(model.namedParameters());
    for (const [n, g] of seen) expect(g).toEqual(params[n].grad!.data);
  });

  it("reaches a parameter used twice only after both uses, and one no op wrote (stale) too", () => {
    const w = new nn.Parameter(new Tensor(new Float32Array([1, 2]), [2]));
    const unused = new nn.Parameter(new Tensor(new Float32Array([5]), [1]));
    w.grad = new Tensor(new Float32Array([9, 9]), [2]);
    unused.grad = new Tensor(new Float32Array([7]), [1]);
    markGradsStale([w, unused]);
    const calls: [Tensor, number[]][] = [];
    setLeafGradHook((leaf) => calls.push([leaf, Array.from(leaf.grad!.data)]));
    // unused · 0 keeps it in the graph without a gradient reaching it through mul's null.
    w.mul(w).sum().add(w.sum()).add(unused.mul(0).sum()).backward();
    const forW = calls.filter(([t]) => t === w);
    expect(forW).toHaveLength(1);
    expect(forW[0][1]).toEqual([3, 5]); // 2w + 1, both uses in
    expect(calls.some(([t]) => t === unused)).toBe(true);
  });
});
