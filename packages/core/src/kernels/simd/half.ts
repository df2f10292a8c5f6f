/**
 * float32 ⇄ 16-bit floats (bfloat16, IEEE float16) in WebAssembly SIMD, eight values an
 * iteration: the gradient compression of the parallel package's exchange between hosts. The same
 * bits as the one-at-a-time loops of js/half.ts (the reference; PyTorch's conversions, tested
 * against values it produced), computed four lanes at a time without branches:
 *
 * - bfloat16: add the rounding bias 0x7fff + (bit 16), keep the high half; NaN → 0x7fc0.
 * - float16: |x|·2^112·2^-110 (Inf past float16's range), plus a power of two aligned to
 *   float16's last mantissa bit (at least 2^-14's, so subnormals round there): the float addition
 *   rounds to nearest even; the exponent and mantissa are read from its bits. NaN → 0x7e00.
 * - widening: bfloat16 shifted up 16 bits; float16 normal values rebiased by a multiplication
 *   (2^-112), subnormals as (mantissa under 0.5's exponent) − 0.5. Both exact.
 *
 * Chunks of the operands are copied into the scratch memory (memory.ts: floats at A0, halves at
 * B0), converted and copied out; a chunk's last group of eight may run past its end into the
 * regions' slack, never copied out.
 */
import { I32, V128, funcBody, funcType, get, i32const, set, simd } from "./asm.js";
import { addTo, beginConsts, cf, ci, constLocals, decrementLoop, fadd, fmul, fne, fsub, iadd, ishl, ld, st, vand, vbitselect, vor } from "./codegen.js";
import { A0, B0, CHUNK, wasmFamily } from "./memory.js";

const shrU = simd(0xad), maxU = simd(0xb9), gtU = simd(0x3c), ltU = simd(0x3a); // i32x4.shr_u, max_u, gt_u, lt_u
const fabs = simd(0xe0); // f32x4.abs
const narrowU = simd(0x86); // i16x8.narrow_i32x4_u: two vectors of values ≤ 0xffff → eight halves
const widenLow = simd(0xa9), widenHigh = simd(0xaa); // i32x4.extend_{low,high}_i16x8_u
const shr = (n: number) => [...i32const(n), ...shrU];
const shl = (n: number) => [...i32const(n), ...ishl];

/** bfloat16 bits of the four floats in local x, each in the low half of an i32 lane. */
function bf16Of(x: number): number[] {
  return [
    ...ci(0x7fc0),
    ...get(x), ...ci(0x7fff), ...iadd, ...get(x), ...shr(16), ...ci(1), ...vand, ...iadd, ...shr(16),
    ...get(x), ...get(x), ...fne, ...vbitselect, // NaN → 0x7fc0
  ];
}

/** float16 bits of the four floats in local x (js/half.ts fp16FromBits, lane for lane); t: a scratch local. */
function fp16Of(x: number, t: number): number[] {
  return [
    // t = (max_u(2x & 0xff000000, 0x71000000) >> 1) + 0x07800000 as a float, + |x|·2^112·2^-110
    ...get(x), ...get(x), ...iadd, ...ci(0xff000000 | 0), ...vand, ...ci(0x71000000), ...maxU, ...shr(1), ...ci(0x07800000), ...iadd,
    ...get(x), ...fabs, ...cf(2 ** 112), ...fmul, ...cf(2 ** -110), ...fmul, ...fadd, ...set(t),
    // sign | (2x > 0xff000000 (NaN) ? 0x7e00 : exponent + mantissa of t)
    ...get(x), ...shr(16), ...ci(0x8000), ...vand,
    ...ci(0x7e00),
    ...get(t), ...shr(13), ...ci(0x7c00), ...vand, ...get(t), ...ci(0x0fff), ...vand, ...iadd,
    ...get(x), ...get(x), ...iadd, ...ci(0xff000000 | 0), ...gtU, ...vbitselect,
    ...vor,
  ];
}

/** float32 bits of the float16 bits in the low halves of local w's lanes (js/half.ts fp16ToBits); w becomes 2·(h << 16). */
export function fp16To(w: number): number[] {
  return [
    ...get(w), ...shl(16), ...set(w),
    ...get(w), ...ci(0x80000000 | 0), ...vand, // sign
    ...get(w), ...get(w), ...iadd, ...set(w),
    ...get(w), ...shr(17), ...ci(126 << 23), ...vor, ...cf(0.5), ...fsub, // subnormal
    ...get(w), ...shr(4), ...ci(0xe0 << 23), ...iadd, ...cf(2 ** -112), ...fmul, // normal, Inf, NaN
    ...get(w), ...ci(1 << 27), ...ltU, ...vbitselect,
    ...vor,
  ];
}

