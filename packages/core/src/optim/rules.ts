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
