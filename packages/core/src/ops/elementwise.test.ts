import { describe, it, expect } from "vitest";
import {
  ArgumentError, ShapeError, Tensor, abs, add, clamp, div, exp, gelu, log, manualSeed, mul, neg, pow, rand, randn, relu,
  sigmoid, sqrt, sub, tanh, tensor,
} from "../index.js";
import { assertClose, gradcheck } from "../testing/index.js";

/** Float64 reference of a broadcast binary op, computed index by index (not through the kernels). */
function refBinary(a: Tensor, b: Tensor, f: (x: number, y: number) => number): { data: number[]; shape: number[] } {
  const nd = Math.max(a.ndim, b.ndim);
  const pa = [...Array(nd - a.ndim).fill(1), ...a.shape], pb = [...Array(nd - b.ndim).fill(1), ...b.shape];
  const shape = pa.map((d, i) => Math.max(d, pb[i]));
  const total = shape.reduce((p, c) => p * c, 1);
  const flatIndex = (idx: number[], s: number[]) => idx.reduce((acc, v, i) => acc * s[i] + (s[i] === 1 ? 0 : v), 0);
  const data: number[] = [];
  for (let o = 0; o < total; o++) {
    const idx: number[] = [];
    let r = o;
    for (let d = nd - 1; d >= 0; d--) { idx[d] = r % shape[d]; r = Math.floor(r / shape[d]); }
    data.push(f(a.data[flatIndex(idx, pa)], b.data[flatIndex(idx, pb)]));
  }
  return { data, shape };
}

const binaryOps = [
  { name: "add", fn: add, ref: (x: number, y: number) => x + y },
  { name: "sub", fn: sub, ref: (x: number, y: number) => x - y },
  { name: "mul", fn: mul, ref: (x: number, y: number) => x * y },
  { name: "div", fn: div, ref: (x: number, y: number) => x / y },
] as const;

const broadcastCases: [number[], number[]][] = [
  [[2, 3], [2, 3]],
  [[2, 3], [3]],
  [[3], [2, 3]],
  [[2, 1, 4], [3, 1]],
  [[2, 3, 4], []],
  [[], [2, 3]],
  [[4, 1], [1, 5]],
  [[2, 1, 3, 1], [1, 4, 1, 2]],
];

/** Values in ±[0.5, 1.5]: away from zero, so div is smooth. */
function awayFromZero(shape: number[]): Tensor {
  const t = rand(shape, { low: 0.5, high: 1.5 });
  for (let i = 0; i < t.size; i++) if (i % 2 === 1) t.data[i] = -t.data[i];
  return t.requiresGrad_();
}

describe("binary ops (add, sub, mul, div) with numpy broadcasting", () => {
  for (const op of binaryOps) {
    describe(op.name, () => {
      for (const [sa, sb] of broadcastCases) {
        it(`forward matches a float64 reference and gradchecks: [${sa}] ${op.name} [${sb}]`, () => {
          manualSeed(7);
          const a = awayFromZero(sa), b = awayFromZero(sb);
          const out = op.fn(a, b);
          const ref = refBinary(a, b, op.ref);
          expect(out.shape).toEqual(ref.shape);
          assertClose(out, ref.data, { atol: 1e-6, rtol: 1e-6 });
          gradcheck(op.fn, [a, b]);
        });
      }

      it("accepts a number on either side", () => {
        const a = tensor([1, 2, 4]);
        assertClose(op.fn(a, 2), [op.ref(1, 2), op.ref(2, 2), op.ref(4, 2)]);
        assertClose(op.fn(2, a), [op.ref(2, 1), op.ref(2, 2), op.ref(2, 4)]);
      });

      it("propagates NaN", () => {
        const out = op.fn(tensor([1, NaN, 3]), tensor([2, 2, NaN]));
        expect(Number.isNaN(out.data[0])).toBe(false);
        expect(Number.isNaN(out.data[1])).toBe(true);
        expect(Number.isNaN(out.data[2])).toBe(true);
      });

      it("names the op and both shapes when shapes cannot be broadcast", () => {
        const f = () => op.fn(tensor([[1, 2, 3], [4, 5, 6]]), tensor([1, 2]));
        expect(f).toThrow(ShapeError);
        expect(f).toThrow(`${op.name}: shapes [2,3] and [2] cannot be broadcast`);
      });
    });
  }

  it("gradient of x*x and x/x (same tensor twice) accumulates both paths", () => {
    const x = tensor([1.5, -2, 3], { requiresGrad: true });
    mul(x, x).sum().backward();
    assertClose(x.grad!, [3, -4, 6]);
    gradcheck((t) => div(mul(t, t), add(t, 4)), [x]);
  });

  it("only inputs that need a gradient get one", () => {
    const a = tensor([1, 2], { requiresGrad: true }), b = tensor([3, 4]);
    mul(a, b).sum().backward();
    assertClose(a.grad!, [3, 4]);
    expect(b.grad).toBeNull();
  });
});

