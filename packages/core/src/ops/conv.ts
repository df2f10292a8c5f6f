/**
 * Image ops over NCHW tensors: conv2d (lowered to GEMM through im2col/col2im),
 * maxPool2d, avgPool2d, adaptiveAvgPool2d and batchNorm2d — each forward with its
 * backward beside it. The loops are kernels (kernels/js/conv.ts); this file does
 * shapes, argument checks and the GEMM layout.
 */
import { ArgumentError, ShapeError, fmtShape } from "../errors.js";
import { Tensor } from "../tensor/tensor.js";
import { type Conv2dGeometry, type Pool2dGeometry, kernels } from "../kernels/kernels.js";
import { result } from "./op.js";

/** An int or an (h, w) pair. */
export type Size2 = number | readonly [number, number];

export interface Conv2dOptions {
  stride?: Size2;
  /** Zero padding on each side, or "valid" (0) or "same" (stride 1 only; needs dilation·(k-1) even). */
  padding?: Size2 | "valid" | "same";
  dilation?: Size2;
  groups?: number;
}

function pair(op: string, name: string, v: Size2, min: number): [number, number] {
  const p: [number, number] = typeof v === "number" ? [v, v] : [v[0], v[1]];
  if (p.length !== 2 || p.some((d) => !Number.isInteger(d) || d < min)) {
    throw new ArgumentError(`${op}: ${name} must be ${min > 0 ? "a positive" : "a non-negative"} integer or a pair of them, got ${JSON.stringify(v)}`);
  }
  return p;
}

function outSize(op: string, inSize: number, k: number, s: number, p: number, d: number, what: string): number {
  const o = Math.floor((inSize + 2 * p - d * (k - 1) - 1) / s) + 1;
  if (o < 1) throw new ShapeError(`${op}: ${what} ${inSize} with padding ${p} is smaller than the ${d > 1 ? "dilated " : ""}kernel size ${d * (k - 1) + 1}`);
  return o;
}

function check4d(op: string, x: Tensor): void {
  if (x.ndim !== 4) throw new ShapeError(`${op}: input must be 4-D (N, C, H, W), got ${fmtShape(x.shape)}`);
}

/**
 * GEMM layout of conv2d:
 *  - "batched": one im2col matrix (C·kh·kw, N·OH·OW) for the whole batch and one GEMM per group
 *    into (O, N·OH·OW), then a permute to (N, O, OH·OW) (and the reverse in backward);
 *  - "perImage": one GEMM per image and group straight into the NCHW output.
 * The default is chosen by measurement (bench/cnn.ts); the other stays for comparison.
 */
export type Conv2dLayout = "batched" | "perImage";
let conv2dLayout: Conv2dLayout = "perImage";

export function setConv2dLayout(layout: Conv2dLayout): void {
  if (layout !== "batched" && layout !== "perImage") throw new ArgumentError(`setConv2dLayout: unknown layout ${layout}`);
  conv2dLayout = layout;
}

export function getConv2dLayout(): Conv2dLayout {
  return conv2dLayout;
}

/**
 * 2-D convolution (cross-correlation, as PyTorch): x (N, C, H, W), weight (O, C/groups, kh, kw),
 * bias (O) → (N, O, OH, OW) with OH = ⌊(H + 2·ph - dh·(kh-1) - 1) / sh⌋ + 1.
 */
