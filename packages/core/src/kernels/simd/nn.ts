/**
 * WebAssembly SIMD (f32x4) versions of the GPT's elementwise hot loops, which V8 does not
 * vectorise: GELU with its derivative (gpt-ops.ts linearGelu), GELU alone, and the
 * elementwise product of linearGelu's backward.
 *
 * WebAssembly addresses only its own memory, so the operands are copied in (TypedArray.set,
 * a memcpy) and the results out, in chunks of CHUNK floats that stay in L1/L2. This module
 * owns its memory; each thread that loads this file gets its own instance (no shared state).
 *
 * GELU: gelu(v) = v·Φ(v), Φ(v) = (1 + erf(v/√2))/2, gelu'(v) = Φ(v) + v·φ(v),
 * φ(v) = exp(−v²/2)/√(2π). erf: the rational approximation for float32 of Eigen / XLA
 * (x·P(x²)/Q(x²) with x clamped to [−4, 4], no table, no gather); exp: range reduction
 * by ln 2 (Cody–Waite hi/lo), degree-7 Taylor polynomial on |r| ≤ ln2/2, 2^k built by
 * shifting k + 127 into the exponent bits. Outside (−8, 8) the results are those of the
 * TypeScript table (gelu = v, gelu' = 1 above; 0 and 0 below); NaN gives NaN.
 *
 * `simdNn()` returns null where WebAssembly SIMD is missing or CHAINRULE_SIMD=0 (or after
 * `setSimdNnEnabled(false)`); callers then run their TypeScript loops.
 */
import { I32, V128, WA, funcBody, funcType, get, i32const, moduleBytes, set, simd, tee } from "./asm.js";

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
const cd = (x: number) => constant(`d${x}`, [...f64bytes(x), ...f64bytes(x)]);
// pmin(a, b) = b < a ? b : a and pmax(a, b) = a < b ? b : a (one minpd / maxpd each); with the
// variable as a, a NaN stays NaN.
const [dadd, dmul, ddiv, dmin, dmax] = [0xf0, 0xf2, 0xf3, 0xf6, 0xf7].map((op) => simd(op));
const promote = simd(0x5f), demote = simd(0x5e); // f64x2.promote_low_f32x4, f32x4.demote_f64x2_zero
/** i8x16.shuffle: lanes 0, 1 of the first operand, then lanes 0, 1 of the second. */
const join = simd(0x0d, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);

function hornerD(y: number[], c: number[]): number[] {
  const code = cd(c[c.length - 1]);
  for (let i = c.length - 2; i >= 0; i--) code.push(...y, ...dmul, ...cd(c[i]), ...dadd);
  return code;
}

/** Horner: c[0] + y·(c[1] + y·(…)) with y the code that pushes the variable. */
function horner(y: number[], c: number[]): number[] {
  const code = cf(c[c.length - 1]);
  for (let i = c.length - 2; i >= 0; i--) code.push(...y, ...fmul, ...cf(c[i]), ...fadd);
  return code;
}

// Eigen's / XLA's erf for float32: erf(x) ≈ x·P(x²)/Q(x²) on [−4, 4].
const ERF_P = [-1.60960333262415e-2, -2.95459980854025e-3, -7.34990630326855e-4, -5.69250639462346e-5, -2.10102402082508e-6, 2.77068142495902e-8, -2.72614225801306e-10];
const ERF_Q = [-1.42647390514189e-2, -7.37332916720468e-3, -1.68282697438203e-3, -2.13374055278905e-4, -1.45660718464996e-5];
const EXP_TAYLOR = [1, 1, 1 / 2, 1 / 6, 1 / 24, 1 / 120, 1 / 720, 1 / 5040];
const LN2_HI = 0.693359375, LN2_LO = -2.12194440e-4; // Cephes' split: k·LN2_HI is exact for |k| < 2^15

