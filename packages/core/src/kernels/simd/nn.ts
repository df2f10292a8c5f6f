/**
 * WebAssembly SIMD (f32x4) versions of the GPT's elementwise hot loops, which V8 does not
 * vectorise: GELU with its derivative (gpt-ops.ts linearGelu), GELU alone, the
 * elementwise product of linearGelu's backward, the sum with which the autograd engine
 * accumulates a gradient, and ReLU forward and backward (the MLP's).
 *
 * WebAssembly addresses only its own memory, so the operands are copied in (TypedArray.set,
 * a memcpy) and the results out, in chunks of CHUNK floats that stay in L1/L2. This module
 * owns its memory; each thread that loads this file gets its own instance (no shared state).
 *
 * GELU: gelu(v) = v·Φ(v), Φ(v) = (1 + erf(v/√2))/2, gelu'(v) = Φ(v) + v·φ(v),
 * φ(v) = exp(−v²/2)/√(2π). Φ through erfc = exp(−v²/2)·s·R(s) (φ's exp, one division and a
 * fitted polynomial: geluFn); exp: range reduction by ln 2 (Cody–Waite hi/lo), degree-7
 * Taylor polynomial on |r| ≤ ln2/2, 2^k built by shifting k + 127 into the exponent bits. Outside (−8, 8) the results are those of the
 * TypeScript table (gelu = v, gelu' = 1 above; 0 and 0 below); NaN gives NaN.
 *
 * `simdNn()` returns null where WebAssembly SIMD is missing or CHAINRULE_SIMD=0 (or after
 * `setSimdNnEnabled(false)`); callers then run their TypeScript loops.
 */
import { F32, I32, V128, WA, funcBody, funcType, get, i32const, moduleBytes, set, simd, tee, uleb, vec } from "./asm.js";
import type { Conv2dGeometry } from "../kernels.js";

// ---- opcodes (local helpers; asm.ts holds only the encoder) ----
const ld = (addr: number, offset = 0) => [...get(addr), ...simd(0x00, 0, offset)]; // v128.load (align 1)
const st = (addr: number, value: number[], offset = 0) => [...get(addr), ...value, ...simd(0x0b, 0, offset)]; // v128.store
const f32bytes = (x: number) => Array.from(new Uint8Array(Float32Array.of(x).buffer));
/**
 * Vector constants, hoisted: `cf(x)` (four float32 x), `cd(x)` (two float64 x), `ci(x)` (four
 * int32 x) read a local that `constLocals` fills once before the loop (V8 builds a v128.const
 * from immediates with several instructions at every use, inside the loop).
 */
let pool: Map<string, { bytes: number[]; local: number }> = new Map();
let poolBase = 0;
function constant(key: string, bytes: number[]): number[] {
  let c = pool.get(key);
  if (!c) pool.set(key, (c = { bytes, local: poolBase + pool.size }));
  return get(c.local);
}
/** Starts a function whose first constant local is `base`. */
function beginConsts(base: number): void {
  pool = new Map();
  poolBase = base;
}
/** The code that fills the constant locals, and how many there are. */
function constLocals(): { init: number[]; count: number } {
  const init: number[] = [];
  for (const { bytes, local } of pool.values()) init.push(...simd(0x0c, ...bytes), ...set(local));
  return { init, count: pool.size };
}
const cf = (x: number) => constant(`f${x}`, [...f32bytes(x), ...f32bytes(x), ...f32bytes(x), ...f32bytes(x)]);
const ci = (x: number) => constant(`i${x}`, new Array(4).fill(0).flatMap(() => Array.from(new Uint8Array(Int32Array.of(x).buffer))));
const [fadd, fsub, fmul, fmax] = [0xe4, 0xe5, 0xe6, 0xeb].map((op) => simd(op)); // fmax: f32x4.pmax
const fnearest = simd(0x6a);
const fle = simd(0x45), fge = simd(0x46);
const vandnot = simd(0x4f), vbitselect = simd(0x52);
const truncSat = simd(0xf8); // i32x4.trunc_sat_f32x4_s
const iadd = simd(0xae), ishl = simd(0xab);
const addTo = (l: number, n: number[]) => [...get(l), ...n, 0x6a, ...set(l)]; // l += n (i32)
const decrementLoop = (l: number) => [...get(l), ...i32const(1), 0x6b, ...tee(l), 0x0d, 0]; // if (--l != 0) continue

const f64bytes = (x: number) => Array.from(new Uint8Array(Float64Array.of(x).buffer));
const [dadd, dmul] = [0xf0, 0xf2].map((op) => simd(op));
const promote = simd(0x5f), demote = simd(0x5e); // f64x2.promote_low_f32x4, f32x4.demote_f64x2_zero

/**
 * Estrin's scheme: Σ c[i]·y^i as (c0 + c1·y) + y²·(c2 + c3·y) + y⁴·(…),
 * y², y⁴, … kept in the locals `pows`: a chain ~3 multiply-adds deep where Horner's is deg(c) deep.
 * GELU's loop is latency-bound (its two polynomials are its critical path), so this is faster
 * there, though it does a few more multiplications.
 */
function estrin(y: number[], c: number[], pows: number[]): number[] {
  let level: number[][] = [];
  for (let i = 0; i < c.length; i += 2) level.push(i + 1 < c.length ? [...cf(c[i + 1]), ...y, ...fmul, ...cf(c[i]), ...fadd] : cf(c[i]));
  const code: number[] = [];
  let prev = y;
  for (const pow of pows) {
    if (level.length === 1) break;
    code.push(...prev, ...prev, ...fmul, ...set(pow)); // y², y⁴, y⁸
    prev = get(pow);
    const next: number[][] = [];
    for (let i = 0; i < level.length; i += 2) next.push(i + 1 < level.length ? [...level[i], ...level[i + 1], ...get(pow), ...fmul, ...fadd] : level[i]);
    level = next;
  }
  if (level.length !== 1) throw new Error(`estrin: ${c.length} coefficients need more than ${pows.length} power locals`);
  return [...code, ...level[0]];
}

/** Horner: c[0] + y·(c[1] + y·(…)) with y the code that pushes the variable. */
function horner(y: number[], c: number[]): number[] {
  const code = cf(c[c.length - 1]);
  for (let i = c.length - 2; i >= 0; i--) code.push(...y, ...fmul, ...cf(c[i]), ...fadd);
  return code;
}

const EXP_TAYLOR = [1, 1, 1 / 2, 1 / 6, 1 / 24, 1 / 120, 1 / 720, 1 / 5040];
const LN2_HI = 0.693359375, LN2_LO = -2.12194440e-4; // Cephes' split: k·LN2_HI is exact for |k| < 2^15

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

/** mul / add (out, a, b, quads): out = a ⊙ b or a + b. */
function binaryFn(op: number[]) {
  const [O, A, B, N] = [0, 1, 2, 3];
  const code = [
    0x02, 0x40, ...get(N), 0x45, 0x0d, 0,
    0x03, 0x40,
    ...st(O, [...ld(A), ...ld(B), ...op]),
    ...addTo(O, i32const(16)), ...addTo(A, i32const(16)), ...addTo(B, i32const(16)),
    ...decrementLoop(N), 0x0b, 0x0b, 0x0b,
  ];
  return { type: funcType([I32, I32, I32, I32]), code: funcBody([], code) };
}

const [fgt, fne, vand, vor] = [0x44, 0x42, 0x4e, 0x50].map((op) => simd(op));

/**
 * relu(out, x, _, quads): out = x where x > 0 or NaN, else +0, as a mask on the bits (the same
 * bits as js/elementwise.ts reluForward: a NaN's payload is kept, −0 becomes +0).
 */
function reluFn() {
  const [O, A, , N] = [0, 1, 2, 3];
  const v = 4;
  const code = [
    0x02, 0x40, ...get(N), 0x45, 0x0d, 0,
    0x03, 0x40,
    ...ld(A), ...set(v),
    ...st(O, [...get(v), ...get(v), ...zero, ...fgt, ...get(v), ...get(v), ...fne, ...vor, ...vand]),
    ...addTo(O, i32const(16)), ...addTo(A, i32const(16)),
    ...decrementLoop(N), 0x0b, 0x0b, 0x0b,
  ];
  return { type: funcType([I32, I32, I32, I32]), code: funcBody([[1, V128]], code) };
}