export function conv2d(x: Tensor, weight: Tensor, bias: Tensor | null = null, opts: Conv2dOptions = {}): Tensor {
  const op = "conv2d";
  check4d(op, x);
  if (weight.ndim !== 4) throw new ShapeError(`${op}: weight must be 4-D (out, in/groups, kh, kw), got ${fmtShape(weight.shape)}`);
  const groups = opts.groups ?? 1;
  if (!Number.isInteger(groups) || groups < 1) throw new ArgumentError(`${op}: groups must be a positive integer, got ${groups}`);
  const [N, C, H, W] = x.shape;
  const [O, Cg, kh, kw] = weight.shape;
  if (C % groups !== 0 || O % groups !== 0) {
    throw new ShapeError(`${op}: input ${fmtShape(x.shape)}, weight ${fmtShape(weight.shape)}: in channels ${C} and out channels ${O} must be divisible by groups ${groups}`);
  }
  if (Cg !== C / groups) {
    throw new ShapeError(`${op}: input ${fmtShape(x.shape)} x weight ${fmtShape(weight.shape)}: weight expects ${Cg * groups} input channels (${Cg} per group x ${groups} groups), input has ${C}`);
  }
  if (bias && (bias.ndim !== 1 || bias.shape[0] !== O)) throw new ShapeError(`${op}: bias ${fmtShape(bias.shape)} must be [${O}] for weight ${fmtShape(weight.shape)}`);
  const [sh, sw] = pair(op, "stride", opts.stride ?? 1, 1);
  const [dh, dw] = pair(op, "dilation", opts.dilation ?? 1, 1);
  let ph: number, pw: number;
  const pad = opts.padding ?? 0;
  if (pad === "valid") [ph, pw] = [0, 0];
  else if (pad === "same") {
    if (sh !== 1 || sw !== 1) throw new ArgumentError(`${op}: padding "same" needs stride 1, got stride [${sh},${sw}]`);
    const th = dh * (kh - 1), tw = dw * (kw - 1);
    if (th % 2 !== 0 || tw % 2 !== 0) throw new ArgumentError(`${op}: padding "same" with kernel [${kh},${kw}] and dilation [${dh},${dw}] needs asymmetric padding, which is not supported`);
    [ph, pw] = [th / 2, tw / 2];
  } else [ph, pw] = pair(op, "padding", pad, 0);
  const OH = outSize(op, H, kh, sh, ph, dh, "input height");
  const OW = outSize(op, W, kw, sw, pw, dw, "input width");

  const g: Conv2dGeometry = { C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW };
  const L = OH * OW; // output pixels per image
  const K = C * kh * kw; // rows of one image's column matrix (all groups)
  const Kg = Cg * kh * kw; // per group
  const Og = O / groups;
  const img = C * H * W;
  const k = kernels();
  // 1×1, stride 1, no padding: an image's column matrix is the image itself.
  const pointwise = kh === 1 && kw === 1 && sh === 1 && sw === 1 && ph === 0 && pw === 0;
  const out = new Float32Array(N * O * L);
  let col: Float32Array;
  const layout = conv2dLayout;

  if (layout === "perImage") {
    if (pointwise) col = x.data;
    else {
      col = new Float32Array(N * K * L); // (N, K, L)
      for (let n = 0; n < N; n++) k.im2col(col, n * K * L, L, x.data, n * img, g);
    }
    if (bias) for (let n = 0; n < N; n++) for (let o = 0; o < O; o++) out.fill(bias.data[o], (n * O + o) * L, (n * O + o + 1) * L);
    const beta = bias ? 1 : 0;
    for (let n = 0; n < N; n++) {
      for (let gi = 0; gi < groups; gi++) {
        // (Og, Kg) @ (Kg, L) → out[n, group rows]
        k.gemm(false, false, Og, L, Kg, 1, weight.data, gi * Og * Kg, Kg, col, n * K * L + gi * Kg * L, L, beta, out, (n * O + gi * Og) * L, L);
      }
    }
  } else {
    const NL = N * L;
    col = new Float32Array(K * NL); // (K, N·L)
    for (let n = 0; n < N; n++) k.im2col(col, n * L, NL, x.data, n * img, g);
    const tmp = new Float32Array(O * NL); // (O, N, L)
    if (bias) for (let o = 0; o < O; o++) tmp.fill(bias.data[o], o * NL, (o + 1) * NL);
    const beta = bias ? 1 : 0;
    for (let gi = 0; gi < groups; gi++) {
      k.gemm(false, false, Og, NL, Kg, 1, weight.data, gi * Og * Kg, Kg, col, gi * Kg * NL, NL, beta, tmp, gi * Og * NL, NL);
    }
    k.permute(out, tmp, [O, N, L], [1, 0, 2]); // (N, O, L)
  }

  const inputs = bias ? [x, weight, bias] : [x, weight];
  return result(op, out, [N, O, OH, OW], inputs, (gout) => {
    let dx: Float32Array | null = null, dwt: Float32Array | null = null, db: Float32Array | null = null;
    if (bias?.requiresGrad) {
      db = new Float32Array(O);
      k.sumChannels(db, gout, N, O, L);
    }
    if (layout === "perImage") {
      if (weight.requiresGrad) {
        dwt = new Float32Array(weight.size);
        for (let n = 0; n < N; n++) {
          for (let gi = 0; gi < groups; gi++) {
            // dW_g += gout[n, g] (Og, L) @ col[n, g]ᵀ (L, Kg)
            k.gemm(false, true, Og, Kg, L, 1, gout, (n * O + gi * Og) * L, L, col, n * K * L + gi * Kg * L, L, n === 0 ? 0 : 1, dwt, gi * Og * Kg, Kg);
          }
        }
      }
      if (x.requiresGrad) {
        dx = new Float32Array(x.size);
        const dcol = pointwise ? dx : new Float32Array(K * L); // one image's columns, reused
        for (let n = 0; n < N; n++) {
          const dOff = pointwise ? n * img : 0;
          for (let gi = 0; gi < groups; gi++) {
            // dcol_g = W_gᵀ (Kg, Og) @ gout[n, g] (Og, L)
            k.gemm(true, false, Kg, L, Og, 1, weight.data, gi * Og * Kg, Kg, gout, (n * O + gi * Og) * L, L, 0, dcol, dOff + gi * Kg * L, L);
          }
          if (!pointwise) k.col2im(dx, n * img, dcol, 0, L, g);
        }
      }
    } else {
      const NL = N * L;
      const gt = new Float32Array(O * NL); // (O, N, L)
      k.permute(gt, gout, [N, O, L], [1, 0, 2]);
      if (weight.requiresGrad) {
        dwt = new Float32Array(weight.size);
        for (let gi = 0; gi < groups; gi++) {
          k.gemm(false, true, Og, Kg, NL, 1, gt, gi * Og * NL, NL, col, gi * Kg * NL, NL, 0, dwt, gi * Og * Kg, Kg);
        }
      }
      if (x.requiresGrad) {
        dx = new Float32Array(x.size);
        const dcol = new Float32Array(K * NL);
        for (let gi = 0; gi < groups; gi++) {
          k.gemm(true, false, Kg, NL, Og, 1, weight.data, gi * Og * Kg, Kg, gt, gi * Og * NL, NL, 0, dcol, gi * Kg * NL, NL);
        }
        for (let n = 0; n < N; n++) k.col2im(dx, n * img, dcol, n * L, NL, g);
      }
    }
    return bias ? [dx, dwt, db] : [dx, dwt];
  });
}