/** Unary ops: reference in float64, an input domain away from kinks and poles. */
const unaryOps: { name: string; fn: (x: Tensor) => Tensor; ref: (x: number) => number; lo: number; hi: number; signed: boolean }[] = [
  { name: "neg", fn: neg, ref: (x) => -x, lo: 0.1, hi: 2, signed: true },
  { name: "exp", fn: exp, ref: Math.exp, lo: 0.1, hi: 2, signed: true },
  { name: "log", fn: log, ref: Math.log, lo: 0.5, hi: 3, signed: false },
  { name: "sqrt", fn: sqrt, ref: Math.sqrt, lo: 0.5, hi: 3, signed: false },
  { name: "abs", fn: abs, ref: Math.abs, lo: 0.2, hi: 2, signed: true },
  { name: "relu", fn: relu, ref: (x) => Math.max(0, x), lo: 0.2, hi: 2, signed: true },
  { name: "sigmoid", fn: sigmoid, ref: (x) => 1 / (1 + Math.exp(-x)), lo: 0.1, hi: 3, signed: true },
  { name: "tanh", fn: tanh, ref: Math.tanh, lo: 0.1, hi: 2, signed: true },
  { name: "gelu", fn: (x) => gelu(x), ref: geluExact, lo: 0.1, hi: 3, signed: true },
  { name: "geluTanh", fn: (x) => gelu(x, { approximate: "tanh" }), ref: geluTanh, lo: 0.1, hi: 3, signed: true },
  { name: "pow(3)", fn: (x) => pow(x, 3), ref: (x) => x ** 3, lo: 0.2, hi: 2, signed: true },
  { name: "pow(2)", fn: (x) => pow(x, 2), ref: (x) => x * x, lo: 0.2, hi: 2, signed: true },
  { name: "pow(-1.5)", fn: (x) => pow(x, -1.5), ref: (x) => x ** -1.5, lo: 0.5, hi: 2, signed: false },
  { name: "pow(0.5)", fn: (x) => pow(x, 0.5), ref: Math.sqrt, lo: 0.5, hi: 2, signed: false },
  { name: "clamp(-1,1)", fn: (x) => clamp(x, -1, 1), ref: (x) => Math.min(1, Math.max(-1, x)), lo: 0.1, hi: 2.5, signed: true },
];

function geluTanh(x: number): number {
  return 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
}

/** Exact GELU through a float64 erf series (Abramowitz-Stegun 7.1.26 is too coarse; use the Taylor series). */
function erf64(x: number): number {
  if (Math.abs(x) > 4) return Math.sign(x);
  let sum = 0, term = x;
  for (let n = 0; n < 80; n++) {
    sum += term / (2 * n + 1);
    term *= (-x * x) / (n + 1);
  }
  return (2 / Math.sqrt(Math.PI)) * sum;
}
function geluExact(x: number): number {
  return 0.5 * x * (1 + erf64(x / Math.SQRT2));
}

