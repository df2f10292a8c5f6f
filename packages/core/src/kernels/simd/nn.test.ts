import { afterEach, describe, expect, it } from "vitest";
import { setSimdNnEnabled, simdGelu, simdGeluWithGrad, simdLayerNorm, simdLayerNormBackward, simdNnAvailable } from "./nn.js";
import { causalSoftmax, causalSoftmaxBackward, causalSoftmaxBackwardLoop, causalSoftmaxLoop } from "../js/attention.js";
import { simdAdd, simdCausalSoftmax, simdMul, simdRelu, simdReluBackward } from "./nn.js";
import { reluBackward, reluForward } from "../js/elementwise.js";
import type { Conv2dGeometry } from "../kernels.js";
import { batchNormApply, batchNormBackward, batchNormStats, im2col, im2colLoop, maxPool2d, maxPool2dBackward, maxPool2x2, maxPool2x2Relu, maxPool2x2ReluBackward, nchwToPadded, paddedToNchw } from "../js/conv.js";
import { simdBatchNormApply, simdBatchNormBackward, simdBatchNormStats, simdIm2col, simdMaxPool2dBackward, simdMaxPool2x2, simdMaxPool2x2Relu, simdMaxPool2x2ReluBackward, simdNchwToPadded, simdPaddedToNchw } from "./nn.js";
import { layerNorm, layerNormAffineJs, layerNormBackward, lnBackwardAffineJs } from "../js/nn.js";
import { erfAccurate, geluInPlace, geluInPlaceLoop, geluInPlaceWithGrad, geluInPlaceWithGradLoop } from "../js/gelu.js";

/** A float array's bit patterns, to compare results exactly (NaN payloads and -0 included). */
const bitsOf = (a: Float32Array) => new Int32Array(a.buffer, a.byteOffset, a.length);

const on = process.env.CHAINRULE_SIMD !== "0" && process.env.CHAINRULE_PARALLEL_SIMD !== "0";
afterEach(() => setSimdNnEnabled(on));

function exactGelu(x: number): [number, number] {
  const cdf = 0.5 * (1 + erfAccurate(x * Math.SQRT1_2)), pdf = Math.exp(-0.5 * x * x) / Math.sqrt(2 * Math.PI);
  return [x * cdf, cdf + x * pdf];
}

/** Values for one length: a spread over (−10, 10), plus the specials. */
function inputs(n: number): Float32Array {
  const specials = [NaN, Infinity, -Infinity, 1e30, -1e30, 8, -8, 7.9999995, -7.9999995, 0, -0, 4, -4, 5.6, -5.6, 3.4e38, -3.4e38, 1e-30];
  return Float32Array.from({ length: n }, (_, i) => (i % 7 === 3 ? specials[(i * 5) % specials.length] : Math.sin(i * 12.9898) * 10));
}

describe.runIf(on)("WebAssembly SIMD mul and add (kernels/simd/nn.ts)", () => {
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
});

describe.runIf(on)("WebAssembly SIMD ReLU (kernels/simd/nn.ts)", () => {
  it("gives the branch-free loops' bits (NaN payloads, -0, ±Inf) forward and backward, and is what they run from 1024 floats", () => {
    for (const n of [1, 5, 1024, 4096 + 3, 3 * 4096]) {
      const x = inputs(n), xb = new Int32Array(x.buffer);
      for (let i = 0; i < n; i += 11) xb[i] = 0xffc00000 | 0; // negative-signed NaNs
      for (let i = 5; i < n; i += 13) x[i] = -0;
      const dout = Float32Array.from({ length: n }, (_, i) => [2, NaN, Infinity, -3, -0][i % 5]);
      const fs = new Float32Array(n + 2).fill(9), bs = new Float32Array(n + 2).fill(9);
      expect(simdRelu(fs, x, n)).toBe(true);
      expect(simdReluBackward(bs, dout, x, n)).toBe(true);
      setSimdNnEnabled(false); // the bit loops
      const fj = new Float32Array(n), bj = new Float32Array(n);
      reluForward(fj, x);
      reluBackward(bj, dout, x);
      setSimdNnEnabled(true);
      expect(new Int32Array(fs.buffer, 0, n)).toEqual(new Int32Array(fj.buffer));
      expect(new Int32Array(bs.buffer, 0, n)).toEqual(new Int32Array(bj.buffer));
      expect([fs[n], fs[n + 1], bs[n], bs[n + 1]]).toEqual([9, 9, 9, 9]);
      const via = new Float32Array(n);
      reluForward(via, x); // dispatches to SIMD from 1024 floats: same bits either way
      expect(new Int32Array(via.buffer)).toEqual(new Int32Array(fj.buffer));
    }
  });
});