// ---- layer norm (affine), in float64 lanes: two floats per f64x2, arithmetic as js/nn.ts ----
const F64 = 0x7c;
const ld2 = (addr: number) => [...get(addr), ...simd(0x5d, 0, 0), ...promote]; // two floats → f64x2
const st2 = (addr: number, value: number[]) => [...get(addr), ...value, ...demote, ...simd(0x5b, 0, 0, 0)]; // f64x2 → two floats
const ldv = (addr: number) => [...get(addr), ...simd(0x00, 0, 0)];
const stv = (addr: number, value: number[]) => [...get(addr), ...value, ...simd(0x0b, 0, 0)];
const dsub = simd(0xf1);
const zero = simd(0x0c, ...new Array(16).fill(0));
const lanesSum = (l: number) => [...get(l), ...simd(0x21, 0), ...get(l), ...simd(0x21, 1), 0xa0]; // f64: lane 0 + lane 1
const splat2 = simd(0x14);
const f32load = (addr: number) => [...get(addr), 0x2a, 2, 0, 0xbb]; // f64.promote_f32(f32.load)
const f32store = (addr: number, value: number[]) => [...get(addr), ...value, 0xb6, 0x38, 2, 0]; // f32.store(f32.demote_f64)
const bumpBy = (l: number, bytes: number) => addTo(l, i32const(bytes));
/** A counted loop over n/2 pairs (n even, ≥ 2) in local `j`. */
const pairsLoop = (j: number, n: number, body: number[]) => [...get(n), ...i32const(1), 0x76, ...set(j), 0x03, 0x40, ...body, ...decrementLoop(j), 0x0b]; // j = n >>> 1

/**
 * lnForward(X, O, W, Bb, M, R, rows, n, eps): per row of n floats (n even), mean and variance
 * from Σx, Σx² in float64, rs = 1/√(max(var, 0) + eps), out = (x − m)·rs·w + b.
 */
function lnForwardFn() {
  const [X, O, W, Bb, M, R, ROWS, N, EPS] = [0, 1, 2, 3, 4, 5, 6, 7, 8];
  const [j, px, po, pw, pb] = [9, 10, 11, 12, 13];
  const [m, rs, nf, vr] = [14, 15, 16, 17];
  const [as, ass, v, m2, rs2] = [18, 19, 20, 21, 22];
  const code = [
    ...get(N), 0xb7, ...set(nf),
    0x02, 0x40, 0x03, 0x40,
    ...get(ROWS), 0x45, 0x0d, 1,
    ...zero, ...set(as), ...zero, ...set(ass), ...get(X), ...set(px),
    ...pairsLoop(j, N, [
      ...ld2(px), ...tee(v), ...get(as), ...dadd, ...set(as),
      ...get(v), ...get(v), ...dmul, ...get(ass), ...dadd, ...set(ass),
      ...bumpBy(px, 8),
    ]),
    ...lanesSum(as), ...get(nf), 0xa3, ...set(m),
    ...lanesSum(ass), ...get(nf), 0xa3, ...get(m), ...get(m), 0xa2, 0xa1, ...set(vr),
    // rs = 1 / sqrt((vr > 0 ? vr : 0) + eps)
    0x44, ...f64bytes(1), ...get(vr), 0x44, ...f64bytes(0), ...get(vr), 0x44, ...f64bytes(0), 0x64, 0x1b, ...get(EPS), 0xa0, 0x9f, 0xa3, ...set(rs),
    ...f32store(M, get(m)), ...f32store(R, get(rs)), ...bumpBy(M, 4), ...bumpBy(R, 4),
    ...get(m), ...splat2, ...set(m2), ...get(rs), ...splat2, ...set(rs2),
    ...get(X), ...set(px), ...get(O), ...set(po), ...get(W), ...set(pw), ...get(Bb), ...set(pb),
    ...pairsLoop(j, N, [
      ...st2(po, [...ld2(px), ...get(m2), ...dsub, ...get(rs2), ...dmul, ...ld2(pw), ...dmul, ...ld2(pb), ...dadd]),
      ...bumpBy(px, 8), ...bumpBy(po, 8), ...bumpBy(pw, 8), ...bumpBy(pb, 8),
    ]),
    ...get(px), ...set(X), ...get(po), ...set(O),
    ...get(ROWS), ...i32const(1), 0x6b, ...set(ROWS),
    0x0c, 0, 0x0b, 0x0b, 0x0b,
  ];
  return { type: funcType([I32, I32, I32, I32, I32, I32, I32, I32, F64]), code: funcBody([[5, I32], [4, F64], [5, V128]], code) };
}

/**
 * lnBackward(DX, DO, X, W, AW, AB, M, R, rows, n): js/nn.ts lnBackwardAffine. Per row,
 * d = dout·w; Σd and Σd·(x − m); dx = rs·(dout·w − meanD − h·meanDX) with h = (x − m)·rs;
 * the float64 column sums AW += dout·h, AB += dout (n float64 each).
 */
function lnBackwardFn() {
  const [DX, DO, X, W, AW, AB, M, R, ROWS, N] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
  const [j, pdx, pdo, px, pw, paw, pab] = [10, 11, 12, 13, 14, 15, 16];
  const [nf, rs] = [17, 18];
  const [sd, sdx, m2, rs2, md, mdx, dy, h] = [19, 20, 21, 22, 23, 24, 25, 26];
  const code = [
    ...get(N), 0xb7, ...set(nf),
    0x02, 0x40, 0x03, 0x40,
    ...get(ROWS), 0x45, 0x0d, 1,
    ...f32load(M), ...splat2, ...set(m2), ...f32load(R), ...tee(rs), ...splat2, ...set(rs2), ...bumpBy(M, 4), ...bumpBy(R, 4),
    ...zero, ...set(sd), ...zero, ...set(sdx), ...get(DO), ...set(pdo), ...get(X), ...set(px), ...get(W), ...set(pw),
    ...pairsLoop(j, N, [
      ...ld2(pdo), ...ld2(pw), ...dmul, ...tee(dy), ...get(sd), ...dadd, ...set(sd),
      ...get(dy), ...ld2(px), ...get(m2), ...dsub, ...dmul, ...get(sdx), ...dadd, ...set(sdx),
      ...bumpBy(pdo, 8), ...bumpBy(px, 8), ...bumpBy(pw, 8),
    ]),
    ...lanesSum(sd), ...get(nf), 0xa3, ...splat2, ...set(md),
    ...get(rs), ...lanesSum(sdx), 0xa2, ...get(nf), 0xa3, ...splat2, ...set(mdx),
    ...get(DX), ...set(pdx), ...get(DO), ...set(pdo), ...get(X), ...set(px), ...get(W), ...set(pw), ...get(AW), ...set(paw), ...get(AB), ...set(pab),
    ...pairsLoop(j, N, [
      ...ld2(pdo), ...set(dy),
      ...ld2(px), ...get(m2), ...dsub, ...get(rs2), ...dmul, ...set(h),
      ...st2(pdx, [...get(rs2), ...get(dy), ...ld2(pw), ...dmul, ...get(md), ...dsub, ...get(h), ...get(mdx), ...dmul, ...dsub, ...dmul]),
      ...stv(paw, [...ldv(paw), ...get(dy), ...get(h), ...dmul, ...dadd]),
      ...stv(pab, [...ldv(pab), ...get(dy), ...dadd]),
      ...bumpBy(pdx, 8), ...bumpBy(pdo, 8), ...bumpBy(px, 8), ...bumpBy(pw, 8), ...bumpBy(paw, 16), ...bumpBy(pab, 16),
    ]),
    ...get(pdx), ...set(DX), ...get(pdo), ...set(DO), ...get(px), ...set(X),
    ...get(ROWS), ...i32const(1), 0x6b, ...set(ROWS),
    0x0c, 0, 0x0b, 0x0b, 0x0b,
  ];
  return { type: funcType([I32, I32, I32, I32, I32, I32, I32, I32, I32, I32]), code: funcBody([[7, I32], [2, F64], [8, V128]], code) };
}

// ---- causal softmax (attention), f32x4 over each row's first i + 1 entries ----
const i32x4splat = simd(0x11), ile = simd(0x3d); // i32x4.le_s
const laneIdx = simd(0x0c, ...[0, 1, 2, 3].flatMap((k) => Array.from(new Uint8Array(Int32Array.of(k).buffer))));
/** f32x4 lanes sum (horizontal), as f32: extract_lane 0..3. */
const hsum4 = (l: number) => [...get(l), ...simd(0x1f, 0), ...get(l), ...simd(0x1f, 1), 0x92, ...get(l), ...simd(0x1f, 2), ...get(l), ...simd(0x1f, 3), 0x92, 0x92];
const hmax4 = (l: number) => [...get(l), ...simd(0x1f, 0), ...get(l), ...simd(0x1f, 1), 0x97, ...get(l), ...simd(0x1f, 2), ...get(l), ...simd(0x1f, 3), 0x97, 0x97]; // f32.max
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

// ---- 2×2 max pooling + ReLU over copied planes (the CNN's conv2dMaxPoolRelu), i32x4 on the bits ----
const [ieq, igt, ishr] = [0x37, 0x3b, 0xac].map((op) => simd(op)); // i32x4.eq, i32x4.gt_s, i32x4.shr_s
const anyTrue = simd(0x53);
const evenFloats = simd(0x0d, 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27);
const oddFloats = simd(0x0d, 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);

/**
 * pool(IN, OUT, TAP, planes, PH, G, PW, sHb, planeB) → any NaN seen: js/conv.ts maxPool2x2Relu's
 * arithmetic on `planes` planes copied to IN (planeB bytes apart, rows sHb bytes apart), four
 * outputs at a time (G groups a row): out and tap rows PW apart at OUT and TAP, in plane order.
 * A row's last group may write up to 3 outputs past PW: the next row's, written again after
 * (the caller leaves room past the last). On the bits after ReLU (non-negative floats order like
 * their int32 bits): the first maximum of each window (ties: the earlier tap), tap 4 where it is
 * +0. NaN is only detected: the caller then runs the loop, which knows which NaN to return.
 */
