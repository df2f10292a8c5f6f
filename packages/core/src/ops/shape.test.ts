import { describe, it, expect } from "vitest";
import {
  ArgumentError, ShapeError, Tensor, arange, concat, flatten, manualSeed, mul, permute, randn, reshape, slice, split,
  squeeze, stack, tensor, transpose, unsqueeze,
} from "../index.js";
import { assertClose, gradcheck } from "../testing/index.js";

/** Element of a row-major tensor at a multi-index. */
function at(x: Tensor, idx: number[]): number {
  let o = 0;
  for (let d = 0; d < x.ndim; d++) o = o * x.shape[d] + idx[d];
  return x.data[o];
}

function* indices(shape: number[]): Generator<number[]> {
  const n = shape.reduce((p, c) => p * c, 1);
  for (let e = 0; e < n; e++) {
    const idx: number[] = [];
    let r = e;
    for (let d = shape.length - 1; d >= 0; d--) { idx[d] = r % shape[d]; r = Math.floor(r / shape[d]); }
    yield idx;
  }
}

describe("reshape / view / flatten / unsqueeze / squeeze", () => {
  it("keep the data and order, infer -1, and gradcheck", () => {
    manualSeed(1);
    const x = randn([2, 3, 4], { requiresGrad: true });
    const y = reshape(x, [4, -1]);
    expect(y.shape).toEqual([4, 6]);
    expect(Array.from(y.data)).toEqual(Array.from(x.data));
    expect(flatten(x).shape).toEqual([24]);
    expect(flatten(x, 1).shape).toEqual([2, 12]);
    expect(unsqueeze(x, -1).shape).toEqual([2, 3, 4, 1]);
    expect(unsqueeze(x, 0).shape).toEqual([1, 2, 3, 4]);
    expect(squeeze(reshape(x, [1, 2, 1, 12])).shape).toEqual([2, 12]);
    expect(squeeze(reshape(x, [1, 24]), 0).shape).toEqual([24]);
    expect(x.view([24]).shape).toEqual([24]);
    // Through a non-trivial consumer so the gradient is not all ones.
    const w = randn([6, 4]);
    gradcheck((t) => mul(reshape(t, [6, 4]), w), [x]);
    gradcheck((t) => mul(flatten(unsqueeze(t, 1), 2), reshape(w, [2, 1, 12])), [x]);
  });

  it("propagates NaN (same data)", () => {
    expect(Number.isNaN(reshape(tensor([1, NaN]), [2, 1]).data[1])).toBe(true);
  });

  it("errors name the op and both shapes", () => {
    const x = randn([2, 3]);
    expect(() => reshape(x, [4, 2])).toThrow(ShapeError);
    expect(() => reshape(x, [4, 2])).toThrow("reshape: cannot reshape [2,3] (6 elements) into [4,2]");
    expect(() => reshape(x, [4, -1])).toThrow("reshape: cannot reshape [2,3] into [4,-1]");
    expect(() => unsqueeze(x, 4)).toThrow(/^unsqueeze: axis 4 out of range/);
  });
});

describe("permute / transpose", () => {
  for (const perm of [[1, 0, 2], [2, 0, 1], [0, 2, 1], [2, 1, 0], [0, 1, 2]]) {
    it(`permute [${perm}] moves every element and gradchecks`, () => {
      manualSeed(2);
      const x = randn([2, 3, 4], { requiresGrad: true });
      const y = permute(x, perm);
      expect(y.shape).toEqual(perm.map((p) => x.shape[p]));
      for (const idx of indices(y.shape)) {
        const src: number[] = [];
        perm.forEach((p, i) => (src[p] = idx[i]));
        expect(at(y, idx)).toBe(at(x, src));
      }
      const w = randn(y.shape);
      gradcheck((t) => mul(permute(t, perm), w), [x]);
    });
  }

  it("4-D permute and transpose of the last two axes", () => {
    manualSeed(3);
    const x = randn([2, 3, 2, 4], { requiresGrad: true });
    const y = transpose(x);
    expect(y.shape).toEqual([2, 3, 4, 2]);
    for (const idx of indices(y.shape)) expect(at(y, idx)).toBe(at(x, [idx[0], idx[1], idx[3], idx[2]]));
    expect(transpose(x, 0, 2).shape).toEqual([2, 3, 2, 4]);
    const w = randn([4, 3, 2, 2]);
    gradcheck((t) => mul(permute(t, [3, 1, 0, 2]), w), [x]);
  });

  it("propagates NaN", () => {
    const y = transpose(tensor([[1, NaN], [3, 4]]));
    expect(Number.isNaN(y.data[2])).toBe(true);
  });

  it("errors name the op", () => {
    const x = randn([2, 3]);
    expect(() => permute(x, [0])).toThrow("permute: 1 axes given for a tensor of shape [2,3]");
    expect(() => permute(x, [0, 0])).toThrow(ArgumentError);
    expect(() => permute(x, [0, 2])).toThrow(/^permute: axis 2 out of range/);
    expect(() => transpose(x, 0, 3)).toThrow(/^transpose: axis 3 out of range/);
  });
});

