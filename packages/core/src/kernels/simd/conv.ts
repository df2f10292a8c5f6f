/**
 * The convolution's data movement in WebAssembly SIMD: im2col for stride 1 and the padded
 * channel-major layout of the shifted convolution (nchwToPadded / paddedToNchw), the same values
 * as js/conv.ts's loops. One kernel, a strided row copier (v128 groups, then the tail; nothing past
 * a row touched), run over whole tensors copied into the scratch memory's growable end (memory.ts).
 */
import { I32, V128, funcBody, funcType, get, i32const, set, tee } from "./asm.js";
import { addTo, decrementLoop, fadd, i32x4splat, igt, laneIdx, ld, st, vand } from "./codegen.js";
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

/**
 * unfold(M, XP, C, KH, KW, OH, QUADS, ISTEP, JSTEP, ROWB, OWB, PLANEB, TAIL) and fold (the same
 * arguments) walk the column matrix M of a stride-1 convolution over a padded image XP (C planes
 * PLANEB bytes apart, rows ROWB bytes apart) in row order c, i, j, oh: matrix row (c, i, j, oh) is
 * OW floats (OWB bytes) at a pointer that only grows, and its window starts in XP at plane c,
 * row oh, shifted by i·ISTEP + j·JSTEP bytes. A row is QUADS = ⌈OW/4⌉ vectors, the last holding
 * TAIL (1–4) of the row's floats:
 *  - unfold copies XP → M whole vectors: the last one's spill lands on the next matrix row, which
 *    is written after it, or past the matrix's end; the reads past a window stay in its padded row.
 *  - fold adds M → XP (the adjoint, summing overlapping windows in the loop's order). The last
 *    vector's spill lanes add +0 (the matrix vector is masked): the sums never hold −0, so
 *    those floats keep their bits.
 * All counts ≥ 1; the padded rows leave 4·QUADS floats from any window's start.
 */
function windowRowsFn(fold: boolean) {
  const [M, XP, C, KH, KW, OH, QUADS, ISTEP, JSTEP, ROWB, OWB, PLANEB, TAIL] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
  const [c, i, j, oh, q, sc, si, sj, s, m, sq, mq] = [13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24];
  const mask = 25; // v128: lanes below TAIL
  /** do { body } while (--counter), counter = count ≥ 1. */
  const loop = (count: number[], counter: number, body: number[]) => [...count, ...set(counter), 0x03, 0x40, ...body, ...decrementLoop(counter), 0x0b];
  const step = [...addTo(sq, i32const(16)), ...addTo(mq, i32const(16))];
  const addInto = (masked: boolean) => st(sq, [...ld(sq), ...ld(mq), ...(masked ? [...get(mask), ...vand] : []), ...fadd]);
  const row = fold
    ? [
      // QUADS - 1 whole vectors (maybe none), then the masked last one
      0x02, 0x40, ...get(QUADS), ...i32const(1), 0x6b, ...tee(q), 0x45, 0x0d, 0,
      0x03, 0x40, ...addInto(false), ...step, ...decrementLoop(q), 0x0b, 0x0b,
      ...addInto(true),
    ]
    : loop(get(QUADS), q, [...st(mq, ld(sq)), ...step]);
  const code = [
    ...get(TAIL), ...i32x4splat, ...laneIdx, ...igt, ...set(mask),
    ...get(M), ...set(m), ...get(XP), ...set(sc),
    ...loop(get(C), c, [
      ...get(sc), ...set(si),
      ...loop(get(KH), i, [
        ...get(si), ...set(sj),
        ...loop(get(KW), j, [
          ...get(sj), ...set(s),
          ...loop(get(OH), oh, [
            ...get(s), ...set(sq), ...get(m), ...set(mq),
            ...row,
            ...addTo(s, get(ROWB)), ...addTo(m, get(OWB)),
          ]),
          ...addTo(sj, get(JSTEP)),
        ]),
        ...addTo(si, get(ISTEP)),
      ]),
      ...addTo(sc, get(PLANEB)),
    ]),
    0x0b,
  ];
  return { type: funcType(new Array(13).fill(I32)), code: funcBody([[12, I32], [1, V128]], code) };
}

type CopyRows = (src: number, dst: number, planes: number, rows: number, G: number, tail: number, sRowB: number, dRowB: number, sPlaneB: number, dPlaneB: number) => void;
type WindowRows = (matrix: number, padded: number, C: number, kh: number, kw: number, OH: number, quads: number, iStepB: number, jStepB: number, rowB: number, owB: number, planeB: number, tail: number) => void;
const family = wasmFamily<{ copyRows: CopyRows; unfold: WindowRows; fold: WindowRows }>(() => [
  [copyRowsFn(), "copyRows"], [windowRowsFn(false), "unfold"], [windowRowsFn(true), "fold"],
]);

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
 * The padded image of a stride-1 convolution as im2col and col2im stage it: C planes of
 * Hp × Wp floats, the image at (ph, pw), and a right margin wide enough for the window rows'
 * whole vectors (⌈OW/4⌉·4 floats from any column offset j·dw).
 */
