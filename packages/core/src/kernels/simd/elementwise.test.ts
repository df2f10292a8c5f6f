import { afterEach, describe, expect, it } from "vitest";
import { simdAdd, simdMul, simdRelu, simdReluBackward } from "./elementwise.js";
import { setSimdEnabled } from "./switch.js";
import { accumulate, mul as jsMul, reluBackward, reluForward } from "../js/elementwise.js";

const on = process.env.CHAINRULE_SIMD !== "0";
afterEach(() => setSimdEnabled(on));

/** Values for one length: a spread over (−10, 10), plus the specials. */
function inputs(n: number): Float32Array {
  const specials = [NaN, Infinity, -Infinity, 1e30, -1e30, 8, -8, 7.9999995, -7.9999995, 0, -0, 4, -4, 5.6, -5.6, 3.4e38, -3.4e38, 1e-30];
  return Float32Array.from({ length: n }, (_, i) => (i % 7 === 3 ? specials[(i * 5) % specials.length] : Math.sin(i * 12.9898) * 10));
}

describe.runIf(on)("WebAssembly SIMD mul and add (simd/elementwise.ts)", () => {
  it("equal the float32 loops bit for bit at odd lengths, in place too, and touch nothing past n", () => {
    for (const n of [1, 3, 4, 4095, 4096, 4097, 3 * 4096 + 5]) {
      const a = inputs(n + 3), b = Float32Array.from({ length: n + 3 }, (_, i) => Math.cos(i * 0.37) * 3);
      const mul = new Float32Array(n + 3).fill(7), add = new Float32Array(n + 3).fill(7);
      expect(simdMul(mul, a, b, n)).toBe(true);
      expect(simdAdd(add, a, b, n)).toBe(true);
      for (let i = 0; i < n; i++) {
        expect(mul[i]).toBe(Math.fround(a[i] * b[i]));
        expect(add[i]).toBe(Math.fround(a[i] + b[i]));
      }
      for (let i = n; i < n + 3; i++) expect([mul[i], add[i]]).toEqual([7, 7]);
      const inPlace = a.slice();
      simdAdd(inPlace, inPlace, b, n); // out aliasing a: the engine's dst += src
      expect(inPlace.subarray(0, n)).toEqual(add.subarray(0, n));
    }
  });

  it("are what the js backend's mul and accumulate run: the same bits as their loops (SIMD off)", () => {
    const bits = (a: Float32Array) => Array.from(new Int32Array(a.buffer, a.byteOffset, a.length));
    for (const n of [5, 1023, 1024, 4097]) {
      const a = inputs(n), b = Float32Array.from({ length: n }, (_, i) => Math.cos(i * 0.37) * 3);
      const run = () => {
        const m = new Float32Array(n), s = a.slice();
        jsMul(m, a, b, n);
        accumulate(s, b);
        return [bits(m), bits(s)];
      };
      const withSimd = run();
      setSimdEnabled(false);
      const loops = run();
      setSimdEnabled(true);
      expect(withSimd).toEqual(loops);
    }
  });
});

describe.runIf(on)("WebAssembly SIMD ReLU (simd/elementwise.ts)", () => {
  it("gives the branch-free loops' bits (NaN payloads, -0, ±Inf) forward and backward, and is what they run from 1024 floats", () => {
    for (const n of [1, 5, 1024, 4096 + 3, 3 * 4096]) {
      const x = inputs(n), xb = new Int32Array(x.buffer);
      for (let i = 0; i < n; i += 11) xb[i] = 0xffc00000 | 0; // negative-signed NaNs
      for (let i = 5; i < n; i += 13) x[i] = -0;
      const dout = Float32Array.from({ length: n }, (_, i) => [2, NaN, Infinity, -3, -0][i % 5]);
      const fs = new Float32Array(n + 2).fill(9), bs = new Float32Array(n + 2).fill(9);
      expect(simdRelu(fs, x, n)).toBe(true);
      expect(simdReluBackward(bs, dout, x, n)).toBe(true);
      setSimdEnabled(false); // the bit loops
      const fj = new Float32Array(n), bj = new Float32Array(n);
      reluForward(fj, x);
      reluBackward(bj, dout, x);
      setSimdEnabled(true);
      expect(new Int32Array(fs.buffer, 0, n)).toEqual(new Int32Array(fj.buffer));
      expect(new Int32Array(bs.buffer, 0, n)).toEqual(new Int32Array(bj.buffer));
      expect([fs[n], fs[n + 1], bs[n], bs[n + 1]]).toEqual([9, 9, 9, 9]);
      const via = new Float32Array(n);
      reluForward(via, x); // dispatches to SIMD from 1024 floats: same bits either way
      expect(new Int32Array(via.buffer)).toEqual(new Int32Array(fj.buffer));
    }
  });
});
