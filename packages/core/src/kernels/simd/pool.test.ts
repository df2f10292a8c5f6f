import { afterEach, describe, expect, it } from "vitest";
import { simdMaxPool2dBackward, simdMaxPool2x2, simdMaxPool2x2Relu, simdMaxPool2x2ReluBackward } from "./pool.js";
import { setSimdEnabled } from "./switch.js";
import { maxPool2d, maxPool2dBackward, maxPool2x2, maxPool2x2Relu, maxPool2x2ReluBackward } from "../js/conv.js";

/** A float array's bit patterns, to compare results exactly (NaN payloads and -0 included). */
const bitsOf = (a: Float32Array) => new Int32Array(a.buffer, a.byteOffset, a.length);

const on = process.env.CHAINRULE_SIMD !== "0";
afterEach(() => setSimdEnabled(on));

describe.runIf(on)("WebAssembly SIMD 2x2 max pool + ReLU (simd/pool.ts)", () => {
  /** The loop's and the SIMD kernel's outputs and taps for one source layout; `nanAt` plants a NaN. */
  function both(N: number, C: number, OH: number, OW: number, Hp: number, Wp: number, channelMajor: boolean, nanAt = -1) {
    const PH = OH >> 1, PW = OW >> 1, P = Hp * Wp;
    const sN = channelMajor ? P : C * P, sC = channelMajor ? N * P : P;
    // halves and small integers: many ties, zeros of both signs, negatives
    const src = Float32Array.from({ length: N * C * P }, (_, i) => (i % 11 === 0 ? 0 : i % 13 === 0 ? -0 : Math.round(Math.sin(i * 1.7) * 4) / 2));
    if (nanAt >= 0) src[nanAt] = NaN;
    const outJ = new Float32Array(N * C * PH * PW + 4).fill(9), tapJ = new Uint8Array(outJ.length).fill(9);
    const outS = outJ.slice(), tapS = tapJ.slice();
    setSimdEnabled(false);
    maxPool2x2Relu(outJ, tapJ, 2, src, 0, N, C, PH, PW, sN, sC, Wp);
    setSimdEnabled(true);
    const took = simdMaxPool2x2Relu(outS, tapS, 2, src, 0, N, C, PH, PW, sN, sC, Wp);
    const viaLoop = outJ.slice(), tapViaLoop = tapJ.slice();
    maxPool2x2Relu(viaLoop, tapViaLoop, 2, src, 0, N, C, PH, PW, sN, sC, Wp); // dispatches to SIMD
    return { took, outJ, tapJ, outS, tapS, viaLoop, tapViaLoop };
  }

  it("gives the loop's bits and taps (first maximum on ties, tap 4 at +0) for both layouts and odd sizes", () => {
    for (const [N, C, OH, OW, Hp, Wp, channelMajor] of [[4, 3, 28, 28, 30, 30, true], [4, 5, 14, 14, 16, 16, true], [3, 4, 7, 7, 9, 9, false], [2, 3, 28, 28, 28, 28, false], [5, 2, 13, 11, 13, 11, false], [2, 2, 2, 2, 2, 2, false]] as const) {
      const r = both(N, C, OH, OW, Hp, Wp, channelMajor);
      expect(r.took).toBe(true);
      expect(bitsOf(r.outS)).toEqual(bitsOf(r.outJ)); // untouched past the end too (9s)
      expect(r.tapS).toEqual(r.tapJ);
      expect(bitsOf(r.viaLoop)).toEqual(bitsOf(r.outJ));
      expect(r.tapViaLoop).toEqual(r.tapJ);
    }
  });

  it("backward: the loop's scattered gradients and bias sums, bit for bit, for both layouts and odd sizes", () => {
    for (const [N, C, OH, OW, Hp, Wp, channelMajor] of [[4, 3, 28, 28, 30, 30, true], [4, 5, 14, 14, 16, 16, true], [3, 4, 7, 7, 9, 9, false], [5, 2, 13, 11, 13, 11, false], [2, 2, 2, 2, 2, 2, false]] as const) {
      const PH = OH >> 1, PW = OW >> 1, P = Hp * Wp, PL = PH * PW;
      const sN = channelMajor ? P : C * P, sC = channelMajor ? N * P : P;
      const r = both(N, C, OH, OW, Hp, Wp, channelMajor);
      const gout = Float32Array.from({ length: N * C * PL + 2 }, (_, i) => (i % 9 === 0 ? -0 : Math.cos(i * 0.77) * 3));
      const dJ = new Float32Array(N * C * P + 8), dS = dJ.slice(), bJ = Float32Array.from({ length: C }, (_, c) => c / 3), bS = bJ.slice();
      setSimdEnabled(false);
      maxPool2x2ReluBackward(dJ, 0, gout, r.tapJ, 2, N, C, PH, PW, sN, sC, Wp, bJ);
      setSimdEnabled(true);
      expect(simdMaxPool2x2ReluBackward(dS, 0, gout, r.tapJ, 2, N, C, PH, PW, sN, sC, Wp, bS)).toBe(true);
      expect(bitsOf(dS)).toEqual(bitsOf(dJ));
      expect(bitsOf(bS)).toEqual(bitsOf(bJ));
      expect(dJ.some((v) => v !== 0)).toBe(true);
    }
  });

  it("declines a source holding a NaN, so the loop returns it (tap 4)", () => {
    const r = both(4, 3, 28, 28, 30, 30, true, 500);
    expect(r.took).toBe(false);
    expect(bitsOf(r.viaLoop)).toEqual(bitsOf(r.outJ));
    expect(r.tapViaLoop).toEqual(r.tapJ);
    expect(r.outJ.some((v) => Number.isNaN(v))).toBe(true);
  });
});

