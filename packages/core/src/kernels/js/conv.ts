/**
 * Image kernels (NCHW): im2col/col2im for GEMM-lowered convolution, pooling and
 * batch-norm statistics. Plain loops over Float32Arrays; they know nothing about graphs.
 * Geometry is passed as a `Conv2dGeometry` / `Pool2dGeometry` so call sites stay short.
 */
import type { Conv2dGeometry, Pool2dGeometry } from "../kernels.js";
import { simdBatchNormApply, simdBatchNormBackward, simdBatchNormStats } from "../simd/batchnorm.js";
import { simdBatchNormMaxPoolRelu, simdBatchNormMaxPoolReluGradInput, simdBatchNormMaxPoolReluGradSums } from "../simd/batchnorm-pool.js";
import { simdCol2im, simdIm2col, simdNchwToPadded, simdPaddedToNchw } from "../simd/conv.js";
import { simdMaxPool2dBackward, simdMaxPool2x2, simdMaxPool2x2Relu, simdMaxPool2x2ReluBackward } from "../simd/pool.js";

/** From this many values the batch-norm loops run in WebAssembly SIMD. */
const BN_SIMD_MIN = 4096;

/** First output column whose input column ow·s - p + off is ≥ 0. */
function validLo(OW: number, s: number, p: number, off: number): number {
  const lo = Math.ceil((p - off) / s); // iw = ow·s - p + off ≥ 0  ⇔  ow ≥ (p - off) / s
  return lo < 0 ? 0 : lo > OW ? OW : lo;
}

/** One past the last output column whose input column ow·s - p + off is < W (never below lo). */
function validHi(OW: number, W: number, s: number, p: number, off: number, lo: number): number {
  const hi = Math.floor((W - 1 + p - off) / s) + 1; // iw ≤ W - 1  ⇔  ow ≤ (W - 1 + p - off) / s
  return hi > OW ? OW : hi < lo ? lo : hi;
}

/**
 * Unfolds one image x[xOff .. xOff + C·H·W) into columns: col row r = (c·kh + i)·kw + j,
 * column oh·OW + ow, holds x[c, oh·sh - ph + i·dh, ow·sw - pw + j·dw] (0 outside the image).
 * Rows are `ldc` floats apart starting at colOff, so several images can share one
 * (C·kh·kw, N·OH·OW) matrix (image n at colOff = n·OH·OW, ldc = N·OH·OW).
 */
export function im2col(col: Float32Array, colOff: number, ldc: number, x: Float32Array, xOff: number, g: Conv2dGeometry): void {
  if (g.C * g.kh * g.kw * g.OH * g.OW >= IM2COL_SIMD_MIN && simdIm2col(col, colOff, ldc, x, xOff, g)) return; // same values, in WebAssembly
  im2colLoop(col, colOff, ldc, x, xOff, g);
}

/** From this many column values im2col and col2im run in WebAssembly SIMD (stride 1). */
const IM2COL_SIMD_MIN = 1024;

/** im2col's loops (strided convolutions, SIMD off, and the reference its tests compare with). */
export function im2colLoop(col: Float32Array, colOff: number, ldc: number, x: Float32Array, xOff: number, g: Conv2dGeometry): void {
  const { C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW } = g;
  const plane = H * W;
  for (let c = 0; c < C; c++) {
    const xc = xOff + c * plane;
    for (let i = 0; i < kh; i++) {
      for (let j = 0; j < kw; j++) {
        const row = colOff + ((c * kh + i) * kw + j) * ldc;
        const lo = validLo(OW, sw, pw, j * dw), hi = validHi(OW, W, sw, pw, j * dw, lo);
        const colShift = j * dw - pw; // iw = ow*sw + colShift
        for (let oh = 0; oh < OH; oh++) {
          const ih = oh * sh - ph + i * dh;
          const dst = row + oh * OW;
          if (ih < 0 || ih >= H) {
            col.fill(0, dst, dst + OW);
            continue;
          }
          for (let ow = 0; ow < lo; ow++) col[dst + ow] = 0;
          const src = xc + ih * W + colShift;
          if (sw === 1) {
            for (let ow = lo; ow < hi; ow++) col[dst + ow] = x[src + ow];
          } else {
            for (let ow = lo; ow < hi; ow++) col[dst + ow] = x[src + ow * sw];
          }
          for (let ow = hi; ow < OW; ow++) col[dst + ow] = 0;
        }
      }
    }
  }
}

