import { describe, it, expect } from "vitest";
import { ShapeError, layerNorm, manualSeed, mul, randn, tensor } from "../index.js";
import { assertClose, gradcheck } from "../testing/index.js";

describe("layerNorm", () => {
  it("normalises each row to mean 0 and variance 1 (biased), matching the float64 formula", () => {
    manualSeed(1);
    const x = randn([4, 16], { mean: 3, std: 2 });
    const y = layerNorm(x, [16]);
    for (let r = 0; r < 4; r++) {
      const row = Array.from(x.data.subarray(r * 16, r * 16 + 16));
      const m = row.reduce((a, b) => a + b, 0) / 16;
      const v = row.reduce((a, b) => a + (b - m) ** 2, 0) / 16;
      const out = Array.from(y.data.subarray(r * 16, r * 16 + 16));
      assertClose(out, row.map((e) => (e - m) / Math.sqrt(v + 1e-5)), { atol: 1e-5 });
      const om = out.reduce((a, b) => a + b, 0) / 16;
      const ov = out.reduce((a, b) => a + (b - om) ** 2, 0) / 16;
      expect(Math.abs(om)).toBeLessThan(1e-6);
      expect(Math.abs(ov - 1)).toBeLessThan(1e-4);
    }
  });

  it("applies the affine weight and bias: y = xhat * w + b", () => {
    const x = tensor([[1, 2, 3]]);
    const w = tensor([1, 2, 3]), b = tensor([0.5, 0, -1]);
    const s = Math.sqrt(2 / 3 + 1e-5);
    assertClose(layerNorm(x, [3], w, b), [-1 / s + 0.5, 0, (3 * 1) / s - 1], { atol: 1e-6 });
  });

  for (const affine of [false, true]) {
    it(`gradchecks ${affine ? "with" : "without"} affine parameters (3-D input)`, () => {
      manualSeed(2);
      const x = randn([2, 3, 5], { requiresGrad: true });
      const w = randn([5], { requiresGrad: true }), b = randn([5], { requiresGrad: true });
      const g = randn([2, 3, 5]);
      if (affine) gradcheck((xx, ww, bb) => mul(layerNorm(xx, [5], ww, bb), g), [x, w, b]);
      else gradcheck((xx) => mul(layerNorm(xx, [5]), g), [x]);
    });
  }

  it("gradchecks a bias without weight, and parameters alone (input needs no gradient)", () => {
    manualSeed(4);
    const x = randn([3, 2, 6], { requiresGrad: true }), x0 = randn([3, 2, 6], { mean: 2 });
    const w = randn([6], { requiresGrad: true }), b = randn([6], { requiresGrad: true });
    const g = randn([3, 2, 6]);
    gradcheck((xx, bb) => mul(layerNorm(xx, [6], null, bb), g), [x, b]);
    gradcheck((ww, bb) => mul(layerNorm(x0, [6], ww, bb), g), [w, b]);
    gradcheck((bb) => mul(layerNorm(x0, [6], null, bb), g), [b]);
  });

  it("normalises over several trailing dims and gradchecks", () => {
    manualSeed(3);
    const x = randn([2, 3, 4], { requiresGrad: true });
    const w = randn([3, 4], { requiresGrad: true });
    const g = randn([2, 3, 4]);
    const y = layerNorm(x, [3, 4]);
    let m = 0;
    for (let i = 0; i < 12; i++) m += y.data[i];
    expect(Math.abs(m / 12)).toBeLessThan(1e-6);
    gradcheck((xx, ww) => mul(layerNorm(xx, [3, 4], ww), g), [x, w]);
  });

  it("propagates NaN to its row only", () => {
    const y = layerNorm(tensor([[1, NaN, 3], [1, 2, 3]]), [3]).data;
    expect(Number.isNaN(y[0])).toBe(true);
    expect(Number.isNaN(y[3])).toBe(false);
  });

  it("names the op and shapes on a mismatch", () => {
    expect(() => layerNorm(randn([2, 3]), [4])).toThrow(ShapeError);
    expect(() => layerNorm(randn([2, 3]), [4])).toThrow("layerNorm: input [2,3] does not end with normalized shape [4]");
    expect(() => layerNorm(randn([2, 3]), [3], randn([4]))).toThrow("layerNorm: weight [4] does not match normalized shape [3]");
  });
});