function maxPoolReluFn() {
  const [IN, OUT, TAP, PLANES, PH, G, PW, SHB, PLANEB] = [0, 1, 2, 3, 4, 5, 6, 7, 8];
  const [pp, ph, rowp, cp, r1, op, tp, o, tq, gc] = [9, 10, 11, 12, 13, 14, 15, 16, 17, 18]; // i32
  const [x0, x1, y0, y1, a, b, e, d, s01, s23, m01, m23, nan] = [19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31]; // v128
  beginConsts(32);
  const relu = (l: number) => [...get(l), ...get(l), ...i32const(31), ...ishr, ...vandnot, ...set(l)]; // x & ~(x >> 31)
  const isNan = (l: number) => [...get(l), ...get(l), ...fne];
  const load = (ptr: number, offset: number) => [...get(ptr), ...simd(0x00, 0, offset)];
  const loop = (counter: number, body: number[]) => [0x03, 0x40, ...body, ...decrementLoop(counter), 0x0b];
  const group = [
    // the window rows: 8 floats of row 2·ph (x) and of row 2·ph + 1 (y), split into even and odd columns
    ...load(cp, 0), ...set(x0), ...load(cp, 16), ...set(x1),
    ...get(cp), ...get(SHB), 0x6a, ...set(r1), ...load(r1, 0), ...set(y0), ...load(r1, 16), ...set(y1),
    ...get(nan), ...isNan(x0), ...vor, ...isNan(x1), ...vor, ...isNan(y0), ...vor, ...isNan(y1), ...vor, ...set(nan),
    ...get(x0), ...get(x1), ...evenFloats, ...set(a), ...get(x0), ...get(x1), ...oddFloats, ...set(b),
    ...get(y0), ...get(y1), ...evenFloats, ...set(e), ...get(y0), ...get(y1), ...oddFloats, ...set(d),
    ...relu(a), ...relu(b), ...relu(e), ...relu(d),
    ...get(b), ...get(a), ...igt, ...set(s01), ...get(b), ...get(a), ...get(s01), ...vbitselect, ...set(m01),
    ...get(d), ...get(e), ...igt, ...set(s23), ...get(d), ...get(e), ...get(s23), ...vbitselect, ...set(m23),
    // x0 = s (the bottom pair's max is larger), y0 = m (the window's max)
    ...get(m23), ...get(m01), ...igt, ...set(x0),
    ...get(m23), ...get(m01), ...get(x0), ...vbitselect, ...set(y0),
    ...st(o, get(y0)),
    // tap = m == 0 ? 4 : s ? 2 | (s23 & 1) : s01 & 1, narrowed to bytes, four stored
    ...ci(4),
    ...get(s23), ...ci(1), ...vand, ...ci(2), ...vor, ...get(s01), ...ci(1), ...vand, ...get(x0), ...vbitselect,
    ...get(y0), ...zero, ...ieq, ...vbitselect, ...set(x1),
    ...get(tq), ...get(x1), ...get(x1), ...simd(0x85), ...tee(x1), ...get(x1), ...simd(0x65), ...simd(0x5a, 0, 0, 0), // v128.store32_lane, lane 0
    ...addTo(o, i32const(16)), ...addTo(tq, i32const(4)), ...addTo(cp, i32const(32)),
  ];
  const code = [
    ...zero, ...set(nan),
    0x02, 0x40, ...get(PLANES), 0x45, 0x0d, 0, // if (planes == 0) skip
    ...get(OUT), ...set(op), ...get(TAP), ...set(tp), ...get(IN), ...set(pp),
    ...loop(PLANES, [
      ...get(pp), ...set(rowp), ...get(PH), ...set(ph),
      ...loop(ph, [
        ...get(rowp), ...set(cp), ...get(op), ...set(o), ...get(tp), ...set(tq), ...get(G), ...set(gc),
        ...loop(gc, group),
        ...get(op), ...get(PW), ...i32const(2), 0x74, 0x6a, ...set(op), // op += 4·PW (bytes)
        ...get(tp), ...get(PW), 0x6a, ...set(tp),
        ...get(rowp), ...get(SHB), ...i32const(1), 0x74, 0x6a, ...set(rowp), // two rows down
      ]),
      ...get(pp), ...get(PLANEB), 0x6a, ...set(pp),
    ]),
    0x0b,
    ...get(nan), ...anyTrue, 0x0b,
  ];
  const { init, count } = constLocals();
  return {
    type: [0x60, ...vec([IN, OUT, TAP, PLANES, PH, G, PW, SHB, PLANEB].map(() => [I32])), 1, I32],
    code: funcBody([[10, I32], [13 + count, V128]], [...init, ...code]),
  };
}

/**
 * poolBack(GOUT, TAP, DST, planes, PH, G, PW, sHb, planeB, SUMS): js/conv.ts maxPool2x2ReluBackward's
 * scatter over `planes` planes of a zeroed DST (layout as maxPoolReluFn's IN): each output's
 * gradient to its tap's window position (none for tap 4), four outputs at a time; the window rows
 * are OR-ed into DST (a position gets at most one gradient, and a row's last group may spill
 * zeros into the next row, which the OR leaves intact). SUMS[p] (float64) = the sum of the
 * gradients that passed in plane p, added in output order as the loop adds them (the conv bias's).
 */
