import { simdLayerNorm, simdLayerNormBackward } from "../simd/layernorm.js";

// exp(x) for x ≤ 0 without Math.exp (an out-of-line call in V8, ~2x this): x = -k·ln2 + r,
// |r| ≤ ln2/2, exp(r) by its degree-7 Taylor polynomial (relative error < 1e-8, far below
// float32's 6e-8), 2^-k from a table. Below -700 (true value < 1e-304) the result is 0.
const LOG2E = Math.LOG2E, LN2_HI = 0.6931471803691238, LN2_LO = 1.9082149292705877e-10;
const POW2_NEG = Float64Array.from({ length: 1011 }, (_, i) => Math.pow(2, -i)); // 2^-i

/** exp(x) for x ≤ 0 (softmax-style arguments x − max); -Infinity gives 0, NaN gives NaN. */
export function expNonPositive(x: number): number {
  if (x < -700) return 0;
  const k = (0.5 - x * LOG2E) | 0; // round(-x·log2 e) ≥ 0
  const r = x + k * LN2_HI + k * LN2_LO;
  const p = 1 + r * (1 + r * (0.5 + r * (1 / 6 + r * (1 / 24 + r * (1 / 120 + r * (1 / 720 + r * (1 / 5040)))))));
  return p * POW2_NEG[k];
}

export function softmax(out: Float32Array, x: Float32Array, rows: number, n: number): void {
  for (let r = 0; r < rows; r++) {
    const b = r * n;
    let m = -Infinity;
    for (let i = 0; i < n; i++) if (x[b + i] > m) m = x[b + i];
    if (m === -Infinity) m = 0; // a fully masked row gives NaN (0/0) below, like PyTorch
    let s = 0;
    for (let i = 0; i < n; i++) { const e = expNonPositive(x[b + i] - m); out[b + i] = e; s += e; }
    const inv = 1 / s;
    for (let i = 0; i < n; i++) out[b + i] *= inv;
  }
}

export function softmaxBackward(dx: Float32Array, dy: Float32Array, y: Float32Array, rows: number, n: number): void {
  for (let r = 0; r < rows; r++) {
    const b = r * n;
    let dot = 0;
    for (let i = 0; i < n; i++) dot += dy[b + i] * y[b + i];
    for (let i = 0; i < n; i++) dx[b + i] = y[b + i] * (dy[b + i] - dot);
  }
}

export function logSoftmax(out: Float32Array, x: Float32Array, rows: number, n: number): void {
  for (let r = 0; r < rows; r++) {
    const b = r * n;
    let m = -Infinity;
    for (let i = 0; i < n; i++) if (x[b + i] > m) m = x[b + i];
    let s = 0;
    for (let i = 0; i < n; i++) s += Math.exp(x[b + i] - m);
    const lse = m + Math.log(s);
    for (let i = 0; i < n; i++) out[b + i] = x[b + i] - lse;
  }
}

export function logSoftmaxBackward(dx: Float32Array, dy: Float32Array, y: Float32Array, rows: number, n: number): void {
  for (let r = 0; r < rows; r++) {
    const b = r * n;
    let s = 0;
    for (let i = 0; i < n; i++) s += dy[b + i];
    for (let i = 0; i < n; i++) dx[b + i] = dy[b + i] - Math.exp(y[b + i]) * s;
  }
}

/**
 * Row-wise layer norm. One pass for the statistics (Σx and Σx² in float64, so the
 * E[x²] − m² cancellation costs nothing at float32 inputs), one pass for the output;
 * the affine case (the transformer's) and the others are separate loop functions.
 */
export function layerNorm(
  out: Float32Array, mean: Float32Array, rstd: Float32Array, x: Float32Array,
  weight: Float32Array | null, bias: Float32Array | null, rows: number, n: number, eps: number,
): void {
  if (weight && bias) {
    if (!simdLayerNorm(out, mean, rstd, x, weight, bias, rows, n, eps)) layerNormAffine(out, mean, rstd, x, weight, bias, rows, n, eps);
  } else layerNormGeneral(out, mean, rstd, x, weight, bias, rows, n, eps);
}

