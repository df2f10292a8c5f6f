/**
 * Batch norm over (N, C, HW) planes in WebAssembly SIMD, f64x2 lanes with js/conv.ts's expressions
 * operation for operation: statistics, apply and backward. Apply and the eval-mode backward give
 * the loops' bits; the sums (mean, variance, Σdy, Σdy·x̂) add lane pairs, so they can differ from
 * the loops' single running float64 sum in its last bits. Whole planes are copied into the scratch
 * memory (memory.ts, BX0/BY0/BO0) as many at a time as fit; the per-channel float64 arrays sit at BNP0.
 */
import { I32, V128, funcBody, funcType, get, i32const, set, tee, uleb } from "./asm.js";
import { addTo, dadd, decrementLoop, dmul, dsub, lanesSum, ld2, splat2, st2, zero } from "./codegen.js";
import { BN, BNP0, BN_MAXC, BO0, BX0, BY0, POOL_IN, type Scratch, wasmFamily } from "./memory.js";

export type BnMode = "sum" | "var" | "apply" | "backSums" | "backDx" | "scale";

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

type BnFn = (x: number, y: number, out: number, planes: number, hw2: number, c0: number, C: number, pb: number) => void;
/** The batch-norm kernels by mode (batchnorm-pool.ts chains them with the pooling kernels). */
export const bnFamily = wasmFamily<Record<BnMode, BnFn>>(() => BN_MODES.map((m) => [batchNormFn(m), m]));

/** Whether the batch-norm kernels take (N, C, HW): even planes that fit a region, channels that fit the arrays. */
export function bnFits(C: number, HW: number): boolean {
  return HW >= 2 && HW % 2 === 0 && HW <= POOL_IN && C <= BN_MAXC;
}

/**
 * Runs batch-norm mode `mode` over all N·C planes, as many whole planes per call as fit a region:
 * x (and dy) copied in, out copied back for the elementwise modes. The per-channel arrays are set first.
 */
function bnPass(e: { fn: Record<BnMode, BnFn>; mem: Scratch }, mode: BnMode, x: Float32Array | null, dy: Float32Array | null, out: Float32Array | null, N: number, C: number, HW: number): void {
  const per = Math.floor(POOL_IN / HW), total = N * C, m = e.mem.f32;
  for (let p = 0; p < total; p += per) {
    const k = Math.min(per, total - p), a = p * HW, b = a + k * HW;
    if (x) m.set(x.subarray(a, b), BX0);
    if (dy) m.set(dy.subarray(a, b), BY0);
    e.fn[mode](4 * BX0, 4 * BY0, 4 * BO0, k, HW >> 1, p % C, C, 4 * BNP0);
    if (out) out.set(m.subarray(BO0, BO0 + k * HW), a);
  }
}

/** The per-channel float64 array `i` (BN) in the scratch memory. */
export function bnArray(mem: Scratch, i: number, C: number): Float64Array {
  const at = BNP0 / 2 + i * BN_MAXC;
  return mem.f64.subarray(at, at + C);
}

/** js/conv.ts batchNormStats in WebAssembly SIMD (float64 lanes); false where SIMD is off or the shape does not fit. */
export function simdBatchNormStats(mean: Float32Array, variance: Float32Array, x: Float32Array, N: number, C: number, HW: number): boolean {
  const e = bnFamily();
  if (e === null || !bnFits(C, HW)) return false;
  const count = N * HW, sum = bnArray(e.mem, BN.SUM, C), mu = bnArray(e.mem, BN.MEAN, C);
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
  const e = bnFamily();
  if (e === null || !bnFits(C, HW)) return false;
  const scale = bnArray(e.mem, BN.RSTD, C), shift = bnArray(e.mem, BN.K, C);
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
  const e = bnFamily();
  if (e === null || !bnFits(C, HW)) return false;
  const count = N * HW;
  const mu = bnArray(e.mem, BN.MEAN, C), rs = bnArray(e.mem, BN.RSTD, C), k = bnArray(e.mem, BN.K, C);
  const mdy = bnArray(e.mem, BN.MDY, C), mdyx = bnArray(e.mem, BN.MDYX, C), sdy = bnArray(e.mem, BN.SUM, C), sdyx = bnArray(e.mem, BN.SUM2, C);
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