/**
 * The adjoint of im2col: folds columns back into one image, summing where windows
 * overlap. Writes (=) dx[xOff .. xOff + C·H·W).
 */
export function col2im(dx: Float32Array, xOff: number, col: Float32Array, colOff: number, ldc: number, g: Conv2dGeometry): void {
  if (g.C * g.kh * g.kw * g.OH * g.OW >= IM2COL_SIMD_MIN && simdCol2im(dx, xOff, col, colOff, ldc, g)) return; // same sums, in WebAssembly
  col2imLoop(dx, xOff, col, colOff, ldc, g);
}

/** col2im's loops (strided convolutions, SIMD off, and the reference its tests compare with). */
export function col2imLoop(dx: Float32Array, xOff: number, col: Float32Array, colOff: number, ldc: number, g: Conv2dGeometry): void {
  const { C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW } = g;
  const plane = H * W;
  dx.fill(0, xOff, xOff + C * plane);
  for (let c = 0; c < C; c++) {
    const xc = xOff + c * plane;
    for (let i = 0; i < kh; i++) {
      for (let j = 0; j < kw; j++) {
        const row = colOff + ((c * kh + i) * kw + j) * ldc;
        const lo = validLo(OW, sw, pw, j * dw), hi = validHi(OW, W, sw, pw, j * dw, lo);
        const colShift = j * dw - pw;
        for (let oh = 0; oh < OH; oh++) {
          const ih = oh * sh - ph + i * dh;
          if (ih < 0 || ih >= H) continue;
          const srcRow = row + oh * OW;
          const dst = xc + ih * W + colShift;
          if (sw === 1) {
            for (let ow = lo; ow < hi; ow++) dx[dst + ow] += col[srcRow + ow];
          } else {
            for (let ow = lo; ow < hi; ow++) dx[dst + ow * sw] += col[srcRow + ow];
          }
        }
      }
    }
  }
}

/**
 * Max pooling over `planes` planes (N·C). Padding counts as -Infinity. argmax gets the
 * flat in-plane index (ih·W + iw) of the chosen element; NaN propagates like PyTorch.
 */
export function maxPool2d(out: Float32Array, argmax: Int32Array, x: Float32Array, planes: number, g: Pool2dGeometry): void {
  const { H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW } = g;
  // (ceil mode can add a last, partial window: the general loop below handles it)
  if (kh === 2 && kw === 2 && sh === 2 && sw === 2 && ph === 0 && pw === 0 && dh === 1 && dw === 1 && 2 * OH <= H && 2 * OW <= W) {
    maxPool2x2(out, argmax, x, planes, H, W, OH, OW);
    return;
  }
  const plane = H * W, oplane = OH * OW;
  for (let p = 0; p < planes; p++) {
    const xb = p * plane, ob = p * oplane;
    for (let oh = 0; oh < OH; oh++) {
      const h0 = oh * sh - ph;
      for (let ow = 0; ow < OW; ow++) {
        const w0 = ow * sw - pw;
        let best = -Infinity, bi = -1;
        for (let i = 0; i < kh; i++) {
          const ih = h0 + i * dh;
          if (ih < 0 || ih >= H) continue;
          const rb = ih * W;
          for (let j = 0; j < kw; j++) {
            const iw = w0 + j * dw;
            if (iw < 0 || iw >= W) continue;
            const v = x[xb + rb + iw];
            if (v > best || bi < 0 || (v !== v && best === best)) {
              best = v;
              bi = rb + iw;
            }
          }
        }
        out[ob + oh * OW + ow] = best;
        argmax[ob + oh * OW + ow] = bi;
      }
    }
  }
}

