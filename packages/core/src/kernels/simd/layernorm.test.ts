import { afterEach, describe, expect, it } from "vitest";
import { simdLayerNorm, simdLayerNormBackward } from "./layernorm.js";
import { setSimdEnabled } from "./switch.js";
import { layerNorm, layerNormAffineJs, layerNormBackward, lnBackwardAffineJs } from "../js/nn.js";

const on = process.env.CHAINRULE_SIMD !== "0";
afterEach(() => setSimdEnabled(on));

describe.runIf(on)("WebAssembly SIMD layer norm (simd/layernorm.ts)", () => {
  const fill = (len: number, f: (i: number) => number) => Float32Array.from({ length: len }, (_, i) => f(i));
  const close = (a: ArrayLike<number>, b: ArrayLike<number>, tol: number) => {
    expect(a.length).toBe(b.length);
    for (let i = 0; i < a.length; i++) {
      if (Number.isNaN(b[i])) expect(a[i]).toBeNaN();
      else if (a[i] !== b[i]) expect(Math.abs(a[i] - b[i])).toBeLessThanOrEqual(tol * Math.max(1, Math.abs(b[i])));
    }
  };

  /** The forward by the SIMD kernel (which must run) and by the TypeScript loop: outputs, means, reciprocal std. */
  const forwardBoth = (x: Float32Array, w: Float32Array, b: Float32Array, rows: number, n: number) => {
    const [o1, o2] = [new Float32Array(rows * n), new Float32Array(rows * n)];
    const [m1, m2, r1, r2] = [0, 0, 0, 0].map(() => new Float32Array(rows));
    expect(simdLayerNorm(o1, m1, r1, x, w, b, rows, n, 1e-5)).toBe(true);
    layerNormAffineJs(o2, m2, r2, x, w, b, rows, n, 1e-5);
    return { o1, o2, m1, m2, r1, r2 };
  };

  it("forward and backward agree with the TypeScript loops (several shapes, chunk boundaries, offsets)", () => {
    for (const [rows, n] of [[1, 2], [3, 6], [5, 18], [4, 12], [3, 20], [17, 128], [100, 128], [33, 4096], [2, 1002]] as const) {
      const x = fill(rows * n, (i) => Math.sin(i * 1.7) * 3 + (i % n === 0 ? 40 : 0) + Math.floor(i / n));
      const w = fill(n, (i) => 0.5 + Math.cos(i)), b = fill(n, (i) => Math.sin(i * 0.3));
      const dout = fill(rows * n, (i) => Math.cos(i * 0.61));
      const { o1, o2, m1, m2, r1, r2 } = forwardBoth(x, w, b, rows, n);
      close(o1, o2, 2e-6);
      close(m1, m2, 1e-6);
      close(r1, r2, 1e-6);
      const [dx1, dx2] = [new Float32Array(rows * n), new Float32Array(rows * n)];
      const [aw1, ab1, aw2, ab2] = [0, 0, 0, 0].map(() => Float64Array.from({ length: n }, (_, i) => i * 0.25)); // added to
      expect(simdLayerNormBackward(dx1, aw1, ab1, dout, x, m2, r2, w, rows, n)).toBe(true);
      lnBackwardAffineJs(dx2, aw2, ab2, dout, x, m2, r2, w, rows, n);
      close(dx1, dx2, 2e-6);
      expect(aw1).toEqual(aw2); // the column sums: the loop's float64 arithmetic in its order
      expect(ab1).toEqual(ab2);
    }
  });

  it("backward: rows of small variance (rstd ~140, dx from cancelling terms) stay within 2e-6 of the loop", () => {
    for (const n of [128, 130, 4096]) {
      const rows = 24;
      const x = fill(rows * n, (i) => 5 + Math.sin(i * 1.3) * 0.01);
      const w = fill(n, (i) => 0.5 + Math.cos(i)), b = fill(n, () => 0);
      const dout = fill(rows * n, (i) => Math.cos(i * 0.61));
      const { m2, r2 } = forwardBoth(x, w, b, rows, n);
      const [dx1, dx2] = [new Float32Array(rows * n), new Float32Array(rows * n)];
      const [aw1, ab1, aw2, ab2] = [0, 0, 0, 0].map(() => new Float64Array(n));
      expect(simdLayerNormBackward(dx1, aw1, ab1, dout, x, m2, r2, w, rows, n)).toBe(true);
      lnBackwardAffineJs(dx2, aw2, ab2, dout, x, m2, r2, w, rows, n);
      close(dx1, dx2, 2e-6);
      expect(aw1).toEqual(aw2);
      expect(ab1).toEqual(ab2);
    }
  });

  it("forward: NaN and ±Inf rows match the loop at widths with a last pair (n % 4 == 2) and without", () => {
    for (const n of [6, 8, 10, 130]) {
      const rows = 4;
      const x = fill(rows * n, (i) => Math.sin(i * 0.9) * 2 + 100);
      x[1] = NaN; // row 0
      x[n + n - 1] = Infinity; // row 1, in the last pair
      x[2 * n + 2] = -Infinity; // row 2
      const w = fill(n, (i) => 0.5 + i * 0.01), b = fill(n, (i) => -0.2 + i * 0.003);
      const { o1, o2, m1, m2, r1, r2 } = forwardBoth(x, w, b, rows, n);
      close(o1, o2, 2e-6);
      close(m1, m2, 1e-6);
      close(r1, r2, 1e-6);
    }
  });

  it("propagates NaN and ±Inf like the loops, declines odd widths, and the kernels' entry points use it", () => {
    const rows = 4, n = 8;
    const x = fill(rows * n, (i) => i * 0.1);
    x[3] = NaN;
    x[13] = Infinity;
    x[22] = -Infinity;
    const w = fill(n, () => 1.5), b = fill(n, () => 0.25), dout = fill(rows * n, (i) => (i % 3) - 1);
    const { o1, o2, m1, m2, r1, r2 } = forwardBoth(x, w, b, rows, n);
    close(o1, o2, 2e-6);
    close(m1, m2, 1e-6);
    expect(o1[0]).toBeNaN();
    close(o1.subarray(24), o2.subarray(24), 2e-6);
    const [dx1, dx2] = [new Float32Array(rows * n), new Float32Array(rows * n)];
    const [aw1, ab1, aw2, ab2] = [0, 0, 0, 0].map(() => new Float64Array(n));
    simdLayerNormBackward(dx1, aw1, ab1, dout, x, m2, r2, w, rows, n);
    lnBackwardAffineJs(dx2, aw2, ab2, dout, x, m2, r2, w, rows, n);
    close(dx1, dx2, 2e-6);
    close(aw1, aw2, 1e-9);
    expect(simdLayerNorm(o1, m1, r1, x, w, b, 3, 5, 1e-5)).toBe(false);
    // through the kernels' entry points, SIMD on vs off
    const y = fill(6 * 10, (i) => Math.sin(i));
    const w10 = fill(10, (i) => 1 + i * 0.1), b10 = fill(10, (i) => -i * 0.05), g = fill(60, (i) => Math.cos(i));
    const run = () => {
      const o = new Float32Array(60), m = new Float32Array(6), r = new Float32Array(6), dx = new Float32Array(60), dw = new Float32Array(10), db = new Float32Array(10);
      layerNorm(o, m, r, y, w10, b10, 6, 10, 1e-5);
      layerNormBackward(dx, dw, db, g, y, m, r, w10, 6, 10);
      return [o, m, r, dx, dw, db];
    };
    const withSimd = run();
    setSimdEnabled(false);
    const without = run();
    for (let k = 0; k < withSimd.length; k++) close(withSimd[k], without[k], 2e-6);
  });
});
