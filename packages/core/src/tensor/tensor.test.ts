import { describe, it, expect } from "vitest";
import {
  ArgumentError, Generator, ShapeError, Tensor, arange, full, getRngState, manualSeed, mul, ones, onesLike, rand, randint,
  randn, setRngState, tensor, zeros, zerosLike,
} from "../index.js";

describe("creation", () => {
  it("tensor() from a number, nested arrays, a Float32Array (shared, no copy) and a shape", () => {
    const s = tensor(3);
    expect(s.shape).toEqual([]);
    expect(s.item()).toBe(3);
    const m = tensor([[1, 2, 3], [4, 5, 6]]);
    expect(m.shape).toEqual([2, 3]);
    expect(Array.from(m.data)).toEqual([1, 2, 3, 4, 5, 6]);
    const f = new Float32Array([1, 2, 3, 4]);
    const t = tensor(f, { shape: [2, 2] });
    expect(t.shape).toEqual([2, 2]);
    expect(t.data).toBe(f);
    expect(tensor([1, 2], { requiresGrad: true }).requiresGrad).toBe(true);
    expect(tensor([[[1], [2]]]).shape).toEqual([1, 2, 1]);
    expect(tensor([]).shape).toEqual([0]);
  });

  it("tensor() rejects ragged arrays and a shape that does not fit", () => {
    expect(() => tensor([[1, 2], [3]])).toThrow(ArgumentError);
    expect(() => tensor([1, 2, 3], { shape: [2, 2] })).toThrow("tensor: 3 values do not fit shape [2,2]");
    expect(() => zeros([2, -1])).toThrow(ArgumentError);
    expect(() => zeros([2, 1.5])).toThrow("full: invalid shape [2,1.5]: dimensions must be non-negative integers");
    expect(() => new Tensor(new Float32Array(3), [2, 2])).toThrow(ShapeError);
  });

  it("zeros, ones, full, *Like, arange", () => {
    expect(Array.from(zeros([2, 2]).data)).toEqual([0, 0, 0, 0]);
    expect(Array.from(ones([3]).data)).toEqual([1, 1, 1]);
    expect(full([2], 7).toArray()).toEqual([7, 7]);
    const base = tensor([[1, 2]]);
    expect(zerosLike(base).shape).toEqual([1, 2]);
    expect(onesLike(base).toArray()).toEqual([[1, 1]]);
    expect(arange(4).toArray()).toEqual([0, 1, 2, 3]);
    expect(arange(1, 2, 0.25).toArray()).toEqual([1, 1.25, 1.5, 1.75]);
    expect(arange(5, 0, -2).toArray()).toEqual([5, 3, 1]);
    expect(() => arange(0, 1, 0)).toThrow(ArgumentError);
    expect(zeros([2], { shared: true }).isShared).toBe(true);
    expect(tensor([1, 2], { shared: true }).isShared).toBe(true);
    expect(zeros([2]).isShared).toBe(false);
  });

  it("rand, randn and randint have the right range and rough moments", () => {
    manualSeed(1);
    const u = rand([10000], { low: -2, high: 3 });
    expect(Math.min(...u.data)).toBeGreaterThanOrEqual(-2);
    expect(Math.max(...u.data)).toBeLessThan(3);
    const n = randn([10000], { mean: 1, std: 2 });
    const m = n.data.reduce((a, b) => a + b, 0) / n.size;
    const sd = Math.sqrt(n.data.reduce((a, b) => a + (b - m) ** 2, 0) / n.size);
    expect(Math.abs(m - 1)).toBeLessThan(0.1);
    expect(Math.abs(sd - 2)).toBeLessThan(0.1);
    const r = randint(3, 7, [1000]);
    for (const v of r.data) expect(Number.isInteger(v) && v >= 3 && v < 7).toBe(true);
    expect(new Set(r.data).size).toBe(4);
  });
});

