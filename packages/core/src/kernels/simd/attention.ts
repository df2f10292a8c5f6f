/**
 * Causal attention's softmax without dropout, forward and backward, in WebAssembly SIMD (f32x4)
 * over each score row's first i + 1 entries (ops/attention.ts, through kernels().causalSoftmax).
 * Lane masks (i32x4.le_s on lane indices) give the causal range; exp as GELU's (gelu.ts), 0 below
 * −87, so −Inf scores give weight 0 and a fully masked row gives NaN, as the loop (js/attention.ts).
 * Rows of T floats (T a multiple of 4) are copied into the scratch memory (memory.ts) a chunk at a time.
 */
import { F32, I32, V128, funcBody, funcType, get, i32const, set, simd } from "./asm.js";
import {
  EXP_TAYLOR, LN2_HI, LN2_LO, addTo, beginConsts, bumpBy, cf, ci, constLocals, decrementLoop, f32bytes, fadd, fmax, fmul, fnearest, fsub,
  hmax4, horner, hsum4, i32x4splat, iadd, ile, ishl, laneIdx, ld, st, truncSat, vand, vandnot, vbitselect,
} from "./codegen.js";
import { A0, B0, CHUNK, wasmFamily } from "./memory.js";

/**
 * exp(t) in f32x4 for t ≤ 0 (t in local tl, scratch locals kl, ml): as geluFn's, t clamped
 * to ≥ −87 for the polynomial and the result 0 where t < −87 (−Inf gives 0, NaN gives NaN).
 */
function expCode(tl: number, kl: number, ml: number): number[] {
  return [
    ...get(tl), ...cf(-87), ...simd(0x43), ...set(ml), // f32x4.lt
    ...get(tl), ...cf(-87), ...fmax, ...set(tl),
    ...get(tl), ...cf(Math.LOG2E), ...fmul, ...fnearest, ...set(kl),
    ...get(tl), ...get(kl), ...cf(LN2_HI), ...fmul, ...fsub, ...get(kl), ...cf(LN2_LO), ...fmul, ...fsub, ...set(tl),
    ...horner(get(tl), EXP_TAYLOR),
    ...get(kl), ...truncSat, ...ci(127), ...iadd, ...i32const(23), ...ishl, ...fmul,
    ...get(ml), ...vandnot,
  ];
}

/**
 * softmax(P, rows, T, i0): rows of T floats (T a multiple of 4) at P, row k holding causal row
 * i = i0 + k: its first i + 1 entries ← their softmax (max subtracted, exp, sum, scaled by
 * 1/sum), the rest ← 0.
 */
function causalSoftmaxFn() {
  const [P, ROWS, T, I0] = [0, 1, 2, 3];
  const [q, pp, nq] = [4, 5, 6];
  const [mx, sum, inv] = [7, 8, 9];
  const [v, msk, idx, t, k, acc, iv] = [10, 11, 12, 13, 14, 15, 16];
  beginConsts(17);
  const lanes = [...get(idx), ...get(iv), ...ile, ...set(msk)]; // msk: lane index ≤ i
  const code = [
    0x02, 0x40, 0x03, 0x40,
    ...get(ROWS), 0x45, 0x0d, 1,
    ...get(I0), ...i32x4splat, ...set(iv),
    ...get(I0), ...i32const(4), 0x6d, ...i32const(1), 0x6a, ...set(nq), // quads holding j ≤ i: i/4 + 1
    // max over j ≤ i
    ...cf(-Infinity), ...set(acc), ...get(P), ...set(pp), ...laneIdx, ...set(idx), ...get(nq), ...set(q),
    0x03, 0x40,
    ...lanes,
    ...ld(pp), ...cf(-Infinity), ...get(msk), ...vbitselect, ...get(acc), ...simd(0xe9), ...set(acc), // f32x4.max (NaN propagates)
    ...bumpBy(pp, 16), ...get(idx), ...ci(4), ...iadd, ...set(idx),
    ...decrementLoop(q), 0x0b,
    ...hmax4(acc), ...set(mx),
    // m = -Inf (all masked) → 0, like the loop
    0x43, ...f32bytes(0), ...get(mx), ...get(mx), 0x43, ...f32bytes(-Infinity), 0x5b, 0x1b, ...set(mx),
    // e = exp(x − m) on j ≤ i, 0 beyond; sum
    ...simd(0x0c, ...new Array(16).fill(0)), ...set(acc), ...get(P), ...set(pp), ...laneIdx, ...set(idx), ...get(nq), ...set(q),
    0x03, 0x40,
    ...lanes,
    ...ld(pp), ...get(mx), ...simd(0x13), ...fsub, ...set(t),
    ...st(pp, [...expCode(t, k, v), ...get(msk), ...vand]), // and with the mask: beyond i → +0
    ...get(acc), ...ld(pp), ...fadd, ...set(acc),
    ...bumpBy(pp, 16), ...get(idx), ...ci(4), ...iadd, ...set(idx),
    ...decrementLoop(q), 0x0b,
    ...hsum4(acc), ...set(sum),
    0x43, ...f32bytes(1), ...get(sum), 0x95, ...set(inv),
    ...get(P), ...set(pp), ...laneIdx, ...set(idx), ...get(nq), ...set(q),
    0x03, 0x40,
    ...lanes,
    ...st(pp, [...ld(pp), ...get(inv), ...simd(0x13), ...fmul, ...get(msk), ...vand]), // past i: 0 even when 1/sum is NaN
    ...bumpBy(pp, 16), ...get(idx), ...ci(4), ...iadd, ...set(idx),
    ...decrementLoop(q), 0x0b,
    // zero the quads past i
    ...get(T), ...i32const(2), 0x76, ...get(nq), 0x6b, ...set(q),
    0x02, 0x40, ...get(q), 0x45, 0x0d, 0,
    0x03, 0x40,
    ...st(pp, simd(0x0c, ...new Array(16).fill(0))),
    ...bumpBy(pp, 16),
    ...decrementLoop(q), 0x0b, 0x0b,
    ...get(pp), ...set(P),
    ...addTo(I0, i32const(1)),
    ...get(ROWS), ...i32const(1), 0x6b, ...set(ROWS),
    0x0c, 0, 0x0b, 0x0b, 0x0b,
  ];
  const { init, count } = constLocals();
  return { type: funcType([I32, I32, I32, I32]), code: funcBody([[3, I32], [3, F32], [7 + count, V128]], [...init, ...code]) };
}

