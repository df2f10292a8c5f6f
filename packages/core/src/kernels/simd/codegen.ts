/**
 * Code fragments shared by the kernel families of this folder (gelu.ts, elementwise.ts,
 * layernorm.ts, attention.ts, pool.ts, batchnorm.ts, conv.ts): opcodes by name, vector loads and
 * stores, hoisted vector constants, loop helpers and polynomial evaluation. asm.ts holds the
 * encoder (LEB128, sections, module); these build function bodies from it.
 */
import { get, i32const, set, simd, tee } from "./asm.js";

/** A function's type and body, as moduleBytes takes them. */
export interface WasmFunction {
  type: number[];
  code: number[];
}

// ---- f32x4 / v128 (four floats a vector) ----
export const ld = (addr: number, offset = 0) => [...get(addr), ...simd(0x00, 0, offset)]; // v128.load (align 1)
export const st = (addr: number, value: number[], offset = 0) => [...get(addr), ...value, ...simd(0x0b, 0, offset)]; // v128.store
export const f32bytes = (x: number) => Array.from(new Uint8Array(Float32Array.of(x).buffer));
export const f64bytes = (x: number) => Array.from(new Uint8Array(Float64Array.of(x).buffer));
export const [fadd, fsub, fmul, fmax] = [0xe4, 0xe5, 0xe6, 0xeb].map((op) => simd(op)); // fmax: f32x4.pmax
export const fnearest = simd(0x6a);
export const fle = simd(0x45), fge = simd(0x46);
export const [fgt, fne, vand, vor] = [0x44, 0x42, 0x4e, 0x50].map((op) => simd(op));
export const vandnot = simd(0x4f), vbitselect = simd(0x52);
export const truncSat = simd(0xf8); // i32x4.trunc_sat_f32x4_s
export const iadd = simd(0xae), ishl = simd(0xab);
export const [ieq, igt, ishr] = [0x37, 0x3b, 0xac].map((op) => simd(op)); // i32x4.eq, i32x4.gt_s, i32x4.shr_s
export const i32x4splat = simd(0x11), ile = simd(0x3d); // i32x4.le_s
export const anyTrue = simd(0x53);
export const zero = simd(0x0c, ...new Array(16).fill(0));
/** The i32x4 lane indices 0, 1, 2, 3 (and 0, 2, 4, 6: the first column of each 2-wide window). */
export const laneIdx = simd(0x0c, ...[0, 1, 2, 3].flatMap((k) => Array.from(new Uint8Array(Int32Array.of(k).buffer))));
export const evenLanes = simd(0x0c, ...[0, 2, 4, 6].flatMap((k) => Array.from(new Uint8Array(Int32Array.of(k).buffer))));
/** Shuffles of two vectors (eight floats): the even floats, the odd floats. */
export const evenFloats = simd(0x0d, 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27);
export const oddFloats = simd(0x0d, 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
/** f32x4 lanes sum (horizontal), as f32: extract_lane 0..3. */
export const hsum4 = (l: number) => [...get(l), ...simd(0x1f, 0), ...get(l), ...simd(0x1f, 1), 0x92, ...get(l), ...simd(0x1f, 2), ...get(l), ...simd(0x1f, 3), 0x92, 0x92];
export const hmax4 = (l: number) => [...get(l), ...simd(0x1f, 0), ...get(l), ...simd(0x1f, 1), 0x97, ...get(l), ...simd(0x1f, 2), ...get(l), ...simd(0x1f, 3), 0x97, 0x97]; // f32.max

// ---- f64x2 (two floats a vector, promoted on load, rounded once on store) ----
export const [dadd, dmul] = [0xf0, 0xf2].map((op) => simd(op));
export const dsub = simd(0xf1);
export const promote = simd(0x5f), demote = simd(0x5e); // f64x2.promote_low_f32x4, f32x4.demote_f64x2_zero
export const splat2 = simd(0x14);
export const ld2 = (addr: number) => [...get(addr), ...simd(0x5d, 0, 0), ...promote]; // two floats → f64x2
export const st2 = (addr: number, value: number[]) => [...get(addr), ...value, ...demote, ...simd(0x5b, 0, 0, 0)]; // f64x2 → two floats
export const ldv = (addr: number) => [...get(addr), ...simd(0x00, 0, 0)];
export const stv = (addr: number, value: number[]) => [...get(addr), ...value, ...simd(0x0b, 0, 0)];
export const lanesSum = (l: number) => [...get(l), ...simd(0x21, 0), ...get(l), ...simd(0x21, 1), 0xa0]; // f64: lane 0 + lane 1
export const f32load = (addr: number) => [...get(addr), 0x2a, 2, 0, 0xbb]; // f64.promote_f32(f32.load)
export const f32store = (addr: number, value: number[]) => [...get(addr), ...value, 0xb6, 0x38, 2, 0]; // f32.store(f32.demote_f64)

// ---- loops ----
export const addTo = (l: number, n: number[]) => [...get(l), ...n, 0x6a, ...set(l)]; // l += n (i32)
export const bumpBy = (l: number, bytes: number) => addTo(l, i32const(bytes));
export const decrementLoop = (l: number) => [...get(l), ...i32const(1), 0x6b, ...tee(l), 0x0d, 0]; // if (--l != 0) continue
/** A counted loop over n/2 pairs (n even, ≥ 2) in local `j`. */
export const pairsLoop = (j: number, n: number, body: number[]) => [...get(n), ...i32const(1), 0x76, ...set(j), 0x03, 0x40, ...body, ...decrementLoop(j), 0x0b]; // j = n >>> 1

// ---- hoisted vector constants ----
/**
 * `cf(x)` (four float32 x) and `ci(x)` (four int32 x) read a local that `constLocals` fills once
 * before the loop (V8 builds a v128.const from immediates with several instructions at every use,
 * inside the loop). A function builder calls `beginConsts` first and `constLocals` last.
 */
let pool: Map<string, { bytes: number[]; local: number }> = new Map();
let poolBase = 0;
function constant(key: string, bytes: number[]): number[] {
  let c = pool.get(key);
  if (!c) pool.set(key, (c = { bytes, local: poolBase + pool.size }));
  return get(c.local);
}
/** Starts a function whose first constant local is `base`. */
export function beginConsts(base: number): void {
  pool = new Map();
  poolBase = base;
}
/** The code that fills the constant locals, and how many there are. */
export function constLocals(): { init: number[]; count: number } {
  const init: number[] = [];
  for (const { bytes, local } of pool.values()) init.push(...simd(0x0c, ...bytes), ...set(local));
  return { init, count: pool.size };
}
export const cf = (x: number) => constant(`f${x}`, [...f32bytes(x), ...f32bytes(x), ...f32bytes(x), ...f32bytes(x)]);
export const ci = (x: number) => constant(`i${x}`, new Array(4).fill(0).flatMap(() => Array.from(new Uint8Array(Int32Array.of(x).buffer))));

// ---- polynomials and exp ----
/**
 * Estrin's scheme: Σ c[i]·y^i as (c0 + c1·y) + y²·(c2 + c3·y) + y⁴·(…),
 * y², y⁴, … kept in the locals `pows`: a chain ~3 multiply-adds deep where Horner's is deg(c) deep.
 * GELU's loop is latency-bound (its two polynomials are its critical path), so this is faster
 * there, though it does a few more multiplications.
 */
export function estrin(y: number[], c: number[], pows: number[]): number[] {
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
export function horner(y: number[], c: number[]): number[] {
  const code = cf(c[c.length - 1]);
  for (let i = c.length - 2; i >= 0; i--) code.push(...y, ...fmul, ...cf(c[i]), ...fadd);
  return code;
}

/**
 * 2^f on [−1/2, 1/2], degree 6, fitted by iteratively reweighted least squares on the relative
 * error (float64): 2.0e-9 relative. With SHIFTER, 2^u = 2^k·2^(u − k): u + SHIFTER rounds u to the
 * integer k and leaves k + 127 in the low mantissa bits, which a shift by 23 makes 2^k's exponent
 * (gelu.ts, attention.ts).
 */
export const EXP2_POLY = [1, 0.693147202832453, 0.240226479148886, 0.055503325229126446, 0.009618437399157718, 0.0013398853415337387, 0.00015353297039528464];
/** 1.5·2^23 + 127. */
export const SHIFTER = 12582912 + 127;