describe("seeded randomness", () => {
  it("manualSeed makes rand/randn bit-identical; a different seed differs", () => {
    manualSeed(42);
    const a = [rand([50]), randn([50])];
    manualSeed(42);
    const b = [rand([50]), randn([50])];
    expect(Array.from(b[0].data)).toEqual(Array.from(a[0].data));
    expect(Array.from(b[1].data)).toEqual(Array.from(a[1].data));
    manualSeed(43);
    expect(Array.from(rand([50]).data)).not.toEqual(Array.from(a[0].data));
  });

  it("RNG state can be saved and restored mid-stream", () => {
    manualSeed(7);
    randn([13]);
    const state = getRngState();
    expect(state).toHaveLength(4);
    const next = Array.from(randn([20]).data);
    randn([5]);
    setRngState(state);
    expect(Array.from(randn([20]).data)).toEqual(next);
    expect(() => setRngState([1, 2])).toThrow(/expected 4 words/);
  });

  it("a Generator is independent of the global one and reproducible; permutation is a permutation", () => {
    const g1 = new Generator(5), g2 = new Generator(5);
    const xs = Array.from({ length: 10 }, () => g1.random());
    manualSeed(0);
    rand([10]); // global draws do not disturb g2
    expect(Array.from({ length: 10 }, () => g2.random())).toEqual(xs);
    for (const x of xs) expect(x >= 0 && x < 1).toBe(true);
    const p = new Generator(3).permutation(100);
    expect(Array.from(p).sort((a, b) => a - b)).toEqual(Array.from({ length: 100 }, (_, i) => i));
  });
});

describe("Tensor basics", () => {
  it("item, toArray, ndim, size", () => {
    const t = tensor([[1, 2], [3, 4], [5, 6]]);
    expect(t.ndim).toBe(2);
    expect(t.size).toBe(6);
    expect(t.toArray()).toEqual([[1, 2], [3, 4], [5, 6]]);
    expect(tensor(2.5).toArray()).toBe(2.5);
    expect(() => t.item()).toThrow("item: tensor of shape [3,2] has 6 elements, expected 1");
    expect(tensor([[9]]).item()).toBe(9);
  });

  it("detach shares storage but leaves the graph; clone copies", () => {
    const x = tensor([1, 2], { requiresGrad: true });
    const y = mul(x, 2);
    const d = y.detach();
    expect(d.requiresGrad).toBe(false);
    expect(d.gradFn).toBeNull();
    expect(d.data).toBe(y.data);
    const c = y.clone();
    c.data[0] = 100;
    expect(y.data[0]).toBe(2);
    expect(() => y.requiresGrad_()).toThrow(/only leaf tensors/);
  });
});

describe("Tensor.fromShared", () => {
  it("views a region of a SharedArrayBuffer: writes through either side are seen by the other", () => {
    const buf = new SharedArrayBuffer(10 * 4);
    const whole = new Float32Array(buf);
    const a = Tensor.fromShared(buf, 0, [2, 2]);
    const b = Tensor.fromShared(buf, 16, [3], true);
    expect(a.isShared && b.isShared).toBe(true);
    expect(b.requiresGrad).toBe(true);
    whole[4] = 7;
    expect(b.data[0]).toBe(7);
    a.data[3] = 5;
    expect(whole[3]).toBe(5);
    expect(b.data.buffer).toBe(buf);
    expect(b.data.byteOffset).toBe(16);
    // A gradient flows to a shared leaf like any other.
    mul(b, 3).sum().backward();
    expect(Array.from(b.grad!.data)).toEqual([3, 3, 3]);
  });

  it("rejects offsets that are misaligned, negative or run past the end", () => {
    const buf = new SharedArrayBuffer(16);
    expect(() => Tensor.fromShared(buf, 2, [2])).toThrow(ArgumentError);
    expect(() => Tensor.fromShared(buf, -4, [1])).toThrow(ArgumentError);
    expect(() => Tensor.fromShared(buf, 8, [3])).toThrow("Tensor.fromShared: 3 floats at byte offset 8 do not fit a buffer of 16 bytes (offset must be a multiple of 4)");
    expect(() => Tensor.fromShared(buf, 0, [-1])).toThrow(/^Tensor.fromShared: invalid shape/);
    expect(Tensor.fromShared(buf, 8, [2]).size).toBe(2);
  });
});