describe("slice / concat / stack / split", () => {
  it("slice picks the right elements (negative indices, middle axis) and gradchecks", () => {
    manualSeed(4);
    const x = randn([3, 5, 2], { requiresGrad: true });
    const y = slice(x, 1, 1, -1); // (3, 3, 2)
    expect(y.shape).toEqual([3, 3, 2]);
    for (const idx of indices(y.shape)) expect(at(y, idx)).toBe(at(x, [idx[0], idx[1] + 1, idx[2]]));
    expect(slice(x, 0, -1).shape).toEqual([1, 5, 2]);
    expect(slice(x, 2, 0, 100).shape).toEqual([3, 5, 2]); // clamped like Python
    expect(slice(x, 1, 4, 2).shape).toEqual([3, 0, 2]); // empty
    const w = randn([3, 3, 2]);
    gradcheck((t) => mul(slice(t, 1, 1, -1), w), [x]);
    gradcheck((t) => slice(t, 0, 2), [x]);
  });

  it("concat along each axis matches element placement and gradchecks", () => {
    manualSeed(5);
    for (const axis of [0, 1, 2, -1]) {
      const shapes = [[2, 3, 4], [2, 3, 4], [2, 3, 4]].map((s, i) => s.map((d, j) => (j === (axis + 3) % 3 ? d + i : d)));
      const xs = shapes.map((s) => randn(s, { requiresGrad: true }));
      const y = concat(xs, axis);
      const ax = (axis + 3) % 3;
      expect(y.shape[ax]).toBe(shapes.reduce((p, s) => p + s[ax], 0));
      for (const idx of indices(y.shape)) {
        let k = idx[ax], t = 0;
        while (k >= xs[t].shape[ax]) { k -= xs[t].shape[ax]; t++; }
        const src = idx.slice();
        src[ax] = k;
        expect(at(y, idx)).toBe(at(xs[t], src));
      }
      const w = randn(y.shape);
      gradcheck((...ts) => mul(concat(ts, axis), w), xs);
    }
  });

  it("concat skips gradients for inputs that need none", () => {
    const a = tensor([1, 2], { requiresGrad: true }), b = tensor([3]);
    concat([a, b]).sum().backward();
    expect(Array.from(a.grad!.data)).toEqual([1, 1]);
    expect(b.grad).toBeNull();
  });

  it("stack along a new axis matches element placement and gradchecks", () => {
    manualSeed(6);
    for (const axis of [0, 1, 2, -1]) {
      const xs = [0, 1, 2].map(() => randn([2, 3], { requiresGrad: true }));
      const y = stack(xs, axis);
      const ax = (axis + 3) % 3;
      const expected = [2, 3];
      expected.splice(ax, 0, 3);
      expect(y.shape).toEqual(expected);
      for (const idx of indices(y.shape)) {
        const src = idx.slice();
        const [t] = src.splice(ax, 1);
        expect(at(y, idx)).toBe(at(xs[t], src));
      }
      const w = randn(y.shape);
      gradcheck((...ts) => mul(stack(ts, axis), w), xs);
    }
  });

  it("split by size and by list, and gradcheck through the pieces", () => {
    const x = arange(10).reshape([5, 2]);
    const parts = split(x, 2);
    expect(parts.map((p) => p.shape)).toEqual([[2, 2], [2, 2], [1, 2]]);
    expect(parts[2].toArray()).toEqual([[8, 9]]);
    const cols = split(x, [1, 1], 1);
    expect(cols[1].toArray()).toEqual([[1], [3], [5], [7], [9]]);
    manualSeed(7);
    const y = randn([4, 3], { requiresGrad: true });
    gradcheck((t) => {
      const [a, b] = split(t, [1, 3]);
      return mul(a, 3).sum().add(mul(b, b).sum());
    }, [y]);
  });

  it("propagate NaN", () => {
    expect(Number.isNaN(slice(tensor([NaN, 1]), 0, 0, 1).item())).toBe(true);
    expect(Number.isNaN(concat([tensor([1]), tensor([NaN])]).data[1])).toBe(true);
    expect(Number.isNaN(stack([tensor([1]), tensor([NaN])]).data[1])).toBe(true);
  });

  it("errors name the op and the shapes", () => {
    expect(() => concat([randn([2, 3]), randn([3, 3])], 1)).toThrow("concat: shapes [2,3], [3,3] differ outside axis 1");
    expect(() => concat([])).toThrow(ArgumentError);
    expect(() => stack([randn([2, 3]), randn([3, 2])])).toThrow("stack: shapes [2,3], [3,2] differ");
    expect(() => split(randn([5, 2]), [2, 2])).toThrow("split: sizes [2,2] do not add up to dimension 0 of [5,2]");
    expect(() => slice(randn([2, 3]), 2, 0, 1)).toThrow(/^slice: axis 2 out of range/);
    expect(() => slice(randn([2, 3]), 0, 0.5)).toThrow(/^slice: start\/end must be integers/);
  });

  it("split rejects a non-positive size before doing any work", () => {
    expect(() => split(randn([5, 2]), 0)).toThrow(ArgumentError);
    expect(() => split(randn([5, 2]), -1)).toThrow(/^split: /);
  });

  it("assertClose sanity: equal tensors", () => {
    assertClose(arange(3), [0, 1, 2], { atol: 0, rtol: 0 });
  });
});
