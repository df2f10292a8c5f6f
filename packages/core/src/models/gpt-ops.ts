/**
 * Fused ops of the GPT hot path (see bench/gpt.ts for why each exists).
 *
 * linearGelu: y = gelu(x Wᵀ + b), the MLP's expansion layer, as one op. It exists
 * because the composite (linear, then the exact-erf gelu op) was a third of a
 * training step: the gelu op evaluates erf (with its own exp) in forward and
 * erf plus another exp again in backward. Here the forward evaluates gelu and
 * gelu' together from a table (see GELU_TABLE) and stores gelu'(h), so the
 * backward is a multiply plus the linear layer's two GEMMs. The pre-activation
 * h is not kept.
 *
 * tokenPositionEmbedding: wte[ids] + wpe[t], the GPT's input, as one op instead of two
 * lookups and a broadcast add (whose general strided path, and the broadcast's reduction
 * in backward, cost more than the lookups).
 */
import { Tensor } from "../tensor/tensor.js";
import { outputBuffer } from "../tensor/arena.js";
import { result } from "../ops/op.js";
import { linearBackward, linearForward } from "../ops/matmul.js";
import { gradBuffer, graphFreedAfterBackward, isGradEnabled, leafGradAddSink, releaseGradBuffer } from "../autograd/engine.js";
import { toIndices } from "../ops/indexing.js";
import { ShapeError, fmtShape } from "../errors.js";
import { simdGelu, simdGeluWithGrad, simdMul } from "../kernels/simd/nn.js";

/**
 * gelu(v) = v·Φ(v) (exact, erf form) and gelu'(v) = Φ(v) + v·φ(v) as piecewise cubic
 * Hermite interpolants on [-8, 8], 32 pieces per unit. Outside, gelu is v or 0 to
 * float32 precision (Φ(-8) ≈ 6e-16). Interpolation error < 1e-8 (h⁴/384 · max|f⁗|), so the
 * result is the exact GELU rounded to float32 (±1 ulp). Why a table: the A&S erf formula
 * (a division, an exp, a degree-5 polynomial) cost ~30 ns per element here, 4 × 393k
 * elements per step of the bench GPT; the table costs about a third of that.
 * Piece j holds the Horner coefficients of gelu (4) then gelu' (4) in s = (v - x_j)·32 ∈ [0, 1).
 */
const GELU_RANGE = 8, GELU_PER_UNIT = 32;
const GELU_TABLE = buildGeluTable();

function buildGeluTable(): Float64Array {
  const pieces = 2 * GELU_RANGE * GELU_PER_UNIT, h = 1 / GELU_PER_UNIT;
  const tab = new Float64Array(8 * pieces);
  // [gelu, gelu', gelu''] at v; gelu'' = φ(v)·(2 - v²).
  const at = (v: number): [number, number, number] => {
    const cdf = 0.5 * (1 + erfAccurate(v * Math.SQRT1_2));
    const pdf = Math.exp(-0.5 * v * v) / Math.sqrt(2 * Math.PI);
    return [v * cdf, cdf + v * pdf, pdf * (2 - v * v)];
  };
  for (let j = 0; j < pieces; j++) {
    const [g0, d0, e0] = at(-GELU_RANGE + j * h), [g1, d1, e1] = at(-GELU_RANGE + (j + 1) * h);
    const o = 8 * j;
    // Cubic Hermite through (f0, f0') and (f1, f1') in s ∈ [0, 1]: f0 + s·c1 + s²·c2 + s³·c3.
    tab[o] = g0; tab[o + 1] = h * d0; tab[o + 2] = 3 * (g1 - g0) - h * (2 * d0 + d1); tab[o + 3] = 2 * (g0 - g1) + h * (d0 + d1);
    tab[o + 4] = d0; tab[o + 5] = h * e0; tab[o + 6] = 3 * (d1 - d0) - h * (2 * e0 + e1); tab[o + 7] = 2 * (d0 - d1) + h * (e0 + e1);
  }
  return tab;
}

