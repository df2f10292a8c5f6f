import { describe, it, expect } from "vitest";
import {
  AnomalyError, AutogradError, ShapeError, add, detectAnomaly, exp, isGradEnabled, log, mul, noGrad, setAnomalyDetection,
  setGradEnabled, sqrt, sum, tensor,
} from "../index.js";
import { assertClose } from "../testing/index.js";

describe("backward engine", () => {
  it("runs a 10,000-op chain without overflowing the stack, with the right gradient", () => {
    const x = tensor([1.0], { requiresGrad: true });
    let y = x;
    for (let i = 0; i < 10_000; i++) y = add(y, 0.5); // dy/dx = 1 through 10,000 nodes
    y = mul(y, y).sum();
    y.backward();
    expect(x.grad!.item()).toBeCloseTo(2 * (1 + 5000), 2);
  });

  it("handles a wide diamond (one tensor used by many ops) and a deep one", () => {
    const x = tensor([2], { requiresGrad: true });
    let acc = tensor([0]);
    for (let i = 0; i < 1000; i++) acc = add(acc, mul(x, i));
    acc.sum().backward();
    expect(x.grad!.item()).toBe((999 * 1000) / 2);
    // x used twice per level for 12,000 levels: gradient 2^0 ... stays finite since each level is y = (y + y) / 2.
    const z = tensor([3], { requiresGrad: true });
    let w = z;
    for (let i = 0; i < 12_000; i++) w = mul(add(w, w), 0.5);
    w.sum().backward();
    expect(z.grad!.item()).toBeCloseTo(1, 5);
  });

  it("accumulates gradients across backward calls until zeroed", () => {
    const x = tensor([1, 2, 3], { requiresGrad: true });
    mul(x, x).sum().backward();
    assertClose(x.grad!, [2, 4, 6]);
    mul(x, 3).sum().backward();
    assertClose(x.grad!, [5, 7, 9]);
    const g = x.grad!;
    g.data.fill(0); // what optimizer.zeroGrad does
    mul(x, x).sum().backward();
    assertClose(x.grad!, [2, 4, 6]);
    expect(x.grad).toBe(g); // accumulated in place, not replaced
    x.grad = null;
    mul(x, 2).sum().backward();
    assertClose(x.grad!, [2, 2, 2]);
  });

  it("noGrad builds no graph and restores the previous mode, even on throw", () => {
    const x = tensor([1, 2], { requiresGrad: true });
    const y = noGrad(() => mul(exp(x), 2));
    expect(y.requiresGrad).toBe(false);
    expect(y.gradFn).toBeNull();
    expect(isGradEnabled()).toBe(true);
    expect(() => noGrad(() => { throw new Error("boom"); })).toThrow("boom");
    expect(isGradEnabled()).toBe(true);
    setGradEnabled(false);
    try {
      expect(add(x, 1).gradFn).toBeNull();
    } finally {
      setGradEnabled(true);
    }
    expect(add(x, 1).gradFn?.op).toBe("add");
  });

  it("tensors that need no gradient get no gradFn (no backward work)", () => {
    const a = tensor([1, 2]), b = tensor([3, 4]);
    const c = mul(exp(a), b).sum();
    expect(c.requiresGrad).toBe(false);
    expect(c.gradFn).toBeNull();
    // Only the branch that needs a gradient is recorded.
    const w = tensor([1, 1], { requiresGrad: true });
    const out = add(mul(a, b), w);
    expect(out.gradFn!.inputs.map((t) => t.requiresGrad)).toEqual([false, true]);
    expect(out.gradFn!.inputs[0].gradFn).toBeNull();
  });

  it("a second backward through a freed graph is a clear error; retainGraph allows it", () => {
    const x = tensor([1, 2], { requiresGrad: true });
    const y = mul(exp(x), 2).sum();
    y.backward();
    expect(() => y.backward()).toThrow(AutogradError);
    expect(() => y.backward()).toThrow(/backward through the graph a second time .*retainGraph/);

    const x2 = tensor([1, 2], { requiresGrad: true });
    const y2 = mul(exp(x2), 2).sum();
    y2.backward(undefined, { retainGraph: true });
    y2.backward();
    assertClose(x2.grad!, [4 * Math.E, 4 * Math.E ** 2], { rtol: 1e-6 });
  });

  it("backward on a non-scalar needs a gradient of the same shape", () => {
    const x = tensor([1, 2, 3], { requiresGrad: true });
    const y = mul(x, 2);
    expect(() => y.backward()).toThrow(AutogradError);
    expect(() => y.backward()).toThrow("backward: output of shape [3] is not a scalar; pass a gradient of the same shape");
    expect(() => y.backward(tensor([1, 1]))).toThrow(ShapeError);
    y.backward(tensor([1, 0, -1]));
    assertClose(x.grad!, [2, 0, -2]);
  });

  it("backward on a tensor that does not require grad is an error", () => {
    expect(() => tensor([1]).backward()).toThrow(AutogradError);
  });

  it("a leaf scalar's backward sets its own gradient to 1", () => {
    const x = tensor(5, { requiresGrad: true });
    x.backward();
    expect(x.grad!.item()).toBe(1);
  });

  it("anomaly mode names the first op that produced NaN or Infinity", () => {
    const x = tensor([-1, 1], { requiresGrad: true });
    const f = () => detectAnomaly(() => mul(sqrt(log(add(x, 0))), 2));
    expect(f).toThrow(AnomalyError);
    expect(f).toThrow("anomaly: log produced NaN in its output at flat index 0");
    // Off by default and after detectAnomaly returns: NaN flows silently.
    expect(Number.isNaN(log(x).data[0])).toBe(true);
    expect(() => detectAnomaly(() => exp(tensor([1000])))).toThrow("anomaly: exp produced Infinity in its output at flat index 0");
  });

  it("anomaly mode also checks gradients in backward", () => {
    const x = tensor([0], { requiresGrad: true });
    const y = sqrt(x).sum(); // forward finite (0), gradient 1/(2·0) = Infinity
    setAnomalyDetection(true);
    try {
      expect(() => y.backward()).toThrow(/anomaly: sqrt produced Infinity in its gradient/);
    } finally {
      setAnomalyDetection(false);
    }
  });

  it("a gradient array handed to two inputs (add → [g, g]) is never added into for one of them", () => {
    // z = a + (b + 7a), and z is used twice so its gradient is an engine-allocated sum.
    // add passes that array on to a and to (b + 7a); then 7a adds into a's gradient.
    // Before the fix it added in place into the shared array, so y got x's gradient (40 instead of 5).
    const x = tensor([1], { requiresGrad: true }), y = tensor([1], { requiresGrad: true });
    const a = mul(x, 1), b = mul(y, 1);
    const z = add(a, add(b, mul(a, 7)));
    sum(add(mul(z, 2), mul(z, 3))).backward();
    expect(x.grad!.item()).toBe(40);
    expect(y.grad!.item()).toBe(5);
  });

  it("sum over a reused subexpression: d/dx (e^x + e^x·x) with the shared node", () => {
    const x = tensor([0.5], { requiresGrad: true });
    const e = exp(x);
    sum(add(e, mul(e, x))).backward();
    expect(x.grad!.item()).toBeCloseTo(Math.exp(0.5) * (2 + 0.5), 5);
  });
});
