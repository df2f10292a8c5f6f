import { describe, it, expect } from "vitest";
import { Tensor, manualSeed, randn } from "../index.js";
import { result } from "../ops/op.js";
import { gradcheck } from "./index.js";

/** x² with a deliberately wrong backward (x instead of 2x): gradcheck must catch it. */
function badSquare(x: Tensor): Tensor {
  const out = Float32Array.from(x.data, (v) => v * v);
  return result("badSquare", out, x.shape, [x], (g) => [Float32Array.from(g, (gi, i) => gi * x.data[i])]);
}

describe("gradcheck", () => {
  it("fails on a wrong gradient, naming the worst element", () => {
    manualSeed(1);
    const x = randn([3, 2], { requiresGrad: true });
    expect(() => gradcheck(badSquare, [x])).toThrow(/gradcheck failed: input 0 element \d+: analytic .* vs numeric/);
  });

  it("passes on a right one and reports the error size; skips inputs that need no gradient", () => {
    manualSeed(2);
    const x = randn([3, 2], { requiresGrad: true }), c = randn([3, 2]);
    const res = gradcheck((a, b) => a.mul(a).mul(b), [x, c]);
    expect(res.ok).toBe(true);
    expect(res.maxAbsError).toBeLessThan(1e-3);
    expect(c.grad).toBeNull();
  });
});
