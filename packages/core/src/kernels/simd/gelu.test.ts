import { afterEach, describe, expect, it } from "vitest";
import { simdGelu, simdGeluWithGrad } from "./gelu.js";
import { setSimdEnabled } from "./switch.js";
import { erfAccurate, geluInPlace, geluInPlaceLoop, geluInPlaceWithGrad, geluInPlaceWithGradLoop } from "../js/gelu.js";

const on = process.env.CHAINRULE_SIMD !== "0";
afterEach(() => setSimdEnabled(on));

function exactGelu(x: number): [number, number] {
  const cdf = 0.5 * (1 + erfAccurate(x * Math.SQRT1_2)), pdf = Math.exp(-0.5 * x * x) / Math.sqrt(2 * Math.PI);
  return [x * cdf, cdf + x * pdf];
}


/** Values for one length: a spread over (−10, 10), plus the specials. */
function inputs(n: number): Float32Array {
  const specials = [NaN, Infinity, -Infinity, 1e30, -1e30, 8, -8, 7.9999995, -7.9999995, 0, -0, 4, -4, 5.6, -5.6, 3.4e38, -3.4e38, 1e-30];
  return Float32Array.from({ length: n }, (_, i) => (i % 7 === 3 ? specials[(i * 5) % specials.length] : Math.sin(i * 12.9898) * 10));
}

describe.runIf(on)("WebAssembly SIMD GELU (simd/gelu.ts)", () => {
  it("is available and switches off", () => {
    expect(simdGelu(new Float32Array(4), 4)).toBe(true);
    setSimdEnabled(false);
    const h = new Float32Array(4);
    expect(simdGelu(h, 4)).toBe(false);
    expect(simdGeluWithGrad(h, h.slice(), 4)).toBe(false);
  });

  it("matches the exact GELU and gelu' on a dense grid at least as closely as PyTorch's float32 GELU", () => {
    const n = 40001;
    const v = Float32Array.from({ length: n }, (_, i) => -10 + i * 5e-4);
    const h = v.slice(), d = new Float32Array(n), h2 = v.slice();
    expect(simdGeluWithGrad(h, d, n)).toBe(true);
    expect(simdGelu(h2, n)).toBe(true);
    let eh = 0, ed = 0;
    for (let i = 0; i < n; i++) {
      const [g, dg] = exactGelu(v[i]);
      eh = Math.max(eh, Math.abs(h[i] - g) / Math.max(1, Math.abs(v[i])));
      ed = Math.max(ed, Math.abs(d[i] - dg));
      expect(h2[i]).toBe(h[i]);
    }
    // PyTorch 1.13's CPU GELU on this grid (float32 in, exact in float64): 1.50e-7 and 2.25e-7.
    // Ours (float32 lanes, erfc through φ's exp): 8.1e-8 and 1.68e-7. No worse than PyTorch's:
    expect(eh).toBeLessThan(1.5e-7);
    expect(ed).toBeLessThan(2e-7);
  });

  it("agrees with the TypeScript table loops at odd lengths, NaN, ±Inf and large |x|", () => {
    for (const n of [1, 3, 5, 6, 7, 8, 9, 17, 1001, 4096 + 5, 4096 + 8, 3 * 4096]) {
      const v = inputs(n);
      const hs = v.slice(), ds = new Float32Array(n).fill(123), hj = v.slice(), dj = new Float32Array(n);
      const fs = v.slice(), fj = v.slice();
      expect(simdGeluWithGrad(hs, ds, n)).toBe(true);
      geluInPlaceWithGradLoop(hj, dj, n);
      expect(simdGelu(fs, n)).toBe(true);
      geluInPlaceLoop(fj, n);
      for (let i = 0; i < n; i++) {
        if (Number.isNaN(v[i])) {
          expect(hs[i]).toBeNaN();
          expect(ds[i]).toBeNaN();
          expect(fs[i]).toBeNaN();
          continue;
        }
        if (hs[i] !== hj[i]) expect(Math.abs(hs[i] - hj[i])).toBeLessThanOrEqual(3e-7 * Math.max(1, Math.abs(v[i])));
        expect(Math.abs(ds[i] - dj[i])).toBeLessThanOrEqual(3e-7);
        expect(fs[i]).toBe(hs[i]);
        if (Math.abs(v[i]) >= 8) {
          // outside the table: exactly the TypeScript results (v or 0; 1 or 0)
          expect(hs[i]).toBe(hj[i]);
          expect(ds[i]).toBe(dj[i]);
        }
      }
    }
  });

  it("leaves the floats past n untouched, whatever the length's remainder by the kernel's 8-float step", () => {
    for (const n of [1, 2, 3, 4, 5, 6, 7, 9, 4096 + 3]) {
      const h = inputs(n + 16), d = new Float32Array(n + 16).fill(7), f = h.slice(), tail = Array.from(h.subarray(n));
      expect(simdGeluWithGrad(h, d, n)).toBe(true);
      expect(simdGelu(f, n)).toBe(true);
      expect(Array.from(h.subarray(n))).toEqual(tail);
      expect(Array.from(f.subarray(n))).toEqual(tail);
      expect(Array.from(d.subarray(n))).toEqual(new Array(16).fill(7));
    }
  });

  it("is what geluInPlaceWithGrad / geluInPlace run, and the table loops run with SIMD off", () => {
    const v = inputs(1001);
    const a = v.slice(), da = new Float32Array(1001), b = v.slice(), db = new Float32Array(1001);
    geluInPlaceWithGrad(a, da, 1001);
    simdGeluWithGrad(b, db, 1001);
    expect(Array.from(a)).toEqual(Array.from(b));
    expect(Array.from(da)).toEqual(Array.from(db));
    setSimdEnabled(false);
    const c = v.slice(), dc = new Float32Array(1001), e = v.slice(), de = new Float32Array(1001);
    geluInPlaceWithGrad(c, dc, 1001);
    geluInPlaceWithGradLoop(e, de, 1001);
    expect(Array.from(c)).toEqual(Array.from(e));
    expect(Array.from(dc)).toEqual(Array.from(de));
    const f = v.slice(), g = v.slice();
    geluInPlace(f, 1001);
    geluInPlaceLoop(g, 1001);
    expect(Array.from(f)).toEqual(Array.from(g));
  });
});
