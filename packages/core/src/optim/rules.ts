import { type AdamScalars, kernels } from "../kernels/kernels.js";

/**
 * Update rules as plain functions over flat Float32Arrays and a range [from, to),
 * so the parallel package can run them on one worker's slice of the parameters.
 * Each computes its step's scalars and runs the pass through kernels() (kernels/js/optim.ts
 * holds the loops; the js backend runs Adam in WebAssembly SIMD where the operands allow).
 */

export interface SgdHyper {
  lr: number;
  momentum: number;
  dampening: number;
  nesterov: boolean;
  weightDecay: number;
}

/** PyTorch's SGD: g += wd·p; buf = μ·buf + (1-dampening)·g (buf = g at the first step); p -= lr·(nesterov ? g + μ·buf : buf). */
export function sgdUpdate(
  p: Float32Array, g: Float32Array, buf: Float32Array | null, from: number, to: number, h: SgdHyper, firstStep: boolean,
): void {
  const { lr, momentum, dampening, nesterov, weightDecay } = h;
  kernels().sgdUpdate(p, g, buf, from, to, { lr, momentum, dampening, nesterov, weightDecay, firstStep });
}

export interface AdamHyper {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** AdamW: decay the weights directly (p -= lr·wd·p) instead of adding wd·p to the gradient. */
  decoupled: boolean;
  /** AMSGrad: divide by the running maximum of the second moment (default false). */
  amsgrad?: boolean;
}

/**
 * One Adam/AdamW step (PyTorch's formulation, bias-corrected); `step` counts from 1.
 * Arithmetic is float32, as PyTorch's for float32 parameters (see kernels/js/optim.ts).
 */
export function adamUpdate(
  p: Float32Array, g: Float32Array, m: Float32Array, v: Float32Array, from: number, to: number, h: AdamHyper, step: number,
): void {
  kernels().adamUpdate(p, g, m, v, from, to, adamScalars(h, step));
}

/** Adam's scalars for step `step` (from 1), each rounded to float32 as the update's arithmetic is. */
export function adamScalars(h: AdamHyper, step: number): AdamScalars {
  const f = Math.fround;
  const { lr, weightDecay, decoupled } = h;
  const bc1 = 1 - Math.pow(h.beta1, step);
  const bc2 = 1 - Math.pow(h.beta2, step);
  return {
    beta1: f(h.beta1), beta2: f(h.beta2), eps: f(h.eps),
    b1c: f(1 - h.beta1), b2c: f(1 - h.beta2),
    stepSize: f(lr / bc1),
    invSqrtBc2: f(1 / Math.sqrt(bc2)),
    decay: f(decoupled ? 1 - lr * weightDecay : 1),
    l2: f(decoupled ? 0 : weightDecay),
    weightDecay: weightDecay !== 0,
  };
}

/** Σ g² over [from, to), in float64 (for global-norm clipping). */
export function sumOfSquares(g: Float32Array, from = 0, to = g.length): number {
  return kernels().sumOfSquares(g, from, to);
}

/** g *= s over [from, to). */
export function scaleInPlace(g: Float32Array, s: number, from = 0, to = g.length): void {
  kernels().scaleInPlace(g, s, from, to);
}

/**
 * One AMSGrad step of Adam / AdamW (PyTorch's formulation): as adamUpdate, with vMax ←
 * max(vMax, v) and vMax in the denominator. Plain loops (the kernels cover plain Adam).
 */
export function amsgradUpdate(
  p: Float32Array, g: Float32Array, m: Float32Array, v: Float32Array, vMax: Float32Array, from: number, to: number, h: AdamHyper, step: number,
): void {
  const { lr, beta1, beta2, eps, weightDecay, decoupled } = h;
  const stepSize = lr / (1 - Math.pow(beta1, step));
  const bc2Sqrt = Math.sqrt(1 - Math.pow(beta2, step));
  for (let i = from; i < to; i++) {
    let gi = g[i];
    if (weightDecay !== 0) {
      if (decoupled) p[i] *= 1 - lr * weightDecay;
      else gi += weightDecay * p[i];
    }
    m[i] = beta1 * m[i] + (1 - beta1) * gi;
    v[i] = beta2 * v[i] + (1 - beta2) * gi * gi;
    if (v[i] > vMax[i]) vMax[i] = v[i];
    p[i] -= (stepSize * m[i]) / (Math.sqrt(vMax[i]) / bc2Sqrt + eps);
  }
}

export interface RmspropHyper {
  lr: number;
  /** Smoothing of the squared-gradient average. */
  alpha: number;
  eps: number;
  weightDecay: number;
  momentum: number;
  /** Divide by the gradient's estimated variance instead of its raw second moment. */
  centered: boolean;
}

/** PyTorch's RMSprop step over [from, to); gAvg (centered) and buf (momentum) may be null. */
export function rmspropUpdate(
  p: Float32Array, g: Float32Array, sq: Float32Array, gAvg: Float32Array | null, buf: Float32Array | null, from: number, to: number, h: RmspropHyper,
): void {
  const { lr, alpha, eps, weightDecay, momentum } = h;
  for (let i = from; i < to; i++) {
    const gi = weightDecay !== 0 ? g[i] + weightDecay * p[i] : g[i];
    sq[i] = alpha * sq[i] + (1 - alpha) * gi * gi;
    let avg: number;
    if (gAvg) {
      gAvg[i] = alpha * gAvg[i] + (1 - alpha) * gi;
      avg = Math.sqrt(sq[i] - gAvg[i] * gAvg[i]) + eps;
    } else avg = Math.sqrt(sq[i]) + eps;
    if (buf) {
      buf[i] = momentum * buf[i] + gi / avg;
      p[i] -= lr * buf[i];
    } else p[i] -= (lr * gi) / avg;
  }
}

export interface AdagradHyper {
  lr: number;
  /** The step size decays as lr / (1 + (step - 1)·lrDecay). */
  lrDecay: number;
  weightDecay: number;
  /** The squared-gradient sum starts at this value. */
  initialAccumulatorValue: number;
  eps: number;
}

/** PyTorch's Adagrad step over [from, to); `step` counts from 1. */
export function adagradUpdate(p: Float32Array, g: Float32Array, sum: Float32Array, from: number, to: number, h: AdagradHyper, step: number): void {
  const clr = h.lr / (1 + (step - 1) * h.lrDecay);
  for (let i = from; i < to; i++) {
    const gi = h.weightDecay !== 0 ? g[i] + h.weightDecay * p[i] : g[i];
    sum[i] += gi * gi;
    p[i] -= (clr * gi) / (Math.sqrt(sum[i]) + h.eps);
  }
}