/**
 * softmaxBack(D, P, rows, T, i0): per row (causal row i = i0 + k), D ← P ⊙ (D − Σ_{j≤i} P·D) on
 * j ≤ i, 0 beyond.
 */
function causalSoftmaxBackwardFn() {
  const [D, P, ROWS, T, I0] = [0, 1, 2, 3, 4];
  const [q, pd, pp, nq] = [5, 6, 7, 8];
  // local 9: unused
  const [msk, idx, acc, iv, dv] = [10, 11, 12, 13, 14];
  beginConsts(15);
  const lanes = [...get(idx), ...get(iv), ...ile, ...set(msk)];
  const code = [
    0x02, 0x40, 0x03, 0x40,
    ...get(ROWS), 0x45, 0x0d, 1,
    ...get(I0), ...i32x4splat, ...set(iv),
    ...get(I0), ...i32const(4), 0x6d, ...i32const(1), 0x6a, ...set(nq),
    ...simd(0x0c, ...new Array(16).fill(0)), ...set(acc), ...get(D), ...set(pd), ...get(P), ...set(pp), ...laneIdx, ...set(idx), ...get(nq), ...set(q),
    0x03, 0x40,
    ...lanes,
    ...get(acc), ...ld(pp), ...ld(pd), ...fmul, ...get(msk), ...vand, ...fadd, ...set(acc),
    ...bumpBy(pd, 16), ...bumpBy(pp, 16), ...get(idx), ...ci(4), ...iadd, ...set(idx),
    ...decrementLoop(q), 0x0b,
    ...hsum4(acc), ...simd(0x13), ...set(dv),
    ...get(D), ...set(pd), ...get(P), ...set(pp), ...laneIdx, ...set(idx), ...get(nq), ...set(q),
    0x03, 0x40,
    ...lanes,
    ...st(pd, [...ld(pp), ...ld(pd), ...get(dv), ...fsub, ...fmul, ...get(msk), ...vand]),
    ...bumpBy(pd, 16), ...bumpBy(pp, 16), ...get(idx), ...ci(4), ...iadd, ...set(idx),
    ...decrementLoop(q), 0x0b,
    ...get(T), ...i32const(2), 0x76, ...get(nq), 0x6b, ...set(q),
    0x02, 0x40, ...get(q), 0x45, 0x0d, 0,
    0x03, 0x40,
    ...st(pd, simd(0x0c, ...new Array(16).fill(0))),
    ...bumpBy(pd, 16), ...bumpBy(pp, 16),
    ...decrementLoop(q), 0x0b, 0x0b,
    ...get(pd), ...set(D), ...get(pp), ...set(P),
    ...addTo(I0, i32const(1)),
    ...get(ROWS), ...i32const(1), 0x6b, ...set(ROWS),
    0x0c, 0, 0x0b, 0x0b, 0x0b,
  ];
  const { init, count } = constLocals();
  return { type: funcType([I32, I32, I32, I32, I32]), code: funcBody([[4, I32], [1, F32], [5 + count, V128]], [...init, ...code]) };
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
