/**
 * Causal attention's softmax without dropout, forward and backward, in WebAssembly SIMD (f32x4)
 * over each score row's first i + 1 entries (ops/attention.ts, through kernels().causalSoftmax).
 * Whole quads run unmasked; a lane mask (i32x4.le_s on lane indices) covers the quad holding the
 * diagonal. exp in base 2 as GELU's (gelu.ts), 0 below 2^−126, so −Inf scores give weight 0 and a
 * fully masked row gives NaN, as the loop (js/attention.ts). Rows of T floats (T a multiple of 4) are
 * copied into the scratch memory (memory.ts) a chunk at a time.
 */
import { F32, I32, V128, funcBody, funcType, get, i32const, set, simd, tee } from "./asm.js";
import { EXP2_POLY, SHIFTER, addTo, beginConsts, bumpBy, cf, constLocals, decrementLoop, estrin, f32bytes, fadd, fmul, fsub, ishl, laneIdx, ld, st, vand, vandnot, vbitselect, zero } from "./codegen.js";
import { A0, B0, BIG0, CHUNK, after, bigScratch, wasmFamily } from "./memory.js";

const pmax = simd(0xeb), flt = simd(0x43), i32x4splat = simd(0x11), ile = simd(0x3d);
/** Lanes 2, 3 to 0, 1 and lane 1 to 0 (for the horizontal max and sum). */
const swapHalves = simd(0x0d, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
const swapPairs = simd(0x0d, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11);
/** The f32 `op` of a vector's four lanes (op: pmax or fadd; v a scratch local). */
const horizontal = (v: number, op: number[]) => [
  ...get(v), ...get(v), ...get(v), ...swapHalves, ...op, ...tee(v), ...get(v), ...get(v), ...swapPairs, ...op, ...simd(0x1f, 0),
];

/**
 * exp(t) in f32x4 for t ≤ 0 (t in local tl; kl, dl and the powers scratch): 2^u, u = t·log2(e), as
 * gelu.ts's: k = round(u) by the shifter, 2^(u − k) by EXP2_POLY, 2^k in the exponent bits;
 * 0 where u < −126 (−Inf gives 0), NaN gives NaN.
 */
function expCode(tl: number, kl: number, dl: number, pows: number[]): number[] {
  return [
    ...get(tl), ...cf(Math.LOG2E), ...fmul, ...tee(tl), ...cf(-126), ...flt, ...set(dl), // u < −126: 0
    ...get(tl), ...cf(-126), ...pmax, ...tee(tl), ...cf(SHIFTER), ...fadd, ...set(kl),
    ...get(tl), ...get(kl), ...cf(SHIFTER), ...fsub, ...fsub, ...set(tl),
    ...estrin(get(tl), EXP2_POLY, pows), ...get(kl), ...i32const(23), ...ishl, ...fmul,
    ...get(dl), ...vandnot,
  ];
}

/** i ← i + 1, back to 0 at T: rows of several heads' blocks in one call. */
const nextRow = (I0: number, T: number) => [...get(I0), ...i32const(1), 0x6a, ...tee(I0), ...get(T), 0x46, 0x04, 0x40, ...i32const(0), ...set(I0), 0x0b];

/**
 * Per row: nq = i/4 + 1 quads hold j ≤ i; the last of them (at `last`) only partly, lanes
 * `msk`. `full` runs over the nq − 1 whole quads (pointer pp, counter q), `lastQuad` once.
 */
function rowQuads(P: number, pp: number, q: number, nq: number, full: number[], lastQuad: number[]): number[] {
  return [
    ...get(P), ...set(pp), ...get(nq), ...i32const(1), 0x6b, ...tee(q),
    0x04, 0x40, 0x03, 0x40, ...full, ...bumpBy(pp, 16), ...decrementLoop(q), 0x0b, 0x0b,
    ...lastQuad,
  ];
}

/**
 * softmax(P, rows, T, i0): rows of T floats (T a multiple of 4) at P, row k holding causal row
 * i = (i0 + k) mod T: its first i + 1 entries ← their softmax (max subtracted, exp, sum, scaled by
 * 1/sum), the rest ← 0. Only the quad holding j = i is masked; the max skips NaN as the loop's
 * comparison does (a NaN score still makes its row NaN through the sum).
 */
function causalSoftmaxFn() {
  const [P, ROWS, T, I0] = [0, 1, 2, 3];
  const [q, pp, nq] = [4, 5, 6];
  const [mx] = [7];
  const [msk, acc, m4, sc] = [8, 9, 10, 11];
  const quadA = [12, 13, 14, 15, 16, 17, 18], quadB = [19, 20, 21, 22, 23, 24, 25]; // t, k, dead, e and three powers each
  beginConsts(26);
  const masked = (x: number[]) => [...x, ...get(msk), ...vand];
  /** P[pp + offset] ← exp(P − m) (with the diagonal's mask when `last`), added into acc. */
  const expQuad = (offset: number, [t, k, dead, e, ...pows]: number[], last = false) => {
    const value = [...ld(pp, offset), ...get(m4), ...fsub, ...set(t), ...expCode(t, k, dead, pows)];
    return [...(last ? masked(value) : value), ...set(e), ...st(pp, get(e), offset), ...get(acc), ...get(e), ...fadd, ...set(acc)];
  };
  const code = [
    0x02, 0x40, 0x03, 0x40,
    ...get(ROWS), 0x45, 0x0d, 1,
    ...get(I0), ...i32const(2), 0x76, ...i32const(1), 0x6a, ...set(nq),
    ...laneIdx, ...get(I0), ...i32const(3), 0x71, ...i32x4splat, ...ile, ...set(msk), // lanes ≤ i mod 4 of the last quad
    // max over j ≤ i (the last quad's lanes past i read as −Inf)
    ...cf(-Infinity), ...set(acc),
    ...rowQuads(P, pp, q, nq,
      [...get(acc), ...ld(pp), ...pmax, ...set(acc)],
      [...get(acc), ...ld(pp), ...cf(-Infinity), ...get(msk), ...vbitselect, ...pmax, ...set(acc)]),
    ...horizontal(acc, pmax), ...set(mx),
    // m = −Inf (all masked) → 0, like the loop
    0x43, ...f32bytes(0), ...get(mx), ...get(mx), 0x43, ...f32bytes(-Infinity), 0x5b, 0x1b, ...simd(0x13), ...set(m4),
    // e = exp(x − m) on j ≤ i, 0 past i; their sum. Two whole quads an iteration (independent work
    // for the CPU to overlap), then the one left, then the diagonal's quad.
    ...zero, ...set(acc), ...get(P), ...set(pp), ...get(nq), ...i32const(1), 0x6b, ...set(q),
    0x02, 0x40, 0x03, 0x40,
    ...get(q), ...i32const(2), 0x48, 0x0d, 1, // q < 2: out
    ...expQuad(0, quadA), ...expQuad(16, quadB),
    ...bumpBy(pp, 32), ...get(q), ...i32const(2), 0x6b, ...set(q),
    0x0c, 0, 0x0b, 0x0b,
    ...get(q), 0x04, 0x40, ...expQuad(0, quadA), ...bumpBy(pp, 16), 0x0b,
    ...expQuad(0, quadA, true),
    ...cf(1), ...horizontal(acc, fadd), ...simd(0x13), ...simd(0xe7), ...set(sc), // 1/sum in every lane
    ...rowQuads(P, pp, q, nq,
      st(pp, [...ld(pp), ...get(sc), ...fmul]),
      st(pp, masked([...ld(pp), ...get(sc), ...fmul]))), // past i: 0 even when 1/sum is NaN
    // zero the quads past i
    ...bumpBy(pp, 16), ...get(T), ...i32const(2), 0x76, ...get(nq), 0x6b, ...set(q),
    0x02, 0x40, ...get(q), 0x45, 0x0d, 0,
    0x03, 0x40,
    ...st(pp, zero),
    ...bumpBy(pp, 16),
    ...decrementLoop(q), 0x0b, 0x0b,
    ...get(pp), ...set(P),
    ...nextRow(I0, T),
    ...get(ROWS), ...i32const(1), 0x6b, ...set(ROWS),
    0x0c, 0, 0x0b, 0x0b, 0x0b,
  ];
  const { init, count } = constLocals();
  return { type: funcType([I32, I32, I32, I32]), code: funcBody([[3, I32], [1, F32], [18 + count, V128]], [...init, ...code]) };
}

/**
 * softmaxBack(D, P, rows, T, i0): per row (causal row i = (i0 + k) mod T), D ← P ⊙ (D − Σ_{j≤i} P·D) on
 * j ≤ i, 0 beyond. P's row at the same offset from P as D's from D.
 */
function causalSoftmaxBackwardFn() {
  const [D, P, ROWS, T, I0] = [0, 1, 2, 3, 4];
  const [q, pd, nq, off] = [5, 6, 7, 8];
  const [msk, acc, dv] = [9, 10, 11];
  const pAt = [...get(pd), ...get(off), 0x6a, ...simd(0x00, 0, 0)]; // P's quad at D's
  const masked = (x: number[]) => [...x, ...get(msk), ...vand];
  const code = [
    ...get(P), ...get(D), 0x6b, ...set(off),
    0x02, 0x40, 0x03, 0x40,
    ...get(ROWS), 0x45, 0x0d, 1,
    ...get(I0), ...i32const(2), 0x76, ...i32const(1), 0x6a, ...set(nq),
    ...laneIdx, ...get(I0), ...i32const(3), 0x71, ...i32x4splat, ...ile, ...set(msk),
    ...zero, ...set(acc),
    ...rowQuads(D, pd, q, nq,
      [...get(acc), ...pAt, ...ld(pd), ...fmul, ...fadd, ...set(acc)],
      [...get(acc), ...masked([...pAt, ...ld(pd), ...fmul]), ...fadd, ...set(acc)]),
    ...horizontal(acc, fadd), ...simd(0x13), ...set(dv),
    ...rowQuads(D, pd, q, nq,
      st(pd, [...pAt, ...ld(pd), ...get(dv), ...fsub, ...fmul]),
      st(pd, masked([...pAt, ...ld(pd), ...get(dv), ...fsub, ...fmul]))),
    ...bumpBy(pd, 16), ...get(T), ...i32const(2), 0x76, ...get(nq), 0x6b, ...set(q),
    0x02, 0x40, ...get(q), 0x45, 0x0d, 0,
    0x03, 0x40,
    ...st(pd, zero),
    ...bumpBy(pd, 16),
    ...decrementLoop(q), 0x0b, 0x0b,
    ...get(pd), ...set(D),
    ...nextRow(I0, T),
    ...get(ROWS), ...i32const(1), 0x6b, ...set(ROWS),
    0x0c, 0, 0x0b, 0x0b, 0x0b,
  ];
  return { type: funcType([I32, I32, I32, I32, I32]), code: funcBody([[4, I32], [3, V128]], code) };
}

type Softmax = (p: number, rows: number, T: number, i0: number) => void;
type SoftmaxBack = (d: number, p: number, rows: number, T: number, i0: number) => void;
const family = wasmFamily<{ softmax: Softmax; softmaxBack: SoftmaxBack }>(() => [[causalSoftmaxFn(), "softmax"], [causalSoftmaxBackwardFn(), "softmaxBack"]]);

/**
 * ops/attention.ts causalSoftmax without dropout: in place over H score matrices (T, T) at
 * P[pb..], row i ← softmax of its first i + 1 entries, zeros after. False (nothing touched)
 * where SIMD is off or T is not a multiple of 4 (or over CHUNK).
 */
export function simdCausalSoftmax(P: Float32Array, pb: number, H: number, T: number): boolean {
  if ((T & 3) !== 0 || T > CHUNK) return false;
  const k = family();
  if (k === null) return false;
  const e = k.fn, m = k.mem.f32, per = Math.floor(CHUNK / T);
  for (let h = 0; h < H; h++) {
    const ph = pb + h * T * T;
    for (let i = 0; i < T; i += per) {
      const c = Math.min(per, T - i), at = ph + i * T, len = c * T;
      m.set(P.subarray(at, at + len), A0);
      e.softmax(4 * A0, c, T, i);
      P.set(m.subarray(A0, A0 + len), at);
    }
  }
  return true;
}

/** ops/attention.ts causalSoftmaxBackward without dropout: dP[0..] ← P ⊙ (dP − Σ P·dP) on j ≤ i, 0 after. */
export function simdCausalSoftmaxBackward(dP: Float32Array, P: Float32Array, pb: number, H: number, T: number): boolean {
  if ((T & 3) !== 0 || T > CHUNK) return false;
  const k = family();
  if (k === null) return false;
  const e = k.fn, m = k.mem.f32, per = Math.floor(CHUNK / T);
  for (let h = 0; h < H; h++) {
    for (let i = 0; i < T; i += per) {
      const c = Math.min(per, T - i), at = h * T * T + i * T, len = c * T;
      m.set(dP.subarray(at, at + len), A0);
      m.set(P.subarray(pb + at, pb + at + len), B0);
      e.softmaxBack(4 * A0, 4 * B0, c, T, i);
      dP.set(m.subarray(A0, A0 + len), at);
    }
  }
  return true;
}

/** Floats of score blocks at most (4 MiB; twice that with P's copy): H·T² up to T 512 with 4 heads, 256 with 16. */
const MAX_BLOCKS = 1 << 20;

/**
 * H heads' T×T score blocks, one after another in the scratch memory, where GEMMs write the scores
 * (or their gradient) through `f32` from `at` and the causal softmax (or its backward) runs in
 * place: no copy in or out of the blocks (kernels().causalAttentionForward / Backward, js/attention.ts).
 */
export interface ScoreBlocks {
  /** The scratch memory's floats; head h's block is f32[at + h·T·T ..][0 .. T·T). */
  f32: Float32Array;
  at: number;
  /** Every block's row i ← softmax of its first i + 1 entries, zeros after. */
  softmax(): void;
  /** With the heads' probabilities at P[pb ..] (copied in): dS ← P ⊙ (dP − Σ_j P·dP) on j ≤ i, zeros after. */
  softmaxBackward(P: Float32Array, pb: number): void;
}

/**
 * The score blocks of H heads of sequences of T (a multiple of 4), in the growable part of the
 * scratch memory (memory.ts BIG0: the scores, then a copy of P for the backward); null where SIMD
 * is off, T does not fit or the blocks would pass MAX_BLOCKS (callers then run the chunked kernels
 * above over P). Read `f32` after this call: growing the memory replaces it.
 */
export function simdScoreBlocks(H: number, T: number): ScoreBlocks | null {
  const len = H * T * T;
  if ((T & 3) !== 0 || T === 0 || len > MAX_BLOCKS) return null;
  const k = family();
  const pAt = after(BIG0 + len);
  if (k === null || !bigScratch(k.mem, pAt + len - BIG0)) return null;
  const e = k.fn, mem = k.mem;
  return {
    f32: mem.f32,
    at: BIG0,
    softmax: () => e.softmax(4 * BIG0, H * T, T, 0),
    softmaxBackward(P, pb) {
      mem.f32.set(P.subarray(pb, pb + len), pAt);
      e.softmaxBack(4 * BIG0, 4 * pAt, H * T, T, 0);
    },
  };
}