/** erf in float64 to ~1e-16 (for building the table only): 2/√π·e^(-x²)·Σ 2ⁿx^(2n+1)/(1·3···(2n+1)), all terms positive. */
export function erfAccurate(x: number): number {
  const ax = Math.abs(x);
  let term = ax, sum = ax;
  for (let n = 1; n < 1000 && term > 1e-17 * sum; n++) {
    term *= (2 * ax * ax) / (2 * n + 1);
    sum += term;
  }
  const r = Math.min(1, (2 / Math.sqrt(Math.PI)) * Math.exp(-ax * ax) * sum);
  return x < 0 ? -r : r;
}

/**
 * In place: h ← gelu(h) (exact, erf form); d ← gelu'(h). NaN stays NaN. In WebAssembly SIMD
 * (kernels/simd/nn.ts, ~5× faster) where available, else the table loop below.
 */
export function geluForwardWithGrad(h: Float32Array, d: Float32Array, n: number): void {
  if (!simdGeluWithGrad(h, d, n)) geluForwardWithGradJs(h, d, n);
}

/** In place: h ← gelu(h), the forward-only path (inference); SIMD where available. */
export function geluForward(h: Float32Array, n: number): void {
  if (!simdGelu(h, n)) geluForwardJs(h, n);
}

/** geluForwardWithGrad's TypeScript loop (the table; the fallback without SIMD). */
export function geluForwardWithGradJs(h: Float32Array, d: Float32Array, n: number): void {
  const tab = GELU_TABLE;
  for (let i = 0; i < n; i++) {
    const v = h[i];
    if (v > -GELU_RANGE && v < GELU_RANGE) {
      const xs = (v + GELU_RANGE) * GELU_PER_UNIT;
      const j = xs | 0, s = xs - j, o = j << 3;
      h[i] = tab[o] + s * (tab[o + 1] + s * (tab[o + 2] + s * tab[o + 3]));
      d[i] = tab[o + 4] + s * (tab[o + 5] + s * (tab[o + 6] + s * tab[o + 7]));
    } else if (v >= GELU_RANGE) {
      d[i] = 1; // gelu(v) = v
    } else if (v <= -GELU_RANGE) {
      h[i] = 0;
      d[i] = 0;
    } else {
      d[i] = v; // NaN
    }
  }
}

/** In place: h ← gelu(h), same arithmetic as geluForwardWithGradJs (the fallback of geluForward). */
export function geluForwardJs(h: Float32Array, n: number): void {
  const tab = GELU_TABLE;
  for (let i = 0; i < n; i++) {
    const v = h[i];
    if (v > -GELU_RANGE && v < GELU_RANGE) {
      const xs = (v + GELU_RANGE) * GELU_PER_UNIT;
      const j = xs | 0, s = xs - j, o = j << 3;
      h[i] = tab[o] + s * (tab[o + 1] + s * (tab[o + 2] + s * tab[o + 3]));
    } else if (v <= -GELU_RANGE) {
      h[i] = 0;
    }
  }
}

/** gelu(x Wᵀ + b) with W (out, in), b (out); x (..., in) → (..., out). */
export function linearGelu(x: Tensor, weight: Tensor, bias: Tensor | null = null): Tensor {
  const f = linearForward("linearGelu", x, weight, bias); // h (rows, out), GELU applied in place below
  const { out } = f;
  const n = out.length;
  const inputs = bias ? [x, weight, bias] : [x, weight];
  if (!isGradEnabled() || !inputs.some((t) => t.requiresGrad)) {
    geluForward(out, n);
    return result("linearGelu", out, f.shape, inputs, () => []); // no graph: the closure is dropped
  }
  const dgelu = gradBuffer(n); // gelu'(h), saved for backward only
  geluForwardWithGrad(out, dgelu, n);
  return result("linearGelu", out, f.shape, inputs, (g) => {
    // dh = g ⊙ gelu'(h): into dgelu itself when this is its last use, else into a scratch buffer.
    const last = graphFreedAfterBackward();
    const gh = last ? dgelu : gradBuffer(n);
    if (!simdMul(gh, g, dgelu, n)) mulInto(gh, g, dgelu, n);
    const grads = linearBackward(gh, x, weight, bias, f);
    releaseGradBuffer(gh);
    return grads;
  });
}

