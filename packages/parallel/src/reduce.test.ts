import { decodeHalf, setSimdEnabled } from "@chainrule/core";
import { registerSimdMemory, sharedMemory } from "@chainrule/core/internal";
import { afterAll, beforeEach, describe, expect, it } from "vitest";
import { type CombineKernels, combineHostHalves, combineHosts, reduceRange } from "./reduce.js";

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

/**
 * The bits of each value; a NaN as "NaN": which operand's payload a sum of two NaNs keeps is the
 * JIT's choice in JavaScript (it may swap an addition's operands), so only NaN-ness is compared.
 */
const bits = (a: Float32Array) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length), (b, i) => (Number.isNaN(a[i]) ? "NaN" : b));

describe("reduceRange: the SIMD kernels in place against the loop", () => {
  // The SIMD kernels are compared with the loop, so they are turned on even under CHAINRULE_SIMD=0.
  beforeEach(() => setSimdEnabled(true));
  afterAll(() => setSimdEnabled(process.env.CHAINRULE_SIMD !== "0"));

  const weights: Record<number, number[]> = {
    2: [0.375, 0.625], // reduce2
    3: [0.2, 0.3, 0.5], // reduceK
    4: [0.25, 0, 0.5, 0.25], // a rank without rows: weight 0, skipped (its NaN does not spread)
  };

  for (const W of [2, 3, 4]) {
    it(`${W} slots: the same bits for every range of length 0–19 and 1001, at unaligned offsets, with NaN, ±Inf and ±0; Σ grad² alike`, () => {
      const P = 1013, stride = P + 3; // slots stride floats apart, as a memory layout spaces them
      const mem = sharedMemory(4 * (1 + P + W * stride) + 8 * W + 256), kernels = registerSimdMemory(mem)!;
      expect(kernels).not.toBeNull();
      const g = new Float32Array(mem.buffer, 4, P); // float 1: an odd address
      const slotsAt = 4 * (2 + P), slots = Array.from({ length: W }, (_, k) => new Float32Array(mem.buffer, slotsAt + 4 * k * stride, P));
      const w = new Float64Array(mem.buffer, Math.ceil((slotsAt + 4 * W * stride) / 8) * 8, W);
      w.set(weights[W]);
      const plainSlots = slots.map((s) => new Float32Array(P)), plainG = new Float32Array(P), plainW = Float64Array.from(w);
      for (const n of [...Array.from({ length: 20 }, (_, i) => i), 1001]) {
        const from = 5 + (n % 3);
        slots.forEach((s, k) => { s.set(values(P, 11 * n + k)); plainSlots[k].set(s); });
        g.fill(42);
        plainG.fill(42);
        const ss = reduceRange(g, slots, w, from, from + n, true, kernels);
        const plainSs = reduceRange(plainG, plainSlots, plainW, from, from + n, true);
        expect(bits(g), `n = ${n}`).toEqual(bits(plainG));
        expect(Object.is(ss, plainSs) || (Number.isNaN(ss) && Number.isNaN(plainSs)), `n = ${n}: Σ grad²`).toBe(true);
      }
      // The kernels wrote the range: the loop's float64 sum rounded once, at one element written out.
      slots.forEach((s, k) => s.fill(1 + k / 3));
      g.fill(0);
      reduceRange(g, slots, w, 0, 8, false, kernels);
      let want = 0;
      for (let k = 0; k < W; k++) if (w[k] !== 0) want += w[k] * slots[k][3];
      expect(g[3]).toBe(Math.fround(want));
    });
  }

  it("runs the loop where the slots are not evenly spaced in the kernels' memory, or the weights of 3 slots lie elsewhere", () => {
    const mem = sharedMemory(4096), kernels = registerSimdMemory(mem)!;
    const g = new Float32Array(mem.buffer, 0, 4), at = (floats: number) => new Float32Array(mem.buffer, 4 * floats, 4);
    const calls: string[] = [];
    const spy = { ...kernels, reduce2: (...a: Parameters<typeof kernels.reduce2>) => { calls.push("reduce2"); kernels.reduce2(...a); },
      reduceK: (...a: Parameters<typeof kernels.reduceK>) => { calls.push("reduceK"); kernels.reduceK(...a); } };
    const fill = (slots: Float32Array[]) => slots.forEach((s, k) => s.set([k + 1, 2 * (k + 1), 3 * (k + 1), 4 * (k + 1)]));
    const even = [at(16), at(32), at(48)], uneven = [at(16), at(32), at(64)];
    fill(even);
    reduceRange(g, even, new Float64Array(mem.buffer, 512, 3).fill(0.5), 0, 4, false, spy);
    expect(Array.from(g)).toEqual([3, 6, 9, 12]);
    reduceRange(g, even.slice(0, 2), Float64Array.of(0.5, 0.5), 0, 4, false, spy); // two slots: weights as arguments
    expect(Array.from(g)).toEqual([1.5, 3, 4.5, 6]);
    expect(calls).toEqual(["reduceK", "reduce2"]);
    fill(uneven);
    reduceRange(g, uneven, new Float64Array(mem.buffer, 512, 3).fill(0.5), 0, 4, false, spy);
    reduceRange(g, even, Float64Array.of(0.5, 0.5, 0.5), 0, 4, false, spy);
    reduceRange(g, [new Float32Array(4).fill(2), even[1]], Float64Array.of(0.5, 0.5), 0, 4, false, spy);
    expect(Array.from(g)).toEqual([2, 3, 4, 5]);
    expect(calls).toEqual(["reduceK", "reduce2"]);
  });
});

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

