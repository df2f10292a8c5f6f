/**
 * Fused ops of the GPT hot path (see bench/gpt.ts for why each exists).
 *
 * linearGelu: y = gelu(x Wᵀ + b), the MLP's expansion layer, as one op. It exists
 * because the composite (linear, then the exact-erf gelu op) was a third of a
 * training step: the gelu op evaluates erf (with its own exp) in forward and
 * erf plus another exp again in backward. Here the forward evaluates one exp per
 * element — exp(-h²/2) serves both erf(h/√2) (Abramowitz & Stegun 7.1.26,
 * |error| ≤ 1.5e-7) and the normal pdf — and stores gelu'(h), so the backward is
 * a multiply plus the linear layer's two GEMMs. The pre-activation h is not kept.
 */
import { Tensor } from "../tensor/tensor.js";
import { result } from "../ops/op.js";
import { linearBackward, linearForward } from "../ops/matmul.js";
import { gradBuffer, releaseGradBuffer } from "../autograd/engine.js";

const SQRT1_2 = Math.SQRT1_2;
const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);
// Abramowitz & Stegun 7.1.26
const P = 0.3275911, A1 = 0.254829592, A2 = -0.284496736, A3 = 1.421413741, A4 = -1.453152027, A5 = 1.061405429;

// exp(x) for x ≤ 0 inline (V8's Math.exp is an out-of-line call, ~half of this loop's time):
// x = k·ln2 + r, |r| ≤ ln2/2, exp(r) by its degree-7 Taylor polynomial (relative error < 1e-8,
// far below A&S's 1.5e-7), 2^k from a table. Arguments below -700 give 2^-1010·exp(r) ≈ 0.
const LOG2E = Math.LOG2E, LN2_HI = 0.6931471803691238, LN2_LO = 1.9082149292705877e-10;
const POW2 = Float64Array.from({ length: 1011 }, (_, i) => Math.pow(2, -i)); // POW2[i] = 2^-i

/** In place: h ← gelu(h) (exact, erf form); d ← gelu'(h). */
export function geluForwardWithGrad(h: Float32Array, d: Float32Array, n: number): void {
  for (let i = 0; i < n; i++) {
    const v = h[i];
    const u = v * SQRT1_2;
    const z = u < 0 ? -u : u;
    const t = 1 / (1 + P * z);
    const e = expNonPositive(-u * u); // = exp(-v²/2)
    const tail = t * (A1 + t * (A2 + t * (A3 + t * (A4 + t * A5)))) * e; // erfc(|u|)
    const cdf = u < 0 ? 0.5 * tail : 1 - 0.5 * tail; // Φ(v) = (1 + erf(u)) / 2
    h[i] = v * cdf;
    d[i] = cdf + v * INV_SQRT_2PI * e;
  }
}

/** In place: h ← gelu(h), same arithmetic as geluForwardWithGrad (inference path). */
export function geluForward(h: Float32Array, n: number): void {
  for (let i = 0; i < n; i++) {
    const v = h[i];
    const u = v * SQRT1_2;
    const z = u < 0 ? -u : u;
    const t = 1 / (1 + P * z);
    const tail = t * (A1 + t * (A2 + t * (A3 + t * (A4 + t * A5)))) * expNonPositive(-u * u);
    h[i] = v * (u < 0 ? 0.5 * tail : 1 - 0.5 * tail);
  }
}

/** exp(x) for x ≤ 0 (see POW2); NaN stays NaN. */
export function expNonPositive(x: number): number {
  const y = x < -700 ? -700 : x;
  const k = Math.round(y * LOG2E);
  const r = y - k * LN2_HI - k * LN2_LO;
  const p = 1 + r * (1 + r * (0.5 + r * (1 / 6 + r * (1 / 24 + r * (1 / 120 + r * (1 / 720 + r * (1 / 5040)))))));
  return p * POW2[-k];
}

/** gelu(x Wᵀ + b) with W (out, in), b (out); x (..., in) → (..., out). */
export function linearGelu(x: Tensor, weight: Tensor, bias: Tensor | null = null): Tensor {
  const f = linearForward("linearGelu", x, weight, bias); // h (rows, out), GELU applied in place below
  const { out } = f;
  const n = out.length;
  const needGrad = x.requiresGrad || weight.requiresGrad || (bias?.requiresGrad ?? false);
  const dgelu = new Float32Array(needGrad ? n : 0);
  if (needGrad) geluForwardWithGrad(out, dgelu, n);
  else geluForward(out, n);
  const inputs = bias ? [x, weight, bias] : [x, weight];
  return result("linearGelu", out, f.shape, inputs, (g) => {
    const gh = gradBuffer(n); // dead after this backward: handed back below
    for (let i = 0; i < n; i++) gh[i] = g[i] * dgelu[i];
    const grads = linearBackward(gh, x, weight, bias, f);
    releaseGradBuffer(gh);
    return grads;
  });
}