function unaryInput(lo: number, hi: number, signed: boolean, shape = [2, 3, 4]): Tensor {
  const t = rand(shape, { low: lo, high: hi });
  if (signed) for (let i = 0; i < t.size; i++) if (i % 3 !== 0) t.data[i] = -t.data[i];
  return t.requiresGrad_();
}

describe("unary ops", () => {
  for (const op of unaryOps) {
    describe(op.name, () => {
      it("forward matches the float64 formula (high-rank input)", () => {
        manualSeed(3);
        const x = unaryInput(op.lo, op.hi, op.signed);
        const out = op.fn(x);
        expect(out.shape).toEqual([2, 3, 4]);
        assertClose(out, Array.from(x.data, op.ref), { atol: 1e-6, rtol: 1e-5 });
      });

      it("gradchecks", () => {
        manualSeed(4);
        gradcheck(op.fn, [unaryInput(op.lo, op.hi, op.signed, [3, 5])]);
      });

      it("propagates NaN", () => {
        const out = op.fn(tensor([NaN, 0.7]));
        expect(Number.isNaN(out.data[0])).toBe(true);
        expect(Number.isNaN(out.data[1])).toBe(false);
      });
    });
  }

  it("gelu matches known values (exact and tanh forms)", () => {
    const x = tensor([-2, -1, 0, 1, 2]);
    assertClose(gelu(x), [-0.04550026389635842, -0.15865525393145707, 0, 0.8413447460685429, 1.9544997361036416], { atol: 2e-7, rtol: 0 });
    assertClose(gelu(x, { approximate: "tanh" }), [-0.04540230591222, -0.15880800939172324, 0, 0.8411919906082768, 1.9545976940877752], { atol: 2e-7, rtol: 0 });
  });

  it("sigmoid and tanh saturate without NaN at large |x|", () => {
    const x = tensor([-200, -50, 50, 200], { requiresGrad: true });
    expect(Array.from(sigmoid(x).data)).toEqual([0, Math.fround(1 / (1 + Math.exp(50))), 1, 1]);
    expect(Array.from(tanh(x).data)).toEqual([-1, -1, 1, 1]);
    sigmoid(x).sum().backward();
    for (const g of x.grad!.data) expect(Number.isFinite(g)).toBe(true);
  });

  it("relu, abs and clamp pass the gradient only where PyTorch does", () => {
    const x = tensor([-1, 0, 2], { requiresGrad: true });
    relu(x).sum().backward();
    assertClose(x.grad!, [0, 0, 1]);
    x.grad = null;
    abs(x).sum().backward();
    assertClose(x.grad!, [-1, 0, 1]);
    x.grad = null;
    clamp(x, -0.5, 1).sum().backward();
    assertClose(x.grad!, [0, 1, 0]);
  });

  it("pow(x, 0) has gradient 0 everywhere, also at x = 0 (not 0·∞ = NaN)", () => {
    const x = tensor([0, 2, -1], { requiresGrad: true });
    const y = pow(x, 0);
    expect(Array.from(y.data)).toEqual([1, 1, 1]);
    y.sum().backward();
    expect(Array.from(x.grad!.data)).toEqual([0, 0, 0]);
  });

  it("pow rejects a NaN exponent, naming the op", () => {
    expect(() => pow(tensor([1, 2]), NaN)).toThrow(ArgumentError);
    expect(() => pow(tensor([1, 2]), NaN)).toThrow(/^pow: /);
  });

  it("log and sqrt of negatives give NaN (like PyTorch), log(0) gives -Infinity", () => {
    expect(Number.isNaN(log(tensor([-1])).item())).toBe(true);
    expect(Number.isNaN(sqrt(tensor([-1])).item())).toBe(true);
    expect(log(tensor([0])).item()).toBe(-Infinity);
  });

  it("randn-based chain of ops gradchecks end to end", () => {
    manualSeed(11);
    const x = randn([4, 3], { requiresGrad: true });
    gradcheck((t) => tanh(mul(sigmoid(t), exp(neg(t)))).add(gelu(t)), [x]);
  });
});