describe("combineHostHalves: 16-bit values widened and combined in one SIMD pass, against decode + loop", () => {
  beforeEach(() => setSimdEnabled(true));
  afterAll(() => setSimdEnabled(process.env.CHAINRULE_SIMD !== "0"));

  /** Every 16-bit pattern appears (NaNs, ±Inf, ±0, subnormals), shuffled by a seed. */
  function halvesOf(n: number, seed: number): Uint16Array {
    const out = new Uint16Array(n);
    let s = seed;
    for (let i = 0; i < n; i++) {
      s = (s * 1103515245 + 12345) % 2147483648;
      out[i] = i < 65536 ? (i * 40503 + seed) & 0xffff : s & 0xffff;
    }
    return out;
  }

  for (const format of ["bf16", "fp16"] as const) {
    for (const [H, w] of [[2, [0.375, 0.625]], [3, [0.2, 0.3, 0.5]], [5, [0.1, 0.35, 0, 0.3, 0.25]]] as const) {
      it(`${format}, ${H} hosts: the same bits for every length 0–19 and 65,539, at unaligned offsets`, () => {
        const maxN = 65539, stride = maxN + 5, allAt = 3, outAt = 1;
        const mem = sharedMemory(4 * (outAt + maxN) + 2 * (allAt + H * stride) + 8 * H + 256), kernels = registerSimdMemory(mem)!;
        const out = new Float32Array(mem.buffer, 4, outAt + maxN);
        const halves = new Uint16Array(mem.buffer, 2 + 4 * (2 + outAt + maxN), allAt + H * stride);
        const wAt = Math.ceil((halves.byteOffset + 2 * halves.length) / 8) * 8;
        const simd: CombineKernels = { kernels, weights: new Float64Array(mem.buffer, wAt, H) };
        const plainOut = new Float32Array(out.length);
        for (const n of [...Array.from({ length: 20 }, (_, i) => i), maxN]) {
          halves.set(halvesOf(halves.length, n + H));
          out.fill(42);
          plainOut.fill(42);
          combineHostHalves(format, out, outAt, halves, stride, allAt, n, w, simd);
          combineHostHalves(format, plainOut, outAt, halves.slice(), stride, allAt, n, w);
          expect(bits(out), `n = ${n}`).toEqual(bits(plainOut));
        }
        // The plain path is decodeHalf then the loop.
        const n = 9, wide = new Float32Array(H * n);
        for (let h = 0; h < H; h++) decodeHalf(format, wide.subarray(h * n, (h + 1) * n), halves.subarray(h * stride + allAt, h * stride + allAt + n));
        combineHosts(plainOut, 0, wide, n, 0, n, w);
        combineHostHalves(format, out, 0, halves, stride, allAt, n, w, simd);
        expect(bits(out.subarray(0, n))).toEqual(bits(plainOut.subarray(0, n)));
      });
    }
  }
});
