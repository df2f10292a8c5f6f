/**
 * conv1d (conv2d over (N, C, 1, L)) and convTranspose2d, the adjoint of conv2d: its forward
 * is conv2d's input gradient (GEMM then col2im), its input gradient is a conv2d (im2col then
 * GEMM), through the same kernels.
 */
import { ArgumentError, ShapeError, fmtShape } from "../errors.js";
import { Tensor } from "../tensor/tensor.js";
import { type Conv2dGeometry, kernels } from "../kernels/kernels.js";
import { result } from "./op.js";
import { type Conv2dOptions, type Size2, conv2d } from "./conv.js";
import { reshape, squeeze, unsqueeze } from "./shape.js";
import { checkOptions } from "../options.js";

function pair(op: string, name: string, v: Size2, min: number): [number, number] {
  const p: [number, number] = typeof v === "number" ? [v, v] : [v[0], v[1]];
  if (p.length !== 2 || p.some((d) => !Number.isInteger(d) || d < min)) {
    throw new ArgumentError(`${op}: ${name} must be ${min > 0 ? "a positive" : "a non-negative"} integer or a pair of them, got ${JSON.stringify(v)}`);
  }
  return p;
}

export interface Conv1dOptions {
  stride?: number;
  padding?: number | "valid" | "same";
  dilation?: number;
  groups?: number;
}

/** 1-D convolution: x (N, C, L), weight (O, C/groups, k), bias (O) → (N, O, OL). */
export function conv1d(x: Tensor, weight: Tensor, bias: Tensor | null = null, opts: Conv1dOptions = {}): Tensor {
  checkOptions("conv1d", opts, ["stride", "padding", "dilation", "groups"]);
  if (x.ndim !== 3) throw new ShapeError(`conv1d: input must be 3-D (N, C, L), got ${fmtShape(x.shape)}`);
  if (weight.ndim !== 3) throw new ShapeError(`conv1d: weight must be 3-D (O, C/groups, k), got ${fmtShape(weight.shape)}`);
  const p = opts.padding ?? 0;
  const conv: Conv2dOptions = {
    stride: [1, opts.stride ?? 1], dilation: [1, opts.dilation ?? 1], groups: opts.groups ?? 1,
    padding: typeof p === "number" ? [0, p] : p,
  };
  const w4 = unsqueeze(weight, 2); // (O, C/g, 1, k)
  return squeeze(conv2d(unsqueeze(x, 2), w4, bias, conv), 2); // (N, O, 1, OL) → (N, O, OL)
}

export interface ConvTranspose2dOptions {
  stride?: Size2;
  /** Removed from each side of the full output (dilation·(k-1) - padding of zero padding on the adjoint conv's input). */
  padding?: Size2;
  /** Added to one side of the output size (resolves the sizes a strided conv maps to the same output); < stride or dilation. */
  outputPadding?: Size2;
  dilation?: Size2;
  groups?: number;
}

/**
 * Transposed 2-D convolution, PyTorch's conv_transpose2d: x (N, Cin, H, W), weight
 * (Cin, Cout/groups, kh, kw), bias (Cout) → (N, Cout, OH, OW) with
 * OH = (H - 1)·sh - 2·ph + dh·(kh - 1) + oph + 1.
 */
