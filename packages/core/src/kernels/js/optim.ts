/**
 * The optimizer passes over a range [from, to) of flat Float32Arrays (optim/rules.ts computes the
 * per-step scalars and calls these through kernels()). Each is a single pass: Adam reads p, g, m,
 * v once and writes p, m, v once.
 */
import type { AdamScalars, SgdScalars } from "../kernels.js";
import { kernelsFor } from "../simd/optim.js";

/** PyTorch's SGD: g += wd·p; buf = μ·buf + (1-dampening)·g (buf = g at the first step); p -= lr·(nesterov ? g + μ·buf : buf). */
export function sgdUpdate(p: Float32Array, g: Float32Array, buf: Float32Array | null, from: number, to: number, s: SgdScalars): void {
  const { lr, momentum, dampening, nesterov, weightDecay, firstStep } = s;
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

/**
 * One Adam / AdamW step in float32 arithmetic, as PyTorch's for float32 parameters: every
 * operation is rounded with Math.fround (a double result of one operation on floats, rounded to
 * float, is the IEEE float32 result), so these loops and the SIMD kernel give the same bits.
 * When p, g, m and v are views on one WebAssembly.Memory registered with the SIMD kernels
 * (nn.flattenParameters' arena, the parallel package's shared memory), groups of four elements
 * run in the kernel (simd/optim.ts, f32x4) and only the last 0–3 here.
 */
export function adamUpdate(p: Float32Array, g: Float32Array, m: Float32Array, v: Float32Array, from: number, to: number, s: AdamScalars): void {
  const f = Math.fround;
  const { beta1, beta2, b1c, b2c, stepSize, invSqrtBc2, eps, decay, l2, weightDecay } = s;
  const buf = p.buffer;
  if (to - from >= 4 && g.buffer === buf && m.buffer === buf && v.buffer === buf) {
    const k = kernelsFor(buf);
    if (k !== null) {
      const quads = (to - from) >> 2, o = 4 * from;
      const pAt = p.byteOffset + o, gAt = g.byteOffset + o, mAt = m.byteOffset + o, vAt = v.byteOffset + o;
      if (!weightDecay) k.adam(pAt, gAt, mAt, vAt, quads, beta1, beta2, b1c, b2c, stepSize, invSqrtBc2, eps);
      else k.adamWd(pAt, gAt, mAt, vAt, quads, beta1, beta2, b1c, b2c, stepSize, invSqrtBc2, eps, decay, l2);
      from += 4 * quads;
      if (from === to) return;
    }
  }
  if (!weightDecay) {
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

/** Σ x² over [from, to), in float64 (global-norm clipping). */
export function sumOfSquares(x: Float32Array, from: number, to: number): number {
  let s = 0;
  for (let i = from; i < to; i++) s += x[i] * x[i];
  return s;
}

/** x *= s over [from, to). */
export function scaleInPlace(x: Float32Array, s: number, from: number, to: number): void {
  for (let i = from; i < to; i++) x[i] *= s;
}
