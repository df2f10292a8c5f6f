/**
 * GELU (exact, erf form) with its derivative in WebAssembly SIMD (f32x4): the GPT's fused
 * linearGelu (models/gpt-ops.ts, through kernels().geluInPlaceWithGrad / geluInPlace).
 *
 * gelu(v) = v·Φ(v), Φ(v) = (1 + erf(v/√2))/2, gelu'(v) = Φ(v) + v·φ(v),
 * φ(v) = exp(−v²/2)/√(2π). Φ through erfc: Φ(−|v|) = φ·s·R(s) (φ's exp, one division and a
 * fitted polynomial); the exp in base 2 (2^k by the exponent bits, 2^f by a polynomial). Outside
 * (−8, 8) the results are those of the TypeScript table (js/gelu.ts: gelu = v, gelu' = 1 above;
 * 0 and 0 below); NaN gives NaN. Not bit-identical to the table inside (−8, 8): both are within
 * ~2e-7 of the exact GELU (gelu.test.ts).
 */
import { I32, V128, funcBody, funcType, get, i32const, set, simd } from "./asm.js";
import { EXP2_POLY, SHIFTER, addTo, beginConsts, cf, constLocals, decrementLoop, estrin, fadd, fge, fgt, fmax, fmul, fsub, ishl, ld, st, vand, vandnot, zero } from "./codegen.js";
import { A0, B0, CHUNK, wasmFamily } from "./memory.js";

/**
 * Φ(−a) = erfc(a/√2)/2 = exp(−a²/2)·s·R(s) with s = 1/(1 + 0.35·a), for a in [0, 8]: R is a
 * degree-8 polynomial fitted here (iteratively reweighted least squares on the relative error,
 * float64) to 2.1e-8 relative. (Degree 7 fits to 3.8e-8 at s = 1/(1 + 0.23·a), but its larger,
 * alternating coefficients lose more to float32 rounding: gelu' to 2.2e-7.)
 */
const PHI_S = 0.35;
const PHI_R = [0.13964756278174195, 0.13945655413679792, 0.12248680502199828, 0.09590501168420518, -0.002073827844082901, 0.13055373778137486, -0.23204911061243041, 0.13307706081651346, -0.027003804476211785];
const SQRT_2PI = Math.sqrt(2 * Math.PI);
/** Quads per loop iteration (8 floats): more work in flight between the loop's branches. */
const UNROLL = 2;

/**
 * gelu(H, D, groups) with D unused for the forward-only variant: per quad of floats at H,
 * H ← gelu(v) and (withGrad) D ← gelu'(v), all in f32x4, UNROLL quads per iteration.
 * With a = min(|v|, 8), φ = exp(−a²/2)/√(2π) (0 from |v| ≥ 8 on, and for NaN) and
 * q = Φ(−a) = φ·s·R(s) (PHI_R), the small terms are formed first and 1 added last:
 *   gelu = max(v, 0) − a·q;  gelu' = v ≥ 0 ? 1 + (a·φ − q) : q − a·φ,
 * no selects: gelu' adds (v ≥ 0 ? 1 : 0) to a·φ − q with its sign flipped where v < 0.
 * φ's exp is 2^t, t = −a²·log2(e)/2: k = round(t) by the shifter, 2^(t − k) by EXP2_POLY
 * (scaled by 1/√(2π)), 2^k by shifting k + 127 into the exponent bits. |v| ≥ 8 gives φ = q = 0,
 * so gelu = v or 0 and gelu' = 1 or 0 exactly, the TypeScript table's values there.
 * Against the exact GELU on [−10, 10] in steps of 5e-4: 8.1e-8 (gelu, relative to max(1, |v|))
 * and 1.68e-7 (gelu'); PyTorch 1.13's CPU GELU: 1.50e-7 and 2.25e-7 on the same grid. Both
 * polynomials in Estrin's form: more multiplications than Horner's, but a shorter dependency
 * chain, measured faster (2.45 vs 2.75 ns a float; Horner's is slightly more accurate, 1.54e-7).
 * This replaced a base-e exp (Cody–Waite reduction, a degree-7 Taylor polynomial, a float→int
 * conversion) and four selects, at 3.1 ns a float where this takes 2.45 (768×512 floats).
 */
