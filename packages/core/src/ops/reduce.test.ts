import { describe, it, expect } from "vitest";
import { ArgumentError, Tensor, argmax, manualSeed, max, mean, randn, sum, tensor } from "../index.js";
import { assertClose, gradcheck } from "../testing/index.js";

/** Float64 reduction over `axes` of a row-major tensor, by walking every element. */
function refReduce(x: Tensor, axes: number[], init: number, f: (acc: number, v: number) => number): { data: number[]; shape: number[] } {
  const shape = x.shape.map((d, i) => (axes.includes(i) ? 1 : d));
  const total = shape.reduce((p, c) => p * c, 1);
  const out = new Array<number>(total).fill(init);
  for (let e = 0; e < x.size; e++) {
    let r = e, o = 0, mul = 1;
    for (let d = x.ndim - 1; d >= 0; d--) {
      const idx = r % x.shape[d];
      r = Math.floor(r / x.shape[d]);
      if (!axes.includes(d)) o += idx * mul;
      mul *= shape[d];
    }
    out[o] = f(out[o], x.data[e]);
  }
  return { data: out, shape };
}

/** Distinct values, so max has no ties (its gradient has a kink at ties). */
function distinct(shape: number[]): Tensor {
  manualSeed(2);
  const t = randn(shape);
  const n = t.size;
  const perm = Array.from({ length: n }, (_, i) => i).sort((a, b) => t.data[a] - t.data[b]);
  perm.forEach((src, rank) => (t.data[src] = (rank - n / 2) * 0.25));
  return t.requiresGrad_();
}

describe("sum and mean", () => {
  const shape = [2, 3, 4];
  const axisCases: (number | number[] | undefined)[] = [undefined, 0, 1, 2, -1, [0, 2], [1, -1], [0, 1, 2]];
  for (const axis of axisCases) {
    for (const keepDims of [false, true]) {
      it(`axis ${JSON.stringify(axis)} keepDims ${keepDims}: values, shape and gradcheck`, () => {
        manualSeed(1);
        const x = randn(shape, { requiresGrad: true });
        const axes = axis === undefined ? [0, 1, 2] : (typeof axis === "number" ? [axis] : axis).map((a) => (a < 0 ? a + 3 : a));
        const ref = refReduce(x, axes, 0, (a, v) => a + v);
        const count = axes.reduce((p, a) => p * shape[a], 1);
        const expectShape = keepDims ? ref.shape : shape.filter((_, i) => !axes.includes(i));
        const s = sum(x, axis, { keepDims });
        const m = mean(x, axis, { keepDims });
        expect(s.shape).toEqual(expectShape);
        expect(m.shape).toEqual(expectShape);
        assertClose(s, ref.data, { atol: 1e-5 });
        assertClose(m, ref.data.map((v) => v / count), { atol: 1e-6 });
        gradcheck((t) => sum(t, axis, { keepDims }), [x]);
        gradcheck((t) => mean(t, axis, { keepDims }), [x]);
      });
    }
  }

  it("sum of a 0-d tensor is itself; methods match functions", () => {
    expect(sum(tensor(3)).item()).toBe(3);
    const x = tensor([[1, 2], [3, 4]]);
    expect(x.sum(0).toArray()).toEqual([4, 6]);
    expect(x.mean(1, { keepDims: true }).toArray()).toEqual([[1.5], [3.5]]);
  });

  it("propagates NaN only into the affected outputs", () => {
    const x = tensor([[1, NaN], [3, 4]]);
    const s = sum(x, 1).data, m = mean(x, 0).data;
    expect(Number.isNaN(s[0])).toBe(true);
    expect(s[1]).toBe(7);
    expect(m[0]).toBe(2);
    expect(Number.isNaN(m[1])).toBe(true);
  });

  it("rejects an axis out of range, naming the op", () => {
    const x = randn([2, 3]);
    expect(() => sum(x, 2)).toThrow(ArgumentError);
    expect(() => sum(x, 2)).toThrow("sum: axis 2 out of range for a tensor of 2 dimension(s)");
    expect(() => mean(x, -3)).toThrow(/^mean: axis -3 out of range/);
    expect(() => sum(x, 0.5)).toThrow(ArgumentError);
  });
});

describe("max and argmax", () => {
  for (const axis of [undefined, 0, 1, 2, -2]) {
    for (const keepDims of [false, true]) {
      it(`max axis ${axis} keepDims ${keepDims}: values, shape and gradcheck`, () => {
        const x = distinct([2, 3, 4]);
        const axes = axis === undefined ? [0, 1, 2] : [axis < 0 ? axis + 3 : axis];
        const ref = refReduce(x, axes, -Infinity, Math.max);
        const out = max(x, axis, { keepDims });
        expect(out.shape).toEqual(keepDims ? ref.shape : x.shape.filter((_, i) => !axes.includes(i)));
        assertClose(out, ref.data, { atol: 0, rtol: 0 });
        gradcheck((t) => max(t, axis, { keepDims }), [x], { eps: 1e-3 });
      });
    }
  }

  it("sends the gradient to the first maximum on ties (like argmax)", () => {
    const x = tensor([[1, 3, 3], [5, 2, 5]], { requiresGrad: true });
    max(x, 1).sum().backward();
    expect(Array.from(x.grad!.data)).toEqual([0, 1, 0, 1, 0, 0]);
    expect(Array.from(argmax(x, 1).data)).toEqual([1, 0]);
  });

  it("argmax over a middle axis", () => {
    const x = tensor([[[1, 9], [5, 2]], [[0, 0], [7, -1]]]); // (2, 2, 2)
    expect(argmax(x, 1).toArray()).toEqual([[1, 0], [1, 0]]);
    expect(argmax(x).toArray()).toEqual([[1, 0], [0, 0]]); // last axis by default; ties pick the first
  });

  it("propagates NaN", () => {
    const x = tensor([[1, NaN, 3], [4, 5, 6]]);
    const m = max(x, 1).data;
    expect(Number.isNaN(m[0])).toBe(true);
    expect(m[1]).toBe(6);
    expect(Number.isNaN(max(x).item())).toBe(true);
  });

  it("rejects an axis out of range, naming the op", () => {
    expect(() => max(randn([2, 3]), 5)).toThrow(/^max: axis 5 out of range/);
    expect(() => argmax(randn([2, 3]), -3)).toThrow(/^argmax: axis -3 out of range/);
  });
});

describe("reductions of a 0-d tensor", () => {
  it("axis 0 or -1 reduce nothing (PyTorch), with gradient 1; other axes are rejected", () => {
    for (const op of [sum, mean, max] as const) {
      const x = tensor(3, { requiresGrad: true });
      const y = op(x, 0);
      expect(y.shape).toEqual([]);
      expect(y.item()).toBe(3);
      expect(op(x, -1).item()).toBe(3);
      y.backward();
      expect(x.grad!.item()).toBe(1);
      expect(() => op(x, 1)).toThrow(ArgumentError);
    }
  });
});
