/**
 * The convolution's data movement in WebAssembly SIMD: im2col for stride 1 and the padded
 * channel-major layout of the shifted convolution (nchwToPadded / paddedToNchw), the same values
 * as js/conv.ts's loops. One kernel, a strided row copier (v128 groups, then the tail; nothing past
 * a row touched), run over whole tensors copied into the scratch memory's growable end (memory.ts).
 */
import { I32, funcBody, funcType, get, i32const, set } from "./asm.js";
import { addTo, decrementLoop, ld, st } from "./codegen.js";
import { BIG0, after, bigScratch, wasmFamily } from "./memory.js";
import type { Conv2dGeometry } from "../kernels.js";

/**
 * copyRows(SRC, DST, planes, rows, G, tail, sRowB, dRowB, sPlaneB, dPlaneB): copies `planes` planes
 * of `rows` rows of 4·G + tail floats from SRC to DST (row and plane strides in bytes), four floats
 * a v128, then the tail one by one; nothing past a row's last float is read or written.
 */
function copyRowsFn() {
  const [SRC, DST, PLANES, ROWS, G, TAIL, SROW, DROW, SPLANE, DPLANE] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
  const [r, s, d, j, rs, rd] = [10, 11, 12, 13, 14, 15];
  /** `count` times `body` (skipped when count is 0), counting down j. */
  const repeat = (count: number, body: number[]) => [
    0x02, 0x40, ...get(count), 0x45, 0x0d, 0, ...get(count), ...set(j),
    0x03, 0x40, ...body, ...decrementLoop(j), 0x0b, 0x0b,
  ];
  const code = [
    0x02, 0x40, ...get(PLANES), 0x45, 0x0d, 0, ...get(ROWS), 0x45, 0x0d, 0,
    0x03, 0x40,
    ...get(ROWS), ...set(r), ...get(SRC), ...set(rs), ...get(DST), ...set(rd),
    0x03, 0x40,
    ...get(rs), ...set(s), ...get(rd), ...set(d),
    ...repeat(G, [...st(d, ld(s)), ...addTo(s, i32const(16)), ...addTo(d, i32const(16))]),
    ...repeat(TAIL, [...get(d), ...get(s), 0x28, 2, 0, 0x36, 2, 0, ...addTo(s, i32const(4)), ...addTo(d, i32const(4))]), // i32 load/store
    ...addTo(rs, get(SROW)), ...addTo(rd, get(DROW)),
    ...decrementLoop(r), 0x0b,
    ...addTo(SRC, get(SPLANE)), ...addTo(DST, get(DPLANE)),
    ...decrementLoop(PLANES), 0x0b,
    0x0b, 0x0b,
  ];
  return { type: funcType(new Array(10).fill(I32)), code: funcBody([[6, I32]], code) };
}

type CopyRows = (src: number, dst: number, planes: number, rows: number, G: number, tail: number, sRowB: number, dRowB: number, sPlaneB: number, dPlaneB: number) => void;
const family = wasmFamily<{ copyRows: CopyRows }>(() => [[copyRowsFn(), "copyRows"]]);

/**
 * js/conv.ts nchwToPadded in WebAssembly: x copied into the scratch memory whole (one memcpy),
 * each channel's rows copied into zeroed padded planes there (a wasm loop per channel, over the
 * images), and the padded tensor copied out whole (zeros included, which the caller's zeroed dst
 * holds anyway). Whole tensors, because a memcpy per plane costs ~0.4 µs (`subarray` + `set`)
 * and a JavaScript loop ~3 ns a float. False where SIMD is off or the tensors do not fit.
 */
export function simdNchwToPadded(dst: Float32Array, x: Float32Array, N: number, C: number, H: number, W: number, top: number, left: number, Hp: number, Wp: number): boolean {
  return paddedCopy(true, dst, x, N, C, H, W, top, left, Hp, Wp);
}

/** js/conv.ts paddedToNchw in WebAssembly: the same copies the other way (src's padding is never read). */
export function simdPaddedToNchw(x: Float32Array, src: Float32Array, N: number, C: number, H: number, W: number, top: number, left: number, Hp: number, Wp: number): boolean {
  return paddedCopy(false, x, src, N, C, H, W, top, left, Hp, Wp);
}

