/**
 * The combine of hosts' gradients sent as 16-bit floats (the parallel package's
 * gradientCompression), fused with their widening: per four values, each host's halves are
 * widened to float32 exactly (half.ts's decode), promoted to float64, multiplied by the host's
 * weight and summed in host order, then rounded once — the bits of decoding first (decodeHalf)
 * and summing with the parallel package's loop (reduce.ts combineHosts). Runs in place on the
 * memory that holds the operands, in optim.ts's module.
 */
import { I32, V128, funcBody, funcType, get, i32const, set, simd } from "./asm.js";
import { addTo, beginConsts, constLocals, dadd, decrementLoop, demote, dmul, ishl, promote, splat2, zero, type WasmFunction } from "./codegen.js";
import { fp16To } from "./half.js";

const load64zero = (addr: number) => [...get(addr), ...simd(0x5d, 0, 0)]; // v128.load64_zero: four halves
const widenLow = simd(0xa9); // i32x4.extend_low_i16x8_u
const highPair = simd(0x0d, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7); // floats 2, 3 → lanes 0, 1
const lowPairs = simd(0x0d, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23); // two demoted pairs → four floats

/**
 * combineHalves(outAt, halvesAt, quads, H, stride, wAt, fromZero): out = Σ_h w_h · widen(halves_h)
 * over `quads` groups of four values; host h's halves are `stride` bytes after host h − 1's, the
 * H weights are float64 at wAt. With fromZero the sum starts from +0 (combineHosts's loop for
 * 1 or ≥ 3 hosts), else from the first term (its 2-host path: w0·a + w1·b).
 */
export function combineHalvesFn(format: "bf16" | "fp16"): WasmFunction {
  const [OUT, HV, QUADS, H, STRIDE, W, FROM_ZERO] = [0, 1, 2, 3, 4, 5, 6];
  const [sp, wp, k] = [7, 8, 9], [x, wk, acc0, acc1] = [10, 11, 12, 13];
  beginConsts(14);
  const widen = format === "bf16" ? [...get(x), ...i32const(16), ...ishl] : fp16To(x);
  // x = host values at sp as four floats; wk = the weight at wp, in both lanes
  const term = [
    ...load64zero(sp), ...widenLow, ...set(x), ...widen, ...set(x),
    ...get(wp), 0x2b, 3, 0, ...splat2, ...set(wk), // f64.load
  ];
  const low = [...get(wk), ...get(x), ...promote, ...dmul];
  const high = [...get(wk), ...get(x), ...get(x), ...highPair, ...promote, ...dmul];
  const code = [
    0x02, 0x40, ...get(QUADS), 0x45, 0x0d, 0, 0x03, 0x40, // if (quads == 0) return; loop
    ...get(HV), ...set(sp), ...get(W), ...set(wp),
    ...term, ...low, ...set(acc0), ...high, ...set(acc1),
    ...get(FROM_ZERO), 0x04, 0x40, // if (fromZero): acc = +0 + acc
    ...zero, ...get(acc0), ...dadd, ...set(acc0), ...zero, ...get(acc1), ...dadd, ...set(acc1),
    0x0b,
    ...get(H), ...i32const(1), 0x6b, ...set(k),
    0x02, 0x40, 0x03, 0x40, // the other hosts, in order
    ...get(k), 0x45, 0x0d, 1,
    ...addTo(sp, get(STRIDE)), ...addTo(wp, i32const(8)),
    ...term, ...get(acc0), ...low, ...dadd, ...set(acc0), ...get(acc1), ...high, ...dadd, ...set(acc1),
    ...get(k), ...i32const(1), 0x6b, ...set(k),
    0x0c, 0, 0x0b, 0x0b,
    ...get(OUT), ...get(acc0), ...demote, ...get(acc1), ...demote, ...lowPairs, ...simd(0x0b, 0, 0), // v128.store
    ...addTo(OUT, i32const(16)), ...addTo(HV, i32const(8)),
    ...decrementLoop(QUADS), 0x0b, 0x0b, 0x0b,
  ];
  const { init, count } = constLocals();
  return { type: funcType([I32, I32, I32, I32, I32, I32, I32]), code: funcBody([[3, I32], [4 + count, V128]], [...init, ...code]) };
}
