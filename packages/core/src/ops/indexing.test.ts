import { describe, it, expect } from "vitest";
import { ArgumentError, ShapeError, dropout, embedding, manualSeed, maskedFill, mul, ones, randn, softmax, tensor, where } from "../index.js";
import { assertClose, gradcheck } from "../testing/index.js";

describe("embedding", () => {
  it("gathers rows for indices of any shape and gradchecks (repeated indices accumulate)", () => {
    manualSeed(1);
    const w = randn([5, 3], { requiresGrad: true });
    const idx = tensor([[0, 4, 2], [4, 4, 1]]);
    const out = embedding(idx, w);
    expect(out.shape).toEqual([2, 3, 3]);
    const flat = [0, 4, 2, 4, 4, 1];
    flat.forEach((row, i) => expect(Array.from(out.data.subarray(i * 3, i * 3 + 3))).toEqual(Array.from(w.data.subarray(row * 3, row * 3 + 3))));
    const g = randn([2, 3, 3]);
    gradcheck((t) => mul(embedding(idx, t), g), [w]);
    w.grad = null;
    embedding(idx, w).sum().backward();
    // Row 4 was used three times, row 3 never.
    expect(Array.from(w.grad!.data.subarray(12, 15))).toEqual([3, 3, 3]);
    expect(Array.from(w.grad!.data.subarray(9, 12))).toEqual([0, 0, 0]);
  });

  it("accepts Int32Array and number[] indices", () => {
    const w = tensor([[1, 2], [3, 4]]);
    expect(embedding(new Int32Array([1, 0]), w).toArray()).toEqual([[3, 4], [1, 2]]);
    expect(embedding([1], w).toArray()).toEqual([[3, 4]]);
  });

  it("propagates NaN in the table", () => {
    expect(Number.isNaN(embedding([0], tensor([[NaN, 1]])).data[0])).toBe(true);
  });

  it("rejects bad indices and a non-2-D weight, naming the op", () => {
    const w = randn([4, 2]);
    expect(() => embedding([4], w)).toThrow(ArgumentError);
    expect(() => embedding([4], w)).toThrow("embedding: index 4 at position 0 is out of range [0, 4)");
    expect(() => embedding([0, 1.5], w)).toThrow("embedding: index 1.5 at position 1 is not an integer");
    expect(() => embedding(new Int32Array([-1]), w)).toThrow(/^embedding: index -1/);
    expect(() => embedding([0], randn([4]))).toThrow(ShapeError);
    expect(() => embedding([0], randn([4]))).toThrow("embedding: weight must be 2-D (num, dim), got [4]");
  });
});

describe("where and maskedFill", () => {
  it("selects elementwise with broadcasting and gradchecks both branches", () => {
    manualSeed(2);
    const cond = tensor([[1, 0, 1]]); // (1, 3) broadcast over rows
    const a = randn([2, 3], { requiresGrad: true }), b = randn([3], { requiresGrad: true });
    const out = where(cond, a, b);
    expect(out.shape).toEqual([2, 3]);
    for (let r = 0; r < 2; r++) for (let c = 0; c < 3; c++) {
      expect(out.data[r * 3 + c]).toBe(cond.data[c] ? a.data[r * 3 + c] : b.data[c]);
    }
    gradcheck((x, y) => where(cond, x, y), [a, b]);
  });

  it("maskedFill puts -Infinity before a softmax (causal mask) and gradchecks", () => {
    manualSeed(3);
    const x = randn([3, 3], { requiresGrad: true });
    const mask = tensor([[0, 1, 1], [0, 0, 1], [0, 0, 0]]);
    const p = softmax(maskedFill(x, mask, -Infinity));
    expect(p.data[1]).toBe(0);
    expect(p.data[0]).toBeCloseTo(1, 6);
    const w = randn([3, 3]);
    gradcheck((t) => mul(softmax(maskedFill(t, mask, -Infinity)), w), [x]);
    gradcheck((t) => maskedFill(t, mask, 2.5), [x]);
    expect(x.maskedFill(mask, 7).data[2]).toBe(7);
  });

  it("propagates NaN from the chosen branch only", () => {
    const out = where(tensor([1, 0]), tensor([NaN, NaN]), tensor([5, 6])).data;
    expect(Number.isNaN(out[0])).toBe(true);
    expect(out[1]).toBe(6);
  });

  it("names the op and shapes when they cannot be broadcast", () => {
    expect(() => where(tensor([1, 0, 1]), randn([2]), 0)).toThrow(ShapeError);
    expect(() => where(tensor([1, 0, 1]), randn([2]), 0)).toThrow(/^where: shapes \[3\] and \[2\] cannot be broadcast/);
    expect(() => maskedFill(randn([2, 3]), tensor([1, 0]), 0)).toThrow(/^where: /);
  });
});

describe("dropout", () => {
  it("zeroes a fraction p, scales the rest by 1/(1-p), and the same seed gives the same mask", () => {
    manualSeed(4);
    const x = ones([100, 100]);
    const y = dropout(x, 0.3);
    let zeros = 0;
    for (const v of y.data) {
      if (v === 0) zeros++;
      else expect(v).toBeCloseTo(1 / 0.7, 6);
    }
    expect(zeros / 10000).toBeGreaterThan(0.27);
    expect(zeros / 10000).toBeLessThan(0.33);
    manualSeed(4);
    expect(Array.from(dropout(x, 0.3).data)).toEqual(Array.from(y.data));
  });

  it("gradchecks with a fixed seed (mask reused through the gradient)", () => {
    manualSeed(5);
    const x = randn([4, 5], { requiresGrad: true });
    gradcheck((t) => {
      manualSeed(99);
      return dropout(t, 0.4);
    }, [x]);
    x.grad = null;
    manualSeed(99);
    const y = dropout(x, 0.4);
    y.sum().backward();
    for (let i = 0; i < x.size; i++) expect(x.grad!.data[i]).toBeCloseTo(y.data[i] === 0 ? 0 : 1 / 0.6, 5);
  });

  it("is the identity when not training or p = 0; p = 1 zeroes everything", () => {
    const x = randn([3]);
    expect(dropout(x, 0.5, false)).toBe(x);
    expect(dropout(x, 0)).toBe(x);
    expect(Array.from(dropout(x, 1).data)).toEqual([0, 0, 0]);
  });

  it("propagates NaN where kept", () => {
    manualSeed(6);
    const y = dropout(tensor([NaN, NaN, NaN, NaN, NaN, NaN, NaN, NaN]), 0.5);
    expect(Array.from(y.data).some((v) => Number.isNaN(v))).toBe(true);
  });

  it("rejects p outside [0, 1], naming the op", () => {
    expect(() => dropout(randn([2]), 1.5)).toThrow(ArgumentError);
    expect(() => dropout(randn([2]), NaN)).toThrow("dropout: probability must be in [0, 1], got NaN");
  });
});

describe("assertClose", () => {
  it("treats NaN as matching NaN and reports the element that differs", () => {
    assertClose([NaN, 1], [NaN, 1]);
    expect(() => assertClose([1, 2], [1, 3])).toThrow(/element 1/);
  });
});
