import { afterEach, describe, expect, it } from "vitest";
import { simdCausalSoftmax } from "./attention.js";
import { setSimdEnabled } from "./switch.js";
import { causalSoftmax, causalSoftmaxBackward, causalSoftmaxBackwardLoop, causalSoftmaxLoop } from "../js/attention.js";

const on = process.env.CHAINRULE_SIMD !== "0";
afterEach(() => setSimdEnabled(on));

describe.runIf(on)("WebAssembly SIMD causal softmax (simd/attention.ts)", () => {
  const closeArr = (a: Float32Array, b: Float32Array, tol: number) => {
    for (let i = 0; i < a.length; i++) {
      if (Number.isNaN(b[i])) expect(a[i], `at ${i}`).toBeNaN();
      else if (a[i] !== b[i]) expect(Math.abs(a[i] - b[i]), `at ${i}`).toBeLessThanOrEqual(tol);
    }
  };

  it("forward and backward agree with the TypeScript loops (T = 4, 8, 64, 68; an offset batch; wide rows)", () => {
    for (const [H, T, pb] of [[1, 4, 0], [3, 8, 5], [4, 64, 0], [2, 68, 3 * 68 * 68]] as const) {
      const TT = T * T, len = pb + H * TT;
      const S = Float32Array.from({ length: len }, (_, i) => Math.sin(i * 0.37) * (i % 11 === 0 ? 40 : 5));
      const P1 = S.slice(), P2 = S.slice();
      causalSoftmax(P1, pb, H, T, null, P1);
      causalSoftmaxLoop(P2, pb, H, T, null, P2);
      closeArr(P1, P2, 3e-7);
      for (let i = 0; i < pb; i++) expect(P1[i]).toBe(S[i]); // outside the batch element: untouched
      const G = Float32Array.from({ length: H * TT }, (_, i) => Math.cos(i * 0.11) * 3);
      const D1 = G.slice(), D2 = G.slice();
      causalSoftmaxBackward(D1, P2, pb, H, T, null);
      causalSoftmaxBackwardLoop(D2, P2, pb, H, T, null);
      closeArr(D1, D2, 1e-6);
    }
  });

  it("NaN and ±Inf scores, and a fully masked row, come out as in the loops; T not a multiple of 4 falls back", () => {
    const H = 1, T = 8;
    const S = Float32Array.from({ length: T * T }, (_, i) => (i % 5) - 2);
    S[2 * T + 1] = NaN; // row 2 all NaN
    S[3 * T + 2] = Infinity; // row 3: NaN (Inf − Inf) like the loop
    S[4 * T + 0] = -Infinity; // row 4: that weight 0
    for (let j = 0; j <= 5; j++) S[5 * T + j] = -Infinity; // row 5: fully masked → NaN
    S[6 * T + 7] = NaN; // beyond the diagonal of row 6: ignored
    const P1 = S.slice(), P2 = S.slice();
    expect(simdCausalSoftmax(P1, 0, H, T)).toBe(true);
    causalSoftmaxLoop(P2, 0, H, T, null, P2);
    closeArr(P1, P2, 3e-7);
    expect(P1[4 * T]).toBe(0);
    expect(simdCausalSoftmax(new Float32Array(36), 0, 1, 6)).toBe(false);
  });

  it("NaN, ±Inf and a fully masked row with the odd value in a whole quad or in the diagonal's quad (T = 16)", () => {
    const T = 16;
    const S = Float32Array.from({ length: T * T }, (_, i) => Math.sin(i * 0.7) * 4);
    S[9 * T + 1] = NaN; // row 9: in a whole quad → NaN row
    S[10 * T + 9] = NaN; // row 10: in the diagonal's quad → NaN row
    S[11 * T + 2] = Infinity; // row 11: a whole quad → NaN (Inf − Inf)
    S[12 * T + 12] = Infinity; // row 12: the diagonal itself
    for (let j = 0; j <= 7; j++) S[13 * T + j] = -Infinity; // row 13: two whole quads of weight 0
    for (let j = 0; j <= 14; j++) S[14 * T + j] = -Infinity; // row 14: fully masked → NaN
    S[7 * T + 8] = NaN; // past the diagonal of row 7: ignored
    const P1 = S.slice(), P2 = S.slice();
    expect(simdCausalSoftmax(P1, 0, 1, T)).toBe(true);
    causalSoftmaxLoop(P2, 0, 1, T, null, P2);
    closeArr(P1, P2, 3e-7);
    for (let j = 0; j <= 7; j++) expect(P1[13 * T + j]).toBe(0);
    expect(P1[7 * T + 8]).toBe(0);
    const G = Float32Array.from({ length: T * T }, (_, i) => Math.cos(i));
    const D1 = G.slice(), D2 = G.slice();
    causalSoftmaxBackward(D1, P2, 0, 1, T, null);
    causalSoftmaxBackwardLoop(D2, P2, 0, 1, T, null);
    closeArr(D1, D2, 1e-6);
  });
});
