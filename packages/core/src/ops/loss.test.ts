import { describe, it, expect } from "vitest";
import { ArgumentError, F, Generator, ShapeError, Tensor, logSoftmax, manualSeed, rand, randn, tensor } from "../index.js";
import { assertClose, gradcheck } from "../testing/index.js";

/** Cross-entropy in float64 by hand: mean over kept rows of logsumexp(row) - row[target]. */
function refCrossEntropy(logits: Tensor, targets: number[], ignore = -100): number {
  const C = logits.shape[logits.ndim - 1];
  let total = 0, count = 0;
  targets.forEach((t, r) => {
    if (t === ignore) return;
    const row = Array.from(logits.data.subarray(r * C, r * C + C));
    const m = Math.max(...row);
    total += m + Math.log(row.reduce((s, v) => s + Math.exp(v - m), 0)) - row[t];
    count++;
  });
  return total / count;
}

describe("crossEntropy", () => {
  it("matches a hand computation and gradchecks", () => {
    manualSeed(1);
    const logits = randn([5, 4], { requiresGrad: true });
    const targets = [0, 3, 1, 1, 2];
    expect(F.crossEntropy(logits, targets).item()).toBeCloseTo(refCrossEntropy(logits, targets), 5);
    expect(F.crossEntropy(logits, tensor(targets)).item()).toBeCloseTo(refCrossEntropy(logits, targets), 5);
    expect(F.crossEntropy(logits, targets, { reduction: "sum" }).item()).toBeCloseTo(5 * refCrossEntropy(logits, targets), 4);
    gradcheck((t) => F.crossEntropy(t, targets), [logits]);
    gradcheck((t) => F.crossEntropy(t, new Int32Array(targets), { reduction: "sum" }), [logits]);
  });

  it("known value: uniform logits give log(C)", () => {
    expect(F.crossEntropy(tensor([[0, 0, 0, 0]]), [2]).item()).toBeCloseTo(Math.log(4), 6);
  });

  it("equals nllLoss(logSoftmax(x))", () => {
    manualSeed(2);
    const x = randn([6, 3]);
    const t = [0, 1, 2, 2, 1, 0];
    expect(F.crossEntropy(x, t).item()).toBeCloseTo(F.nllLoss(logSoftmax(x), t).item(), 5);
  });

  it("is stable for huge logits (log-sum-exp)", () => {
    const loss = F.crossEntropy(tensor([[1000, 0, -1000], [-1e4, 1e4, 0]]), [1, 0]).item();
    expect(loss).toBeCloseTo((1000 + 2e4) / 2, 1);
  });

  it("ignoreIndex rows count for nothing (mean over the others) and get zero gradient", () => {
    manualSeed(3);
    const logits = randn([4, 3], { requiresGrad: true });
    const targets = [1, -100, 2, -100];
    expect(F.crossEntropy(logits, targets).item()).toBeCloseTo(refCrossEntropy(logits, targets), 5);
    gradcheck((t) => F.crossEntropy(t, targets), [logits]);
    logits.grad = null;
    F.crossEntropy(logits, targets).backward();
    expect(Array.from(logits.grad!.data.subarray(3, 6))).toEqual([0, 0, 0]);
    const custom = [1, 0, 2, 0];
    expect(F.crossEntropy(logits, custom, { ignoreIndex: 0 }).item()).toBeCloseTo(refCrossEntropy(logits, custom, 0), 5);
  });

  it("3-D logits (B, T, C) with targets (B, T) and gradcheck", () => {
    manualSeed(4);
    const logits = randn([2, 3, 5], { requiresGrad: true });
    const targets = tensor([[0, 4, 2], [1, 1, 3]]);
    expect(F.crossEntropy(logits, targets).item()).toBeCloseTo(refCrossEntropy(logits, Array.from(targets.data)), 5);
    gradcheck((t) => F.crossEntropy(t, targets), [logits]);
  });

  it("propagates NaN", () => {
    expect(Number.isNaN(F.crossEntropy(tensor([[NaN, 0]]), [1]).item())).toBe(true);
  });

  it("rejects bad targets and row counts, naming the op", () => {
    const x = randn([2, 3]);
    expect(() => F.crossEntropy(x, [0, 1.5])).toThrow(ArgumentError);
    expect(() => F.crossEntropy(x, [0, 1.5])).toThrow("crossEntropy: target 1.5 at position 1 is not an integer class index");
    expect(() => F.crossEntropy(x, [0, 3])).toThrow("crossEntropy: target 3 at position 1 is out of range [0, 3)");
    expect(() => F.crossEntropy(x, [0, -1])).toThrow(/out of range/);
    expect(() => F.crossEntropy(x, [0, 1, 2])).toThrow(ShapeError);
    expect(() => F.crossEntropy(x, [0, 1, 2])).toThrow("crossEntropy: logits [2,3] give 2 rows but targets [3] have 3");
  });
});