/** The common 2×2, stride 2 case: no bounds checks, the window unrolled. */
export function maxPool2x2(out: Float32Array, argmax: Int32Array, x: Float32Array, planes: number, H: number, W: number, OH: number, OW: number): void {
  if (planes * OH * OW >= 256 && simdMaxPool2x2(out, argmax, x, planes, H, W, OH, OW)) return; // same outputs and indices, SIMD
  const plane = H * W, oplane = OH * OW;
  for (let p = 0; p < planes; p++) {
    const xb = p * plane;
    let o = p * oplane;
    for (let oh = 0; oh < OH; oh++) {
      const r0 = 2 * oh * W, r1 = r0 + W;
      for (let ow = 0; ow < OW; ow++, o++) {
        const c = 2 * ow;
        let bi = r0 + c, best = x[xb + bi];
        let v = x[xb + r0 + c + 1];
        if (v > best || (v !== v && best === best)) { best = v; bi = r0 + c + 1; }
        v = x[xb + r1 + c];
        if (v > best || (v !== v && best === best)) { best = v; bi = r1 + c; }
        v = x[xb + r1 + c + 1];
        if (v > best || (v !== v && best === best)) { best = v; bi = r1 + c + 1; }
        out[o] = best;
        argmax[o] = bi;
      }
    }
  }
}

/** dx (=) scatter of dout to the argmax positions saved by maxPool2d. */
export function maxPool2dBackward(dx: Float32Array, dout: Float32Array, argmax: Int32Array, planes: number, plane: number, oplane: number): void {
  if (planes * oplane >= 256 && simdMaxPool2dBackward(dx, dout, argmax, planes, plane, oplane)) return; // same bits, in WebAssembly
  dx.fill(0);
  for (let p = 0; p < planes; p++) {
    const xb = p * plane, ob = p * oplane;
    for (let o = 0; o < oplane; o++) {
      const a = argmax[ob + o];
      if (a >= 0) dx[xb + a] += dout[ob + o];
    }
  }
}

/** Average pooling window o along one axis: [start, end) clamped to the input, and PyTorch's divisor size. */
function avgWindow(o: number, s: number, p: number, k: number, n: number): [number, number, number] {
  let start = o * s - p;
  let end = Math.min(start + k, n + p);
  const padded = end - start;
  if (start < 0) start = 0;
  if (end > n) end = n;
  return [start, end, padded];
}

/**
 * Average pooling (no dilation). countIncludePad: divide by the window size including
 * padding (PyTorch's default) rather than by the number of input elements covered.
 */
export function avgPool2d(out: Float32Array, x: Float32Array, planes: number, g: Pool2dGeometry, countIncludePad: boolean): void {
  const { H, W, kh, kw, sh, sw, ph, pw, OH, OW } = g;
  const plane = H * W, oplane = OH * OW;
  for (let p = 0; p < planes; p++) {
    const xb = p * plane, ob = p * oplane;
    for (let oh = 0; oh < OH; oh++) {
      const [h0, h1, hp] = avgWindow(oh, sh, ph, kh, H);
      for (let ow = 0; ow < OW; ow++) {
        const [w0, w1, wp] = avgWindow(ow, sw, pw, kw, W);
        let s = 0;
        for (let ih = h0; ih < h1; ih++) for (let iw = w0; iw < w1; iw++) s += x[xb + ih * W + iw];
        const div = countIncludePad ? hp * wp : (h1 - h0) * (w1 - w0);
        out[ob + oh * OW + ow] = s / div;
      }
    }
  }
}