/** encode(halvesAt, floatsAt, octs): eight floats → eight halves an iteration. */
function encodeFn(format: "bf16" | "fp16") {
  const [H, X, N] = [0, 1, 2], [a, b, t] = [3, 4, 5];
  beginConsts(6);
  const of = (x: number) => (format === "bf16" ? bf16Of(x) : fp16Of(x, t));
  const code = [
    0x02, 0x40, ...get(N), 0x45, 0x0d, 0, 0x03, 0x40, // if (n == 0) return; loop
    ...ld(X), ...set(a), ...ld(X, 16), ...set(b),
    ...st(H, [...of(a), ...of(b), ...narrowU]),
    ...addTo(H, i32const(16)), ...addTo(X, i32const(32)), ...decrementLoop(N), 0x0b, 0x0b, 0x0b,
  ];
  const { init, count } = constLocals();
  return { type: funcType([I32, I32, I32]), code: funcBody([[3 + count, V128]], [...init, ...code]) };
}

/** decode(floatsAt, halvesAt, octs): eight halves → eight floats an iteration. */
function decodeFn(format: "bf16" | "fp16") {
  const [X, H, N] = [0, 1, 2], [h, w] = [3, 4];
  beginConsts(5);
  const widen = (lanes: number[]) => [...get(h), ...lanes, ...set(w), ...(format === "bf16" ? [...get(w), ...shl(16)] : fp16To(w))];
  const code = [
    0x02, 0x40, ...get(N), 0x45, 0x0d, 0, 0x03, 0x40,
    ...ld(H), ...set(h),
    ...st(X, widen(widenLow)), ...st(X, widen(widenHigh), 16),
    ...addTo(X, i32const(32)), ...addTo(H, i32const(16)), ...decrementLoop(N), 0x0b, 0x0b, 0x0b,
  ];
  const { init, count } = constLocals();
  return { type: funcType([I32, I32, I32]), code: funcBody([[2 + count, V128]], [...init, ...code]) };
}

type Fn3 = (a: number, b: number, n: number) => void;
const family = wasmFamily<{ bf16: Fn3; fp16: Fn3; bf16Back: Fn3; fp16Back: Fn3 }>(() => [
  [encodeFn("bf16"), "bf16"], [encodeFn("fp16"), "fp16"], [decodeFn("bf16"), "bf16Back"], [decodeFn("fp16"), "fp16Back"],
]);

let halves: Uint16Array | null = null;
/** A view of the scratch memory as halves (made again when the memory grew). */
function halvesOf(buffer: ArrayBufferLike): Uint16Array {
  if (halves === null || halves.buffer !== buffer) halves = new Uint16Array(buffer);
  return halves;
}

/** out[i] = x[i] rounded to bfloat16 or float16, over n values; false where SIMD is off. */
export function simdEncodeHalf(format: "bf16" | "fp16", out: Uint16Array, x: Float32Array, n: number): boolean {
  const k = family();
  if (k === null) return false;
  const f = k.mem.f32, u16 = halvesOf(k.mem.memory.buffer), fn = k.fn[format];
  for (let i = 0; i < n; i += CHUNK) {
    const c = Math.min(CHUNK, n - i);
    f.set(x.subarray(i, i + c), A0);
    fn(4 * B0, 4 * A0, Math.ceil(c / 8));
    out.set(u16.subarray(2 * B0, 2 * B0 + c), i);
  }
  return true;
}

/** out[i] = h[i] widened to float32 (exact), over n values; false where SIMD is off. */
export function simdDecodeHalf(format: "bf16" | "fp16", out: Float32Array, h: Uint16Array, n: number): boolean {
  const k = family();
  if (k === null) return false;
  const f = k.mem.f32, u16 = halvesOf(k.mem.memory.buffer), fn = format === "bf16" ? k.fn.bf16Back : k.fn.fp16Back;
  for (let i = 0; i < n; i += CHUNK) {
    const c = Math.min(CHUNK, n - i);
    u16.set(h.subarray(i, i + c), 2 * B0);
    fn(4 * A0, 4 * B0, Math.ceil(c / 8));
    out.set(f.subarray(A0, A0 + c), i);
  }
  return true;
}