describe.runIf(on)("WebAssembly SIMD 2x2 max pool (simd/pool.ts)", () => {
  it("gives the loop's outputs and argmax: ties to the first, NaN propagates, -0, odd sizes, many planes", () => {
    for (const [P, H, W] of [[8, 28, 28], [16, 14, 14], [5, 7, 7], [3, 5, 9], [40, 28, 28], [1, 2, 2]] as const) {
      const OH = H >> 1, OW = W >> 1;
      const x = Float32Array.from({ length: P * H * W }, (_, i) => (i % 17 === 0 ? NaN : i % 11 === 0 ? -0 : Math.round(Math.sin(i * 1.3) * 4) / 2));
      const [o1, o2] = [new Float32Array(P * OH * OW + 3).fill(9), new Float32Array(P * OH * OW + 3).fill(9)];
      const [a1, a2] = [new Int32Array(o1.length).fill(9), new Int32Array(o1.length).fill(9)];
      expect(simdMaxPool2x2(o1, a1, x, P, H, W, OH, OW)).toBe(true);
      setSimdEnabled(false);
      maxPool2x2(o2, a2, x, P, H, W, OH, OW);
      setSimdEnabled(true);
      expect(new Int32Array(o1.buffer)).toEqual(new Int32Array(o2.buffer));
      expect(a1).toEqual(a2);
    }
  });
});

describe.runIf(on)("WebAssembly max-pool backward scatter (simd/pool.ts)", () => {
  it("gives the loop's bits: overlapping windows (stride 1) add up, all of dx is written", () => {
    for (const [P, H, W, k, st] of [[40, 28, 28, 2, 2], [7, 9, 9, 3, 1], [5, 7, 7, 3, 2]] as const) {
      const OH = Math.floor((H - k) / st) + 1, OW = Math.floor((W - k) / st) + 1;
      const g = { H, W, kh: k, kw: k, sh: st, sw: st, ph: 0, pw: 0, dh: 1, dw: 1, OH, OW };
      const x = Float32Array.from({ length: P * H * W }, (_, i) => Math.sin(i * 1.3));
      const out = new Float32Array(P * OH * OW), arg = new Int32Array(out.length);
      maxPool2d(out, arg, x, P, g);
      const dout = Float32Array.from({ length: out.length }, (_, i) => Math.cos(i * 0.7));
      const d1 = new Float32Array(P * H * W + 3).fill(5), d2 = d1.slice();
      expect(simdMaxPool2dBackward(d1, dout, arg, P, H * W, OH * OW)).toBe(true);
      setSimdEnabled(false);
      maxPool2dBackward(d2, dout, arg, P, H * W, OH * OW);
      setSimdEnabled(true);
      expect(new Int32Array(d1.buffer)).toEqual(new Int32Array(d2.buffer));
    }
  });
});
