import { describe, it, expect } from "vitest";
import { ShapeError, Tensor, linear, manualSeed, matmul, randn, tensor } from "../index.js";
import { assertClose, gradcheck } from "../testing/index.js";
import { add } from "./elementwise.js";
import { linearResidual } from "./matmul.js";

/** numpy matmul in float64 by a naive triple loop, with 1-D promotion and batch broadcasting. */
function naiveMatmul(a: Tensor, b: Tensor): { data: number[]; shape: number[] } {
  const as = a.ndim === 1 ? [1, a.shape[0]] : a.shape, bs = b.ndim === 1 ? [b.shape[0], 1] : b.shape;
  const M = as[as.length - 2], K = as[as.length - 1], N = bs[bs.length - 1];
  const ab = as.slice(0, -2), bb = bs.slice(0, -2);
  const nd = Math.max(ab.length, bb.length);
  const pa = [...Array(nd - ab.length).fill(1), ...ab], pb = [...Array(nd - bb.length).fill(1), ...bb];
  const batchShape = pa.map((d, i) => Math.max(d, pb[i]));
  const batch = batchShape.reduce((p, c) => p * c, 1);
  const data: number[] = [];
  for (let p = 0; p < batch; p++) {
    const idx: number[] = [];
    let r = p;
    for (let d = nd - 1; d >= 0; d--) { idx[d] = r % batchShape[d]; r = Math.floor(r / batchShape[d]); }
    const offOf = (s: number[]) => idx.reduce((acc, v, i) => acc * s[i] + (s[i] === 1 ? 0 : v), 0);
    const ao = offOf(pa) * M * K, bo = offOf(pb) * K * N;
    for (let i = 0; i < M; i++) {
      for (let j = 0; j < N; j++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += a.data[ao + i * K + k] * b.data[bo + k * N + j];
        data.push(s);
      }
    }
  }
  const shape = [...batchShape];
  if (a.ndim !== 1) shape.push(M);
  if (b.ndim !== 1) shape.push(N);
  return { data, shape };
}

const cases: [number[], number[]][] = [
  [[2, 3], [3, 4]],
  [[1, 1], [1, 1]],
  [[5, 7], [7, 1]],
  [[2, 3, 4], [2, 4, 5]], // batched 3-D
  [[2, 2, 3, 4], [2, 2, 4, 3]], // batched 4-D
  [[2, 3, 4], [4, 5]], // (..., M, K) @ (K, N)
  [[3, 4], [2, 4, 5]], // 2-D @ batched
  [[2, 1, 3, 4], [3, 4, 2]], // broadcast batch dims
  [[1, 3, 4], [2, 4, 2]],
  [[4], [4, 3]], // 1-D @ 2-D
  [[3, 4], [4]], // 2-D @ 1-D
  [[4], [4]], // dot
  [[4], [2, 4, 3]], // 1-D @ batched
  [[2, 3, 4], [4]], // batched @ 1-D
];

describe("matmul", () => {
  for (const [sa, sb] of cases) {
    it(`[${sa}] x [${sb}]: forward matches a float64 triple loop and gradchecks`, () => {
      manualSeed(21);
      const a = randn(sa, { requiresGrad: true }), b = randn(sb, { requiresGrad: true });
      const out = matmul(a, b);
      const ref = naiveMatmul(a, b);
      expect(out.shape).toEqual(ref.shape);
      assertClose(out, ref.data, { atol: 1e-5, rtol: 1e-5 });
      gradcheck(matmul, [a, b]);
    });
  }

  it("is exact on small integers", () => {
    const out = matmul(tensor([[1, 2], [3, 4]]), tensor([[5, 6], [7, 8]]));
    expect(out.toArray()).toEqual([[19, 22], [43, 50]]);
  });

  it("handles a larger product (blocking edges) like the triple loop", () => {
    manualSeed(5);
    const a = randn([37, 300]), b = randn([300, 19]);
    assertClose(matmul(a, b), naiveMatmul(a, b).data, { atol: 1e-4, rtol: 1e-4 });
  });

  it("gradient needs only the inputs that ask for it", () => {
    manualSeed(1);
    const a = randn([2, 3], { requiresGrad: true }), b = randn([3, 2]);
    matmul(a, b).sum().backward();
    expect(b.grad).toBeNull();
    // d/da sum(a b) = 1 · bᵀ: each row of grad is the row sums of b.
    const rowSums = [b.data[0] + b.data[1], b.data[2] + b.data[3], b.data[4] + b.data[5]];
    assertClose(a.grad!, [...rowSums, ...rowSums]);
  });

  it("propagates NaN along its row and column only", () => {
    const a = tensor([[NaN, 1], [2, 3]]), b = tensor([[1, 0], [0, 1]]);
    const out = matmul(a, b).data;
    expect(Number.isNaN(out[0])).toBe(true);
    expect(Number.isNaN(out[1])).toBe(true); // NaN * 0 is NaN
    expect(Array.from(out.subarray(2))).toEqual([2, 3]);
  });

  it("names the op and both shapes when inner dimensions differ", () => {
    const f = () => matmul(randn([2, 3]), randn([4, 5]));
    expect(f).toThrow(ShapeError);
    expect(f).toThrow("matmul: [2,3] x [4,5]: inner dimensions 3 and 4 differ");
    expect(() => matmul(randn([3]), randn([4]))).toThrow("matmul: [1,3] x [4,1]: inner dimensions 3 and 4 differ");
  });

  it("names both full shapes when batch dims cannot be broadcast", () => {
    const f = () => matmul(randn([2, 3, 4]), randn([3, 4, 5]));
    expect(f).toThrow(ShapeError);
    expect(f).toThrow(/^matmul: \[2,3,4\] x \[3,4,5\]/);
  });

  it("rejects 0-d operands", () => {
    expect(() => matmul(tensor(2), randn([2, 2]))).toThrow(/^matmul: \[\] x \[2,2\]/);
  });
});