export function avgPool2dBackward(dx: Float32Array, dout: Float32Array, planes: number, g: Pool2dGeometry, countIncludePad: boolean): void {
  const { H, W, kh, kw, sh, sw, ph, pw, OH, OW } = g;
  const plane = H * W, oplane = OH * OW;
  dx.fill(0);
  for (let p = 0; p < planes; p++) {
    const xb = p * plane, ob = p * oplane;
    for (let oh = 0; oh < OH; oh++) {
      const [h0, h1, hp] = avgWindow(oh, sh, ph, kh, H);
      for (let ow = 0; ow < OW; ow++) {
        const [w0, w1, wp] = avgWindow(ow, sw, pw, kw, W);
        const div = countIncludePad ? hp * wp : (h1 - h0) * (w1 - w0);
        const v = dout[ob + oh * OW + ow] / div;
        for (let ih = h0; ih < h1; ih++) for (let iw = w0; iw < w1; iw++) dx[xb + ih * W + iw] += v;
      }
    }
  }
}

/** Adaptive average pooling: output cell o covers input [floor(o·n/on), ceil((o+1)·n/on)). */
export function adaptiveAvgPool2d(out: Float32Array, x: Float32Array, planes: number, H: number, W: number, OH: number, OW: number): void {
  const plane = H * W, oplane = OH * OW;
  for (let p = 0; p < planes; p++) {
    const xb = p * plane, ob = p * oplane;
    for (let oh = 0; oh < OH; oh++) {
      const h0 = Math.floor((oh * H) / OH), h1 = Math.ceil(((oh + 1) * H) / OH);
      for (let ow = 0; ow < OW; ow++) {
        const w0 = Math.floor((ow * W) / OW), w1 = Math.ceil(((ow + 1) * W) / OW);
        let s = 0;
        for (let ih = h0; ih < h1; ih++) for (let iw = w0; iw < w1; iw++) s += x[xb + ih * W + iw];
        out[ob + oh * OW + ow] = s / ((h1 - h0) * (w1 - w0));
      }
    }
  }
}

export function adaptiveAvgPool2dBackward(dx: Float32Array, dout: Float32Array, planes: number, H: number, W: number, OH: number, OW: number): void {
  const plane = H * W, oplane = OH * OW;
  dx.fill(0);
  for (let p = 0; p < planes; p++) {
    const xb = p * plane, ob = p * oplane;
    for (let oh = 0; oh < OH; oh++) {
      const h0 = Math.floor((oh * H) / OH), h1 = Math.ceil(((oh + 1) * H) / OH);
      for (let ow = 0; ow < OW; ow++) {
        const w0 = Math.floor((ow * W) / OW), w1 = Math.ceil(((ow + 1) * W) / OW);
        const v = dout[ob + oh * OW + ow] / ((h1 - h0) * (w1 - w0));
        for (let ih = h0; ih < h1; ih++) for (let iw = w0; iw < w1; iw++) dx[xb + ih * W + iw] += v;
      }
    }
  }
}

/**
 * Per-channel mean and biased variance of x viewed as (N, C, HW), accumulated in
 * float64 (two passes, so large means do not cancel the variance).
 */
export function batchNormStats(mean: Float32Array, variance: Float32Array, x: Float32Array, N: number, C: number, HW: number): void {
  if (N * C * HW >= BN_SIMD_MIN && simdBatchNormStats(mean, variance, x, N, C, HW)) return;
  const count = N * HW;
  for (let c = 0; c < C; c++) {
    let s = 0;
    for (let n = 0; n < N; n++) {
      const b = (n * C + c) * HW;
      for (let i = 0; i < HW; i++) s += x[b + i];
    }
    const m = s / count;
    let v = 0;
    for (let n = 0; n < N; n++) {
      const b = (n * C + c) * HW;
      for (let i = 0; i < HW; i++) {
        const d = x[b + i] - m;
        v += d * d;
      }
    }
    mean[c] = m;
    variance[c] = v / count;
  }
}

