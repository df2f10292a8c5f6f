/**
 * Batch norm → 2×2 max pool → ReLU in WebAssembly SIMD (js/conv.ts batchNormMaxPoolRelu and its two
 * backward halves, behind the op batchNorm2dMaxPoolRelu): batch norm's kernels (batchnorm.ts) and
 * the pool's (pool.ts) chained inside the scratch memory (memory.ts), so the normalised activation
 * and the full-size pool gradient never exist outside it. Forward: a batch of x's planes copied in
 * once, `apply` into a second region, pooled with ReLU from there; only the pooled values and taps
 * (a quarter of the size) come out. Backward, per batch of planes: the pooled gradient scattered
 * through the taps into a zeroed region (batch norm's output gradient), x copied in, then
 * `backSums`, or `backDx` (`scale` with running statistics) and dx copied out.
 */
import { BN, BNP0, BO0, BX0, BY0, POOL_IN, POUT0, PSUM0, PTAP0 } from "./memory.js";
import { bnArray, bnFamily, bnFits } from "./batchnorm.js";
import { poolFamily } from "./pool.js";

type Fused = NonNullable<ReturnType<typeof families>>;

/** Both families, or null where either is unavailable or SIMD is off. */
function families() {
  const bn = bnFamily(), pool = poolFamily();
  return bn === null || pool === null ? null : { bn: bn.fn, pool: pool.fn, mem: bn.mem };
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
  const e = families();
  if (e === null || !bnPoolFits(C, H, W)) return false;
  const HW = H * W, PH = H >> 1, PW = W >> 1, PL = PH * PW, G = (PW + 3) >> 2;
  const per = Math.floor(POOL_IN / HW), total = N * C, m = e.mem.f32;
  bnArray(e.mem, BN.RSTD, C).set(scale); // apply's scale and shift
  bnArray(e.mem, BN.K, C).set(shift);
  for (let p = 0; p < total; p += per) {
    const k = Math.min(per, total - p), a = p * HW;
    m.set(x.subarray(a, a + k * HW), BX0);
    e.bn.apply(4 * BX0, 0, 4 * BO0, k, HW >> 1, p % C, C, 4 * BNP0);
    if (e.pool.maxPoolRelu(4 * BO0, 4 * POUT0, 4 * PTAP0, k, PH, G, PW, 4 * W, 4 * HW)) return false; // a NaN
    out.set(m.subarray(POUT0, POUT0 + k * PL), p * PL);
    tap.set(e.mem.u8.subarray(4 * PTAP0, 4 * PTAP0 + k * PL), p * PL);
  }
  return true;
}

/**
 * The pooled gradient of planes [p, p + k) scattered through their taps into a zeroed region DY
 * (batch norm's output gradient dz, whole planes), and the planes of x copied to BX0.
 */
function scatterPoolGrad(e: Fused, gout: Float32Array, tap: Uint8Array, x: Float32Array, p: number, k: number, H: number, W: number): void {
  const HW = H * W, PH = H >> 1, PW = W >> 1, PL = PH * PW, m = e.mem.f32;
  m.fill(0, BY0, BY0 + k * HW + 64); // the scatter ORs rows in, and may spill zeros past the last
  m.set(gout.subarray(p * PL, (p + k) * PL), POUT0);
  e.mem.u8.set(tap.subarray(p * PL, (p + k) * PL), 4 * PTAP0);
  e.pool.maxPoolReluBack(4 * POUT0, 4 * PTAP0, 4 * BY0, k, PH, (PW + 3) >> 2, PW, 4 * W, 4 * HW, 4 * PSUM0);
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
  const e = families();
  if (e === null || !bnPoolFits(C, H, W)) return false;
  const HW = H * W, per = Math.floor(POOL_IN / HW), total = N * C;
  bnArray(e.mem, BN.MEAN, C).set(mean);
  bnArray(e.mem, BN.RSTD, C).set(rstd);
  const sum = bnArray(e.mem, BN.SUM, C).fill(0), sum2 = bnArray(e.mem, BN.SUM2, C).fill(0);
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
  const e = families();
  if (e === null || !bnPoolFits(C, H, W)) return false;
  const HW = H * W, per = Math.floor(POOL_IN / HW), total = N * C, m = e.mem.f32;
  bnArray(e.mem, BN.MEAN, C).set(mean);
  bnArray(e.mem, BN.RSTD, C).set(rstd);
  bnArray(e.mem, BN.K, C).set(a);
  bnArray(e.mem, BN.MDY, C).set(mdy);
  bnArray(e.mem, BN.MDYX, C).set(mdyx);
  for (let p = 0; p < total; p += per) {
    const k = Math.min(per, total - p);
    scatterPoolGrad(e, gout, tap, x, p, k, H, W);
    e.bn[training ? "backDx" : "scale"](4 * BX0, 4 * BY0, 4 * BO0, k, HW >> 1, p % C, C, 4 * BNP0);
    dx.set(m.subarray(BO0, BO0 + k * HW), p * HW);
  }
  return true;
}