describe("linear", () => {
  function naiveLinear(x: Tensor, w: Tensor, b: Tensor | null): number[] {
    const [outF, inF] = w.shape;
    const rows = x.size / inF;
    const out: number[] = [];
    for (let r = 0; r < rows; r++) {
      for (let o = 0; o < outF; o++) {
        let s = b ? b.data[o] : 0;
        for (let i = 0; i < inF; i++) s += x.data[r * inF + i] * w.data[o * inF + i];
        out.push(s);
      }
    }
    return out;
  }

  for (const [xs, withBias] of [[[4, 3], true], [[4, 3], false], [[2, 5, 3], true], [[3], true]] as const) {
    it(`input [${xs}] ${withBias ? "with" : "without"} bias: x·Wᵀ + b and gradcheck`, () => {
      manualSeed(8);
      const x = randn([...xs], { requiresGrad: true });
      const w = randn([2, 3], { requiresGrad: true });
      const b = withBias ? randn([2], { requiresGrad: true }) : null;
      const out = linear(x, w, b);
      expect(out.shape).toEqual([...xs.slice(0, -1), 2]);
      assertClose(out, naiveLinear(x, w, b), { atol: 1e-6, rtol: 1e-5 });
      gradcheck((...ts) => linear(ts[0], ts[1], ts[2] ?? null), b ? [x, w, b] : [x, w]);
    });
  }

  it("propagates NaN", () => {
    const out = linear(tensor([[NaN, 1]]), tensor([[1, 1], [0, 1]]), tensor([0, 0]));
    expect(Number.isNaN(out.data[0])).toBe(true);
  });

  it("names the op and shapes on a mismatch", () => {
    expect(() => linear(randn([4, 3]), randn([2, 5]))).toThrow("linear: input [4,3] x weight [2,5]: last input dimension must be 5");
    expect(() => linear(randn([4, 3]), randn([2, 3]), randn([3]))).toThrow("linear: bias [3] must be [2]");
    expect(() => linear(randn([4, 3]), randn([6]))).toThrow(ShapeError);
  });
});

describe("linearResidual", () => {
  it("equals residual + linear(x) in value and gradients, bias or not, leaf or not", () => {
    manualSeed(21);
    for (const withBias of [true, false]) {
      const r = randn([2, 3, 5], { requiresGrad: true }), x = randn([2, 3, 4], { requiresGrad: true });
      const w = randn([5, 4], { requiresGrad: true }), b = withBias ? randn([5], { requiresGrad: true }) : null;
      const [r2, x2, w2] = [r, x, w].map((t) => new Tensor(t.data, t.shape, true));
      const b2 = b ? new Tensor(b.data, b.shape, true) : null;
      // The residual as a non-leaf too: its gradient is handed on, not written into a .grad.
      const y = linearResidual(r.mul(2), x, w, b), ref = add(r2.mul(2), linear(x2, w2, b2));
      expect(y.shape).toEqual([2, 3, 5]);
      assertClose(y, ref, { atol: 1e-6 });
      const g = randn([2, 3, 5]);
      y.backward(g);
      ref.backward(g);
      for (const [a, c] of [[r, r2], [x, x2], [w, w2], [b, b2]] as const) if (a) assertClose(a.grad!, c!.grad!, { atol: 1e-6 });
      expect(Array.from(r.data)).toEqual(Array.from(r2.data)); // the residual's own data untouched
    }
  });

  it("gradchecks", () => {
    manualSeed(22);
    const r = randn([3, 4], { requiresGrad: true }), x = randn([3, 6], { requiresGrad: true });
    const w = randn([4, 6], { requiresGrad: true }), b = randn([4], { requiresGrad: true });
    gradcheck(linearResidual, [r, x, w, b]);
  });

  it("rejects a residual of the wrong shape", () => {
    expect(() => linearResidual(randn([3, 5]), randn([3, 6]), randn([4, 6]))).toThrow(/residual \[3,5\] does not match the output \[3,4\]/);
  });
});