/** out = (x - mean[c]) · rstd[c] · weight[c] + bias[c] over (N, C, HW); weight/bias null mean 1/0. */
export function batchNormApply(
  out: Float32Array, x: Float32Array, mean: Float32Array, rstd: Float32Array,
  weight: Float32Array | null, bias: Float32Array | null, N: number, C: number, HW: number,
): void {
  if (N * C * HW >= BN_SIMD_MIN && simdBatchNormApply(out, x, mean, rstd, weight, bias, N, C, HW)) return;
  for (let c = 0; c < C; c++) {
    const scale = rstd[c] * (weight ? weight[c] : 1);
    const shift = (bias ? bias[c] : 0) - mean[c] * scale;
    for (let n = 0; n < N; n++) {
      const b = (n * C + c) * HW;
      for (let i = 0; i < HW; i++) out[b + i] = x[b + i] * scale + shift;
    }
  }
}

/**
 * Backward of batchNormApply. training: mean and rstd came from this batch, so dx also
 * flows through them: dx = w·rstd·(dy - mean(dy) - x̂·mean(dy·x̂)). Otherwise (running
 * statistics, constants): dx = w·rstd·dy. Outputs that are null are skipped; all write (=).
 */
export function batchNormBackward(
  dx: Float32Array | null, dweight: Float32Array | null, dbias: Float32Array | null,
  dout: Float32Array, x: Float32Array, mean: Float32Array, rstd: Float32Array, weight: Float32Array | null,
  N: number, C: number, HW: number, training: boolean,
): void {
  if (N * C * HW >= BN_SIMD_MIN && simdBatchNormBackward(dx, dweight, dbias, dout, x, mean, rstd, weight, N, C, HW, training)) return;
  const count = N * HW;
  for (let c = 0; c < C; c++) {
    const m = mean[c], rs = rstd[c];
    let sdy = 0, sdyx = 0; // Σ dy, Σ dy·x̂
    for (let n = 0; n < N; n++) {
      const b = (n * C + c) * HW;
      for (let i = 0; i < HW; i++) {
        const dy = dout[b + i];
        sdy += dy;
        sdyx += dy * (x[b + i] - m) * rs;
      }
    }
    if (dweight) dweight[c] = sdyx;
    if (dbias) dbias[c] = sdy;
    if (!dx) continue;
    const w = weight ? weight[c] : 1;
    const k = w * rs;
    if (training) {
      const mdy = sdy / count, mdyx = sdyx / count;
      for (let n = 0; n < N; n++) {
        const b = (n * C + c) * HW;
        for (let i = 0; i < HW; i++) dx[b + i] = k * (dout[b + i] - mdy - (x[b + i] - m) * rs * mdyx);
      }
    } else {
      for (let n = 0; n < N; n++) {
        const b = (n * C + c) * HW;
        for (let i = 0; i < HW; i++) dx[b + i] = k * dout[b + i];
      }
    }
  }
}

// Batch norm's output in batchNormMaxPoolRelu's loop path (pooled from there), reused across calls.
let normBuf = new Float32Array(0);

/**
 * relu(maxPool2d(z, 2)) with z = x·scale[c] + shift[c] (batch norm with its scale and shift folded,
 * batchNormApply's expression): x (N, C, H, W) → out (N, C, ⌊H/2⌋, ⌊W/2⌋) and tap as maxPool2x2Relu
 * writes them (window position of the maximum, 4 where no gradient passes). The SIMD version
 * normalises in its own memory and copies out only the pooled values; this loop writes z to a
 * scratch and pools it.
 */
export function batchNormMaxPoolRelu(
  out: Float32Array, tap: Uint8Array, x: Float32Array, scale: Float32Array, shift: Float32Array, N: number, C: number, H: number, W: number,
): void {
  if (N * C * H * W >= BN_SIMD_MIN && simdBatchNormMaxPoolRelu(out, tap, x, scale, shift, N, C, H, W)) return;
  const HW = H * W;
  if (normBuf.length < N * C * HW) normBuf = new Float32Array(N * C * HW);
  const z = normBuf;
  for (let n = 0; n < N; n++) {
    for (let c = 0; c < C; c++) {
      const b = (n * C + c) * HW, a = scale[c], t = shift[c];
      for (let i = b; i < b + HW; i++) z[i] = x[i] * a + t;
    }
  }
  maxPool2x2Relu(out, tap, 0, z, 0, N, C, H >> 1, W >> 1, C * HW, HW, W);
}

