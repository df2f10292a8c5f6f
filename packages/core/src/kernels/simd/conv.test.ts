import { afterEach, describe, expect, it } from "vitest";
import { simdCol2im, simdIm2col, simdNchwToPadded, simdPaddedToNchw } from "./conv.js";
import { setSimdEnabled } from "./switch.js";
import type { Conv2dGeometry } from "../kernels.js";
import { col2im, col2imLoop, im2col, im2colLoop, nchwToPadded, paddedToNchw } from "../js/conv.js";

/** A float array's bit patterns, to compare results exactly (NaN payloads and -0 included). */
const bitsOf = (a: Float32Array) => new Int32Array(a.buffer, a.byteOffset, a.length);

const on = process.env.CHAINRULE_SIMD !== "0";
afterEach(() => setSimdEnabled(on));

describe.runIf(on)("WebAssembly padded layout copies (simd/conv.ts)", () => {
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
      setSimdEnabled(false);
      nchwToPadded(d2, x, N, C, H, W, top, left, Hp, Wp);
      setSimdEnabled(true);
      expect(sameBits(d1, d2)).toBe("equal");
      // Back, from a padded tensor whose padding holds garbage (never read).
      const src = new Float32Array(C * N * P).fill(-7);
      const [b1, b2] = [new Float32Array(n), new Float32Array(n)];
      setSimdEnabled(false);
      nchwToPadded(src, x, N, C, H, W, top, left, Hp, Wp); // the loop writes the windows only
      setSimdEnabled(true);
      expect(simdPaddedToNchw(b1, src, N, C, H, W, top, left, Hp, Wp)).toBe(true);
      setSimdEnabled(false);
      paddedToNchw(b2, src, N, C, H, W, top, left, Hp, Wp);
      setSimdEnabled(true);
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

describe.runIf(on)("WebAssembly im2col (simd/conv.ts)", () => {
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
  it("col2im gives the loop's sums, bit for bit, on the same geometries (columns with NaN and −0 included)", () => {
    const cases: [Conv2dGeometry, number][] = [
      [geom(1, 28, 28, 3, 3, 1, 1, 1), 3],
      [geom(32, 14, 14, 3, 3, 1, 1, 1), 2], // the CNN's second conv
      [geom(3, 9, 7, 3, 3, 1, 1, 1), 1],
      [geom(2, 10, 11, 3, 5, 1, 2, 1, 2), 2],
      [geom(4, 6, 6, 3, 3, 1, 0, 0), 2], // OW 4: whole vectors only
      [geom(2, 5, 5, 3, 3, 1, 4, 3), 1],
      [geom(16, 8, 8, 1, 1, 1, 0, 0), 1],
      [geom(3, 7, 5, 2, 2, 1, 1, 0), 4],
      [geom(2, 9, 1, 3, 1, 1, 1, 0), 2], // OW 1: one float a row
    ];
    for (const [g, images] of cases) {
      const img = g.C * g.H * g.W, L = g.OH * g.OW, K = g.C * g.kh * g.kw, ld = images * L;
      const col = Float32Array.from({ length: K * ld + 9 }, (_, i) => Math.sin(i * 0.37) * 3 - 0.5);
      col[9 + 2] = -0;
      if (g.C === 3 && g.H === 9) col[9 + 5] = NaN;
      const a = new Float32Array(images * img + 6).fill(NaN), b = new Float32Array(images * img + 6).fill(NaN);
      for (let n = 0; n < images; n++) {
        expect(simdCol2im(a, 6 + n * img, col, 9 + n * L, ld, g)).toBe(true);
        col2imLoop(b, 6 + n * img, col, 9 + n * L, ld, g);
      }
      expect(bitsOf(a)).toEqual(bitsOf(b)); // the same sums, and nothing outside the images written (NaN stays)
    }
  });
  it("col2im declines a strided convolution and dispatches to the loop", () => {
    const g2 = geom(2, 9, 9, 3, 3, 2, 1, 1);
    expect(simdCol2im(new Float32Array(2 * 81), 0, new Float32Array(2 * 9 * 25), 0, 25, g2)).toBe(false);
    for (const g of [geom(8, 14, 14, 3, 3, 1, 1, 1), g2]) {
      const L = g.OH * g.OW, K = g.C * g.kh * g.kw;
      const col = Float32Array.from({ length: K * L }, (_, i) => Math.cos(i * 0.3));
      const a = new Float32Array(g.C * g.H * g.W), b = new Float32Array(g.C * g.H * g.W);
      col2im(a, 0, col, 0, L, g);
      col2imLoop(b, 0, col, 0, L, g);
      expect(bitsOf(a)).toEqual(bitsOf(b));
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
