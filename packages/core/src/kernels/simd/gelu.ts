/**
 * GELU (exact, erf form) with its derivative in WebAssembly SIMD (f32x4): the GPT's fused
 * linearGelu (models/gpt-ops.ts, through kernels().geluInPlaceWithGrad / geluInPlace).
 *
 * gelu(v) = v·Φ(v), Φ(v) = (1 + erf(v/√2))/2, gelu'(v) = Φ(v) + v·φ(v),
 * φ(v) = exp(−v²/2)/√(2π). Φ through erfc = exp(−v²/2)·s·R(s) (φ's exp, one division and a
 * fitted polynomial); exp: range reduction by ln 2 (Cody–Waite hi/lo), degree-7 Taylor
 * polynomial on |r| ≤ ln2/2, 2^k built by shifting k + 127 into the exponent bits. Outside
 * (−8, 8) the results are those of the TypeScript table (js/gelu.ts: gelu = v, gelu' = 1 above;
 * 0 and 0 below); NaN gives NaN. Not bit-identical to the table inside (−8, 8): both are within
 * ~2e-7 of the exact GELU (gelu.test.ts).
 */
import { I32, V128, funcBody, funcType, get, i32const, set, simd, tee } from "./asm.js";
import {
  EXP_TAYLOR, LN2_HI, LN2_LO, addTo, beginConsts, cf, ci, constLocals, decrementLoop, estrin, fadd, fge, fle, fmax, fmul, fnearest, fsub,
  iadd, ishl, ld, st, truncSat, vandnot, vbitselect, zero,
} from "./codegen.js";
import { A0, B0, CHUNK, wasmFamily } from "./memory.js";

/**
 * Φ(−a) = erfc(a/√2)/2 = exp(−a²/2)·s·R(s) with s = 1/(1 + 0.35·a), for a in [0, 8]: R is a
 * degree-8 polynomial fitted here (iteratively reweighted least squares on the relative error,
 * float64) to 2.1e-8 relative. The exp is φ's own, so Φ costs one division and R.
 */
const PHI_S = 0.35;
const PHI_R = [0.13964756278174195, 0.13945655413679792, 0.12248680502199828, 0.09590501168420518, -0.002073827844082901, 0.13055373778137486, -0.23204911061243041, 0.13307706081651346, -0.027003804476211785];

/**
 * gelu(H, D, quads) with D unused for the forward-only variant: per quad of floats at H,
 * H ← gelu(v) and (withGrad) D ← gelu'(v), all in f32x4. With E = exp(−v²/2) and
 * q = Φ(−|v|) = E·s·R(s) (PHI_R), the small terms are formed first and 1 added last:
 *   v ≥ 0: gelu = v − v·q,  gelu' = 1 + (v·φ − q);   v < 0: gelu = v·q,  gelu' = q + v·φ.
 * On [−10, 10] in steps of 5e-4 the errors are 9.0e-8 (gelu, relative to max(1, |v|)) and
 * 1.62e-7 (gelu'), against PyTorch 1.13's CPU GELU's 1.50e-7 and 2.25e-7 on the same grid.
 * This replaced a rational erf in float64 lanes: gelu' to 1.5e-7, but 7.1 ns a float where
 * this takes 4.3 (its polynomials in Estrin's form: the loop is latency-bound).
 */
