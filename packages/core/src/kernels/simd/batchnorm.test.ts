import { afterEach, describe, expect, it } from "vitest";
import { simdBatchNormApply, simdBatchNormBackward, simdBatchNormStats } from "./batchnorm.js";
import { setSimdEnabled } from "./switch.js";
import { batchNormApply, batchNormBackward, batchNormStats } from "../js/conv.js";

/** A float array's bit patterns, to compare results exactly (NaN payloads and -0 included). */
const bitsOf = (a: Float32Array) => new Int32Array(a.buffer, a.byteOffset, a.length);

const on = process.env.CHAINRULE_SIMD !== "0";
afterEach(() => setSimdEnabled(on));

describe.runIf(on)("WebAssembly SIMD batch norm (simd/batchnorm.ts)", () => {
  /** |a − b| ≤ tol·max(1, |b|) everywhere (NaN where b is NaN); one assertion with the worst index. */
  function near(a: Float32Array, b: Float32Array, tol: number) {
    let worst = -1;
    for (let i = 0; i < b.length && worst < 0; i++) {
      const ok = Number.isNaN(b[i]) ? Number.isNaN(a[i]) : Math.abs(a[i] - b[i]) <= tol * Math.max(1, Math.abs(b[i]));
      if (!ok) worst = i;
    }
    expect(worst < 0 ? "all close" : `index ${worst}: ${a[worst]} vs ${b[worst]}`).toBe("all close");
  }
  it("stats, apply (bit for bit) and backward (training and eval) agree with the loops, planes spanning calls included", () => {
    for (const [N, C, HW] of [[8, 32, 784], [16, 64, 196], [3, 5, 20000 / 4], [2, 3, 2]] as const) {
      const n = N * C * HW;
      const x = Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37) * 3 + (i % 97) / 50);
      const dout = Float32Array.from({ length: n }, (_, i) => Math.cos(i * 0.61));
      const weight = Float32Array.from({ length: C }, (_, c) => 0.5 + c / C), bias = Float32Array.from({ length: C }, (_, c) => c / 7 - 1);
      const [m1, v1, m2, v2] = [0, 0, 0, 0].map(() => new Float32Array(C));
      const took = simdBatchNormStats(m1, v1, x, N, C, HW);
      expect(took).toBe(n >= 4 && HW % 2 === 0);
      setSimdEnabled(false);
      batchNormStats(m2, v2, x, N, C, HW);
      setSimdEnabled(true);
      near(m1, m2, 1e-6);
      near(v1, v2, 1e-6);
      const rstd = v2.map((v) => 1 / Math.sqrt(v + 1e-5));
      const [o1, o2] = [new Float32Array(n), new Float32Array(n)];
      expect(simdBatchNormApply(o1, x, m2, rstd, weight, bias, N, C, HW)).toBe(true);
      setSimdEnabled(false);
      batchNormApply(o2, x, m2, rstd, weight, bias, N, C, HW);
      setSimdEnabled(true);
      expect(bitsOf(o1)).toEqual(bitsOf(o2));
      for (const training of [true, false]) {
        const [dx1, dx2] = [new Float32Array(n), new Float32Array(n)];
        const [dw1, db1, dw2, db2] = [0, 0, 0, 0].map(() => new Float32Array(C));
        expect(simdBatchNormBackward(dx1, dw1, db1, dout, x, m2, rstd, weight, N, C, HW, training)).toBe(true);
        setSimdEnabled(false);
        batchNormBackward(dx2, dw2, db2, dout, x, m2, rstd, weight, N, C, HW, training);
        setSimdEnabled(true);
        near(dx1, dx2, 1e-6);
        near(dw1, dw2, 1e-6);
        near(db1, db2, 1e-6);
        if (!training) expect(bitsOf(dx1)).toEqual(bitsOf(dx2)); // no sums in it
      }
    }
  });
  it("declines odd planes and too many channels (the loops run), and NaN propagates", () => {
    const m = new Float32Array(3), v = new Float32Array(3);
    expect(simdBatchNormStats(m, v, new Float32Array(2 * 3 * 9), 2, 3, 9)).toBe(false);
    expect(simdBatchNormStats(new Float32Array(2000), new Float32Array(2000), new Float32Array(2 * 2000 * 2), 2, 2000, 2)).toBe(false);
    const x = Float32Array.from({ length: 2 * 2 * 8 }, (_, i) => i);
    x[3] = NaN;
    expect(simdBatchNormStats(m, v, x, 2, 2, 8)).toBe(true);
    expect(m[0]).toBeNaN();
    expect(m[1]).not.toBeNaN();
  });
});
