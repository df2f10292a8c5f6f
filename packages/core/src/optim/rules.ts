import { kernelsFor } from "../kernels/simd/index.js";

/**
 * Update rules as plain functions over flat Float32Arrays and a range [from, to),
 * so the parallel package can run them on one worker's slice of the parameters.
 * Each is a single pass (Adam reads p, g, m, v once and writes p, m, v once).
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
  if (momentum === 0 || buf === null) {
    for (let i = from; i < to; i++) p[i] -= lr * (g[i] + weightDecay * p[i]);
    return;
  }
  for (let i = from; i < to; i++) {
    const gi = g[i] + weightDecay * p[i];
    const b = firstStep ? gi : momentum * buf[i] + (1 - dampening) * gi;
    buf[i] = b;
    p[i] -= lr * (nesterov ? gi + momentum * b : b);
  }
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
 * Arithmetic is float32, as PyTorch's for float32 parameters: every operation is rounded
 * with Math.fround (a double result of one operation on floats, rounded to float, is the
 * IEEE float32 result), so the loops below and the SIMD kernel give the same bits.
 * When p, g, m and v are views on one WebAssembly.Memory registered with the SIMD kernels
 * (nn.flattenParameters' arena, the parallel package's shared memory), groups of four
 * elements run in the kernel (kernels/simd, f32x4) and only the last 0–3 here.
 */
export function adamUpdate(
  p: Float32Array, g: Float32Array, m: Float32Array, v: Float32Array, from: number, to: number, h: AdamHyper, step: number,
): void {
  const f = Math.fround;
  const { lr, weightDecay, decoupled } = h;
  const beta1 = f(h.beta1), beta2 = f(h.beta2), eps = f(h.eps);
  const bc1 = 1 - Math.pow(h.beta1, step);
  const bc2 = 1 - Math.pow(h.beta2, step);
  const stepSize = f(lr / bc1);
  const invSqrtBc2 = f(1 / Math.sqrt(bc2));
  const decay = f(decoupled ? 1 - lr * weightDecay : 1);
  const l2 = f(decoupled ? 0 : weightDecay);
  const b1c = f(1 - h.beta1), b2c = f(1 - h.beta2);
  const buf = p.buffer;
  if (to - from >= 4 && g.buffer === buf && m.buffer === buf && v.buffer === buf) {
    const k = kernelsFor(buf);
    if (k !== null) {
      const quads = (to - from) >> 2, o = 4 * from;
      const pAt = p.byteOffset + o, gAt = g.byteOffset + o, mAt = m.byteOffset + o, vAt = v.byteOffset + o;
      if (weightDecay === 0) k.adam(pAt, gAt, mAt, vAt, quads, beta1, beta2, b1c, b2c, stepSize, invSqrtBc2, eps);
      else k.adamWd(pAt, gAt, mAt, vAt, quads, beta1, beta2, b1c, b2c, stepSize, invSqrtBc2, eps, decay, l2);
      from += 4 * quads;
      if (from === to) return;
    }
  }
  if (weightDecay === 0) {
    for (let i = from; i < to; i++) {
      const gi = g[i];
      const mi = f(f(beta1 * m[i]) + f(b1c * gi));
      const vi = f(f(beta2 * v[i]) + f(f(b2c * gi) * gi));
      m[i] = mi;
      v[i] = vi;
      p[i] = f(p[i] - f(f(stepSize * mi) / f(f(f(Math.sqrt(vi)) * invSqrtBc2) + eps)));
    }
    return;
  }
  for (let i = from; i < to; i++) {
    const pi = f(p[i] * decay);
    const gi = f(g[i] + f(l2 * pi));
    const mi = f(f(beta1 * m[i]) + f(b1c * gi));
    const vi = f(f(beta2 * v[i]) + f(f(b2c * gi) * gi));
    m[i] = mi;
    v[i] = vi;
    p[i] = f(pi - f(f(stepSize * mi) / f(f(f(Math.sqrt(vi)) * invSqrtBc2) + eps)));
  }
}

/** Σ g² over [from, to), in float64 (for global-norm clipping). */
export function sumOfSquares(g: Float32Array, from = 0, to = g.length): number {
  let s = 0;
  for (let i = from; i < to; i++) s += g[i] * g[i];
  return s;
}

export function scaleInPlace(g: Float32Array, s: number, from = 0, to = g.length): void {
  for (let i = from; i < to; i++) g[i] *= s;
}