/** Position in x (N, C, H, W) of pooled output o's tap t (t < 4), o = ((n·C + c)·PH + ph)·PW + pw. */
function tapPosition(o: number, t: number, H: number, W: number, PH: number, PW: number): number {
  const plane = Math.floor(o / (PH * PW)), r = o - plane * PH * PW, ph = Math.floor(r / PW), pw = r - ph * PW;
  return plane * H * W + (2 * ph + (t >> 1)) * W + 2 * pw + (t & 1);
}

/**
 * Batch norm's gradient sums behind batchNormMaxPoolRelu: dz (the gradient of z) is gout at each
 * window's tap and 0 elsewhere, so per channel sdy = Σ dz and sdyx = Σ dz·(x - mean[c])·rstd[c]
 * run over the pooled outputs only (float64; = over whole planes).
 */
export function batchNormMaxPoolReluGradSums(
  sdy: Float64Array, sdyx: Float64Array, gout: Float32Array, tap: Uint8Array, x: Float32Array,
  mean: Float32Array, rstd: Float32Array, N: number, C: number, H: number, W: number,
): void {
  if (N * C * H * W >= BN_SIMD_MIN && simdBatchNormMaxPoolReluGradSums(sdy, sdyx, gout, tap, x, mean, rstd, N, C, H, W)) return;
  const PH = H >> 1, PW = W >> 1, PL = PH * PW;
  sdy.fill(0);
  sdyx.fill(0);
  for (let n = 0; n < N; n++) {
    for (let c = 0; c < C; c++) {
      const m = mean[c], rs = rstd[c];
      let s = 0, sx = 0;
      for (let o = (n * C + c) * PL; o < (n * C + c + 1) * PL; o++) {
        const t = tap[o];
        if (t === 4) continue;
        const g = gout[o];
        s += g;
        sx += g * (x[tapPosition(o, t, H, W, PH, PW)] - m) * rs;
      }
      sdy[c] += s;
      sdyx[c] += sx;
    }
  }
}

/**
 * Batch norm's input gradient behind batchNormMaxPoolRelu (dz as above): dx = a[c]·(dz - mdy[c] -
 * x̂·mdyx[c]), x̂ = (x - mean[c])·rstd[c], with batch statistics (mdy, mdyx: the means of dz and
 * dz·x̂ over the batch); dx = a[c]·dz with running ones. Writes all of dx.
 */
export function batchNormMaxPoolReluGradInput(
  dx: Float32Array, gout: Float32Array, tap: Uint8Array, x: Float32Array, mean: Float32Array, rstd: Float32Array,
  a: Float32Array, mdy: Float32Array, mdyx: Float32Array, training: boolean, N: number, C: number, H: number, W: number,
): void {
  if (N * C * H * W >= BN_SIMD_MIN && simdBatchNormMaxPoolReluGradInput(dx, gout, tap, x, mean, rstd, a, mdy, mdyx, training, N, C, H, W)) return;
  const HW = H * W, PH = H >> 1, PW = W >> 1, PL = PH * PW;
  for (let n = 0; n < N; n++) {
    for (let c = 0; c < C; c++) {
      const b = (n * C + c) * HW, k = a[c], m = mean[c], rs = rstd[c], g0 = mdy[c], gx = mdyx[c];
      if (training) for (let i = b; i < b + HW; i++) dx[i] = k * (0 - g0 - (x[i] - m) * rs * gx);
      else dx.fill(0, b, b + HW);
      for (let o = (n * C + c) * PL; o < (n * C + c + 1) * PL; o++) {
        const t = tap[o];
        if (t === 4) continue;
        const i = tapPosition(o, t, H, W, PH, PW);
        dx[i] = training ? k * (gout[o] - g0 - (x[i] - m) * rs * gx) : k * gout[o];
      }
    }
  }
}

