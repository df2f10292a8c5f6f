import { describe, it, expect } from "vitest";
import { ArgumentError, Tensor, logSoftmax, manualSeed, mul, randn, softmax, tensor } from "../index.js";
import { assertClose, gradcheck } from "../testing/index.js";

/** Float64 softmax / logSoftmax along `axis` by walking each fibre. */
function refSoftmax(x: Tensor, axis: number, log: boolean): number[] {
  const ax = axis < 0 ? axis + x.ndim : axis;
  const n = x.shape[ax];
  const inner = x.shape.slice(ax + 1).reduce((p, c) => p * c, 1);
  const outer = x.size / (n * inner);
  const out = new Array<number>(x.size);
  for (let o = 0; o < outer; o++) {
    for (let j = 0; j < inner; j++) {
      const at = (i: number) => (o * n + i) * inner + j;
      let m = -Infinity;
      for (let i = 0; i < n; i++) m = Math.max(m, x.data[at(i)]);
      let s = 0;
      for (let i = 0; i < n; i++) s += Math.exp(x.data[at(i)] - m);
      for (let i = 0; i < n; i++) out[at(i)] = log ? x.data[at(i)] - m - Math.log(s) : Math.exp(x.data[at(i)] - m) / s;
    }
  }
  return out;
}

describe("softmax and logSoftmax", () => {
  for (const [shape, axis] of [[[4, 5], -1], [[4, 5], 0], [[2, 3, 4], 1], [[2, 3, 4], -1], [[2, 3, 4], 0], [[7], 0]] as const) {
    it(`shape [${shape}] axis ${axis}: values vs float64 and gradcheck`, () => {
      manualSeed(1);
      const x = randn([...shape], { requiresGrad: true });
      assertClose(softmax(x, axis), refSoftmax(x, axis, false), { atol: 1e-6, rtol: 1e-5 });
      assertClose(logSoftmax(x, axis), refSoftmax(x, axis, true), { atol: 1e-5, rtol: 1e-5 });
      const w = randn([...shape]); // a non-uniform upstream gradient (softmax sums to 1, so ones would give 0)
      gradcheck((t) => mul(softmax(t, axis), w), [x]);
      gradcheck((t) => mul(logSoftmax(t, axis), w), [x]);
    });
  }

  it("rows sum to 1 and exp(logSoftmax) = softmax", () => {
    manualSeed(2);
    const x = randn([6, 10], { std: 3 });
    const s = softmax(x);
    const ls = logSoftmax(x);
    for (let r = 0; r < 6; r++) {
      let sum = 0;
      for (let i = 0; i < 10; i++) sum += s.data[r * 10 + i];
      expect(Math.abs(sum - 1)).toBeLessThan(1e-6);
    }
    assertClose(Array.from(ls.data, Math.exp), s, { atol: 1e-6 });
  });

  it("is stable for huge logits (max subtracted)", () => {
    const x = tensor([[1000, 1001, 1002], [-1000, -1000, -1000]]);
    assertClose(softmax(x), [0.09003057317038046, 0.24472847105479764, 0.6652409557748219, 1 / 3, 1 / 3, 1 / 3], { atol: 1e-6 });
    assertClose(logSoftmax(x), [-2.4076059644443806, -1.4076059644443806, -0.4076059644443806, -Math.log(3), -Math.log(3), -Math.log(3)], { atol: 1e-5 });
  });

  it("masked entries (-Infinity) get probability 0", () => {
    const s = softmax(tensor([[0, -Infinity, 0]]));
    expect(Array.from(s.data)).toEqual([0.5, 0, 0.5]);
  });

  it("propagates NaN to its row only", () => {
    const s = softmax(tensor([[1, NaN], [1, 2]])).data;
    expect(Number.isNaN(s[0]) && Number.isNaN(s[1])).toBe(true);
    expect(Number.isNaN(s[2])).toBe(false);
    const ls = logSoftmax(tensor([[1, NaN], [1, 2]])).data;
    expect(Number.isNaN(ls[0])).toBe(true);
    expect(Number.isNaN(ls[2])).toBe(false);
  });

  it("rejects an axis out of range, naming the op", () => {
    expect(() => softmax(randn([2, 3]), 2)).toThrow(ArgumentError);
    expect(() => softmax(randn([2, 3]), 2)).toThrow(/^softmax: axis 2 out of range/);
    expect(() => logSoftmax(randn([2, 3]), -3)).toThrow(/^logSoftmax: axis -3 out of range/);
  });
});