function paddedGeometry(g: Conv2dGeometry) {
  const { C, H, W, kh, kw, ph, pw, dh, dw, OW } = g;
  const quads = Math.ceil(OW / 4);
  const Hp = H + 2 * ph, Wp = Math.max(W + 2 * pw, (kw - 1) * dw + 4 * quads);
  const P = Hp * Wp;
  return { quads, Wp, P, padded: C * P, windowArgs: (C: number) => [C, kh, kw, g.OH, quads, 4 * dh * Wp, 4 * dw, 4 * Wp, 4 * OW, 4 * P, OW - 4 * (quads - 1)] as const };
}

/**
 * js/conv.ts im2col in WebAssembly for stride 1 (any padding, dilation): the image goes into the
 * scratch memory with one memcpy, into a zeroed padded copy there (one copyRows call), and from
 * it into the column matrix (one unfold call: a window row is a run of whole vectors, the zeros
 * of the padding included, so nothing is tested per float); the rows come out with one memcpy
 * (or one per row when `ldc` spreads them). False (nothing touched) where SIMD is off, the
 * stride is not 1, or the image does not fit.
 */
export function simdIm2col(col: Float32Array, colOff: number, ldc: number, x: Float32Array, xOff: number, g: Conv2dGeometry): boolean {
  const { C, H, W, ph, pw, sh, sw, OH, OW } = g;
  const f = family();
  const img = C * H * W, L = OH * OW, K = C * g.kh * g.kw;
  if (f === null || sh !== 1 || sw !== 1 || L === 0 || img === 0) return false;
  const { Wp, P, padded, windowArgs } = paddedGeometry(g);
  if (!bigScratch(f.mem, img + padded + K * L + 256)) return false;
  const e = f.fn, X0 = BIG0, XP0 = after(X0 + img), Q0 = after(XP0 + padded), m = f.mem.f32;
  m.set(x.subarray(xOff, xOff + img), X0);
  m.fill(0, XP0, XP0 + padded);
  e.copyRows(4 * X0, 4 * (XP0 + ph * Wp + pw), C, H, W >> 2, W & 3, 4 * W, 4 * Wp, 4 * H * W, 4 * P);
  e.unfold(4 * Q0, 4 * XP0, ...windowArgs(C));
  if (ldc === L) col.set(m.subarray(Q0, Q0 + K * L), colOff);
  else for (let r = 0; r < K; r++) col.set(m.subarray(Q0 + r * L, Q0 + (r + 1) * L), colOff + r * ldc);
  return true;
}

/**
 * js/conv.ts col2im in WebAssembly for stride 1: the columns go into the scratch memory (one
 * memcpy, or one per row when `ldc` spreads them), are summed into a zeroed padded image there
 * (one fold call, in the loop's order: the same sums, bit for bit), and the image comes out of the
 * padding (one copyRows call) with one memcpy. False (nothing touched) as simdIm2col.
 */
export function simdCol2im(dx: Float32Array, xOff: number, col: Float32Array, colOff: number, ldc: number, g: Conv2dGeometry): boolean {
  const { C, H, W, ph, pw, sh, sw, OH, OW } = g;
  const f = family();
  const img = C * H * W, L = OH * OW, K = C * g.kh * g.kw;
  if (f === null || sh !== 1 || sw !== 1 || L === 0 || img === 0) return false;
  const { Wp, P, padded, windowArgs } = paddedGeometry(g);
  if (!bigScratch(f.mem, K * L + padded + img + 256)) return false;
  const e = f.fn, Q0 = BIG0, XP0 = after(Q0 + K * L), X0 = after(XP0 + padded), m = f.mem.f32;
  if (ldc === L) m.set(col.subarray(colOff, colOff + K * L), Q0);
  else for (let r = 0; r < K; r++) m.set(col.subarray(colOff + r * ldc, colOff + r * ldc + L), Q0 + r * L);
  m.fill(0, XP0, XP0 + padded);
  e.fold(4 * Q0, 4 * XP0, ...windowArgs(C));
  e.copyRows(4 * (XP0 + ph * Wp + pw), 4 * X0, C, H, W >> 2, W & 3, 4 * Wp, 4 * W, 4 * P, 4 * H * W);
  dx.set(m.subarray(X0, X0 + img), xOff);
  return true;
}