describe.runIf(on)("WebAssembly SIMD 2x2 max pool + ReLU (kernels/simd/nn.ts)", () => {
  /** The loop's and the SIMD kernel's outputs and taps for one source layout; `nanAt` plants a NaN. */
  function both(N: number, C: number, OH: number, OW: number, Hp: number, Wp: number, channelMajor: boolean, nanAt = -1) {
    const PH = OH >> 1, PW = OW >> 1, P = Hp * Wp;
    const sN = channelMajor ? P : C * P, sC = channelMajor ? N * P : P;
    // halves and small integers: many ties, zeros of both signs, negatives
    const src = Float32Array.from({ length: N * C * P }, (_, i) => (i % 11 === 0 ? 0 : i % 13 === 0 ? -0 : Math.round(Math.sin(i * 1.7) * 4) / 2));
    if (nanAt >= 0) src[nanAt] = NaN;
    const outJ = new Float32Array(N * C * PH * PW + 4).fill(9), tapJ = new Uint8Array(outJ.length).fill(9);
    const outS = outJ.slice(), tapS = tapJ.slice();
    setSimdNnEnabled(false);
    maxPool2x2Relu(outJ, tapJ, 2, src, 0, N, C, PH, PW, sN, sC, Wp);
    setSimdNnEnabled(true);
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
      setSimdNnEnabled(false);
      maxPool2x2ReluBackward(dJ, 0, gout, r.tapJ, 2, N, C, PH, PW, sN, sC, Wp, bJ);
      setSimdNnEnabled(true);
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

describe.runIf(on)("WebAssembly SIMD 2x2 max pool (kernels/simd/nn.ts)", () => {
  it("gives the loop's outputs and argmax: ties to the first, NaN propagates, -0, odd sizes, many planes", () => {
    for (const [P, H, W] of [[8, 28, 28], [16, 14, 14], [5, 7, 7], [3, 5, 9], [40, 28, 28], [1, 2, 2]] as const) {
      const OH = H >> 1, OW = W >> 1;
      const x = Float32Array.from({ length: P * H * W }, (_, i) => (i % 17 === 0 ? NaN : i % 11 === 0 ? -0 : Math.round(Math.sin(i * 1.3) * 4) / 2));
      const [o1, o2] = [new Float32Array(P * OH * OW + 3).fill(9), new Float32Array(P * OH * OW + 3).fill(9)];
      const [a1, a2] = [new Int32Array(o1.length).fill(9), new Int32Array(o1.length).fill(9)];
      expect(simdMaxPool2x2(o1, a1, x, P, H, W, OH, OW)).toBe(true);
      setSimdNnEnabled(false);
      maxPool2x2(o2, a2, x, P, H, W, OH, OW);
      setSimdNnEnabled(true);
      expect(new Int32Array(o1.buffer)).toEqual(new Int32Array(o2.buffer));
      expect(a1).toEqual(a2);
    }
  });
});

describe.runIf(on)("WebAssembly max-pool backward scatter (kernels/simd/nn.ts)", () => {
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
      setSimdNnEnabled(false);
      maxPool2dBackward(d2, dout, arg, P, H * W, OH * OW);
      setSimdNnEnabled(true);
      expect(new Int32Array(d1.buffer)).toEqual(new Int32Array(d2.buffer));
    }
  });
});