/** The affine case's TypeScript loop (the fallback of the WebAssembly kernel; exported for its tests). */
export function layerNormAffineJs(
  out: Float32Array, mean: Float32Array, rstd: Float32Array, x: Float32Array,
  weight: Float32Array, bias: Float32Array, rows: number, n: number, eps: number,
): void {
  layerNormAffine(out, mean, rstd, x, weight, bias, rows, n, eps);
}

function layerNormAffine(
  out: Float32Array, mean: Float32Array, rstd: Float32Array, x: Float32Array,
  weight: Float32Array, bias: Float32Array, rows: number, n: number, eps: number,
): void {
  for (let r = 0; r < rows; r++) {
    const b = r * n;
    let s = 0, ss = 0;
    for (let i = b; i < b + n; i++) { const v = x[i]; s += v; ss += v * v; }
    const m = s / n;
    const v = ss / n - m * m;
    const rs = 1 / Math.sqrt((v > 0 ? v : 0) + eps);
    mean[r] = m;
    rstd[r] = rs;
    for (let i = 0; i < n; i++) out[b + i] = (x[b + i] - m) * rs * weight[i] + bias[i];
  }
}

/** Weight and bias each optional (missing weight: 1, missing bias: 0). */
function layerNormGeneral(
  out: Float32Array, mean: Float32Array, rstd: Float32Array, x: Float32Array,
  weight: Float32Array | null, bias: Float32Array | null, rows: number, n: number, eps: number,
): void {
  for (let r = 0; r < rows; r++) {
    const b = r * n;
    let s = 0, ss = 0;
    for (let i = b; i < b + n; i++) { const v = x[i]; s += v; ss += v * v; }
    const m = s / n;
    const v = ss / n - m * m;
    const rs = 1 / Math.sqrt((v > 0 ? v : 0) + eps);
    mean[r] = m;
    rstd[r] = rs;
    for (let i = 0; i < n; i++) out[b + i] = (x[b + i] - m) * rs * (weight ? weight[i] : 1) + (bias ? bias[i] : 0);
  }
}

let lnAccW = new Float64Array(0), lnAccB = new Float64Array(0);

/**
 * Backward of layerNorm. dx = rs·(d − mean(d) − x̂·mean(d·x̂)) with d = dout·weight and
 * x̂ = (x − m)·rs. Per row, one pass sums d and d·(x − m) (Σ d·x̂ = rs·Σ d·(x − m), so x̂ is
 * not stored), a second writes dx; the column sums for dweight (dout·x̂) and dbias (dout) go
 * to float64 accumulators, rounded once at the end. dweight and dbias are ADDED to (zeroed
 * arrays, or a leaf's .grad). Each case is its own small loop function, so each stays
 * optimised for the one shape of call it gets.
 */
export function layerNormBackward(
  dx: Float32Array | null, dweight: Float32Array | null, dbias: Float32Array | null,
  dout: Float32Array, x: Float32Array, mean: Float32Array, rstd: Float32Array,
  weight: Float32Array | null, rows: number, n: number,
): void {
  if (lnAccW.length < n) { lnAccW = new Float64Array(n); lnAccB = new Float64Array(n); }
  const accW = lnAccW, accB = lnAccB;
  accW.fill(0, 0, n);
  accB.fill(0, 0, n);
  if (dx && weight) {
    // the transformer's case: dx and the column sums in one sweep (WebAssembly SIMD where available)
    if (!simdLayerNormBackward(dx, accW, accB, dout, x, mean, rstd, weight, rows, n)) lnBackwardAffine(dx, accW, accB, dout, x, mean, rstd, weight, rows, n);
  } else {
    if (dx) lnBackwardPlain(dx, dout, x, mean, rstd, rows, n);
    if (dweight || dbias) lnColumnSums(accW, accB, dout, x, mean, rstd, rows, n);
  }
  if (dweight) for (let i = 0; i < n; i++) dweight[i] += accW[i];
  if (dbias) for (let i = 0; i < n; i++) dbias[i] += accB[i];
}