describe("nllLoss", () => {
  it("is minus the mean picked log-probability, and gradchecks", () => {
    manualSeed(5);
    const lp = randn([4, 3], { requiresGrad: true });
    const t = [2, 0, 1, 2];
    const expected = -(lp.data[2] + lp.data[3] + lp.data[7] + lp.data[11]) / 4;
    expect(F.nllLoss(lp, t).item()).toBeCloseTo(expected, 6);
    gradcheck((x) => F.nllLoss(x, t), [lp]);
    gradcheck((x) => F.nllLoss(logSoftmax(x), t), [lp]);
  });

  it("propagates NaN and rejects bad targets", () => {
    expect(Number.isNaN(F.nllLoss(tensor([[NaN, 0]]), [0]).item())).toBe(true);
    expect(() => F.nllLoss(randn([2, 3]), [0, 3])).toThrow("nllLoss: target 3 at position 1 is out of range [0, 3)");
    expect(() => F.nllLoss(randn([2, 3]), [0])).toThrow("nllLoss: input [2,3] gives 2 rows but targets [1] have 1");
  });
});

describe("mseLoss and l1Loss", () => {
  it("match closed forms for each reduction and gradcheck (both arguments)", () => {
    manualSeed(6);
    const a = randn([3, 4], { requiresGrad: true }), b = randn([3, 4], { requiresGrad: true });
    const d = Array.from(a.data, (v, i) => v - b.data[i]);
    const sq = d.reduce((s, v) => s + v * v, 0), ab = d.reduce((s, v) => s + Math.abs(v), 0);
    expect(F.mseLoss(a, b).item()).toBeCloseTo(sq / 12, 5);
    expect(F.mseLoss(a, b, { reduction: "sum" }).item()).toBeCloseTo(sq, 4);
    assertClose(F.mseLoss(a, b, { reduction: "none" }), d.map((v) => v * v), { atol: 1e-5 });
    expect(F.l1Loss(a, b).item()).toBeCloseTo(ab / 12, 5);
    expect(F.l1Loss(a, b, { reduction: "sum" }).item()).toBeCloseTo(ab, 4);
    gradcheck((x, y) => F.mseLoss(x, y), [a, b]);
    gradcheck((x, y) => F.l1Loss(x, y), [a, b], { eps: 1e-3 }); // randn pairs are far from the |0| kink
  });

  it("propagate NaN and reject mismatched shapes or reductions, naming the op", () => {
    expect(Number.isNaN(F.mseLoss(tensor([NaN, 1]), tensor([0, 1])).item())).toBe(true);
    expect(Number.isNaN(F.l1Loss(tensor([NaN, 1]), tensor([0, 1])).item())).toBe(true);
    expect(() => F.mseLoss(randn([3]), randn([3, 1]))).toThrow("mseLoss: input [3] and target [3,1] must have the same shape");
    expect(() => F.l1Loss(randn([3]), randn([2]))).toThrow(/^l1Loss: /);
    expect(() => F.mseLoss(randn([3]), randn([3]), { reduction: "avg" as any })).toThrow(ArgumentError);
  });
});