describe.runIf(on)("WebAssembly SIMD batch norm (kernels/simd/nn.ts)", () => {
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
      setSimdNnEnabled(false);
      batchNormStats(m2, v2, x, N, C, HW);
      setSimdNnEnabled(true);
      near(m1, m2, 1e-6);
      near(v1, v2, 1e-6);
      const rstd = v2.map((v) => 1 / Math.sqrt(v + 1e-5));
      const [o1, o2] = [new Float32Array(n), new Float32Array(n)];
      expect(simdBatchNormApply(o1, x, m2, rstd, weight, bias, N, C, HW)).toBe(true);
      setSimdNnEnabled(false);
      batchNormApply(o2, x, m2, rstd, weight, bias, N, C, HW);
      setSimdNnEnabled(true);
      expect(bitsOf(o1)).toEqual(bitsOf(o2));
      for (const training of [true, false]) {
        const [dx1, dx2] = [new Float32Array(n), new Float32Array(n)];
        const [dw1, db1, dw2, db2] = [0, 0, 0, 0].map(() => new Float32Array(C));
        expect(simdBatchNormBackward(dx1, dw1, db1, dout, x, m2, rstd, weight, N, C, HW, training)).toBe(true);
        setSimdNnEnabled(false);
        batchNormBackward(dx2, dw2, db2, dout, x, m2, rstd, weight, N, C, HW, training);
        setSimdNnEnabled(true);
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

describe.runIf(on)("WebAssembly padded layout copies (kernels/simd/nn.ts)", () => {
  /**
   * Bit patterns, compared by a loop: toEqual on the largest case's 2M-element arrays took ~35 s
   * of this test (near the 60 s timeout under load). Equal arrays give "equal"; else the first
   * differing index and both values, so a failure still says where.
   */
  const sameBits = (a: Float32Array, b: Float32Array): string => {
    if (a.length !== b.length) return `lengths ${a.length} and ${b.length}`;
    const ia = new Int32Array(a.buffer, a.byteOffset, a.length), ib = new Int32Array(b.buffer, b.byteOffset, b.length);
    for (let i = 0; i < ia.length; i++) if (ia[i] !== ib[i]) return `first difference at ${i}: ${a[i]} vs ${b[i]}`;
    return "equal";
  };
  it("nchwToPadded and paddedToNchw give the loops' values: widths with and without a tail, offsets, a tensor that grows the memory", () => {
    const shapes = [
      [2, 3, 5, 5, 1, 1, 7, 7], // tail 1
      [3, 2, 6, 6, 1, 2, 8, 9], // tail 2, uneven offsets
      [2, 4, 7, 3, 0, 0, 7, 3], // W < 4: tail only, no padding
      [4, 8, 14, 14, 1, 1, 16, 16], // the CNN's second conv
      [1, 1, 4, 8, 2, 0, 9, 8], // whole groups, padding above only
      [64, 32, 30, 30, 1, 1, 32, 32], // 1.8M + 2.1M floats: past the memory's first size
    ];
    for (const [N, C, H, W, top, left, Hp, Wp] of shapes) {
      const n = N * C * H * W, P = Hp * Wp;
      const x = Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37) * 3 + i / n);
      const [d1, d2] = [new Float32Array(C * N * P), new Float32Array(C * N * P)];
      expect(simdNchwToPadded(d1, x, N, C, H, W, top, left, Hp, Wp)).toBe(true);
      setSimdNnEnabled(false);
      nchwToPadded(d2, x, N, C, H, W, top, left, Hp, Wp);
      setSimdNnEnabled(true);
      expect(sameBits(d1, d2)).toBe("equal");
      // Back, from a padded tensor whose padding holds garbage (never read).
      const src = new Float32Array(C * N * P).fill(-7);
      const [b1, b2] = [new Float32Array(n), new Float32Array(n)];
      setSimdNnEnabled(false);
      nchwToPadded(src, x, N, C, H, W, top, left, Hp, Wp); // the loop writes the windows only
      setSimdNnEnabled(true);
      expect(simdPaddedToNchw(b1, src, N, C, H, W, top, left, Hp, Wp)).toBe(true);
      setSimdNnEnabled(false);
      paddedToNchw(b2, src, N, C, H, W, top, left, Hp, Wp);
      setSimdNnEnabled(true);
      expect(sameBits(b1, b2)).toBe("equal");
      expect(sameBits(b1, x)).toBe("equal");
    }
  });
  it("declines a window that does not fit its plane, and an empty tensor", () => {
    expect(simdNchwToPadded(new Float32Array(64), new Float32Array(16), 1, 1, 4, 4, 2, 1, 5, 5)).toBe(false);
    expect(simdPaddedToNchw(new Float32Array(0), new Float32Array(0), 0, 3, 4, 4, 0, 0, 4, 4)).toBe(false);
  });
  it("is what the kernels run: the conv2d layouts agree with the loops' result", () => {
    // The shifted layout's copies through nchwToPadded/paddedToNchw: a conv's output with SIMD on and off.
    const N = 4, C = 8, H = 14, W = 14, Hp = 16, Wp = 16;
    const x = Float32Array.from({ length: N * C * H * W }, (_, i) => Math.cos(i * 0.11));
    const d = new Float32Array(C * N * Hp * Wp);
    nchwToPadded(d, x, N, C, H, W, 1, 1, Hp, Wp); // dispatches (≥ 4096 values)
    const back = new Float32Array(x.length);
    paddedToNchw(back, d, N, C, H, W, 1, 1, Hp, Wp);
    expect(bitsOf(back)).toEqual(bitsOf(x));
  });
});

describe.runIf(on)("WebAssembly im2col (kernels/simd/nn.ts)", () => {
  /** Conv2dGeometry of a C×H×W image under a kh×kw kernel (stride s, padding p, dilation d). */
  const geom = (C: number, H: number, W: number, kh: number, kw: number, s: number, ph: number, pw: number, d = 1): Conv2dGeometry => {
    const OH = Math.floor((H + 2 * ph - d * (kh - 1) - 1) / s) + 1, OW = Math.floor((W + 2 * pw - d * (kw - 1) - 1) / s) + 1;
    return { C, H, W, kh, kw, sh: s, sw: s, ph, pw, dh: d, dw: d, OH, OW };
  };
  it("gives the loop's values, bit for bit: padding wider than the kernel reaches, dilation, no padding, 1×1, widths with a tail, several images in one matrix", () => {
    const cases: [Conv2dGeometry, number][] = [
      [geom(1, 28, 28, 3, 3, 1, 1, 1), 3], // the MNIST CNNs' first conv, 3 images side by side
      [geom(3, 9, 7, 3, 3, 1, 1, 1), 1],
      [geom(2, 10, 11, 3, 5, 1, 2, 1, 2), 2], // dilation 2, uneven padding
      [geom(4, 6, 6, 3, 3, 1, 0, 0), 2], // no padding
      [geom(2, 5, 5, 3, 3, 1, 4, 3), 1], // padding past the kernel's reach: whole zero rows and columns
      [geom(16, 8, 8, 1, 1, 1, 0, 0), 1], // 1×1
      [geom(3, 7, 5, 2, 2, 1, 1, 0), 4], // W < 4 in the copies
    ];
    for (const [g, images] of cases) {
      const img = g.C * g.H * g.W, L = g.OH * g.OW, K = g.C * g.kh * g.kw, ld = images * L;
      const x = Float32Array.from({ length: images * img + 5 }, (_, i) => Math.sin(i * 0.71) * 2 + 0.25);
      const a = new Float32Array(K * ld + 7).fill(NaN), b = new Float32Array(K * ld + 7).fill(NaN);
      for (let n = 0; n < images; n++) {
        expect(simdIm2col(a, 3 + n * L, ld, x, 5 + n * img, g)).toBe(true);
        im2colLoop(b, 3 + n * L, ld, x, 5 + n * img, g);
      }
      expect(bitsOf(a)).toEqual(bitsOf(b)); // the same values, and nothing outside the rows written (NaN stays)
    }
  });
  it("declines a strided convolution; im2col dispatches and runs the loop then", () => {
    const g2 = geom(2, 9, 9, 3, 3, 2, 1, 1);
    expect(simdIm2col(new Float32Array(2 * 9 * 25), 0, 25, new Float32Array(2 * 81), 0, g2)).toBe(false);
    for (const g of [geom(1, 28, 28, 3, 3, 1, 1, 1), g2]) {
      const L = g.OH * g.OW, K = g.C * g.kh * g.kw;
      const x = Float32Array.from({ length: g.C * g.H * g.W }, (_, i) => Math.cos(i * 0.3));
      const a = new Float32Array(K * L).fill(NaN), b = new Float32Array(K * L).fill(NaN);
      im2col(a, 0, L, x, 0, g);
      im2colLoop(b, 0, L, x, 0, g);
      expect(bitsOf(a)).toEqual(bitsOf(b));
    }
  });
});

describe.runIf(on)("WebAssembly SIMD GELU (kernels/simd/nn.ts)", () => {
  it("is available and switches off", () => {
    expect(simdNnAvailable()).toBe(true);
    setSimdNnEnabled(false);
    expect(simdNnAvailable()).toBe(false);
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
    // Ours (float32 lanes, erfc through φ's exp): 9.0e-8 and 1.62e-7. No worse than PyTorch's:
    expect(eh).toBeLessThan(1.5e-7);
    expect(ed).toBeLessThan(2e-7);
  });

  it("agrees with the TypeScript table loops at odd lengths, NaN, ±Inf and large |x|", () => {
    for (const n of [1, 3, 5, 17, 1001, 4096 + 5, 3 * 4096]) {
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

  it("is what geluInPlaceWithGrad / geluInPlace run, and the table loops run with SIMD off", () => {
    const v = inputs(1001);
    const a = v.slice(), da = new Float32Array(1001), b = v.slice(), db = new Float32Array(1001);
    geluInPlaceWithGrad(a, da, 1001);
    simdGeluWithGrad(b, db, 1001);
    expect(Array.from(a)).toEqual(Array.from(b));
    expect(Array.from(da)).toEqual(Array.from(db));
    setSimdNnEnabled(false);
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

describe.runIf(on)("WebAssembly SIMD layer norm (kernels/simd/nn.ts)", () => {
  const fill = (len: number, f: (i: number) => number) => Float32Array.from({ length: len }, (_, i) => f(i));
  const close = (a: ArrayLike<number>, b: ArrayLike<number>, tol: number) => {
    expect(a.length).toBe(b.length);
    for (let i = 0; i < a.length; i++) {
      if (Number.isNaN(b[i])) expect(a[i]).toBeNaN();
      else if (a[i] !== b[i]) expect(Math.abs(a[i] - b[i])).toBeLessThanOrEqual(tol * Math.max(1, Math.abs(b[i])));
    }
  };

  it("forward and backward agree with the TypeScript loops (several shapes, chunk boundaries, offsets)", () => {
    for (const [rows, n] of [[1, 2], [3, 6], [5, 18], [17, 128], [100, 128], [33, 4096], [2, 1002]] as const) {
      const x = fill(rows * n, (i) => Math.sin(i * 1.7) * 3 + (i % n === 0 ? 40 : 0) + Math.floor(i / n));
      const w = fill(n, (i) => 0.5 + Math.cos(i)), b = fill(n, (i) => Math.sin(i * 0.3));
      const dout = fill(rows * n, (i) => Math.cos(i * 0.61));
      const [o1, o2] = [new Float32Array(rows * n), new Float32Array(rows * n)];
      const [m1, m2, r1, r2] = [0, 0, 0, 0].map(() => new Float32Array(rows));
      expect(simdLayerNorm(o1, m1, r1, x, w, b, rows, n, 1e-5)).toBe(true);
      layerNormAffineJs(o2, m2, r2, x, w, b, rows, n, 1e-5);
      close(o1, o2, 2e-6);
      close(m1, m2, 1e-6);
      close(r1, r2, 1e-6);
      const [dx1, dx2] = [new Float32Array(rows * n), new Float32Array(rows * n)];
      const [aw1, ab1, aw2, ab2] = [0, 0, 0, 0].map(() => Float64Array.from({ length: n }, (_, i) => i * 0.25)); // added to
      expect(simdLayerNormBackward(dx1, aw1, ab1, dout, x, m2, r2, w, rows, n)).toBe(true);
      lnBackwardAffineJs(dx2, aw2, ab2, dout, x, m2, r2, w, rows, n);
      close(dx1, dx2, 2e-6);
      close(aw1, aw2, 1e-9);
      close(ab1, ab2, 1e-9);
    }
  });

  it("propagates NaN and ±Inf like the loops, declines odd widths, and the kernels' entry points use it", () => {
    const rows = 4, n = 8;
    const x = fill(rows * n, (i) => i * 0.1);
    x[3] = NaN;
    x[13] = Infinity;
    x[22] = -Infinity;
    const w = fill(n, () => 1.5), b = fill(n, () => 0.25), dout = fill(rows * n, (i) => (i % 3) - 1);
    const [o1, o2] = [new Float32Array(rows * n), new Float32Array(rows * n)];
    const [m1, m2, r1, r2] = [0, 0, 0, 0].map(() => new Float32Array(rows));
    expect(simdLayerNorm(o1, m1, r1, x, w, b, rows, n, 1e-5)).toBe(true);
    layerNormAffineJs(o2, m2, r2, x, w, b, rows, n, 1e-5);
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
    setSimdNnEnabled(false);
    const without = run();
    for (let k = 0; k < withSimd.length; k++) close(withSimd[k], without[k], 2e-6);
  });
});

describe.runIf(on)("WebAssembly SIMD causal softmax (kernels/simd/nn.ts)", () => {
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
});