export function convTranspose2d(x: Tensor, weight: Tensor, bias: Tensor | null = null, opts: ConvTranspose2dOptions = {}): Tensor {
  const op = "convTranspose2d";
  checkOptions(op, opts, ["stride", "padding", "outputPadding", "dilation", "groups"]);
  if (x.ndim !== 4) throw new ShapeError(`${op}: input must be 4-D (N, C, H, W), got ${fmtShape(x.shape)}`);
  if (weight.ndim !== 4) throw new ShapeError(`${op}: weight must be 4-D (Cin, Cout/groups, kh, kw), got ${fmtShape(weight.shape)}`);
  const groups = opts.groups ?? 1;
  if (!Number.isInteger(groups) || groups < 1) throw new ArgumentError(`${op}: groups must be a positive integer, got ${groups}`);
  const [N, Cin, H, W] = x.shape;
  const [wc, Cog, kh, kw] = weight.shape;
  if (wc !== Cin || Cin % groups !== 0) throw new ShapeError(`${op}: weight ${fmtShape(weight.shape)} does not fit input ${fmtShape(x.shape)} with groups ${groups} (weight's first dimension must be the ${Cin} input channels, divisible by groups)`);
  const Cout = Cog * groups, Cig = Cin / groups;
  if (bias && (bias.ndim !== 1 || bias.shape[0] !== Cout)) throw new ShapeError(`${op}: bias ${fmtShape(bias.shape)} must be [${Cout}]`);
  const [sh, sw] = pair(op, "stride", opts.stride ?? 1, 1);
  const [ph, pw] = pair(op, "padding", opts.padding ?? 0, 0);
  const [oph, opw] = pair(op, "outputPadding", opts.outputPadding ?? 0, 0);
  const [dh, dw] = pair(op, "dilation", opts.dilation ?? 1, 1);
  if (oph >= Math.max(sh, dh) || opw >= Math.max(sw, dw)) throw new ArgumentError(`${op}: outputPadding [${oph},${opw}] must be smaller than stride or dilation`);
  const OH = (H - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1;
  const OW = (W - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1;
  if (OH < 1 || OW < 1) throw new ShapeError(`${op}: input ${fmtShape(x.shape)} with padding [${ph},${pw}] gives an empty output (${OH}x${OW})`);
  // The conv2d whose input is this op's output: Cog channels of OH×OW → H×W.
  const g: Conv2dGeometry = { C: Cog, H: OH, W: OW, kh, kw, sh, sw, ph, pw, dh, dw, OH: H, OW: W };
  const HW = H * W, OHW = OH * OW, K = Cog * kh * kw;
  const k = kernels();
  const out = new Float32Array(N * Cout * OHW);
  const cols = new Float32Array(K * HW);
  for (let n = 0; n < N; n++) {
    for (let gr = 0; gr < groups; gr++) {
      // cols (K, HW) = W_gᵀ (K, Cig) @ x_g (Cig, HW), folded into the output planes of this group.
      k.gemm(true, false, K, HW, Cig, 1, weight.data, gr * Cig * K, K, x.data, (n * Cin + gr * Cig) * HW, HW, 0, cols, 0, HW);
      k.col2im(out, (n * Cout + gr * Cog) * OHW, cols, 0, HW, g);
    }
  }
  if (bias) k.addChannelBias(out, bias.data, N, Cout, OHW);
  const inputs = bias ? [x, weight, bias] : [x, weight];
  return result(op, out, [N, Cout, OH, OW], inputs, (gout) => {
    const dx = x.requiresGrad ? new Float32Array(x.size) : null;
    const dW = weight.requiresGrad ? new Float32Array(weight.size) : null;
    const dcols = new Float32Array(K * HW);
    for (let n = 0; n < N; n++) {
      for (let gr = 0; gr < groups; gr++) {
        k.im2col(dcols, 0, HW, gout, (n * Cout + gr * Cog) * OHW, g); // (K, HW)
        if (dx) k.gemm(false, false, Cig, HW, K, 1, weight.data, gr * Cig * K, K, dcols, 0, HW, 0, dx, (n * Cin + gr * Cig) * HW, HW);
        if (dW) k.gemm(false, true, Cig, K, HW, 1, x.data, (n * Cin + gr * Cig) * HW, HW, dcols, 0, HW, 1, dW, gr * Cig * K, K);
      }
    }
    let db: Float32Array | null = null;
    if (bias?.requiresGrad) {
      db = new Float32Array(Cout);
      k.sumChannels(db, gout, N, Cout, OHW);
    }
    return bias ? [dx, dW, db] : [dx, dW];
  });
}

/** 1-D transposed convolution: x (N, Cin, L), weight (Cin, Cout/groups, k) → (N, Cout, OL). */
export function convTranspose1d(x: Tensor, weight: Tensor, bias: Tensor | null = null, opts: { stride?: number; padding?: number; outputPadding?: number; dilation?: number; groups?: number } = {}): Tensor {
  checkOptions("convTranspose1d", opts, ["stride", "padding", "outputPadding", "dilation", "groups"]);
  if (x.ndim !== 3) throw new ShapeError(`convTranspose1d: input must be 3-D (N, C, L), got ${fmtShape(x.shape)}`);
  const o = convTranspose2d(unsqueeze(x, 2), unsqueeze(weight, 2), bias, {
    stride: [1, opts.stride ?? 1], padding: [0, opts.padding ?? 0], outputPadding: [0, opts.outputPadding ?? 0],
    dilation: [1, opts.dilation ?? 1], groups: opts.groups ?? 1,
  });
  return reshape(o, [o.shape[0], o.shape[1], o.shape[3]]);
}
