/**
 * GELU (exact, erf form) in place, with or without its derivative: the GPT's fused linearGelu
 * (models/gpt-ops.ts). In WebAssembly SIMD (simd/gelu.ts, ~5× faster) where available, else the
 * table loops below, which are the reference.
 */
import { simdGelu, simdGeluWithGrad } from "../simd/gelu.js";

/** In place: h ← gelu(h), d ← gelu'(h) over the first n floats. NaN stays NaN. */
export function geluInPlaceWithGrad(h: Float32Array, d: Float32Array, n: number): void {
  if (!simdGeluWithGrad(h, d, n)) geluInPlaceWithGradLoop(h, d, n);
}

/** In place: h ← gelu(h) over the first n floats (the forward-only path: inference). */
export function geluInPlace(h: Float32Array, n: number): void {
  if (!simdGelu(h, n)) geluInPlaceLoop(h, n);
}

/**
 * gelu(v) = v·Φ(v) (exact, erf form) and gelu'(v) = Φ(v) + v·φ(v) as piecewise cubic
 * Hermite interpolants on [-8, 8], 32 pieces per unit. Outside, gelu is v or 0 to
 * float32 precision (Φ(-8) ≈ 6e-16). Interpolation error < 1e-8 (h⁴/384 · max|f⁗|), so the
 * result is the exact GELU rounded to float32 (±1 ulp). Why a table: the A&S erf formula
 * (a division, an exp, a degree-5 polynomial) cost ~30 ns per element, 4 × 393k
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

/** geluInPlaceWithGrad's TypeScript loop (the table; the reference, and the fallback without SIMD). */
export function geluInPlaceWithGradLoop(h: Float32Array, d: Float32Array, n: number): void {
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

/** geluInPlace's TypeScript loop: h ← gelu(h), the same arithmetic as geluInPlaceWithGradLoop. */
export function geluInPlaceLoop(h: Float32Array, n: number): void {
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