function geluFn(withGrad: boolean) {
  const [H, D, N] = [0, 1, 2];
  const PER_QUAD = 10; // locals of one quad: v, a, t, kk, e, s, q and three powers (of t, then of s)
  beginConsts(3 + PER_QUAD * UNROLL);
  const fdiv = simd(0xe7), fmin = simd(0xea), vxor = simd(0x51); // f32x4.div, f32x4.pmin, v128.xor
  const abs = (x: number) => [...get(x), ...cf(-0), ...vandnot]; // clear the sign bit
  /** Quad u: v = H[u], gelu into H[u] and gelu' into D[u] (byte offset 16·u). */
  const quad = (u: number): number[] => {
    const [v, a, t, kk, e, s, q] = [0, 1, 2, 3, 4, 5, 6].map((x) => 3 + PER_QUAD * u + x);
    const pows = [7, 8, 9].map((x) => 3 + PER_QUAD * u + x);
    const offset = 16 * u;
    const code: number[] = [
      ...ld(H, offset), ...set(v),
      // a = min(|v|, 8); t = −a²·log2(e)/2; kk = t + SHIFTER (k = round(t)); t −= k
      ...abs(v), ...cf(8), ...fmin, ...set(a),
      ...get(a), ...get(a), ...fmul, ...cf(-0.5 * Math.LOG2E), ...fmul, ...set(t),
      ...get(t), ...cf(SHIFTER), ...fadd, ...set(kk),
      ...get(t), ...get(kk), ...cf(SHIFTER), ...fsub, ...fsub, ...set(t),
      // s = 1/(1 + 0.35·a)
      ...cf(1), ...cf(1), ...get(a), ...cf(PHI_S), ...fmul, ...fadd, ...fdiv, ...set(s),
      // e = φ = 2^t·2^k/√(2π), zeroed where |v| ≥ 8 (and NaN)
      ...estrin(get(t), EXP2_POLY.map((c) => c / SQRT_2PI), pows), ...get(kk), ...i32const(23), ...ishl, ...fmul,
      ...cf(8), ...abs(v), ...fgt, ...vand, ...set(e),
      // q = φ·s·R(s)
      ...get(s), ...get(e), ...fmul, ...estrin(get(s), PHI_R.map((c) => c * SQRT_2PI), pows), ...fmul, ...set(q),
      // gelu = max(v, 0) − a·q
      ...st(H, [...get(v), ...zero, ...fmax, ...get(a), ...get(q), ...fmul, ...fsub], offset),
    ];
    if (withGrad) {
      // m = v ≥ 0 (into s); gelu' = (m & 1) + ((a·φ − q) ^ (sign where not m))
      code.push(
        ...get(v), ...zero, ...fge, ...set(s),
        ...st(D, [...get(s), ...cf(1), ...vand, ...get(a), ...get(e), ...fmul, ...get(q), ...fsub, ...cf(-0), ...get(s), ...vandnot, ...vxor, ...fadd], offset),
      );
    }
    return code;
  };
  const code: number[] = [0x02, 0x40, ...get(N), 0x45, 0x0d, 0, 0x03, 0x40]; // if (n == 0) return; loop
  for (let u = 0; u < UNROLL; u++) code.push(...quad(u));
  if (withGrad) code.push(...addTo(D, i32const(16 * UNROLL)));
  code.push(...addTo(H, i32const(16 * UNROLL)), ...decrementLoop(N), 0x0b, 0x0b, 0x0b);
  const { init, count } = constLocals();
  return { type: funcType([I32, I32, I32]), code: funcBody([[PER_QUAD * UNROLL + count, V128]], [...init, ...code]) };
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
    const groups = Math.ceil(c / (4 * UNROLL)); // past c: the region's slack, not copied out
    if (d) e.geluGrad(4 * A0, 4 * B0, groups);
    else e.gelu(4 * A0, 0, groups);
    h.set(m.subarray(A0, A0 + c), i);
    if (d) d.set(m.subarray(B0, B0 + c), i);
  }
  return true;
}