function geluFn(withGrad: boolean) {
  const [H, D, N] = [0, 1, 2];
  const [v, e, r, k, s, q, h] = [3, 4, 5, 6, 7, 8, 9];
  const rPows = [10, 11], sPows = [12, 13, 14]; // r², r⁴; s², s⁴, s⁸
  beginConsts(15);
  const fdiv = simd(0xe7), fabs = simd(0xe0);
  const vNonNeg = [...get(v), ...zero, ...fge]; // mask: v ≥ 0 (false for NaN)
  const code: number[] = [
    0x02, 0x40, ...get(N), 0x45, 0x0d, 0, // if (n == 0) return
    0x03, 0x40,
    ...ld(H), ...set(v),
    // r = max(−v²/2, −40); k = round(r·log2 e); r −= k·ln2 (hi, lo); E = p(r)·2^k
    ...get(v), ...get(v), ...fmul, ...cf(-0.5), ...fmul, ...cf(-40), ...fmax, ...tee(r),
    ...cf(Math.LOG2E), ...fmul, ...fnearest, ...set(k),
    ...get(r), ...get(k), ...cf(LN2_HI), ...fmul, ...fsub, ...get(k), ...cf(LN2_LO), ...fmul, ...fsub, ...set(r),
    ...estrin(get(r), EXP_TAYLOR, rPows),
    ...get(k), ...truncSat, ...ci(127), ...iadd, ...i32const(23), ...ishl, ...fmul, ...set(e),
    // s = 1/(1 + 0.35·|v|); q = E·s·R(s)
    ...cf(1), ...cf(1), ...get(v), ...fabs, ...cf(PHI_S), ...fmul, ...fadd, ...fdiv, ...tee(s),
    ...get(e), ...fmul, ...estrin(get(s), PHI_R, sPows), ...fmul, ...set(q),
    // h = v ≥ 0 ? v − v·q : v·q
    ...get(v), ...get(q), ...fmul, ...set(h), ...get(v), ...get(h), ...fsub, ...get(h), ...vNonNeg, ...vbitselect, ...set(h),
  ];
  if (withGrad) {
    // r = v·φ = v·E/√(2π); d = v ≥ 0 ? 1 + (v·φ − q) : q + v·φ (into s)
    code.push(
      ...get(v), ...get(e), ...fmul, ...cf(1 / Math.sqrt(2 * Math.PI)), ...fmul, ...set(r),
      ...cf(1), ...get(r), ...get(q), ...fsub, ...fadd, ...get(q), ...get(r), ...fadd, ...vNonNeg, ...vbitselect, ...set(s),
    );
  }
  // H = v ≥ 8 ? v : v ≤ −8 ? 0 : h;  D = v ≥ 8 ? 1 : v ≤ −8 ? 0 : d (NaN compares false: kept)
  code.push(...st(H, [...get(v), ...get(h), ...get(v), ...cf(-8), ...fle, ...vandnot, ...get(v), ...cf(8), ...fge, ...vbitselect]));
  if (withGrad) {
    code.push(
      ...st(D, [...cf(1), ...get(s), ...get(v), ...cf(-8), ...fle, ...vandnot, ...get(v), ...cf(8), ...fge, ...vbitselect]),
      ...addTo(D, i32const(16)),
    );
  }
  code.push(...addTo(H, i32const(16)), ...decrementLoop(N), 0x0b, 0x0b, 0x0b);
  const { init, count } = constLocals();
  return { type: funcType([I32, I32, I32]), code: funcBody([[12 + count, V128]], [...init, ...code]) };
}

type Fn3 = (a: number, b: number, n: number) => void;
const family = wasmFamily<{ geluGrad: Fn3; gelu: Fn3 }>(() => [[geluFn(true), "geluGrad"], [geluFn(false), "gelu"]]);

/** In place h ← gelu(h), d ← gelu'(h) over n floats; false (nothing touched) where SIMD is off. */
export function simdGeluWithGrad(h: Float32Array, d: Float32Array, n: number): boolean {
  return geluChunks(h, d, n);
}

/** In place h ← gelu(h) over n floats; false where SIMD is off. */
export function simdGelu(h: Float32Array, n: number): boolean {
  return geluChunks(h, null, n);
}

/** Both of the above: chunks of h copied in, gelu (and gelu' into d when given) run, results copied out. */
function geluChunks(h: Float32Array, d: Float32Array | null, n: number): boolean {
  const k = family();
  if (k === null) return false;
  const m = k.mem.f32, e = k.fn;
  for (let i = 0; i < n; i += CHUNK) {
    const c = Math.min(CHUNK, n - i);
    m.set(h.subarray(i, i + c), A0);
    if (d) e.geluGrad(4 * A0, 4 * B0, (c + 3) >> 2);
    else e.gelu(4 * A0, 0, (c + 3) >> 2);
    h.set(m.subarray(A0, A0 + c), i);
    if (d) d.set(m.subarray(B0, B0 + c), i);
  }
  return true;
}
