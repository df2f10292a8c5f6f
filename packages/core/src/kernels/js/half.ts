/**
 * 16-bit floats, one value at a time: float32 rounded to bfloat16 or IEEE float16 (round to
 * nearest, ties to even) and widened back (exactly). The reference for the WebAssembly SIMD
 * passes (simd/half.ts), which compute the same bits four lanes at a time, and their fallback.
 *
 * bfloat16 keeps float32's sign and exponent and the top 7 mantissa bits: its range is float32's.
 * float16 has 5 exponent bits: beyond ±65504 (from 65520 on, by rounding) a value becomes ±Inf;
 * below 2^-14 it becomes subnormal (steps of 2^-24), below 2^-25 zero. NaN stays NaN (0x7fc0;
 * float16: 0x7e00 with the sign).
 */

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** bfloat16 bits of float32 bits `u`: add the rounding bias, keep the high half. */
export function bf16FromBits(u: number): number {
  if ((u & 0x7fffffff) > 0x7f800000) return 0x7fc0; // NaN
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/**
 * float16 bits of float32 bits `u`, by float arithmetic (Maratea's fp16_ieee_from_fp32_value,
 * the one PyTorch's Half uses): scaling |x| by 2^112 · 2^-110 turns overflow into Inf, and adding
 * a power of two aligned to float16's last mantissa bit rounds to nearest even, subnormals included.
 */
export function fp16FromBits(u: number): number {
  f32[0] = 0;
  u32[0] = u & 0x7fffffff;
  const base = Math.fround(Math.fround(f32[0] * 2 ** 112) * 2 ** -110);
  const shl1 = (u << 1) >>> 0;
  const bias = Math.max((shl1 & 0xff000000) >>> 0, 0x71000000);
  u32[0] = (bias >>> 1) + 0x07800000;
  f32[0] = Math.fround(f32[0] + base);
  const bits = u32[0];
  const nonsign = ((bits >>> 13) & 0x7c00) + (bits & 0x0fff);
  return ((u >>> 16) & 0x8000) | (shl1 > 0xff000000 ? 0x7e00 : nonsign);
}

/** float32 bits of float16 bits `h` (Maratea's fp16_ieee_to_fp32_value): exact. */
export function fp16ToBits(h: number): number {
  const w = (h << 16) >>> 0, twoW = (w << 1) >>> 0;
  let mag: number;
  if (twoW < 1 << 27) {
    // Subnormal: the mantissa under the exponent of 0.5, less 0.5.
    u32[0] = (twoW >>> 17) | (126 << 23);
    f32[0] = Math.fround(f32[0] - 0.5);
    mag = u32[0];
  } else {
    u32[0] = (twoW >>> 4) + (0xe0 << 23);
    f32[0] = Math.fround(f32[0] * 2 ** -112);
    mag = u32[0];
  }
  return ((w & 0x80000000) | mag) >>> 0;
}

/** out[i] = x[i] rounded to bfloat16 (or float16), over n values. */
export function encodeHalfLoop(format: "bf16" | "fp16", out: Uint16Array, x: Float32Array, n: number): void {
  const bits = new Uint32Array(x.buffer, x.byteOffset, n);
  if (format === "bf16") for (let i = 0; i < n; i++) out[i] = bf16FromBits(bits[i]);
  else for (let i = 0; i < n; i++) out[i] = fp16FromBits(bits[i]);
}

/** out[i] = h[i] widened to float32 (exact), over n values. */
export function decodeHalfLoop(format: "bf16" | "fp16", out: Float32Array, h: Uint16Array, n: number): void {
  const bits = new Uint32Array(out.buffer, out.byteOffset, n);
  if (format === "bf16") for (let i = 0; i < n; i++) bits[i] = h[i] << 16;
  else for (let i = 0; i < n; i++) bits[i] = fp16ToBits(h[i]);
}
