/**
 * float32 ⇄ 16-bit floats: `encodeHalf` rounds to bfloat16 or IEEE float16 (to nearest, ties to
 * even, as PyTorch's `.to(torch.bfloat16 / torch.float16)`), `decodeHalf` widens back exactly.
 * The parallel package sends gradients between hosts this way (gradientCompression). WebAssembly
 * SIMD where it runs (simd/half.ts), else the loops of js/half.ts: the same bits.
 */
import { ArgumentError } from "../errors.js";
import { decodeHalfLoop, encodeHalfLoop } from "./js/half.js";
import { simdDecodeHalf, simdEncodeHalf } from "./simd/half.js";

/** bfloat16: float32's range, 8 significant bits. float16: ±65504, subnormal below 2^-14, 11 significant bits. */
export type HalfFormat = "bf16" | "fp16";

function check(what: string, format: string, n: number, from: { length: number }, to: { length: number }): void {
  if (format !== "bf16" && format !== "fp16") throw new ArgumentError(`${what}: format must be "bf16" or "fp16", got ${JSON.stringify(format)}`);
  if (!(Number.isInteger(n) && n >= 0 && n <= from.length && n <= to.length)) throw new ArgumentError(`${what}: ${n} values do not fit its arrays (${from.length} in, ${to.length} out)`);
}

/** out[i] = x[i] rounded to `format`, for i < n (default: all of x). */
export function encodeHalf(format: HalfFormat, out: Uint16Array, x: Float32Array, n = x.length): void {
  check("encodeHalf", format, n, x, out);
  if (!simdEncodeHalf(format, out, x, n)) encodeHalfLoop(format, out, x, n);
}

/** out[i] = h[i] (in `format`) as float32, exactly, for i < n (default: all of h). */
export function decodeHalf(format: HalfFormat, out: Float32Array, h: Uint16Array, n = h.length): void {
  check("decodeHalf", format, n, h, out);
  if (!simdDecodeHalf(format, out, h, n)) decodeHalfLoop(format, out, h, n);
}