/**
 * gelu(H, D, quads) with D unused for the forward-only variant: per quad of floats at H,
 * H ← gelu(v) and (withGrad) D ← gelu'(v). Φ, v·Φ and Φ + v·φ are formed in float64 lanes
 * (two f64x2 halves per quad, rounded once to float32 on the way out): in float32 the
 * roundings of the rational erf and of 1 + erf add up to ~2 ulp near 1. exp stays float32
 * (v·φ's relative error there is ~1e-7 of a term ≤ 0.25).
 */
function geluFn(withGrad: boolean) {
  const [H, D, N] = [0, 1, 2];
  const [v, vphi, t, k, x, x2, c, hLo, dLo] = [3, 4, 5, 6, 7, 8, 9, 10, 11];
  /** The low (0) or high (1) two floats of the f32x4 in local l, as f64x2. */
  beginConsts(12);
  const half = (l: number, hi: number) => (hi ? [...get(l), ...get(l), ...simd(0x0d, 8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15), ...promote] : [...get(l), ...promote]);
  const code: number[] = [
    0x02, 0x40, ...get(N), 0x45, 0x0d, 0, // if (n == 0) return
    0x03, 0x40,
    ...ld(H), ...set(v),
  ];
  if (withGrad) {
    code.push(
      // t = max(−v²/2, −40); k = round(t·log2 e); r = t − k·ln2 (hi, lo); vφ = v·p(r)·2^k/√(2π)
      ...get(v), ...get(v), ...fmul, ...cf(-0.5), ...fmul, ...cf(-40), ...fmax, ...tee(t),
      ...cf(Math.LOG2E), ...fmul, ...fnearest, ...set(k),
      ...get(t), ...get(k), ...cf(LN2_HI), ...fmul, ...fsub, ...get(k), ...cf(LN2_LO), ...fmul, ...fsub, ...set(t),
      ...get(v), ...horner(get(t), EXP_TAYLOR),
      ...get(k), ...truncSat, ...ci(127), ...iadd, ...i32const(23), ...ishl, ...fmul, // · 2^k
      ...cf(1 / Math.sqrt(2 * Math.PI)), ...fmul, ...fmul, ...set(vphi),
    );
  }
  for (const hi of [0, 1]) {
    // x = clamp(v/√2, −4, 4) (min/max keep NaN); erf = x·P(x²)/Q(x²); c = Φ = 0.5 + 0.5·erf
    code.push(
      ...half(v, hi), ...cd(Math.SQRT1_2), ...dmul, ...cd(4), ...dmin, ...cd(-4), ...dmax, ...tee(x),
      ...get(x), ...dmul, ...set(x2),
      ...get(x), ...hornerD(get(x2), ERF_P), ...dmul,
      ...hornerD(get(x2), ERF_Q), ...ddiv,
      ...cd(0.5), ...dmul, ...cd(0.5), ...dadd, ...set(c),
      ...half(v, hi), ...get(c), ...dmul, ...demote, // v·Φ
    );
    if (withGrad) code.push(...get(c), ...half(vphi, hi), ...dadd, ...demote); // Φ + v·φ
    if (hi) {
      // join the halves: lanes 0, 1 of the low results, then lanes 0, 1 of these
      if (withGrad) code.push(...set(x), ...get(dLo), ...get(x), ...join, ...set(x)); // x: d (f32x4)
      code.push(...set(c), ...get(hLo), ...get(c), ...join, ...set(c)); // c: gelu (f32x4)
    } else {
      if (withGrad) code.push(...set(dLo));
      code.push(...set(hLo));
    }
  }
  // H = v ≥ 8 ? v : v ≤ −8 ? 0 : v·Φ;  D = v ≥ 8 ? 1 : v ≤ −8 ? 0 : Φ + v·φ (NaN compares false: kept)
  code.push(...st(H, [...get(v), ...get(c), ...get(v), ...cf(-8), ...fle, ...vandnot, ...get(v), ...cf(8), ...fge, ...vbitselect]));
  if (withGrad) {
    code.push(
      ...st(D, [...cf(1), ...get(x), ...get(v), ...cf(-8), ...fle, ...vandnot, ...get(v), ...cf(8), ...fge, ...vbitselect]),
      ...addTo(D, i32const(16)),
    );
  }
  code.push(...addTo(H, i32const(16)), ...decrementLoop(N), 0x0b, 0x0b, 0x0b);
  const { init, count } = constLocals();
  return { type: funcType([I32, I32, I32]), code: funcBody([[9 + count, V128]], [...init, ...code]) };
}