/** out (N, C, HW) += bias[c]. */
export function addChannelBias(out: Float32Array, bias: Float32Array, N: number, C: number, HW: number): void {
  for (let n = 0; n < N; n++) {
    for (let c = 0; c < C; c++) {
      const b = (n * C + c) * HW, v = bias[c];
      for (let i = 0; i < HW; i++) out[b + i] += v;
    }
  }
}

/** dbias[c] (=) Σ over n and HW of dout (N, C, HW). */
export function sumChannels(dbias: Float32Array, dout: Float32Array, N: number, C: number, HW: number): void {
  dbias.fill(0);
  for (let n = 0; n < N; n++) {
    for (let c = 0; c < C; c++) {
      const b = (n * C + c) * HW;
      let s = 0;
      for (let i = 0; i < HW; i++) s += dout[b + i];
      dbias[c] += s;
    }
  }
}

/**
 * Scatters x (N, C, H, W) into a zero-initialised channel-major padded buffer
 * dst (C, N, Hp, Wp) at row `top`, column `left` of each plane. The other cells must be zero
 * already: this loop leaves them alone, the SIMD version (from 4096 values) writes them zero again.
 */
export function nchwToPadded(dst: Float32Array, x: Float32Array, N: number, C: number, H: number, W: number, top: number, left: number, Hp: number, Wp: number): void {
  if (N * C * H * W >= BN_SIMD_MIN && simdNchwToPadded(dst, x, N, C, H, W, top, left, Hp, Wp)) return;
  const P = Hp * Wp;
  for (let n = 0; n < N; n++) {
    for (let c = 0; c < C; c++) {
      const s = (n * C + c) * H * W;
      const d = (c * N + n) * P + top * Wp + left;
      for (let h = 0; h < H; h++) {
        const si = s + h * W, di = d + h * Wp;
        for (let w = 0; w < W; w++) dst[di + w] = x[si + w];
      }
    }
  }
}

/** The inverse gather: x (N, C, H, W) (=) src (C, N, Hp, Wp) at row `top`, column `left` of each plane. */
export function paddedToNchw(x: Float32Array, src: Float32Array, N: number, C: number, H: number, W: number, top: number, left: number, Hp: number, Wp: number): void {
  if (N * C * H * W >= BN_SIMD_MIN && simdPaddedToNchw(x, src, N, C, H, W, top, left, Hp, Wp)) return;
  const P = Hp * Wp;
  for (let n = 0; n < N; n++) {
    for (let c = 0; c < C; c++) {
      const d = (n * C + c) * H * W;
      const s = (c * N + n) * P + top * Wp + left;
      for (let h = 0; h < H; h++) {
        const si = s + h * Wp, di = d + h * W;
        for (let w = 0; w < W; w++) x[di + w] = src[si + w];
      }
    }
  }
}

/**
 * 2×2, stride-2 max pooling followed by ReLU, reading a strided source: element (n, c, h, w)
 * at srcOff + n·sN + c·sC + h·sH + w (so a conv's output can be pooled from whatever layout its
 * GEMM wrote, without an NCHW copy first). Writes out (N, C, PH, PW) at outOff, and tap: the
 * window position 2·di + dj of the maximum (the first on ties), or 4 where the pooled value is
 * not positive, so ReLU passes no gradient. A window holding a NaN gives that NaN (the first),
 * tap 4: relu(maxPool2d(x)) as those ops do it.
 *
 * Branch-free on the bit patterns: after ReLU (negatives to +0) every value is a non-negative
 * float, and those order like their bits as int32. With random signs, compare-and-branch
 * mispredicted often and ran ~2x slower.
 */
