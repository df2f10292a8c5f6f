import { Tensor } from "../tensor/tensor.js";
import { Generator } from "../tensor/random.js";
import { noGrad } from "../autograd/engine.js";

export interface GradcheckOptions {
  /** Central-difference step. Float32 forward passes need a larger step than PyTorch's float64 1e-6. */
  eps?: number;
  atol?: number;
  rtol?: number;
  seed?: number;
}

export interface GradcheckResult {
  ok: boolean;
  maxAbsError: number;
  /** The worst element: input index, flat element, analytic vs numeric. */
  worst: { input: number; index: number; analytic: number; numeric: number } | null;
}

/**
 * Compares the analytic gradient of fn(...inputs) with central differences.
 * The output is projected onto a fixed random direction r, L = Σ r·fn(x), so one
 * backward checks the full Jacobian-vector product; differences and sums are in float64.
 * Throws with the worst element when the gradients disagree.
 */
export function gradcheck(fn: (...xs: Tensor[]) => Tensor, inputs: Tensor[], opts: GradcheckOptions = {}): GradcheckResult {
  const eps = opts.eps ?? 1e-2, atol = opts.atol ?? 1e-3, rtol = opts.rtol ?? 1e-2;
  const gen = new Generator(opts.seed ?? 1234);
  for (const x of inputs) {
    x.grad = null;
  }
  const out = fn(...inputs);
  const r = new Float32Array(out.size);
  for (let i = 0; i < r.length; i++) r[i] = gen.random() * 2 - 1;
  const project = (t: Tensor) => {
    let s = 0;
    for (let i = 0; i < r.length; i++) s += r[i] * t.data[i];
    return s;
  };
  out.backward(r);
  const res: GradcheckResult = { ok: true, maxAbsError: 0, worst: null };
  let worstExcess = -Infinity;
  inputs.forEach((x, xi) => {
    if (!x.requiresGrad) return;
    const analytic = x.grad?.data ?? new Float32Array(x.size);
    for (let i = 0; i < x.size; i++) {
      const orig = x.data[i];
      x.data[i] = orig + eps;
      const fp = noGrad(() => project(fn(...inputs)));
      x.data[i] = orig - eps;
      const fm = noGrad(() => project(fn(...inputs)));
      x.data[i] = orig;
      // The step actually taken in float32 may differ from eps; use it.
      const hp = Math.fround(orig + eps) - orig, hm = orig - Math.fround(orig - eps);
      const numeric = (fp - fm) / (hp + hm);
      const err = Math.abs(numeric - analytic[i]);
      const tol = atol + rtol * Math.abs(numeric);
      if (err > res.maxAbsError) res.maxAbsError = err;
      if (err - tol > worstExcess) {
        worstExcess = err - tol;
        res.worst = { input: xi, index: i, analytic: analytic[i], numeric };
      }
      if (err > tol) res.ok = false;
    }
  });
  if (!res.ok) {
    const w = res.worst!;
    throw new Error(`gradcheck failed: input ${w.input} element ${w.index}: analytic ${w.analytic} vs numeric ${w.numeric}`);
  }
  return res;
}