/** mul(out, a, b, quads): out = a ⊙ b. */
function mulFn() {
  const [O, A, B, N] = [0, 1, 2, 3];
  const code = [
    0x02, 0x40, ...get(N), 0x45, 0x0d, 0,
    0x03, 0x40,
    ...st(O, [...ld(A), ...ld(B), ...fmul]),
    ...addTo(O, i32const(16)), ...addTo(A, i32const(16)), ...addTo(B, i32const(16)),
    ...decrementLoop(N), 0x0b, 0x0b, 0x0b,
  ];
  return { type: funcType([I32, I32, I32, I32]), code: funcBody([], code) };
}

type Fn3 = (a: number, b: number, n: number) => void;
type Fn4 = (a: number, b: number, c: number, n: number) => void;

interface Engine {
  geluGrad: Fn3;
  gelu: Fn3;
  mul: Fn4;
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

let enabled = process.env.CHAINRULE_SIMD !== "0" && process.env.CHAINRULE_PARALLEL_SIMD !== "0";
let engine: Engine | null | undefined;

/** Turns these kernels off (the TypeScript loops run) or back on; the initial value comes from CHAINRULE_SIMD. */
export function setSimdNnEnabled(on: boolean): void {
  enabled = on;
}

function instantiate(): Engine | null {
  if (engine !== undefined) return engine;
  try {
    const mod = new WA.Module(moduleBytes([geluFn(true), geluFn(false), mulFn()], ["geluGrad", "gelu", "mul"], false));
    const memory = new WA.Memory({ initial: 1 });
    const ex = new WA.Instance(mod, { env: { memory } }).exports;
    engine = { geluGrad: ex.geluGrad as Fn3, gelu: ex.gelu as Fn3, mul: ex.mul as Fn4, memory, f32: new Float32Array(memory.buffer) };
  } catch {
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
  const e = simdNn();
  if (e === null) return false;
  const m = e.f32;
  for (let i = 0; i < n; i += CHUNK) {
    const c = Math.min(CHUNK, n - i);
    m.set(h.subarray(i, i + c), A0);
    e.geluGrad(4 * A0, 4 * B0, (c + 3) >> 2);
    h.set(m.subarray(A0, A0 + c), i);
    d.set(m.subarray(B0, B0 + c), i);
  }
  return true;
}

/** In place h ← gelu(h) over n floats; false where SIMD is off. */
export function simdGelu(h: Float32Array, n: number): boolean {
  const e = simdNn();
  if (e === null) return false;
  const m = e.f32;
  for (let i = 0; i < n; i += CHUNK) {
    const c = Math.min(CHUNK, n - i);
    m.set(h.subarray(i, i + c), A0);
    e.gelu(4 * A0, 0, (c + 3) >> 2);
    h.set(m.subarray(A0, A0 + c), i);
  }
  return true;
}

/** out = a ⊙ b over n floats (out may alias a or b); false where SIMD is off. */
export function simdMul(out: Float32Array, a: Float32Array, b: Float32Array, n: number): boolean {
  const e = simdNn();
  if (e === null) return false;
  const m = e.f32;
  for (let i = 0; i < n; i += CHUNK) {
    const c = Math.min(CHUNK, n - i);
    m.set(a.subarray(i, i + c), A0);
    m.set(b.subarray(i, i + c), B0);
    e.mul(4 * A0, 4 * A0, 4 * B0, (c + 3) >> 2);
    out.set(m.subarray(A0, A0 + c), i);
  }
  return true;
}