function maxPoolReluBackFn() {
  const [GOUT, TAP, DST, PLANES, PH, G, PW, SHB, PLANEB, SUMS] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
  const [pp, ph, rowp, cp, r1, go, tq, gc] = [10, 11, 12, 13, 14, 15, 16, 17]; // i32
  const sum = 18; // f64
  const [g, t, lanes, valid, v0, v1, v2, v3] = [19, 20, 21, 22, 23, 24, 25, 26]; // v128
  beginConsts(27);
  const loop = (counter: number, body: number[]) => [0x03, 0x40, ...body, ...decrementLoop(counter), 0x0b];
  const pick = (k: number, l: number) => [...get(g), ...get(t), ...ci(k), ...ieq, ...vand, ...get(valid), ...vand, ...set(l)];
  const lowPairs = simd(0x0d, 0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
  const highPairs = simd(0x0d, 8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
  /** DST[addr + off] |= value (v128). */
  const orInto = (addr: number, off: number, value: number[]) => [...get(addr), ...get(addr), ...simd(0x00, 0, off), ...value, ...vor, ...simd(0x0b, 0, off)];
  const addLane = (k: number) => [...get(sum), ...get(g), ...simd(0x1f, k), 0xbb, 0xa0, ...set(sum)]; // sum += f64(lane k)
  const group = [
    ...get(go), ...simd(0x00, 0, 0), ...set(g),
    ...get(tq), ...simd(0x5c, 0, 0), ...simd(0x89), ...simd(0xa9), ...set(t), // 4 tap bytes → i32x4
    ...get(lanes), ...get(PW), ...simd(0x11), ...simd(0x39), ...set(valid), // lane < PW (i32x4.lt_s)
    ...pick(0, v0), ...pick(1, v1), ...pick(2, v2), ...pick(3, v3),
    ...orInto(cp, 0, [...get(v0), ...get(v1), ...lowPairs]), ...orInto(cp, 16, [...get(v0), ...get(v1), ...highPairs]),
    ...get(cp), ...get(SHB), 0x6a, ...set(r1),
    ...orInto(r1, 0, [...get(v2), ...get(v3), ...lowPairs]), ...orInto(r1, 16, [...get(v2), ...get(v3), ...highPairs]),
    // the passed gradients (tap < 4, lane < PW), summed lane by lane in output order
    ...get(v0), ...get(v1), ...vor, ...get(v2), ...vor, ...get(v3), ...vor, ...set(g),
    ...addLane(0), ...addLane(1), ...addLane(2), ...addLane(3),
    ...get(lanes), ...ci(4), ...iadd, ...set(lanes),
    ...addTo(go, i32const(16)), ...addTo(tq, i32const(4)), ...addTo(cp, i32const(32)),
  ];
  const code = [
    0x02, 0x40, ...get(PLANES), 0x45, 0x0d, 0, // if (planes == 0) skip
    ...get(DST), ...set(pp),
    ...loop(PLANES, [
      0x44, ...f64bytes(0), ...set(sum),
      ...get(pp), ...set(rowp), ...get(PH), ...set(ph),
      ...loop(ph, [
        ...get(rowp), ...set(cp), ...get(G), ...set(gc), ...laneIdx, ...set(lanes),
        ...get(GOUT), ...set(go), ...get(TAP), ...set(tq),
        ...loop(gc, group),
        ...get(GOUT), ...get(PW), ...i32const(2), 0x74, 0x6a, ...set(GOUT), // next output row
        ...get(TAP), ...get(PW), 0x6a, ...set(TAP),
        ...get(rowp), ...get(SHB), ...i32const(1), 0x74, 0x6a, ...set(rowp), // two rows down
      ]),
      ...get(SUMS), ...get(sum), 0x39, 3, 0, // f64.store
      ...addTo(SUMS, i32const(8)),
      ...get(pp), ...get(PLANEB), 0x6a, ...set(pp),
    ]),
    0x0b, 0x0b,
  ];
  const { init, count } = constLocals();
  return {
    type: funcType([I32, I32, I32, I32, I32, I32, I32, I32, I32, I32]),
    code: funcBody([[8, I32], [1, F64], [8 + count, V128]], [...init, ...code]),
  };
}

/**
 * maxPool(IN, OUT, ARG, planes, OH, G, OW, Wb, planeB): js/conv.ts maxPool2x2 (2×2, stride 2, no
 * padding) on float compares: per window the first of a, b, e, d unless a later one is larger, or
 * is NaN where the best so far is not (PyTorch's NaN propagation); ARG gets the in-plane flat index
 * (int32). Planes of H rows of W floats (Wb = 4W bytes) planeB bytes apart; outputs OW a row, four
 * at a time (a row's last group may write the next row's first outputs, rewritten after).
 */
function maxPool2x2Fn() {
  const [IN, OUT, ARG, PLANES, OH, G, OW, WB, PLANEB] = [0, 1, 2, 3, 4, 5, 6, 7, 8];
  const [pp, oh, rowp, cp, r1, o, ag, gc, rowIdx, w] = [9, 10, 11, 12, 13, 14, 15, 16, 17, 18]; // i32
  const [x0, x1, y0, y1, best, idx, take, col, v, iv] = [19, 20, 21, 22, 23, 24, 25, 26, 27, 28]; // v128
  beginConsts(29);
  const load = (ptr: number, offset: number) => [...get(ptr), ...simd(0x00, 0, offset)];
  const loop = (counter: number, body: number[]) => [0x03, 0x40, ...body, ...decrementLoop(counter), 0x0b];
  /** best, idx ← v, iv where v > best, or v is NaN and best is not. */
  const consider = [
    ...get(v), ...get(best), ...fgt, ...get(v), ...get(v), ...fne, ...get(best), ...get(best), ...simd(0x41), ...vand, ...vor, ...set(take),
    ...get(v), ...get(best), ...get(take), ...vbitselect, ...set(best),
    ...get(iv), ...get(idx), ...get(take), ...vbitselect, ...set(idx),
  ];
  const group = [
    ...load(cp, 0), ...set(x0), ...load(cp, 16), ...set(x1),
    ...get(cp), ...get(WB), 0x6a, ...set(r1), ...load(r1, 0), ...set(y0), ...load(r1, 16), ...set(y1),
    // a: even columns of the top row (the first of each window), its indices rowIdx + col
    ...get(x0), ...get(x1), ...evenFloats, ...set(best), ...get(rowIdx), ...simd(0x11), ...get(col), ...iadd, ...set(idx),
    ...get(x0), ...get(x1), ...oddFloats, ...set(v), ...get(idx), ...ci(1), ...iadd, ...set(iv), ...consider,
    ...get(y0), ...get(y1), ...evenFloats, ...set(v), ...get(rowIdx), ...get(w), 0x6a, ...simd(0x11), ...get(col), ...iadd, ...set(iv), ...consider,
    ...get(y0), ...get(y1), ...oddFloats, ...set(v), ...get(iv), ...ci(1), ...iadd, ...set(iv), ...consider,
    ...st(o, get(best)), ...st(ag, get(idx)),
    ...get(col), ...ci(8), ...iadd, ...set(col),
    ...addTo(o, i32const(16)), ...addTo(ag, i32const(16)), ...addTo(cp, i32const(32)),
  ];
  const code = [
    0x02, 0x40, ...get(PLANES), 0x45, 0x0d, 0,
    ...get(WB), ...i32const(2), 0x76, ...set(w), // W (floats) = Wb >> 2
    ...get(IN), ...set(pp), ...get(OUT), ...set(o), ...get(ARG), ...set(ag),
    ...loop(PLANES, [
      ...get(pp), ...set(rowp), ...get(OH), ...set(oh), ...i32const(0), ...set(rowIdx),
      ...loop(oh, [
        ...get(rowp), ...set(cp), ...get(G), ...set(gc), ...evenLanes, ...set(col),
        ...loop(gc, group),
        ...get(OUT), ...get(OW), ...i32const(2), 0x74, 0x6a, ...tee(OUT), ...set(o),
        ...get(ARG), ...get(OW), ...i32const(2), 0x74, 0x6a, ...tee(ARG), ...set(ag),
        ...get(rowp), ...get(WB), ...i32const(1), 0x74, 0x6a, ...set(rowp), // two rows down
        ...get(rowIdx), ...get(w), ...i32const(1), 0x74, 0x6a, ...set(rowIdx),
      ]),
      ...get(pp), ...get(PLANEB), 0x6a, ...set(pp),
    ]),
    0x0b, 0x0b,
  ];
  const { init, count } = constLocals();
  return { type: funcType([I32, I32, I32, I32, I32, I32, I32, I32, I32]), code: funcBody([[10, I32], [10 + count, V128]], [...init, ...code]) };
}
const evenLanes = simd(0x0c, ...[0, 2, 4, 6].flatMap((k) => Array.from(new Uint8Array(Int32Array.of(k).buffer))));

/**
 * poolScatter(DX, DOUT, ARG, planes, oplane, planeB): js/conv.ts maxPool2dBackward's scatter into
 * zeroed planes: DX[plane p][ARG[o]] += DOUT[o] for each output (ARG < 0: none), scalar float32 adds
 * (the loop's float64 add of two float32 values rounds to the same float32).
 */
function poolScatterFn() {
  const [DX, DOUT, ARG, PLANES, OPLANE, PLANEB] = [0, 1, 2, 3, 4, 5];
  const [o, a, at] = [6, 7, 8];
  const loop = (counter: number, body: number[]) => [0x03, 0x40, ...body, ...decrementLoop(counter), 0x0b];
  const code = [
    0x02, 0x40, ...get(PLANES), 0x45, 0x0d, 0, ...get(OPLANE), 0x45, 0x0d, 0,
    ...loop(PLANES, [
      ...get(OPLANE), ...set(o),
      ...loop(o, [
        ...get(ARG), 0x28, 2, 0, ...tee(a), // i32.load
        ...i32const(0), 0x4e, // a >= 0 (i32.ge_s)
        0x04, 0x40,
        ...get(DX), ...get(a), ...i32const(2), 0x74, 0x6a, ...tee(at),
        ...get(at), 0x2a, 2, 0, ...get(DOUT), 0x2a, 2, 0, 0x92, 0x38, 2, 0, // f32: dx[a] += dout[o]
        0x0b,
        ...addTo(ARG, i32const(4)), ...addTo(DOUT, i32const(4)),
      ]),
      ...get(DX), ...get(PLANEB), 0x6a, ...set(DX),
    ]),
    0x0b, 0x0b,
  ];
  return { type: funcType([I32, I32, I32, I32, I32, I32]), code: funcBody([[3, I32]], code) };
}

// ---- strided row copies (the shifted convolution's padded layout) ----
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

// ---- batch norm over (N, C, HW) planes, in float64 lanes (js/conv.ts's arithmetic) ----
/** Channels the per-channel float64 arrays hold (more: the loops run). */
const BN_MAXC = 1024;
/** The per-channel float64 arrays, BN_MAXC each, after the base pointer PB. */
const BN = { MEAN: 0, RSTD: 1, K: 2, MDY: 3, MDYX: 4, SUM: 5, SUM2: 6, count: 7 } as const;
type BnMode = "sum" | "var" | "apply" | "backSums" | "backDx" | "scale";

/**
 * bn<mode>(X, Y, OUT, planes, HW2, c0, C, PB): over `planes` planes of HW = 2·HW2 floats (plane k
 * is channel (c0 + k) mod C), two floats a lane pair in f64x2:
 *   sum: SUM[c] += Σ x;  var: SUM[c] += Σ (x − MEAN)²;  apply: out = x·RSTD + K (the scale and shift);
 *   backSums: SUM[c] += Σ dy, SUM2[c] += Σ dy·(x − MEAN)·RSTD;
 *   backDx: dx = K·(dy − MDY − (x − MEAN)·RSTD·MDYX);  scale: dx = K·dy.
 * The elementwise modes are js/conv.ts's expressions operation for operation in float64, rounded
 * once to float32 (the same bits); the sums add lane pairs, so they can differ in the last bits of a
 * float64 from the loops' one running sum.
 */
function batchNormFn(mode: BnMode) {
  const [X, Y, OUT, PLANES, HW2, C0, C, PB] = [0, 1, 2, 3, 4, 5, 6, 7];
  const [x, y, o, c, j, cb] = [8, 9, 10, 11, 12, 13]; // i32
  const [acc, acc2, t, p0, p1, p2, p3, p4] = [14, 15, 16, 17, 18, 19, 20, 21]; // v128
  const arr = (i: number) => i * BN_MAXC * 8;
  const param = (i: number, l: number) => [...get(PB), ...get(cb), 0x6a, 0x2b, 3, ...uleb(arr(i)), ...splat2, ...set(l)]; // f64x2.splat(f64.load)
  /** PB array i at channel c += lanes of local l. */
  const addSum = (i: number, l: number) => [...get(PB), ...get(cb), 0x6a, ...get(PB), ...get(cb), 0x6a, 0x2b, 3, ...uleb(arr(i)), ...lanesSum(l), 0xa0, 0x39, 3, ...uleb(arr(i))];
  const body: Record<BnMode, number[]> = {
    sum: [...get(acc), ...ld2(x), ...dadd, ...set(acc)],
    var: [...ld2(x), ...get(p0), ...dsub, ...tee(t), ...get(t), ...dmul, ...get(acc), ...dadd, ...set(acc)],
    apply: st2(o, [...ld2(x), ...get(p1), ...dmul, ...get(p2), ...dadd]),
    backSums: [
      ...ld2(y), ...tee(t), ...get(acc), ...dadd, ...set(acc),
      ...get(t), ...ld2(x), ...get(p0), ...dsub, ...dmul, ...get(p1), ...dmul, ...get(acc2), ...dadd, ...set(acc2),
    ],
    backDx: st2(o, [...get(p2), ...ld2(y), ...get(p3), ...dsub, ...ld2(x), ...get(p0), ...dsub, ...get(p1), ...dmul, ...get(p4), ...dmul, ...dsub, ...dmul]),
    scale: st2(o, [...get(p2), ...ld2(y), ...dmul]),
  };
  const sums = mode === "sum" || mode === "var" || mode === "backSums";
  const code = [
    0x02, 0x40, ...get(PLANES), 0x45, 0x0d, 0,
    ...get(C0), ...set(c), ...get(X), ...set(x), ...get(Y), ...set(y), ...get(OUT), ...set(o),
    0x03, 0x40,
    ...get(c), ...i32const(3), 0x74, ...set(cb),
    ...param(BN.MEAN, p0), ...param(BN.RSTD, p1), ...param(BN.K, p2), ...param(BN.MDY, p3), ...param(BN.MDYX, p4),
    ...zero, ...set(acc), ...zero, ...set(acc2), ...get(HW2), ...set(j),
    0x03, 0x40,
    ...body[mode],
    ...addTo(x, i32const(8)), ...addTo(y, i32const(8)), ...addTo(o, i32const(8)),
    ...decrementLoop(j), 0x0b,
    ...(sums ? addSum(BN.SUM, acc) : []), ...(mode === "backSums" ? addSum(BN.SUM2, acc2) : []),
    // next channel: c = c + 1 == C ? 0 : c + 1
    ...addTo(c, i32const(1)), ...get(c), ...get(C), 0x46, 0x04, 0x40, ...i32const(0), ...set(c), 0x0b,
    ...decrementLoop(PLANES), 0x0b,
    0x0b, 0x0b,
  ];
  return { type: funcType([I32, I32, I32, I32, I32, I32, I32, I32]), code: funcBody([[6, I32], [8, V128]], code) };
}
const BN_MODES: BnMode[] = ["sum", "var", "apply", "backSums", "backDx", "scale"];

type Fn3 = (a: number, b: number, n: number) => void;
type Fn4 = (a: number, b: number, c: number, n: number) => void;

type LnForward = (x: number, o: number, w: number, b: number, m: number, r: number, rows: number, n: number, eps: number) => void;
type LnBackward = (dx: number, dout: number, x: number, w: number, aw: number, ab: number, m: number, r: number, rows: number, n: number) => void;

type Softmax = (p: number, rows: number, T: number, i0: number) => void;
type SoftmaxBack = (d: number, p: number, rows: number, T: number, i0: number) => void;

interface Engine {
  softmax: Softmax;
  softmaxBack: SoftmaxBack;
  lnForward: LnForward;
  lnBackward: LnBackward;
  f64: Float64Array;
  geluGrad: Fn3;
  gelu: Fn3;
  mul: Fn4;
  add: Fn4;
  relu: Fn4;
  reluBack: Fn4;
  maxPoolRelu: (inp: number, out: number, tap: number, planes: number, PH: number, G: number, PW: number, sHb: number, planeB: number) => number;
  maxPoolReluBack: (gout: number, tap: number, dst: number, planes: number, PH: number, G: number, PW: number, sHb: number, planeB: number, sums: number) => void;
  poolScatter: (dx: number, dout: number, arg: number, planes: number, oplane: number, planeB: number) => void;
  maxPool: (inp: number, out: number, arg: number, planes: number, OH: number, G: number, OW: number, Wb: number, planeB: number) => void;
  bn: Record<BnMode, (x: number, y: number, out: number, planes: number, hw2: number, c0: number, C: number, pb: number) => void>;
  copyRows: (src: number, dst: number, planes: number, rows: number, G: number, tail: number, sRowB: number, dRowB: number, sPlaneB: number, dPlaneB: number) => void;
  u8: Uint8Array;
  i32: Int32Array;
  memory: { readonly buffer: ArrayBufferLike; grow(pages: number): number };
  f32: Float32Array;
}

/** Floats per chunk and operand (16 KiB: three operands stay in L1/L2). */
const CHUNK = 4096;
/**
 * Where the operand regions start in the memory (floats). Not at multiples of 4 KiB: a Float32Array
 * of the size these kernels get is page-aligned, and copying out of a region at the same address
 * modulo 4096 runs ~5× slower (4K aliasing between the copy's loads and stores: 0.95 vs 0.1 ms for
 * 393k floats measured here).
 */
const A0 = 64, B0 = A0 + CHUNK + 128;
// layer norm's regions (floats): dx, weight, bias, mean, rstd, and the float64 column sums (2·CHUNK floats each)
const C0 = B0 + CHUNK + 128, W0 = C0 + CHUNK + 128, BB0 = W0 + CHUNK + 128, M0 = BB0 + CHUNK + 128, R0 = M0 + CHUNK / 2 + 64;
const AW0 = R0 + CHUNK / 2 + 64, AB0 = AW0 + 2 * CHUNK + 128;
// max pooling's regions: copied planes (POOL_IN floats), pooled outputs (floats) and taps (bytes), each with slack
const POOL_IN = 4 * CHUNK, PIN0 = AB0 + 2 * CHUNK + 128, POUT0 = PIN0 + POOL_IN + 128, PTAP0 = POUT0 + POOL_IN / 4 + 128;
const PSUM0 = PTAP0 + POOL_IN / 16 + 64; // float64 sums, one per plane (≤ POOL_IN / 4 planes)
// batch norm's regions: x, dy, out (POOL_IN floats each) and the per-channel float64 arrays
const BX0 = PSUM0 + POOL_IN / 2 + 128, BY0 = BX0 + POOL_IN + 128, BO0 = BY0 + POOL_IN + 128, BNP0 = BO0 + POOL_IN + 128;
const MEM_FLOATS = BNP0 + 2 * BN.count * BN_MAXC;
/** Where the growable scratch for whole tensors begins (floats, 64-byte aligned), and its largest size. */
const BIG0 = Math.ceil((MEM_FLOATS + 128) / 16) * 16 + 64;
const BIG_MAX = 1 << 26;

/** Float offset `at` rounded up to a 64-byte boundary, past `slack` floats. */
const after = (at: number, slack = 64) => Math.ceil((at + slack) / 16) * 16;

/**
 * The engine's memory from BIG0 on, grown to hold `floats` (the views refreshed: growing replaces
 * the buffer); false above BIG_MAX floats (256 MiB), where callers run their loops.
 */
function bigScratch(e: Engine, floats: number): boolean {
  if (floats > BIG_MAX) return false;
  const need = 4 * (BIG0 + floats + 64);
  if (e.memory.buffer.byteLength < need) {
    e.memory.grow(Math.ceil((need - e.memory.buffer.byteLength) / 65536));
    const b = e.memory.buffer;
    e.f32 = new Float32Array(b);
    e.f64 = new Float64Array(b);
    e.u8 = new Uint8Array(b);
    e.i32 = new Int32Array(b);
  }
  return true;
}

let enabled = process.env.CHAINRULE_SIMD !== "0" && process.env.CHAINRULE_PARALLEL_SIMD !== "0";
let engine: Engine | null | undefined;

/** Turns these kernels off (the TypeScript loops run) or back on; the initial value comes from CHAINRULE_SIMD. */
export function setSimdNnEnabled(on: boolean): void {
  enabled = on;
}

function instantiate(): Engine | null {
  if (engine !== undefined) return engine;
  try {
    const mod = new WA.Module(moduleBytes([geluFn(true), geluFn(false), binaryFn(fmul), binaryFn(fadd), reluFn(), binaryFn([...zero, ...fgt, ...vand]), maxPoolReluFn(), maxPoolReluBackFn(), maxPool2x2Fn(), poolScatterFn(), ...BN_MODES.map(batchNormFn), lnForwardFn(), lnBackwardFn(), causalSoftmaxFn(), causalSoftmaxBackwardFn(), copyRowsFn()], ["geluGrad", "gelu", "mul", "add", "relu", "reluBack", "maxPoolRelu", "maxPoolReluBack", "maxPool", "poolScatter", ...BN_MODES.map((m) => `bn_${m}`), "lnForward", "lnBackward", "softmax", "softmaxBack", "copyRows"], false));
    const memory = new WA.Memory({ initial: Math.ceil((4 * MEM_FLOATS) / 65536) });
    const ex = new WA.Instance(mod, { env: { memory } }).exports;
    engine = {
      geluGrad: ex.geluGrad as Fn3, gelu: ex.gelu as Fn3, mul: ex.mul as Fn4, add: ex.add as Fn4, relu: ex.relu as Fn4, reluBack: ex.reluBack as Fn4, maxPoolRelu: ex.maxPoolRelu as Engine["maxPoolRelu"], maxPoolReluBack: ex.maxPoolReluBack as Engine["maxPoolReluBack"],
      maxPool: ex.maxPool as Engine["maxPool"], poolScatter: ex.poolScatter as Engine["poolScatter"],
      bn: Object.fromEntries(BN_MODES.map((m) => [m, ex[`bn_${m}`]])) as Engine["bn"],
      copyRows: ex.copyRows as Engine["copyRows"],
      softmax: ex.softmax as Softmax, softmaxBack: ex.softmaxBack as SoftmaxBack,
      lnForward: ex.lnForward as LnForward, lnBackward: ex.lnBackward as LnBackward,
      memory, f32: new Float32Array(memory.buffer), f64: new Float64Array(memory.buffer), u8: new Uint8Array(memory.buffer), i32: new Int32Array(memory.buffer),
    };
  } catch (err) {
    if (process.env.CHAINRULE_DEBUG_SIMD) console.error(err);
    engine = null;
  }
  return engine;
}

/** The engine, or null where SIMD is unavailable or disabled. */
export function simdNn(): Engine | null {
  return enabled ? instantiate() : null;
}

/** Whether these kernels will run. */
export function simdNnAvailable(): boolean {
  return simdNn() !== null;
}

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
  const e = simdNn();
  if (e === null) return false;
  const m = e.f32;
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

/** out = a ⊙ b over n floats (out may alias a or b); false where SIMD is off. */
export function simdMul(out: Float32Array, a: Float32Array, b: Float32Array, n: number): boolean {
  const e = simdNn();
  return e !== null && binaryChunks(e.mul, e.f32, out, a, b, n);
}

/** out = a + b over n floats (out may alias a or b); false where SIMD is off. */
export function simdAdd(out: Float32Array, a: Float32Array, b: Float32Array, n: number): boolean {
  const e = simdNn();
  return e !== null && binaryChunks(e.add, e.f32, out, a, b, n);
}

/** out = relu(x) over n floats, bit for bit as js/elementwise.ts reluForward; false where SIMD is off. */
export function simdRelu(out: Float32Array, x: Float32Array, n: number): boolean {
  const e = simdNn();
  if (e === null) return false;
  const m = e.f32;
  for (let i = 0; i < n; i += CHUNK) {
    const c = Math.min(CHUNK, n - i);
    m.set(x.subarray(i, i + c), A0);
    e.relu(4 * A0, 4 * A0, 0, (c + 3) >> 2);
    out.set(m.subarray(A0, A0 + c), i);
  }
  return true;
}

/** dx = dout where x > 0, else 0, over n floats, as js/elementwise.ts reluBackward; false where SIMD is off. */
export function simdReluBackward(dx: Float32Array, dout: Float32Array, x: Float32Array, n: number): boolean {
  const e = simdNn();
  return e !== null && binaryChunks(e.reluBack, e.f32, dx, dout, x, n);
}

/**
 * js/conv.ts maxPool2x2Relu (same arguments, same bits, taps included) with the pooling in
 * WebAssembly SIMD: the source span holding every plane copied into the engine's memory with one
 * memcpy, pooled there one image at a time (its C planes sC apart) four outputs at a time, and
 * the outputs and taps copied out with one memcpy each (a memcpy per plane cost ~0.4 µs here).
 * False (the caller runs its loop) where SIMD is off, the span does not fit, or a plane holds a NaN.
 */
export function simdMaxPool2x2Relu(
  out: Float32Array, tap: Uint8Array, outOff: number, src: Float32Array, srcOff: number,
  N: number, C: number, PH: number, PW: number, sN: number, sC: number, sH: number,
): boolean {
  const e = simdNn();
  if (e === null || N === 0 || C === 0 || PH === 0 || PW === 0 || sH < 2 * PW) return false;
  const planeLen = (2 * PH - 1) * sH + 2 * PW; // floats from a plane's first row to its last window
  const span = (N - 1) * sN + (C - 1) * sC + planeLen, PL = PH * PW, n = N * C * PL, G = (PW + 3) >> 2;
  const S0 = BIG0, O0 = after(S0 + span), T0 = after(O0 + n); // source, outputs, taps (bytes from 4·T0)
  if (!bigScratch(e, T0 - BIG0 + n / 4 + 64)) return false;
  const m = e.f32;
  m.set(src.subarray(srcOff, srcOff + span), S0);
  for (let i = 0; i < N; i++) {
    // A row's last group may write up to 3 outputs past its end: the next image's, written after.
    if (e.maxPoolRelu(4 * (S0 + i * sN), 4 * (O0 + i * C * PL), 4 * T0 + i * C * PL, C, PH, G, PW, 4 * sH, 4 * sC)) return false; // a NaN
  }
  out.set(m.subarray(O0, O0 + n), outOff);
  tap.set(e.u8.subarray(4 * T0, 4 * T0 + n), outOff);
  return true;
}

/**
 * js/conv.ts maxPool2x2ReluBackward (same arguments; dsrc zeroed by the caller) with the scatter
 * in WebAssembly SIMD: gout and the taps copied in, scattered one image at a time into a zeroed
 * copy of dsrc's span (zeros where no gradient passes), the span copied out whole, and dbias[c] +=
 * each plane's sum in the loop's order (same float64 sums, same bits). False (the caller runs its
 * loop) where SIMD is off or the planes could overlap in dsrc.
 */
export function simdMaxPool2x2ReluBackward(
  dsrc: Float32Array, srcOff: number, gout: Float32Array, tap: Uint8Array, outOff: number,
  N: number, C: number, PH: number, PW: number, sN: number, sC: number, sH: number, dbias: Float32Array | null,
): boolean {
  const e = simdNn();
  if (e === null || N === 0 || C === 0 || PH === 0 || PW === 0 || sH < 2 * PW || C > POOL_IN / 4) return false;
  const planeLen = (2 * PH - 1) * sH + 2 * PW;
  // Planes must not overlap (channel-major or image-major strides): each position gets one gradient.
  const disjoint = (sN >= planeLen && (C === 1 || sC >= N * sN)) || (sC >= planeLen && (N === 1 || sN >= C * sC));
  if (!disjoint) return false;
  const span = (N - 1) * sN + (C - 1) * sC + planeLen, PL = PH * PW, n = N * C * PL, G = (PW + 3) >> 2;
  const D0 = BIG0, G0 = after(D0 + span), T0 = after(G0 + n); // dsrc's span, gout, taps (bytes from 4·T0)
  if (!bigScratch(e, T0 - BIG0 + n / 4 + 64)) return false;
  const m = e.f32, sums = e.f64;
  m.fill(0, D0, G0); // the scatter ORs rows in, and may spill zeros past a plane's last row
  m.set(gout.subarray(outOff, outOff + n), G0);
  e.u8.set(tap.subarray(outOff, outOff + n), 4 * T0);
  for (let i = 0; i < N; i++) {
    e.maxPoolReluBack(4 * (G0 + i * C * PL), 4 * T0 + i * C * PL, 4 * (D0 + i * sN), C, PH, G, PW, 4 * sH, 4 * sC, 4 * PSUM0);
    if (dbias) for (let c = 0; c < C; c++) dbias[c] += sums[PSUM0 / 2 + c];
  }
  dsrc.set(m.subarray(D0, D0 + span), srcOff);
  return true;
}

/**
 * js/conv.ts maxPool2x2 (planes of H×W, 2×2 windows, stride 2) in WebAssembly SIMD, the same
 * outputs and argmax: whole planes copied in, outputs and indices copied out. False where SIMD is
 * off or a plane does not fit.
 */
export function simdMaxPool2x2(out: Float32Array, argmax: Int32Array, x: Float32Array, planes: number, H: number, W: number, OH: number, OW: number): boolean {
  const e = simdNn();
  const plane = H * W, oplane = OH * OW;
  if (e === null || OH === 0 || OW === 0 || plane > POOL_IN) return false;
  const per = Math.floor(POOL_IN / plane), G = (OW + 3) >> 2, m = e.f32;
  for (let p = 0; p < planes; p += per) {
    const k = Math.min(per, planes - p);
    m.set(x.subarray(p * plane, (p + k) * plane), PIN0);
    e.maxPool(4 * PIN0, 4 * POUT0, 4 * BO0, k, OH, G, OW, 4 * W, 4 * plane);
    out.set(m.subarray(POUT0, POUT0 + k * oplane), p * oplane);
    argmax.set(e.i32.subarray(BO0, BO0 + k * oplane), p * oplane); // the indices sit in the out region
  }
  return true;
}

/**
 * js/conv.ts maxPool2dBackward in WebAssembly: a chunk of whole dx planes zeroed in the memory, the
 * outputs' gradients added at their argmax, the planes copied out (all of dx is written). Same bits.
 * False where SIMD is off or a plane does not fit.
 */
export function simdMaxPool2dBackward(dx: Float32Array, dout: Float32Array, argmax: Int32Array, planes: number, plane: number, oplane: number): boolean {
  const e = simdNn();
  if (e === null || plane > POOL_IN || oplane > POOL_IN || plane === 0) return false;
  const per = Math.floor(POOL_IN / Math.max(plane, oplane)), m = e.f32;
  for (let p = 0; p < planes; p += per) {
    const k = Math.min(per, planes - p);
    m.fill(0, BX0, BX0 + k * plane);
    m.set(dout.subarray(p * oplane, (p + k) * oplane), BY0);
    e.i32.set(argmax.subarray(p * oplane, (p + k) * oplane), BO0);
    e.poolScatter(4 * BX0, 4 * BY0, 4 * BO0, k, oplane, 4 * plane);
    dx.set(m.subarray(BX0, BX0 + k * plane), p * plane);
  }
  if (dx.length > planes * plane) dx.fill(0, planes * plane); // as the loop's fill
  return true;
}

/** Whether the batch-norm kernels take (N, C, HW): even planes that fit a region, channels that fit the arrays. */
function bnFits(C: number, HW: number): boolean {
  return HW >= 2 && HW % 2 === 0 && HW <= POOL_IN && C <= BN_MAXC;
}

/**
 * Runs batch-norm mode `mode` over all N·C planes, as many whole planes per call as fit a region:
 * x (and dy) copied in, out copied back for the elementwise modes. The per-channel arrays are set first.
 */
function bnPass(e: Engine, mode: BnMode, x: Float32Array | null, dy: Float32Array | null, out: Float32Array | null, N: number, C: number, HW: number): void {
  const per = Math.floor(POOL_IN / HW), total = N * C, m = e.f32;
  for (let p = 0; p < total; p += per) {
    const k = Math.min(per, total - p), a = p * HW, b = a + k * HW;
    if (x) m.set(x.subarray(a, b), BX0);
    if (dy) m.set(dy.subarray(a, b), BY0);
    e.bn[mode](4 * BX0, 4 * BY0, 4 * BO0, k, HW >> 1, p % C, C, 4 * BNP0);
    if (out) out.set(m.subarray(BO0, BO0 + k * HW), a);
  }
}

/** The per-channel float64 array `i` (BN) in the engine's memory. */
function bnArray(e: Engine, i: number, C: number): Float64Array {
  const at = BNP0 / 2 + i * BN_MAXC;
  return e.f64.subarray(at, at + C);
}

/** js/conv.ts batchNormStats in WebAssembly SIMD (float64 lanes); false where SIMD is off or the shape does not fit. */
export function simdBatchNormStats(mean: Float32Array, variance: Float32Array, x: Float32Array, N: number, C: number, HW: number): boolean {
  const e = simdNn();
  if (e === null || !bnFits(C, HW)) return false;
  const count = N * HW, sum = bnArray(e, BN.SUM, C), mu = bnArray(e, BN.MEAN, C);
  sum.fill(0);
  bnPass(e, "sum", x, null, null, N, C, HW);
  for (let c = 0; c < C; c++) mu[c] = sum[c] / count; // the float64 mean, as the loop's
  sum.fill(0);
  bnPass(e, "var", x, null, null, N, C, HW);
  for (let c = 0; c < C; c++) {
    mean[c] = mu[c];
    variance[c] = sum[c] / count;
  }
  return true;
}

/** js/conv.ts batchNormApply in WebAssembly SIMD, bit for bit (float64 lanes); false where SIMD is off or the shape does not fit. */
export function simdBatchNormApply(
  out: Float32Array, x: Float32Array, mean: Float32Array, rstd: Float32Array,
  weight: Float32Array | null, bias: Float32Array | null, N: number, C: number, HW: number,
): boolean {
  const e = simdNn();
  if (e === null || !bnFits(C, HW)) return false;
  const scale = bnArray(e, BN.RSTD, C), shift = bnArray(e, BN.K, C);
  for (let c = 0; c < C; c++) {
    scale[c] = rstd[c] * (weight ? weight[c] : 1);
    shift[c] = (bias ? bias[c] : 0) - mean[c] * scale[c];
  }
  bnPass(e, "apply", x, null, out, N, C, HW);
  return true;
}

/** js/conv.ts batchNormBackward in WebAssembly SIMD (float64 lanes); false where SIMD is off or the shape does not fit. */
export function simdBatchNormBackward(
  dx: Float32Array | null, dweight: Float32Array | null, dbias: Float32Array | null,
  dout: Float32Array, x: Float32Array, mean: Float32Array, rstd: Float32Array, weight: Float32Array | null,
  N: number, C: number, HW: number, training: boolean,
): boolean {
  const e = simdNn();
  if (e === null || !bnFits(C, HW)) return false;
  const count = N * HW;
  const mu = bnArray(e, BN.MEAN, C), rs = bnArray(e, BN.RSTD, C), k = bnArray(e, BN.K, C);
  const mdy = bnArray(e, BN.MDY, C), mdyx = bnArray(e, BN.MDYX, C), sdy = bnArray(e, BN.SUM, C), sdyx = bnArray(e, BN.SUM2, C);
  for (let c = 0; c < C; c++) {
    mu[c] = mean[c];
    rs[c] = rstd[c];
  }
  sdy.fill(0);
  sdyx.fill(0);
  bnPass(e, "backSums", x, dout, null, N, C, HW);
  for (let c = 0; c < C; c++) {
    if (dweight) dweight[c] = sdyx[c];
    if (dbias) dbias[c] = sdy[c];
    k[c] = (weight ? weight[c] : 1) * rs[c];
    mdy[c] = sdy[c] / count;
    mdyx[c] = sdyx[c] / count;
  }
  if (dx) bnPass(e, training ? "backDx" : "scale", x, dout, dx, N, C, HW);
  return true;
}

/**
 * Whether batch norm + 2×2 pool + ReLU runs here for (C, H, W): even planes that fit a region, and
 * pooled rows of four outputs a group (the pool kernel's layout).
 */
function bnPoolFits(C: number, H: number, W: number): boolean {
  return H >= 2 && W >= 2 && bnFits(C, H * W);
}

/**
 * js/conv.ts batchNormMaxPoolRelu in WebAssembly: a batch of whole planes of x copied in once,
 * normalised in the memory (batch norm's `apply`, out = x·scale + shift, float64 lanes as
 * batchNormApply) and pooled with ReLU from there (the pool kernel of simdMaxPool2x2Relu): only x
 * goes in and only the pooled outputs and taps come out, a quarter of the size. False (nothing
 * written that the caller relies on) where SIMD is off, the shape does not fit, or a plane holds a NaN.
 */
export function simdBatchNormMaxPoolRelu(
  out: Float32Array, tap: Uint8Array, x: Float32Array, scale: Float32Array, shift: Float32Array, N: number, C: number, H: number, W: number,
): boolean {
  const e = simdNn();
  if (e === null || !bnPoolFits(C, H, W)) return false;
  const HW = H * W, PH = H >> 1, PW = W >> 1, PL = PH * PW, G = (PW + 3) >> 2;
  const per = Math.floor(POOL_IN / HW), total = N * C, m = e.f32;
  bnArray(e, BN.RSTD, C).set(scale); // apply's scale and shift
  bnArray(e, BN.K, C).set(shift);
  for (let p = 0; p < total; p += per) {
    const k = Math.min(per, total - p), a = p * HW;
    m.set(x.subarray(a, a + k * HW), BX0);
    e.bn.apply(4 * BX0, 0, 4 * BO0, k, HW >> 1, p % C, C, 4 * BNP0);
    if (e.maxPoolRelu(4 * BO0, 4 * POUT0, 4 * PTAP0, k, PH, G, PW, 4 * W, 4 * HW)) return false; // a NaN
    out.set(m.subarray(POUT0, POUT0 + k * PL), p * PL);
    tap.set(e.u8.subarray(4 * PTAP0, 4 * PTAP0 + k * PL), p * PL);
  }
  return true;
}

/**
 * The pooled gradient of planes [p, p + k) scattered through their taps into a zeroed region DY
 * (batch norm's output gradient dz, whole planes), and the planes of x copied to BX0.
 */
function scatterPoolGrad(e: Engine, gout: Float32Array, tap: Uint8Array, x: Float32Array, p: number, k: number, H: number, W: number): void {
  const HW = H * W, PH = H >> 1, PW = W >> 1, PL = PH * PW, m = e.f32;
  m.fill(0, BY0, BY0 + k * HW + 64); // the scatter ORs rows in, and may spill zeros past the last
  m.set(gout.subarray(p * PL, (p + k) * PL), POUT0);
  e.u8.set(tap.subarray(p * PL, (p + k) * PL), 4 * PTAP0);
  e.maxPoolReluBack(4 * POUT0, 4 * PTAP0, 4 * BY0, k, PH, (PW + 3) >> 2, PW, 4 * W, 4 * HW, 4 * PSUM0);
  m.set(x.subarray(p * HW, (p + k) * HW), BX0);
}

/**
 * js/conv.ts batchNormMaxPoolReluGradSums in WebAssembly: per batch of planes, dz scattered in the
 * memory from the pooled gradient and x copied in, then batch norm's backSums (float64 lanes).
 * False where SIMD is off or the shape does not fit.
 */
export function simdBatchNormMaxPoolReluGradSums(
  sdy: Float64Array, sdyx: Float64Array, gout: Float32Array, tap: Uint8Array, x: Float32Array,
  mean: Float32Array, rstd: Float32Array, N: number, C: number, H: number, W: number,
): boolean {
  const e = simdNn();
  if (e === null || !bnPoolFits(C, H, W)) return false;
  const HW = H * W, per = Math.floor(POOL_IN / HW), total = N * C;
  bnArray(e, BN.MEAN, C).set(mean);
  bnArray(e, BN.RSTD, C).set(rstd);
  const sum = bnArray(e, BN.SUM, C).fill(0), sum2 = bnArray(e, BN.SUM2, C).fill(0);
  for (let p = 0; p < total; p += per) {
    const k = Math.min(per, total - p);
    scatterPoolGrad(e, gout, tap, x, p, k, H, W);
    e.bn.backSums(4 * BX0, 4 * BY0, 4 * BO0, k, HW >> 1, p % C, C, 4 * BNP0);
  }
  sdy.set(sum);
  sdyx.set(sum2);
  return true;
}

/**
 * js/conv.ts batchNormMaxPoolReluGradInput in WebAssembly: per batch of planes, dz scattered in
 * the memory again and x copied in, batch norm's backDx (training) or scale (running statistics)
 * run, dx copied out. False where SIMD is off or the shape does not fit.
 */
export function simdBatchNormMaxPoolReluGradInput(
  dx: Float32Array, gout: Float32Array, tap: Uint8Array, x: Float32Array, mean: Float32Array, rstd: Float32Array,
  a: Float32Array, mdy: Float32Array, mdyx: Float32Array, training: boolean, N: number, C: number, H: number, W: number,
): boolean {
  const e = simdNn();
  if (e === null || !bnPoolFits(C, H, W)) return false;
  const HW = H * W, per = Math.floor(POOL_IN / HW), total = N * C, m = e.f32;
  bnArray(e, BN.MEAN, C).set(mean);
  bnArray(e, BN.RSTD, C).set(rstd);
  bnArray(e, BN.K, C).set(a);
  bnArray(e, BN.MDY, C).set(mdy);
  bnArray(e, BN.MDYX, C).set(mdyx);
  for (let p = 0; p < total; p += per) {
    const k = Math.min(per, total - p);
    scatterPoolGrad(e, gout, tap, x, p, k, H, W);
    e.bn[training ? "backDx" : "scale"](4 * BX0, 4 * BY0, 4 * BO0, k, HW >> 1, p % C, C, 4 * BNP0);
    dx.set(m.subarray(BO0, BO0 + k * HW), p * HW);
  }
  return true;
}

/**
 * js/conv.ts nchwToPadded in WebAssembly: x copied into the engine's memory whole (one memcpy),
 * each channel's rows copied into zeroed padded planes there (a wasm loop per channel, over the
 * images), and the padded tensor copied out whole (zeros included, which the caller's zeroed dst
 * holds anyway). Whole tensors, because a memcpy per plane costs ~0.4 µs here (`subarray` + `set`)
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
  const e = simdNn();
  const HW = H * W, P = Hp * Wp, dense = N * C * HW, padded = N * C * P;
  if (e === null || dense === 0 || top + H > Hp || left + W > Wp || !bigScratch(e, dense + padded + 64)) return false;
  const [inLen, outLen] = toPadded ? [dense, padded] : [padded, dense];
  const I0 = BIG0, O0 = after(I0 + inLen), m = e.f32;
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
 * engine's memory with one memcpy, the column matrix there is zeroed, and each column row
 * (c, i, j) gets its in-image part from one copyRows call (every valid output row at once); the
 * rows come out with one memcpy (or one per row when `ldc` spreads them). The loop writes
 * ~3 ns a float here; the first conv of the MNIST CNNs (1 channel, 3×3) unfolds each image into
 * 9 × 784 floats, forward and again in backward. False (nothing touched) where SIMD is off, the
 * stride is not 1, or the image does not fit.
 */
export function simdIm2col(col: Float32Array, colOff: number, ldc: number, x: Float32Array, xOff: number, g: Conv2dGeometry): boolean {
  const { C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW } = g;
  const e = simdNn();
  const img = C * H * W, L = OH * OW, K = C * kh * kw;
  if (e === null || sh !== 1 || sw !== 1 || L === 0 || !bigScratch(e, img + K * L + 128)) return false;
  const X0 = BIG0, Q0 = after(X0 + img), m = e.f32;
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

/** Chunks of a and b copied in (memcpy), `fn` run over them, the results copied out. */
function binaryChunks(fn: Fn4, m: Float32Array, out: Float32Array, a: Float32Array, b: Float32Array, n: number): true {
  for (let i = 0; i < n; i += CHUNK) {
    const c = Math.min(CHUNK, n - i);
    m.set(a.subarray(i, i + c), A0);
    m.set(b.subarray(i, i + c), B0);
    fn(4 * A0, 4 * A0, 4 * B0, (c + 3) >> 2);
    out.set(m.subarray(A0, A0 + c), i);
  }
  return true;
}

/**
 * js/nn.ts layerNorm's affine case (weight and bias) in WebAssembly; false (nothing touched)
 * where SIMD is off or the shape does not fit (n odd or over CHUNK): the caller runs its loop.
 */
export function simdLayerNorm(
  out: Float32Array, mean: Float32Array, rstd: Float32Array, x: Float32Array,
  weight: Float32Array, bias: Float32Array, rows: number, n: number, eps: number,
): boolean {
  if ((n & 1) !== 0 || n > CHUNK || rows === 0) return false;
  const e = simdNn();
  if (e === null) return false;
  const m = e.f32;
  m.set(weight.subarray(0, n), W0);
  m.set(bias.subarray(0, n), BB0);
  const per = Math.floor(CHUNK / n);
  for (let r = 0; r < rows; r += per) {
    const c = Math.min(per, rows - r), len = c * n;
    m.set(x.subarray(r * n, r * n + len), A0);
    e.lnForward(4 * A0, 4 * B0, 4 * W0, 4 * BB0, 4 * M0, 4 * R0, c, n, eps);
    out.set(m.subarray(B0, B0 + len), r * n);
    mean.set(m.subarray(M0, M0 + c), r);
    rstd.set(m.subarray(R0, R0 + c), r);
  }
  return true;
}

/**
 * js/nn.ts lnBackwardAffine in WebAssembly: dx, and the float64 column sums added into accW
 * (Σ dout·x̂) and accB (Σ dout). False where SIMD is off or the shape does not fit.
 */
export function simdLayerNormBackward(
  dx: Float32Array, accW: Float64Array, accB: Float64Array, dout: Float32Array, x: Float32Array,
  mean: Float32Array, rstd: Float32Array, weight: Float32Array, rows: number, n: number,
): boolean {
  if ((n & 1) !== 0 || n > CHUNK || rows === 0) return false;
  const e = simdNn();
  if (e === null) return false;
  const m = e.f32, d = e.f64;
  m.set(weight.subarray(0, n), W0);
  d.set(accW.subarray(0, n), AW0 / 2);
  d.set(accB.subarray(0, n), AB0 / 2);
  const per = Math.floor(CHUNK / n);
  for (let r = 0; r < rows; r += per) {
    const c = Math.min(per, rows - r), len = c * n;
    m.set(x.subarray(r * n, r * n + len), A0);
    m.set(dout.subarray(r * n, r * n + len), B0);
    m.set(mean.subarray(r, r + c), M0);
    m.set(rstd.subarray(r, r + c), R0);
    e.lnBackward(4 * C0, 4 * B0, 4 * A0, 4 * W0, 4 * AW0, 4 * AB0, 4 * M0, 4 * R0, c, n);
    dx.set(m.subarray(C0, C0 + len), r * n);
  }
  accW.set(d.subarray(AW0 / 2, AW0 / 2 + n));
  accB.set(d.subarray(AB0 / 2, AB0 / 2 + n));
  return true;
}

/**
 * ops/attention.ts causalSoftmax without dropout: in place over H score matrices (T, T) at
 * P[pb..], row i ← softmax of its first i + 1 entries, zeros after. False (nothing touched)
 * where SIMD is off or T is not a multiple of 4 (or over CHUNK).
 */
export function simdCausalSoftmax(P: Float32Array, pb: number, H: number, T: number): boolean {
  if ((T & 3) !== 0 || T > CHUNK) return false;
  const e = simdNn();
  if (e === null) return false;
  const m = e.f32, per = Math.floor(CHUNK / T);
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
  const e = simdNn();
  if (e === null) return false;
  const m = e.f32, per = Math.floor(CHUNK / T);
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