export interface Pool2dOptions {
  /** Defaults to the kernel size. */
  stride?: Size2;
  padding?: Size2;
  dilation?: Size2;
}

function poolGeometry(op: string, x: Tensor, kernelSize: Size2, opts: Pool2dOptions, allowDilation: boolean): Pool2dGeometry {
  check4d(op, x);
  const [kh, kw] = pair(op, "kernelSize", kernelSize, 1);
  const [sh, sw] = pair(op, "stride", opts.stride ?? [kh, kw], 1);
  const [ph, pw] = pair(op, "padding", opts.padding ?? 0, 0);
  const [dh, dw] = pair(op, "dilation", opts.dilation ?? 1, 1);
  if (!allowDilation && (dh !== 1 || dw !== 1)) throw new ArgumentError(`${op}: dilation is not supported`);
  if (2 * ph > kh || 2 * pw > kw) throw new ArgumentError(`${op}: padding [${ph},${pw}] must be at most half the kernel size [${kh},${kw}]`);
  const [, , H, W] = x.shape;
  const OH = outSize(op, H, kh, sh, ph, dh, "input height");
  const OW = outSize(op, W, kw, sw, pw, dw, "input width");
  return { H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW };
}

/** Max pooling over H×W windows of x (N, C, H, W); padding counts as -Infinity (PyTorch's floor mode). */
export function maxPool2d(x: Tensor, kernelSize: Size2, opts: Pool2dOptions = {}): Tensor {
  const g = poolGeometry("maxPool2d", x, kernelSize, opts, true);
  const [N, C] = x.shape;
  const planes = N * C, oplane = g.OH * g.OW;
  const k = kernels();
  const out = new Float32Array(planes * oplane);
  const argmax = new Int32Array(planes * oplane);
  k.maxPool2d(out, argmax, x.data, planes, g);
  return result("maxPool2d", out, [N, C, g.OH, g.OW], [x], (gout) => {
    const dx = new Float32Array(x.size);
    k.maxPool2dBackward(dx, gout, argmax, planes, g.H * g.W, oplane);
    return [dx];
  });
}

export interface AvgPool2dOptions extends Omit<Pool2dOptions, "dilation"> {
  /** Divide by the whole window, padding included (PyTorch's default true), or by the input elements it covers. */
  countIncludePad?: boolean;
}

/** Average pooling over H×W windows of x (N, C, H, W). */
export function avgPool2d(x: Tensor, kernelSize: Size2, opts: AvgPool2dOptions = {}): Tensor {
  const g = poolGeometry("avgPool2d", x, kernelSize, opts, false);
  const cip = opts.countIncludePad ?? true;
  const [N, C] = x.shape;
  const planes = N * C;
  const k = kernels();
  const out = new Float32Array(planes * g.OH * g.OW);
  k.avgPool2d(out, x.data, planes, g, cip);
  return result("avgPool2d", out, [N, C, g.OH, g.OW], [x], (gout) => {
    const dx = new Float32Array(x.size);
    k.avgPool2dBackward(dx, gout, planes, g, cip);
    return [dx];
  });
}

