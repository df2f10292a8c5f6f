import { setSimdEnabled } from "@chainrule/core";
import { registerSimdMemory, sharedMemory } from "@chainrule/core/internal";
import { afterAll, beforeEach, describe, expect, it } from "vitest";
import { type CombineKernels, combineHosts } from "./reduce.js";

/** Deterministic values in (−1, 1), with NaN, ±Inf, ±0, a subnormal and float32's largest finite value sprinkled in. */
function values(n: number, seed: number): Float32Array {
  const special = [NaN, Infinity, -Infinity, -0, 0, 1e-45, 3.4028234663852886e38, -3.4028234663852886e38];
  const out = new Float32Array(n);
  let s = seed;
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) % 2147483648;
    out[i] = s % 13 === 0 ? special[s % special.length] : (s / 2147483648) * 2 - 1;
  }
  return out;
}

const bits = (a: Float32Array) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));

describe("combineHosts: the SIMD kernel in place against the loop", () => {
  // The SIMD kernel is compared with the loop, so it is turned on even under CHAINRULE_SIMD=0.
  beforeEach(() => setSimdEnabled(true));
  afterAll(() => setSimdEnabled(process.env.CHAINRULE_SIMD !== "0"));

  const weights: Record<number, number[]> = {
    2: [0.375, 0.625],
    3: [0.2, 0.3, 0.5],
    5: [0.1, 0.35, 0, 0.3, 0.25], // a host without rows: weight 0, so its NaN and Inf still make NaN
  };

  for (const H of [2, 3, 5]) {
    it(`${H} hosts: the same bits for every length 0–19 and 1001, at unaligned offsets, with NaN, ±Inf and ±0`, () => {
      const w = weights[H], maxN = 1001, stride = maxN + 3, allAt = 1, outAt = 3;
      const mem = sharedMemory(4 * (outAt + maxN + allAt + H * stride) + 8 * H + 256);
      const kernels = registerSimdMemory(mem);
      expect(kernels).not.toBeNull();
      // Floats 1… hold the output, then the hosts' values; the weights at the end (8-byte aligned).
      const out = new Float32Array(mem.buffer, 4, outAt + maxN);
      const all = new Float32Array(mem.buffer, 4 * (2 + outAt + maxN), allAt + H * stride);
      const wAt = Math.ceil((all.byteOffset + 4 * all.length) / 8) * 8;
      const simd: CombineKernels = { kernels: kernels!, weights: new Float64Array(mem.buffer, wAt, H) };
      const plainAll = new Float32Array(all.length), plainOut = new Float32Array(out.length);
      for (const n of [...Array.from({ length: 20 }, (_, i) => i), maxN]) {
        all.set(values(all.length, 7 * n + H));
        plainAll.set(all);
        out.fill(42);
        plainOut.fill(42);
        combineHosts(out, outAt, all, stride, allAt, n, w, simd);
        combineHosts(plainOut, outAt, plainAll, stride, allAt, n, w);
        expect(bits(out), `n = ${n}`).toEqual(bits(plainOut));
      }
      // The loop's float64 sum rounded once, checked at one element against a sum written out.
      all.set(Float32Array.from({ length: all.length }, (_, i) => 1 + i / 3));
      combineHosts(out, outAt, all, stride, allAt, 5, w, simd);
      let want = 0;
      for (let h = 0; h < H; h++) want += w[h] * all[h * stride + allAt + 4];
      expect(out[outAt + 4]).toBe(Math.fround(want));
    });
  }

  it("two hosts: w0·a + w1·b keeps −0 (the loop for more hosts starts from +0)", () => {
    const mem = sharedMemory(4096), kernels = registerSimdMemory(mem)!;
    const all = new Float32Array(mem.buffer, 0, 8), out = new Float32Array(mem.buffer, 64, 4);
    const simd: CombineKernels = { kernels, weights: new Float64Array(mem.buffer, 128, 3) };
    all.set([-0, 0, -0, 1, -0, -0, 0, -1]);
    combineHosts(out, 0, all, 4, 0, 4, [0.5, 0.5], simd);
    expect(Array.from(out, (v) => Object.is(v, -0))).toEqual([true, false, false, false]);
    expect(Array.from(out)).toEqual([-0, 0, 0, 0]);
  });

  it("runs the loop where the operands are not in the kernels' memory, or SIMD is off", () => {
    const mem = sharedMemory(4096), kernels = registerSimdMemory(mem)!;
    const simd: CombineKernels = { kernels, weights: new Float64Array(mem.buffer, 0, 2) };
    const all = Float32Array.of(1, 2, 3, 10, 20, 30), out = new Float32Array(3);
    combineHosts(out, 0, all, 3, 0, 3, [0.25, 0.75], simd);
    expect(Array.from(out)).toEqual([7.75, 15.5, 23.25]);
    setSimdEnabled(false);
    expect(registerSimdMemory(sharedMemory(4096))).toBeNull();
  });
});