export function maxPool2x2Relu(
  out: Float32Array, tap: Uint8Array, outOff: number, src: Float32Array, srcOff: number,
  N: number, C: number, PH: number, PW: number, sN: number, sC: number, sH: number,
): void {
  // Same bits in WebAssembly SIMD, ~4x faster, from a few hundred outputs (it declines planes holding a NaN).
  if (N * C * PH * PW >= 256 && simdMaxPool2x2Relu(out, tap, outOff, src, srcOff, N, C, PH, PW, sN, sC, sH)) return;
  const xb = bits(src), ob = bits(out);
  let o = outOff;
  for (let n = 0; n < N; n++) {
    for (let c = 0; c < C; c++) {
      const base = srcOff + n * sN + c * sC;
      for (let ph = 0; ph < PH; ph++) {
        const r0 = base + 2 * ph * sH, r1 = r0 + sH;
        for (let pw = 0; pw < PW; pw++, o++) {
          const i = 2 * pw;
          let a = xb[r0 + i], b = xb[r0 + i + 1], e = xb[r1 + i], d = xb[r1 + i + 1];
          // (v & 0x7fffffff) - 0x7f800001 ≥ 0 exactly for NaN: rare, so this branch predicts well.
          if ((((a & 0x7fffffff) - 0x7f800001) & ((b & 0x7fffffff) - 0x7f800001) & ((e & 0x7fffffff) - 0x7f800001) & ((d & 0x7fffffff) - 0x7f800001)) >= 0) {
            ob[o] = isNanBits(a) ? a : isNanBits(b) ? b : isNanBits(e) ? e : d;
            tap[o] = 4;
            continue;
          }
          a &= ~(a >> 31); b &= ~(b >> 31); e &= ~(e >> 31); d &= ~(d >> 31); // ReLU: negatives to +0
          const s01 = (a - b) >> 31, s23 = (e - d) >> 31; // -1 where the second of a pair is larger
          const m01 = a ^ ((a ^ b) & s01), m23 = e ^ ((e ^ d) & s23);
          const t01 = s01 & 1, t23 = 2 | (s23 & 1);
          const s = (m01 - m23) >> 31; // -1 where the bottom row's max is larger
          const m = m01 ^ ((m01 ^ m23) & s);
          const z = (m - 1) >> 31; // -1 where the max is +0: no gradient
          ob[o] = m;
          tap[o] = ((t01 ^ ((t01 ^ t23) & s)) & ~z) | (4 & z);
        }
      }
    }
  }
}

function bits(a: Float32Array): Int32Array {
  return new Int32Array(a.buffer, a.byteOffset, a.length);
}

function isNanBits(v: number): boolean {
  return (v & 0x7fffffff) > 0x7f800000;
}

/**
 * Backward of maxPool2x2Relu: writes gout to each window's tap in dsrc (same strided layout;
 * the caller zeroes dsrc from srcOff to the last plane's last window, all of which the SIMD
 * version writes; +0 where no gradient passes), branch-free; dbias[c] (if given) += Σ of
 * the gradients that pass, i.e. the bias gradient of the conv that produced src, summed over
 * the pooled (4x smaller) gradient.
 */
export function maxPool2x2ReluBackward(
  dsrc: Float32Array, srcOff: number, gout: Float32Array, tap: Uint8Array, outOff: number,
  N: number, C: number, PH: number, PW: number, sN: number, sC: number, sH: number, dbias: Float32Array | null,
): void {
  if (N * C * PH * PW >= 256 && simdMaxPool2x2ReluBackward(dsrc, srcOff, gout, tap, outOff, N, C, PH, PW, sN, sC, sH, dbias)) return;
  const gb = bits(gout), db = bits(dsrc);
  let o = outOff;
  for (let n = 0; n < N; n++) {
    for (let c = 0; c < C; c++) {
      const base = srcOff + n * sN + c * sC;
      let s = 0;
      for (let ph = 0; ph < PH; ph++) {
        const r0 = base + 2 * ph * sH;
        for (let pw = 0; pw < PW; pw++, o++) {
          const t = tap[o];
          const pos = r0 + ((t >> 1) & 1) * sH + 2 * pw + (t & 1); // tap 4: the window's first element, written +0
          db[pos] = gb[o] & ((t - 4) >> 31);
          s += dsrc[pos];
        }
      }
      if (dbias) dbias[c] += s;
    }
  }
}