describe("binaryCrossEntropyWithLogits and binaryCrossEntropy", () => {
  const bceRef = (x: number, y: number) => {
    const p = 1 / (1 + Math.exp(-x));
    return -(y * Math.log(p) + (1 - y) * Math.log(1 - p));
  };

  it("BCE with logits matches -[y log σ(x) + (1-y) log(1-σ(x))] and gradchecks (soft targets too)", () => {
    manualSeed(7);
    const x = randn([3, 4], { std: 2, requiresGrad: true });
    const y = rand([3, 4], { requiresGrad: true }); // soft targets in [0, 1)
    const ref = Array.from(x.data, (v, i) => bceRef(v, y.data[i]));
    expect(F.binaryCrossEntropyWithLogits(x, y).item()).toBeCloseTo(ref.reduce((a, b) => a + b, 0) / 12, 5);
    assertClose(F.binaryCrossEntropyWithLogits(x, y, { reduction: "none" }), ref, { atol: 1e-5 });
    gradcheck((a, b) => F.binaryCrossEntropyWithLogits(a, b), [x, y]);
  });

  it("BCE with logits has gradient σ(x) - y at x = 0 too (PyTorch's), e.g. a zero-initialised model", () => {
    const x = tensor([0, 0, 1, -1], { requiresGrad: true });
    const y = tensor([1, 0, 1, 0]);
    F.binaryCrossEntropyWithLogits(x, y, { reduction: "sum" }).backward();
    const s = (v: number) => 1 / (1 + Math.exp(-v));
    assertClose(x.grad!, [0.5 - 1, 0.5, s(1) - 1, s(-1)], { atol: 1e-6 });
    gradcheck((a) => F.binaryCrossEntropyWithLogits(a, y), [x]);
  });

  it("BCE with logits is stable for huge logits", () => {
    const x = tensor([100, -100, 100, -100]);
    const y = tensor([1, 0, 0, 1]);
    assertClose(F.binaryCrossEntropyWithLogits(x, y, { reduction: "none" }), [0, 0, 100, 100], { atol: 1e-5 });
  });

  it("BCE on probabilities matches the formula and gradchecks", () => {
    manualSeed(8);
    const p = rand([3, 4], { low: 0.1, high: 0.9, requiresGrad: true });
    const y = tensor(Float32Array.from({ length: 12 }, (_, i) => i % 2), { shape: [3, 4] });
    const ref = Array.from(p.data, (v, i) => -(y.data[i] * Math.log(v) + (1 - y.data[i]) * Math.log(1 - v)));
    expect(F.binaryCrossEntropy(p, y).item()).toBeCloseTo(ref.reduce((a, b) => a + b, 0) / 12, 5);
    gradcheck((a) => F.binaryCrossEntropy(a, y), [p], { eps: 1e-3 });
    // Probabilities of exactly 0 and 1 are clamped: finite loss.
    expect(Number.isFinite(F.binaryCrossEntropy(tensor([0, 1]), tensor([1, 0])).item())).toBe(true);
  });

  it("propagate NaN and reject mismatched shapes, naming the op", () => {
    expect(Number.isNaN(F.binaryCrossEntropyWithLogits(tensor([NaN]), tensor([1])).item())).toBe(true);
    expect(Number.isNaN(F.binaryCrossEntropy(tensor([NaN]), tensor([1])).item())).toBe(true);
    expect(() => F.binaryCrossEntropyWithLogits(randn([2]), randn([3]))).toThrow(/^binaryCrossEntropyWithLogits: input \[2\] and target \[3\]/);
    expect(() => F.binaryCrossEntropy(randn([2]), randn([2, 1]))).toThrow(/^binaryCrossEntropy: input \[2\] and target \[2,1\]/);
  });
});

describe("crossEntropy saved gradient", () => {
  it("stays intact across a retained graph and a forward that reuses pooled buffers", () => {
    // (40, 30) logits = 1200 floats: softmax − onehot lives in a pooled buffer.
    const gen = new Generator(5);
    const mk = () => new Tensor(Float32Array.from({ length: 1200 }, () => gen.random() * 4 - 2), [40, 30], true);
    const targets = Int32Array.from({ length: 40 }, (_, i) => (i * 7) % 30);
    const ref = (x: Tensor) => {
      const x2 = new Tensor(x.data, x.shape, true);
      F.crossEntropy(x2, targets).backward();
      return x2.grad!;
    };
    const a = mk(), b = mk(), c = mk();
    const la = F.crossEntropy(a, targets), lb = F.crossEntropy(b, targets);
    la.backward(undefined, { retainGraph: true });
    const lc = F.crossEntropy(c, targets); // must not get la's saved buffer
    la.backward(); // last use: scaled in place and handed on
    lb.backward();
    lc.backward();
    assertClose(a.grad!, ref(a).mul(2), { atol: 1e-6 });
    assertClose(b.grad!, ref(b), { atol: 1e-6 });
    assertClose(c.grad!, ref(c), { atol: 1e-6 });
  });
});