/** Average pooling to a fixed output size: cell o covers input rows [⌊o·H/OH⌋, ⌈(o+1)·H/OH⌉). */
export function adaptiveAvgPool2d(x: Tensor, outputSize: Size2): Tensor {
  const op = "adaptiveAvgPool2d";
  check4d(op, x);
  const [OH, OW] = pair(op, "outputSize", outputSize, 1);
  const [N, C, H, W] = x.shape;
  if (H === 0 || W === 0) throw new ShapeError(`${op}: input ${fmtShape(x.shape)} has an empty spatial dimension`);
  const planes = N * C;
  const k = kernels();
  const out = new Float32Array(planes * OH * OW);
  k.adaptiveAvgPool2d(out, x.data, planes, H, W, OH, OW);
  return result(op, out, [N, C, OH, OW], [x], (gout) => {
    const dx = new Float32Array(x.size);
    k.adaptiveAvgPool2dBackward(dx, gout, planes, H, W, OH, OW);
    return [dx];
  });
}

export interface BatchNorm2dOptions {
  /** Use (and update) batch statistics (true) or the running ones (false). */
  training?: boolean;
  /**
   * Running-average factor (default 0.1): running = (1 - momentum)·running + momentum·batch.
   * For PyTorch's momentum=None (cumulative average) pass 1/numBatchesTracked, as nn.BatchNorm2d does.
   */
  momentum?: number;
  eps?: number;
}

/**
 * Batch normalisation over (N, H, W) per channel of x (N, C, H, W), PyTorch's F.batch_norm.
 * training: normalises with the batch mean and biased variance, and (when given) updates
 * runningMean/runningVar in place with the batch mean and unbiased variance.
 * Otherwise normalises with runningMean/runningVar, which are then required.
 */
export function batchNorm2d(
  x: Tensor, runningMean: Tensor | null, runningVar: Tensor | null,
  weight: Tensor | null = null, bias: Tensor | null = null, opts: BatchNorm2dOptions = {},
): Tensor {
  const op = "batchNorm2d";
  check4d(op, x);
  const training = opts.training ?? true;
  const momentum = opts.momentum ?? 0.1;
  const eps = opts.eps ?? 1e-5;
  const [N, C, H, W] = x.shape;
  const HW = H * W;
  for (const [name, t] of [["runningMean", runningMean], ["runningVar", runningVar], ["weight", weight], ["bias", bias]] as const) {
    if (t && (t.ndim !== 1 || t.shape[0] !== C)) throw new ShapeError(`${op}: ${name} ${fmtShape(t.shape)} must be [${C}] for input ${fmtShape(x.shape)}`);
  }
  if (!(momentum >= 0 && momentum <= 1)) throw new ArgumentError(`${op}: momentum must be in [0, 1], got ${momentum}`);
  if (!(eps > 0)) throw new ArgumentError(`${op}: eps must be positive, got ${eps}`);
  const k = kernels();
  const mean = new Float32Array(C), rstd = new Float32Array(C);
  if (training) {
    const count = N * HW;
    if (count <= 1) throw new ShapeError(`${op}: expected more than 1 value per channel when training, got input ${fmtShape(x.shape)}`);
    const variance = new Float32Array(C);
    k.batchNormStats(mean, variance, x.data, N, C, HW);
    for (let c = 0; c < C; c++) rstd[c] = 1 / Math.sqrt(variance[c] + eps);
    if (runningMean && runningVar) {
      const unbias = count / (count - 1);
      for (let c = 0; c < C; c++) {
        runningMean.data[c] = (1 - momentum) * runningMean.data[c] + momentum * mean[c];
        runningVar.data[c] = (1 - momentum) * runningVar.data[c] + momentum * variance[c] * unbias;
      }
    } else if (runningMean || runningVar) {
      throw new ArgumentError(`${op}: pass both runningMean and runningVar, or neither`);
    }
  } else {
    if (!runningMean || !runningVar) throw new ArgumentError(`${op}: evaluation mode needs runningMean and runningVar`);
    mean.set(runningMean.data);
    for (let c = 0; c < C; c++) rstd[c] = 1 / Math.sqrt(runningVar.data[c] + eps);
  }
  const out = new Float32Array(x.size);
  k.batchNormApply(out, x.data, mean, rstd, weight?.data ?? null, bias?.data ?? null, N, C, HW);
  const inputs = [x];
  if (weight) inputs.push(weight);
  if (bias) inputs.push(bias);
  return result(op, out, x.shape, inputs, (gout) => {
    const dx = x.requiresGrad ? new Float32Array(x.size) : null;
    const dwt = weight?.requiresGrad ? new Float32Array(C) : null;
    const db = bias?.requiresGrad ? new Float32Array(C) : null;
    k.batchNormBackward(dx, dwt, db, gout, x.data, mean, rstd, weight?.data ?? null, N, C, HW, training);
    const grads: (Float32Array | null)[] = [dx];
    if (weight) grads.push(dwt);
    if (bias) grads.push(db);
    return grads;
  });
}