/** Both directions between x (N, C, H, W) and the padded (C, N, Hp, Wp) holding x's planes at (top, left). */
function paddedCopy(
  toPadded: boolean, out: Float32Array, inp: Float32Array, N: number, C: number, H: number, W: number, top: number, left: number, Hp: number, Wp: number,
): boolean {
  const f = family();
  const HW = H * W, P = Hp * Wp, dense = N * C * HW, padded = N * C * P;
  if (f === null || dense === 0 || top + H > Hp || left + W > Wp || !bigScratch(f.mem, dense + padded + 64)) return false;
  const e = f.fn;
  const [inLen, outLen] = toPadded ? [dense, padded] : [padded, dense];
  const I0 = BIG0, O0 = after(I0 + inLen), m = f.mem.f32;
  m.set(inp.subarray(0, inLen), I0);
  if (toPadded) m.fill(0, O0, O0 + padded);
  const [D0, P0] = toPadded ? [I0, O0] : [O0, I0]; // where the dense and the padded tensor sit
  for (let c = 0; c < C; c++) {
    // planes (n, c) of the dense tensor, C·HW apart ↔ planes (c, n) of the padded one, P apart
    const d = 4 * (D0 + c * HW), p = 4 * (P0 + c * N * P + top * Wp + left);
    if (toPadded) e.copyRows(d, p, N, H, W >> 2, W & 3, 4 * W, 4 * Wp, 4 * C * HW, 4 * P);
    else e.copyRows(p, d, N, H, W >> 2, W & 3, 4 * Wp, 4 * W, 4 * P, 4 * C * HW);
  }
  out.set(m.subarray(O0, O0 + outLen));
  return true;
}

/**
 * js/conv.ts im2col in WebAssembly for stride 1 (any padding, dilation): the image goes into the
 * scratch memory with one memcpy, the column matrix there is zeroed, and each column row
 * (c, i, j) gets its in-image part from one copyRows call (every valid output row at once); the
 * rows come out with one memcpy (or one per row when `ldc` spreads them). The loop writes
 * ~3 ns a float; the first conv of the MNIST CNNs (1 channel, 3×3) unfolds each image into
 * 9 × 784 floats, forward and again in backward. False (nothing touched) where SIMD is off, the
 * stride is not 1, or the image does not fit.
 */
export function simdIm2col(col: Float32Array, colOff: number, ldc: number, x: Float32Array, xOff: number, g: Conv2dGeometry): boolean {
  const { C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW } = g;
  const f = family();
  const img = C * H * W, L = OH * OW, K = C * kh * kw;
  if (f === null || sh !== 1 || sw !== 1 || L === 0 || !bigScratch(f.mem, img + K * L + 128)) return false;
  const e = f.fn, X0 = BIG0, Q0 = after(X0 + img), m = f.mem.f32;
  m.set(x.subarray(xOff, xOff + img), X0);
  m.fill(0, Q0, Q0 + K * L);
  for (let i = 0; i < kh; i++) {
    // output rows whose input row oh - ph + i·dh lies in [0, H)
    const ohLo = Math.max(0, ph - i * dh), ohHi = Math.min(OH, H + ph - i * dh);
    if (ohHi <= ohLo) continue;
    for (let j = 0; j < kw; j++) {
      const lo = Math.max(0, pw - j * dw), hi = Math.min(OW, W + pw - j * dw), len = hi - lo;
      if (len <= 0) continue;
      for (let c = 0; c < C; c++) {
        const src = X0 + c * H * W + (ohLo - ph + i * dh) * W + (lo - pw + j * dw);
        const dst = Q0 + ((c * kh + i) * kw + j) * L + ohLo * OW + lo;
        e.copyRows(4 * src, 4 * dst, 1, ohHi - ohLo, len >> 2, len & 3, 4 * W, 4 * OW, 0, 0);
      }
    }
  }
  if (ldc === L) col.set(m.subarray(Q0, Q0 + K * L), colOff);
  else for (let r = 0; r < K; r++) col.set(m.subarray(Q0 + r * L, Q0 + (r + 1) * L), colOff + r * ldc);
  return true;
}