/**
 * out[i] = a[i]·b[i], the fallback of simdMul: a top-level loop (inside the backward closure it
 * ran unoptimised at first, boxing every product). simdMul, copies in and out included, measured
 * 0.36 ms for 393k floats against this loop's 1.8 ms.
 */
function mulInto(out: Float32Array, a: Float32Array, b: Float32Array, n: number): void {
  for (let i = 0; i < n; i++) out[i] = a[i] * b[i];
}

/**
 * out (B, T, C) = wte[ids[b, t]] + wpe[t] for token ids (B·T, row-major) and tables wte (V, C),
 * wpe (≥ T, C). Gradients are scatter-added straight into the tables' .grad when they are leaves.
 */
export function tokenPositionEmbedding(ids: Int32Array, B: number, T: number, wte: Tensor, wpe: Tensor): Tensor {
  if (wte.ndim !== 2 || wpe.ndim !== 2 || wpe.shape[1] !== wte.shape[1] || wpe.shape[0] < T) {
    throw new ShapeError(`tokenPositionEmbedding: tables ${fmtShape(wte.shape)} and ${fmtShape(wpe.shape)} do not fit (V, C), (≥ ${T}, C)`);
  }
  if (ids.length !== B * T) throw new ShapeError(`tokenPositionEmbedding: ${ids.length} ids for (B, T) = (${B}, ${T})`);
  const [V, C] = wte.shape;
  toIndices(ids, V, "embedding");
  const out = outputBuffer(B * T * C);
  embedForward(out, ids, B, T, C, wte.data, wpe.data);
  return result("tokenPositionEmbedding", out, [B, T, C], [wte, wpe], (g) => {
    let dte: Float32Array | null = null, dpe: Float32Array | null = null;
    if (wte.requiresGrad) {
      const sink = leafGradAddSink(wte);
      embedTokenBackward(sink ?? (dte = new Float32Array(wte.size)), g, ids, C);
    }
    if (wpe.requiresGrad) {
      const sink = leafGradAddSink(wpe);
      embedPositionBackward(sink ?? (dpe = new Float32Array(wpe.size)), g, B, T, C);
    }
    return [dte, dpe];
  });
}

/** out[b, t, :] = wte[ids[b·T + t], :] + wpe[t, :]. */
function embedForward(out: Float32Array, ids: Int32Array, B: number, T: number, C: number, wte: Float32Array, wpe: Float32Array): void {
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const o = (b * T + t) * C, e = ids[b * T + t] * C, p = t * C;
      for (let c = 0; c < C; c++) out[o + c] = wte[e + c] + wpe[p + c];
    }
  }
}

/** dwte[ids[r], :] += g[r, :] over all B·T rows. */
function embedTokenBackward(dwte: Float32Array, g: Float32Array, ids: Int32Array, C: number): void {
  for (let r = 0; r < ids.length; r++) {
    const o = ids[r] * C, gr = r * C;
    for (let c = 0; c < C; c++) dwte[o + c] += g[gr + c];
  }
}

/** dwpe[t, :] += Σ_b g[b, t, :]. */
function embedPositionBackward(dwpe: Float32Array, g: Float32Array, B: number, T: number, C: number): void {
  for (let b = 0; b < B; b++) {
    const gb = b * T * C;
    for (let i = 0; i < T * C; i++) dwpe[i] += g[gb + i];
  }
}