/** lnBackwardAffine, exported for the WebAssembly kernel's tests. */
export const lnBackwardAffineJs = (
  dx: Float32Array, accW: Float64Array, accB: Float64Array, dout: Float32Array, x: Float32Array,
  mean: Float32Array, rstd: Float32Array, weight: Float32Array, rows: number, n: number,
): void => lnBackwardAffine(dx, accW, accB, dout, x, mean, rstd, weight, rows, n);

function lnBackwardAffine(
  dx: Float32Array, accW: Float64Array, accB: Float64Array, dout: Float32Array, x: Float32Array,
  mean: Float32Array, rstd: Float32Array, weight: Float32Array, rows: number, n: number,
): void {
  for (let r = 0; r < rows; r++) {
    const b = r * n, m = mean[r], rs = rstd[r];
    let sumD = 0, sumDX = 0;
    for (let i = 0; i < n; i++) { const d = dout[b + i] * weight[i]; sumD += d; sumDX += d * (x[b + i] - m); }
    const meanD = sumD / n, meanDX = (rs * sumDX) / n;
    for (let i = 0; i < n; i++) {
      const dy = dout[b + i], h = (x[b + i] - m) * rs;
      dx[b + i] = rs * (dy * weight[i] - meanD - h * meanDX);
      accW[i] += dy * h;
      accB[i] += dy;
    }
  }
}

/** dx without an affine weight (d = dout). */
function lnBackwardPlain(dx: Float32Array, dout: Float32Array, x: Float32Array, mean: Float32Array, rstd: Float32Array, rows: number, n: number): void {
  for (let r = 0; r < rows; r++) {
    const b = r * n, m = mean[r], rs = rstd[r];
    let sumD = 0, sumDX = 0;
    for (let i = 0; i < n; i++) { const d = dout[b + i]; sumD += d; sumDX += d * (x[b + i] - m); }
    const meanD = sumD / n, meanDX = (rs * sumDX) / n;
    for (let i = 0; i < n; i++) dx[b + i] = rs * (dout[b + i] - meanD - (x[b + i] - m) * rs * meanDX);
  }
}

/** accW += Σ_rows dout·x̂, accB += Σ_rows dout. */
function lnColumnSums(accW: Float64Array, accB: Float64Array, dout: Float32Array, x: Float32Array, mean: Float32Array, rstd: Float32Array, rows: number, n: number): void {
  for (let r = 0; r < rows; r++) {
    const b = r * n, m = mean[r], rs = rstd[r];
    for (let i = 0; i < n; i++) { const dy = dout[b + i]; accW[i] += dy * (x[b + i] - m) * rs; accB[i] += dy; }
  }
}

export function crossEntropy(
  logits: Float32Array, targets: Int32Array, rows: number, classes: number,
  dlogits: Float32Array | null, ignoreIndex: number,
): number {
  let loss = 0;
  for (let r = 0; r < rows; r++) {
    const b = r * classes;
    const t = targets[r];
    if (t === ignoreIndex) {
      if (dlogits) dlogits.fill(0, b, b + classes);
      continue;
    }
    let m = -Infinity;
    for (let i = 0; i < classes; i++) if (logits[b + i] > m) m = logits[b + i];
    let s = 0;
    if (dlogits) {
      // The exponentials go into dlogits once and are scaled there (softmax − onehot).
      for (let i = 0; i < classes; i++) { const e = expNonPositive(logits[b + i] - m); dlogits[b + i] = e; s += e; }
      const inv = 1 / s;
      for (let i = 0; i < classes; i++) dlogits[b + i] *= inv;
      dlogits[b + t] -= 1;
    } else {
      for (let i = 0; i < classes; i++) s += expNonPositive(logits[b + i] - m);
    }
    loss += m + Math.log(s) - logits[b + t];
  }
  return loss;
}
