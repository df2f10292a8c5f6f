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
import { gradBuffer, graphFreedAfterBackward, isGradEnabled, leafGradAddSink, leafGradSink, releaseGradBuffer } from "../autograd/engine.js";
import { outputBuffer, outputBytes, outputInt32, zeroedOutputBuffer } from "../tensor/arena.js";
import { relu } from "./elementwise.js";
import { checkOptions } from "../options.js";

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
 *  - "shifted" (stride 1 only): no im2col. The batch is copied once into a zero-padded,
 *    channel-major buffer xp (C, N·Hp·Wp); each kernel tap (i, j) is then one GEMM
 *    out (O, N·Hp·Wp) += W[:, :, i, j] (O, C) @ xp shifted by i·dh·Wp + j·dw columns, whose
 *    outputs at valid (oh, ow) are the convolution (the others are discarded). Backward is
 *    the same shifts transposed. BLAS does the unfolding inside its packing, vectorised. The
 *    GEMMs run a cache-sized chunk of images at a time, since every tap accumulates into the output.
 *  - "perImage": im2col of one image into a cache-sized scratch, one GEMM per image and group
 *    straight into the NCHW output; backward unfolds each image again.
 *  - "batched": one im2col matrix (C·kh·kw, N·OH·OW) for the batch, one GEMM per group, then
 *    a permute to NCHW.
 *  - "auto" (default): "shifted" for stride-1 layers with at least 8 input channels per group
 *    whose padded plane is at most 1.2× the output plane (it computes every padded position),
 *    "perImage" otherwise — the fastest measured (bench/cnn.ts; on 3×3 convolutions with
 *    padding 1, "perImage" was 1.4× as fast on 14×14 and 1.5× on 8×8 images with 32–256
 *    channels, "shifted" 1.1× on 32×32 and equal on 28×28).
 * conv2dMaxPoolRelu follows the same choice (its "perImage" path unfolds a few images per GEMM)
 * and runs the unfused composition under "batched".
 */
export type Conv2dLayout = "auto" | "shifted" | "perImage" | "batched";
let conv2dLayout: Conv2dLayout = "auto";

export function setConv2dLayout(layout: Conv2dLayout): void {
  if (!["auto", "shifted", "perImage", "batched"].includes(layout)) throw new ArgumentError(`setConv2dLayout: unknown layout ${layout}`);
  conv2dLayout = layout;
}

/** Whether "auto" picks the shifted layout: stride 1, ≥ 8 channels per group, padding ≤ 20% extra positions. */
function shiftedPays(g: Conv2dGeometry, Cg: number): boolean {
  const padded = (g.H + 2 * g.ph) * (g.W + 2 * g.pw);
  return g.sh === 1 && g.sw === 1 && Cg >= 8 && padded <= 1.2 * g.OH * g.OW;
}

export function getConv2dLayout(): Conv2dLayout {
  return conv2dLayout;
}

// Per-image column buffers, reused across calls (ops run synchronously on one thread).
let colBuf = new Float32Array(0);
let dcolBuf = new Float32Array(0);
function scratchCols(n: number): Float32Array {
  if (colBuf.length < n) colBuf = new Float32Array(n);
  return colBuf;
}
function scratchDcol(n: number): Float32Array {
  if (dcolBuf.length < n) dcolBuf = new Float32Array(n);
  return dcolBuf;
}
// The shifted layout's wide output (forward) and wide gradient (backward).
let wideBuf = new Float32Array(0);
function scratchWide(n: number): Float32Array {
  if (wideBuf.length < n) wideBuf = new Float32Array(n);
  return wideBuf;
}

/** Whether an op over `inputs` records a graph (its saved buffers are needed by a backward). */
function needsGraph(inputs: Tensor[]): boolean {
  return isGradEnabled() && inputs.some((t) => t.requiresGrad);
}

/** Hands the array under outputBytes' view back to the pool. */
function releaseBytes(b: Uint8Array): void {
  releaseGradBuffer(new Float32Array(b.buffer, 0, b.buffer.byteLength >> 2));
}

/** A checked conv2d call: its geometry and groups. */
interface ConvSetup {
  g: Conv2dGeometry;
  N: number;
  O: number;
  Cg: number;
  groups: number;
}

/** Checks conv2d's arguments and works out the output size. */
function convSetup(op: string, x: Tensor, weight: Tensor, bias: Tensor | null, opts: Conv2dOptions): ConvSetup {
  checkOptions(op, opts, ["stride", "padding", "dilation", "groups"]);
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
  return { g: { C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW }, N, O, Cg, groups };
}

/**
 * 2-D convolution (cross-correlation, as PyTorch): x (N, C, H, W), weight (O, C/groups, kh, kw),
 * bias (O) → (N, O, OH, OW) with OH = ⌊(H + 2·ph - dh·(kh-1) - 1) / sh⌋ + 1.
 */
export function conv2d(x: Tensor, weight: Tensor, bias: Tensor | null = null, opts: Conv2dOptions = {}): Tensor {
  const op = "conv2d";
  const { g, N, O, Cg, groups } = convSetup(op, x, weight, bias, opts);
  const { C, H, W, kh, kw, sh, sw, ph, pw, OH, OW } = g;
  const L = OH * OW; // output pixels per image
  const K = C * kh * kw; // rows of one image's column matrix (all groups)
  const Kg = Cg * kh * kw; // per group
  const Og = O / groups;
  const img = C * H * W;
  const k = kernels();
  // 1×1, stride 1, no padding: an image's column matrix is the image itself.
  const pointwise = kh === 1 && kw === 1 && sh === 1 && sw === 1 && ph === 0 && pw === 0;
  const stride1 = sh === 1 && sw === 1;
  let layout = conv2dLayout;
  if (layout === "auto") layout = !pointwise && shiftedPays(g, Cg) ? "shifted" : "perImage";
  if (layout === "shifted") {
    if (stride1) return conv2dShifted(x, weight, bias, g, groups);
    layout = "perImage";
  }
  const out = outputBuffer(N * O * L); // every element written (bias fill or beta-0 GEMM; the permute)
  let col: Float32Array;

  /** Image n's column matrix (K, L): x itself when pointwise, else unfolded into a cache-sized scratch. */
  const imageCols = (n: number, scratch: Float32Array): [Float32Array, number] => {
    if (pointwise) return [x.data, n * img];
    k.im2col(scratch, 0, L, x.data, n * img, g);
    return [scratch, 0];
  };

  if (layout === "perImage") {
    if (bias) for (let n = 0; n < N; n++) for (let o = 0; o < O; o++) out.fill(bias.data[o], (n * O + o) * L, (n * O + o + 1) * L);
    const beta = bias ? 1 : 0;
    const scratch = pointwise ? x.data : scratchCols(K * L);
    for (let n = 0; n < N; n++) {
      const [c, cOff] = imageCols(n, scratch);
      for (let gi = 0; gi < groups; gi++) {
        // (Og, Kg) @ (Kg, L) → out[n, group rows]
        k.gemm(false, false, Og, L, Kg, 1, weight.data, gi * Og * Kg, Kg, c, cOff + gi * Kg * L, L, beta, out, (n * O + gi * Og) * L, L);
      }
    }
    col = scratch; // not kept: backward unfolds each image again (cheaper than a batch-sized buffer through RAM)
  } else {
    const NL = N * L;
    col = outputBuffer(K * NL); // (K, N·L), every element written by im2col (zeros outside the image)
    for (let n = 0; n < N; n++) k.im2col(col, n * L, NL, x.data, n * img, g);
    const tmp = outputBuffer(O * NL); // (O, N, L)
    if (bias) for (let o = 0; o < O; o++) tmp.fill(bias.data[o], o * NL, (o + 1) * NL);
    const beta = bias ? 1 : 0;
    for (let gi = 0; gi < groups; gi++) {
      k.gemm(false, false, Og, NL, Kg, 1, weight.data, gi * Og * Kg, Kg, col, gi * Kg * NL, NL, beta, tmp, gi * Og * NL, NL);
    }
    k.permute(out, tmp, [O, N, L], [1, 0, 2]); // (N, O, L)
    releaseGradBuffer(tmp);
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
        dwt = gradBuffer(weight.size); // the first image's GEMMs (beta 0) write it all
        const scratch = pointwise ? x.data : scratchCols(K * L);
        for (let n = 0; n < N; n++) {
          const [c, cOff] = imageCols(n, scratch);
          for (let gi = 0; gi < groups; gi++) {
            // dW_g += gout[n, g] (Og, L) @ col[n, g]ᵀ (L, Kg)
            k.gemm(false, true, Og, Kg, L, 1, gout, (n * O + gi * Og) * L, L, c, cOff + gi * Kg * L, L, n === 0 ? 0 : 1, dwt, gi * Og * Kg, Kg);
          }
        }
      }
      if (x.requiresGrad) {
        dx = gradBuffer(x.size); // each image written by col2im (or its beta-0 GEMMs when pointwise)
        const dcol = pointwise ? dx : scratchDcol(K * L); // one image's columns, reused
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
      const gt = outputBuffer(O * NL); // (O, N, L)
      k.permute(gt, gout, [N, O, L], [1, 0, 2]);
      if (weight.requiresGrad) {
        dwt = gradBuffer(weight.size);
        for (let gi = 0; gi < groups; gi++) {
          k.gemm(false, true, Og, Kg, NL, 1, gt, gi * Og * NL, NL, col, gi * Kg * NL, NL, 0, dwt, gi * Og * Kg, Kg);
        }
      }
      if (x.requiresGrad) {
        dx = gradBuffer(x.size); // each image written by col2im
        const dcol = outputBuffer(K * NL);
        for (let gi = 0; gi < groups; gi++) {
          k.gemm(true, false, Kg, NL, Og, 1, weight.data, gi * Og * Kg, Kg, gt, gi * Og * NL, NL, 0, dcol, gi * Kg * NL, NL);
        }
        for (let n = 0; n < N; n++) k.col2im(dx, n * img, dcol, n * L, NL, g);
        releaseGradBuffer(dcol);
      }
      releaseGradBuffer(gt);
      if (graphFreedAfterBackward()) releaseGradBuffer(col); // saved for this backward alone
    }
    return bias ? [dx, dwt, db] : [dx, dwt];
  });
}

/**
 * Floats of conv output per chunk of images in the shifted layout: a chunk's output and input
 * stay in cache across the taps' GEMMs, which accumulate into it kh·kw times.
 */
const SHIFTED_CHUNK_FLOATS = 1 << 16;

/**
 * The shifted-GEMM convolution (stride 1; see Conv2dLayout), run a chunk of images at a time so
 * that the taps' GEMMs accumulate into a cache-sized output. `forward(use)` hands each chunk's
 * output (O, m, Hp, Wp) plus bias, valid at oh < OH, ow < OW, to `use` (a scratch: copy or pool
 * from it); `backward(fill)` has `fill` write each chunk's output gradient into a zeroed
 * (O, m, Hp, Wp) scratch and returns [dx, dweight] (null where not needed). Shared by conv2d
 * and conv2dMaxPoolRelu, which read and write the chunks differently.
 */
function shiftedConv(x: Tensor, weight: Tensor, bias: Tensor | null, g: Conv2dGeometry, groups: number) {
  const { C, H, W, kh, kw, ph, pw, dh, dw } = g;
  const [N] = x.shape;
  const [O, Cg] = weight.shape;
  const Og = O / groups;
  const taps = kh * kw;
  const Hp = H + 2 * ph, Wp = W + 2 * pw, P = Hp * Wp, NP = N * P;
  const shift = (t: number) => Math.floor(t / kw) * dh * Wp + (t % kw) * dw; // column offset of tap t = i·kw + j
  const Q = NP - shift(taps - 1); // columns computed: every valid output position, reads in bounds
  const nb = Math.max(1, Math.min(N, Math.floor(SHIFTED_CHUNK_FLOATS / (O * P)))); // images per chunk
  const k = kernels();
  const xp = zeroedOutputBuffer(C * NP); // (C, N, Hp, Wp), zero padding
  k.nchwToPadded(xp, x.data, N, C, H, W, ph, pw, Hp, Wp);
  const wt = outputBuffer(weight.size); // (taps, O, Cg): one contiguous (O, Cg) matrix per tap; saved for backward
  k.permute(wt, weight.data, [O * Cg, taps], [1, 0]);
  /** Chunk [n0, n0 + m): its leading dimension and the columns computed (the last image stops at Q). */
  const chunk = (n0: number) => {
    const m = Math.min(nb, N - n0), ld = m * P;
    return { m, ld, q0: n0 * P, cols: Math.min(ld, Q - n0 * P) };
  };

  const forward = (use: (wide: Float32Array, n0: number, m: number) => void) => {
    const wide = scratchWide(O * nb * P);
    for (let n0 = 0; n0 < N; n0 += nb) {
      const { m, ld, q0, cols } = chunk(n0);
      // Valid outputs lie below `cols`, which the first tap (beta 0) or the bias fill overwrites,
      // so the reused scratch needs no clearing.
      if (bias) for (let o = 0; o < O; o++) wide.fill(bias.data[o], o * ld, o * ld + cols);
      for (let gi = 0; gi < groups; gi++) {
        for (let t = 0; t < taps; t++) {
          // wide_g (Og, cols) += W_t,g (Og, Cg) @ xp_g shifted by tap t (Cg, cols)
          k.gemm(false, false, Og, cols, Cg, 1, wt, t * O * Cg + gi * Og * Cg, Cg, xp, gi * Cg * NP + q0 + shift(t), NP, t === 0 && !bias ? 0 : 1, wide, gi * Og * ld, ld);
        }
      }
      use(wide, n0, m);
    }
  };

  const backward = (fill: (gw: Float32Array, n0: number, m: number) => void): [Float32Array | null, Float32Array | null] => {
    const dwT = weight.requiresGrad ? outputBuffer(weight.size) : null; // (taps, O, Cg); the first chunk's GEMMs (beta 0) write it all
    const dxp = x.requiresGrad ? scratchDcol(C * NP).fill(0, 0, C * NP) : null; // accumulated over taps and chunks
    const gw = scratchWide(O * nb * P);
    for (let n0 = 0; n0 < N; n0 += nb) {
      const { m, ld, q0, cols } = chunk(n0);
      gw.fill(0, 0, O * ld); // zero at discarded positions
      fill(gw, n0, m);
      for (let gi = 0; gi < groups; gi++) {
        for (let t = 0; t < taps; t++) {
          const wOff = t * O * Cg + gi * Og * Cg, xOff = gi * Cg * NP + q0 + shift(t);
          // dW_t,g (Og, Cg) += gw_g (Og, cols) @ xp_g shifted(t)ᵀ (cols, Cg)
          if (dwT) k.gemm(false, true, Og, Cg, cols, 1, gw, gi * Og * ld, ld, xp, xOff, NP, n0 === 0 ? 0 : 1, dwT, wOff, Cg);
          // dxp_g shifted(t) (Cg, cols) += W_t,gᵀ (Cg, Og) @ gw_g (Og, cols)
          if (dxp) k.gemm(true, false, Cg, cols, Og, 1, wt, wOff, Cg, gw, gi * Og * ld, ld, 1, dxp, xOff, NP);
        }
      }
    }
    let dx: Float32Array | null = null, dwt: Float32Array | null = null;
    if (dwT) {
      dwt = gradBuffer(weight.size);
      k.permute(dwt, dwT, [taps, O * Cg], [1, 0]);
      releaseGradBuffer(dwT);
    }
    if (dxp) {
      dx = gradBuffer(x.size); // overwritten completely
      k.paddedToNchw(dx, dxp, N, C, H, W, ph, pw, Hp, Wp);
    }
    if (graphFreedAfterBackward()) release();
    return [dx, dwt];
  };
  /** Hands the padded copy and the permuted weight, saved for the backward alone, to the pool. */
  const release = () => {
    releaseGradBuffer(xp);
    releaseGradBuffer(wt);
  };
  return { P, Hp, Wp, forward, backward, release };
}

/** conv2d by shifted GEMMs over a padded channel-major copy of the batch (stride 1); see Conv2dLayout. */
function conv2dShifted(x: Tensor, weight: Tensor, bias: Tensor | null, g: Conv2dGeometry, groups: number): Tensor {
  const { OH, OW } = g;
  const [N] = x.shape;
  const [O] = weight.shape;
  const L = OH * OW;
  const k = kernels();
  const conv = shiftedConv(x, weight, bias, g, groups);
  const { Hp, Wp } = conv;
  const out = outputBuffer(N * O * L); // (N, O, OH, OW), every chunk written
  conv.forward((wide, n0, m) => k.paddedToNchw(out.subarray(n0 * O * L), wide, m, O, OH, OW, 0, 0, Hp, Wp));

  const inputs = bias ? [x, weight, bias] : [x, weight];
  if (!needsGraph(inputs)) conv.release();
  return result("conv2d", out, [N, O, OH, OW], inputs, (gout) => {
    let db: Float32Array | null = null;
    if (bias?.requiresGrad) {
      db = new Float32Array(O);
      k.sumChannels(db, gout, N, O, L);
    }
    const [dx, dwt] = conv.backward((gw, n0, m) => k.nchwToPadded(gw, gout.subarray(n0 * O * L), m, O, OH, OW, 0, 0, Hp, Wp));
    return bias ? [dx, dwt, db] : [dx, dwt];
  });
}

// One chunk of images' conv output (O, n·L) in conv2dMaxPoolRelu's per-image path.
let chunkBuf = new Float32Array(0);
function scratchChunk(n: number): Float32Array {
  if (chunkBuf.length < n) chunkBuf = new Float32Array(n);
  return chunkBuf;
}

/** Images per chunk in conv2dMaxPoolRelu's im2col path: about this many floats of conv output, so a chunk stays in cache. */
const CHUNK_FLOATS = 1 << 16;

/**
 * relu(maxPool2d(conv2d(x, weight, bias, opts), 2)) in one op: x (N, C, H, W) → (N, O, ⌊OH/2⌋, ⌊OW/2⌋).
 * The conv output is pooled straight from the scratch its GEMMs wrote (the wide layout, or one
 * chunk of images at a time), so the full-size (N, O, OH, OW) activation is never stored, and
 * the backward scatters the pooled gradient into that layout and sums the bias gradient over
 * the 4x smaller pooled gradient. Same values and gradients as the composition (ReLU commutes
 * with max). Groups 1 and stride 1 only; other convolutions, and the "batched" layout, run the
 * composition.
 */
export function conv2dMaxPoolRelu(x: Tensor, weight: Tensor, bias: Tensor | null = null, opts: Conv2dOptions = {}): Tensor {
  const op = "conv2dMaxPoolRelu";
  const { g, N, O } = convSetup(op, x, weight, bias, opts);
  const { C, H, W, kh, kw, sh, sw, OH, OW } = g;
  const PH = OH >> 1, PW = OW >> 1;
  if ((opts.groups ?? 1) !== 1 || sh !== 1 || sw !== 1 || conv2dLayout === "batched" || PH === 0 || PW === 0) {
    return relu(maxPool2d(conv2d(x, weight, bias, opts), 2));
  }
  const k = kernels();
  const PL = PH * PW;
  const out = outputBuffer(N * O * PL); // (N, O, PH, PW), every element written by the pool kernel
  const tap = outputBytes(N * O * PL); // every tap written by the pool kernel
  const inputs = bias ? [x, weight, bias] : [x, weight];
  const layout = conv2dLayout === "auto" ? (kh * kw > 1 && shiftedPays(g, C) ? "shifted" : "perImage") : conv2dLayout;

  if (layout === "shifted") {
    const conv = shiftedConv(x, weight, bias, g, 1);
    const { P, Wp } = conv;
    // Each chunk (O, m, Hp, Wp) pooled as soon as its GEMMs are done, while it is in cache.
    conv.forward((wide, n0, m) => k.maxPool2x2Relu(out, tap, n0 * O * PL, wide, 0, m, O, PH, PW, P, m * P, Wp));
    if (!needsGraph(inputs)) conv.release();
    return result(op, out, [N, O, PH, PW], inputs, (gout) => {
      // The bias gradient is summed (+=) straight into a leaf bias's .grad when there is one.
      const dbSink = bias?.requiresGrad ? leafGradAddSink(bias) : null;
      const db = bias?.requiresGrad && !dbSink ? new Float32Array(O) : null;
      const [dx, dwt] = conv.backward((gw, n0, m) => k.maxPool2x2ReluBackward(gw, 0, gout, tap, n0 * O * PL, m, O, PH, PW, P, m * P, Wp, dbSink ?? db));
      if (graphFreedAfterBackward()) releaseBytes(tap);
      return bias ? [dx, dwt, db] : [dx, dwt];
    });
  }

  // im2col path, `nb` images at a time: conv output y (O, nb·L), pooled from y; one image's
  // columns cols (K, L) at a time (a whole matrix unfolds and folds in one copy).
  const L = OH * OW, K = C * kh * kw, img = C * H * W;
  const nb = Math.max(1, Math.min(N, Math.floor(CHUNK_FLOATS / (O * L))));
  for (let n0 = 0; n0 < N; n0 += nb) {
    const m = Math.min(nb, N - n0), mL = m * L;
    const cols = scratchCols(K * L), y = scratchChunk(O * mL);
    if (bias) for (let o = 0; o < O; o++) y.fill(bias.data[o], o * mL, (o + 1) * mL);
    for (let i = 0; i < m; i++) {
      k.im2col(cols, 0, L, x.data, (n0 + i) * img, g);
      k.gemm(false, false, O, L, K, 1, weight.data, 0, K, cols, 0, L, bias ? 1 : 0, y, i * L, mL); // (O, K) @ (K, L) → image i's columns of y
    }
    k.maxPool2x2Relu(out, tap, n0 * O * PL, y, 0, m, O, PH, PW, L, mL, OW); // y: (O, m, OH, OW)
  }
  return result(op, out, [N, O, PH, PW], inputs, (gout) => {
    // Leaf parameters get their gradients written straight into .grad (added, or over a stale one).
    const dbSink = bias?.requiresGrad ? leafGradAddSink(bias) : null, dwSink = weight.requiresGrad ? leafGradSink(weight) : null;
    const db = bias?.requiresGrad && !dbSink ? new Float32Array(O) : null;
    const dwt = weight.requiresGrad && !dwSink ? gradBuffer(weight.size) : null;
    const dW = dwSink?.data ?? dwt, dwBeta = dwSink?.beta ?? 0; // the first chunk's GEMM overwrites a fresh or stale dW
    const dx = x.requiresGrad ? gradBuffer(x.size) : null; // col2im overwrites each image
    for (let n0 = 0; n0 < N; n0 += nb) {
      const m = Math.min(nb, N - n0), mL = m * L;
      const dy = scratchChunk(O * mL).fill(0, 0, O * mL); // (O, m·L) conv output gradient of this chunk
      k.maxPool2x2ReluBackward(dy, 0, gout, tap, n0 * O * PL, m, O, PH, PW, L, mL, OW, dbSink ?? db);
      for (let i = 0; i < m; i++) {
        if (dW) {
          // dW (O, K) += dy_i (O, L) @ colsᵀ (L, K); the columns are unfolded again rather than kept
          const cols = scratchCols(K * L);
          k.im2col(cols, 0, L, x.data, (n0 + i) * img, g);
          k.gemm(false, true, O, K, L, 1, dy, i * L, mL, cols, 0, L, n0 === 0 && i === 0 ? dwBeta : 1, dW, 0, K);
        }
        if (dx) {
          const dcol = scratchDcol(K * L); // (K, L) = Wᵀ (K, O) @ dy_i (O, L)
          k.gemm(true, false, K, L, O, 1, weight.data, 0, K, dy, i * L, mL, 0, dcol, 0, L);
          k.col2im(dx, (n0 + i) * img, dcol, 0, L, g);
        }
      }
    }
    if (graphFreedAfterBackward()) releaseBytes(tap);
    return bias ? [dx, dwt, db] : [dx, dwt];
  });
}

export interface Pool2dOptions {
  /** Defaults to the kernel size. */
  stride?: Size2;
  padding?: Size2;
  dilation?: Size2;
  /** Round the output size up (a last, partial window), as PyTorch's ceil_mode; default false. */
  ceilMode?: boolean;
}

/** Output size of a pooling window; with ceilMode a last window is kept when it starts inside the input or left padding. */
function poolOutSize(op: string, inSize: number, k: number, s: number, p: number, d: number, ceilMode: boolean, what: string): number {
  const o = outSize(op, inSize, k, s, p, d, what);
  if (!ceilMode) return o;
  const span = inSize + 2 * p - d * (k - 1) - 1;
  let c = Math.ceil(span / s) + 1;
  if ((c - 1) * s >= inSize + p) c--;
  return Math.max(o, c);
}

function poolGeometry(op: string, x: Tensor, kernelSize: Size2, opts: Pool2dOptions & { countIncludePad?: boolean }, allowDilation: boolean): Pool2dGeometry {
  checkOptions(op, opts, allowDilation ? ["stride", "padding", "dilation", "ceilMode"] : ["stride", "padding", "ceilMode", "countIncludePad"]);
  check4d(op, x);
  const [kh, kw] = pair(op, "kernelSize", kernelSize, 1);
  const [sh, sw] = pair(op, "stride", opts.stride ?? [kh, kw], 1);
  const [ph, pw] = pair(op, "padding", opts.padding ?? 0, 0);
  const [dh, dw] = pair(op, "dilation", opts.dilation ?? 1, 1);
  if (!allowDilation && (dh !== 1 || dw !== 1)) throw new ArgumentError(`${op}: dilation is not supported`);
  if (2 * ph > kh || 2 * pw > kw) throw new ArgumentError(`${op}: padding [${ph},${pw}] must be at most half the kernel size [${kh},${kw}]`);
  const [, , H, W] = x.shape;
  const ceil = opts.ceilMode ?? false;
  const OH = poolOutSize(op, H, kh, sh, ph, dh, ceil, "input height");
  const OW = poolOutSize(op, W, kw, sw, pw, dw, ceil, "input width");
  return { H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW };
}

/** Max pooling over H×W windows of x (N, C, H, W); padding counts as -Infinity (PyTorch's floor mode). */
export function maxPool2d(x: Tensor, kernelSize: Size2, opts: Pool2dOptions = {}): Tensor {
  const g = poolGeometry("maxPool2d", x, kernelSize, opts, true);
  const [N, C] = x.shape;
  const planes = N * C, oplane = g.OH * g.OW;
  const k = kernels();
  const out = outputBuffer(planes * oplane);
  const argmax = outputInt32(planes * oplane); // every element written by the kernel
  k.maxPool2d(out, argmax, x.data, planes, g);
  return result("maxPool2d", out, [N, C, g.OH, g.OW], [x], (gout) => {
    const dx = gradBuffer(x.size); // zeroed by the kernel
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
  const out = outputBuffer(planes * g.OH * g.OW);
  k.avgPool2d(out, x.data, planes, g, cip);
  return result("avgPool2d", out, [N, C, g.OH, g.OW], [x], (gout) => {
    const dx = gradBuffer(x.size); // zeroed by the kernel
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
  const out = outputBuffer(planes * OH * OW);
  k.adaptiveAvgPool2d(out, x.data, planes, H, W, OH, OW);
  return result(op, out, [N, C, OH, OW], [x], (gout) => {
    const dx = gradBuffer(x.size); // zeroed by the kernel
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
  /**
   * Synchronised batch norm (data-parallel training): combines this rank's per-channel
   * statistics with the other ranks' in the forward, and the gradient sums in the backward,
   * so the normalisation uses the statistics of the whole global batch. Training only.
   */
  sync?: BatchNormSync | null;
}

/**
 * The exchange a synchronised batch norm needs (implemented by @chainrule/parallel over
 * shared memory). Every rank calls forward and backward in the same order; both return the
 * same numbers on every rank (combined in rank order).
 */
export interface BatchNormSync {
  /**
   * Per channel: this rank's element count, mean and M2 = Σ(x - mean)² in; the global count,
   * mean and biased variance out (Chan's parallel combination, float64).
   */
  forward(count: number, mean: Float64Array, m2: Float64Array): { count: number; mean: Float64Array; variance: Float64Array };
  /**
   * Per channel: this rank's Σ dy and Σ dy·x̂ in (dy: the gradient of this rank's own loss);
   * out: the global sums of the gradient of the whole batch's loss, expressed in this rank's
   * loss scale (Σ_k (w_k / w_r)·s_k, w_k the weight the gradient reduce gives rank k).
   */
  backward(sdy: Float64Array, sdyx: Float64Array): { sdy: Float64Array; sdyx: Float64Array };
}

/** A batch norm's affine parameters and running statistics (each [C] or null), as batchNorm2d takes them. */
interface BatchNormParams {
  runningMean: Tensor | null;
  runningVar: Tensor | null;
  weight: Tensor | null;
  bias: Tensor | null;
}

/** Checks batch norm's arguments for x (N, C, H, W); the options with their defaults. */
function batchNormSetup(op: string, x: Tensor, bn: BatchNormParams, opts: BatchNorm2dOptions): { training: boolean; momentum: number; eps: number } {
  checkOptions(op, opts, ["training", "momentum", "eps", "sync"]);
  check4d(op, x);
  const C = x.shape[1];
  const training = opts.training ?? true;
  const momentum = opts.momentum ?? 0.1;
  const eps = opts.eps ?? 1e-5;
  for (const [name, t] of [["runningMean", bn.runningMean], ["runningVar", bn.runningVar], ["weight", bn.weight], ["bias", bn.bias]] as const) {
    if (t && (t.ndim !== 1 || t.shape[0] !== C)) throw new ShapeError(`${op}: ${name} ${fmtShape(t.shape)} must be [${C}] for input ${fmtShape(x.shape)}`);
  }
  if (!(momentum >= 0 && momentum <= 1)) throw new ArgumentError(`${op}: momentum must be in [0, 1], got ${momentum}`);
  if (!(eps > 0)) throw new ArgumentError(`${op}: eps must be positive, got ${eps}`);
  if (training && !bn.runningMean !== !bn.runningVar) throw new ArgumentError(`${op}: pass both runningMean and runningVar, or neither`);
  if (!training && (!bn.runningMean || !bn.runningVar)) throw new ArgumentError(`${op}: evaluation mode needs runningMean and runningVar`);
  return { training, momentum, eps };
}

/** running = (1 - momentum)·running + momentum·batch, with the batch's unbiased variance (PyTorch's rule). */
function updateRunningStats(
  runningMean: Tensor | null, runningVar: Tensor | null, mean: ArrayLike<number>, variance: ArrayLike<number>, count: number, momentum: number,
): void {
  if (!runningMean || !runningVar) return;
  const unbias = count / (count - 1);
  for (let c = 0; c < runningMean.size; c++) {
    runningMean.data[c] = (1 - momentum) * runningMean.data[c] + momentum * mean[c];
    runningVar.data[c] = (1 - momentum) * runningVar.data[c] + momentum * variance[c] * unbias;
  }
}

/** Per-channel mean and M2 = Σ(x - mean)² of x (N, C, HW), float64, two passes: a rank's share for a synchronised batch norm. */
function localMoments(xd: Float32Array, N: number, C: number, HW: number): { mean: Float64Array; m2: Float64Array } {
  const count = N * HW;
  const mean = new Float64Array(C), m2 = new Float64Array(C);
  for (let c = 0; c < C; c++) {
    let s = 0;
    for (let n = 0; n < N; n++) for (let b = (n * C + c) * HW, i = b; i < b + HW; i++) s += xd[i];
    const m = count > 0 ? s / count : 0;
    let v = 0;
    for (let n = 0; n < N; n++) for (let b = (n * C + c) * HW, i = b; i < b + HW; i++) { const d = xd[i] - m; v += d * d; }
    mean[c] = m;
    m2[c] = v;
  }
  return { mean, m2 };
}

/**
 * The mean and rstd = 1/√(var + eps) batch norm normalises x with: training, the batch's (with
 * `sync`, the global batch's, exchanged here), and the running statistics updated; otherwise the
 * running ones. `count`: the values per channel the statistics cover (over all ranks with sync).
 */
function batchNormStatistics(
  op: string, x: Tensor, bn: BatchNormParams, training: boolean, momentum: number, eps: number, sync: BatchNormSync | null,
): { mean: Float32Array; rstd: Float32Array; count: number } {
  const [N, C, H, W] = x.shape;
  const HW = H * W;
  const mean = new Float32Array(C), rstd = new Float32Array(C);
  if (!training) {
    mean.set(bn.runningMean!.data);
    for (let c = 0; c < C; c++) rstd[c] = 1 / Math.sqrt(bn.runningVar!.data[c] + eps);
    return { mean, rstd, count: N * HW };
  }
  let count = N * HW, batchMean: ArrayLike<number> = mean, variance: ArrayLike<number>;
  if (sync) {
    const local = localMoments(x.data, N, C, HW);
    const g = sync.forward(count, local.mean, local.m2);
    if (g.count <= 1) throw new ShapeError(`${op}: expected more than 1 value per channel when training, got ${g.count} over all workers`);
    ({ count, mean: batchMean, variance } = g);
    mean.set(g.mean);
  } else {
    if (count <= 1) throw new ShapeError(`${op}: expected more than 1 value per channel when training, got input ${fmtShape(x.shape)}`);
    const v = new Float32Array(C);
    kernels().batchNormStats(mean, v, x.data, N, C, HW);
    variance = v;
  }
  for (let c = 0; c < C; c++) rstd[c] = 1 / Math.sqrt(variance[c] + eps);
  updateRunningStats(bn.runningMean, bn.runningVar, batchMean, variance, count, momentum);
  return { mean, rstd, count };
}

/** Training-mode batch norm with statistics and gradient sums exchanged through `sync`. */
function batchNorm2dSync(
  x: Tensor, runningMean: Tensor | null, runningVar: Tensor | null, weight: Tensor | null, bias: Tensor | null,
  momentum: number, eps: number, sync: BatchNormSync,
): Tensor {
  const op = "batchNorm2d";
  const [N, C, H, W] = x.shape;
  const HW = H * W, xd = x.data;
  const { mean, rstd, count } = batchNormStatistics(op, x, { runningMean, runningVar, weight, bias }, true, momentum, eps, sync);
  const k = kernels();
  const out = outputBuffer(x.size);
  k.batchNormApply(out, xd, mean, rstd, weight?.data ?? null, bias?.data ?? null, N, C, HW);
  const inputs = [x];
  if (weight) inputs.push(weight);
  if (bias) inputs.push(bias);
  return result(op, out, x.shape, inputs, (gout) => {
    // Local Σdy·x̂ and Σdy (= this rank's dweight, dbias: the gradient reduce sums them over ranks).
    const sdyx = new Float32Array(C), sdy = new Float32Array(C);
    k.batchNormBackward(null, sdyx, sdy, gout, xd, mean, rstd, weight?.data ?? null, N, C, HW, true);
    const gs = sync.backward(Float64Array.from(sdy), Float64Array.from(sdyx));
    let dx: Float32Array | null = null;
    if (x.requiresGrad) {
      dx = gradBuffer(x.size); // every element written below
      for (let c = 0; c < C; c++) {
        const rs = rstd[c], m = mean[c], kk = (weight ? weight.data[c] : 1) * rs;
        const mdy = gs.sdy[c] / count, mdyx = gs.sdyx[c] / count;
        for (let n = 0; n < N; n++) {
          for (let b = (n * C + c) * HW, i = b; i < b + HW; i++) dx[i] = kk * (gout[i] - mdy - (xd[i] - m) * rs * mdyx);
        }
      }
    }
    const grads: (Float32Array | null)[] = [dx];
    if (weight) grads.push(weight.requiresGrad ? sdyx : null);
    if (bias) grads.push(bias.requiresGrad ? sdy : null);
    return grads;
  });
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
  const { training, momentum, eps } = batchNormSetup(op, x, { runningMean, runningVar, weight, bias }, opts);
  const [N, C, H, W] = x.shape;
  const HW = H * W;
  if (training && opts.sync) return batchNorm2dSync(x, runningMean, runningVar, weight, bias, momentum, eps, opts.sync);
  const k = kernels();
  const { mean, rstd } = batchNormStatistics(op, x, { runningMean, runningVar, weight, bias }, training, momentum, eps, null);
  const out = outputBuffer(x.size);
  k.batchNormApply(out, x.data, mean, rstd, weight?.data ?? null, bias?.data ?? null, N, C, HW);
  const inputs = [x];
  if (weight) inputs.push(weight);
  if (bias) inputs.push(bias);
  return result(op, out, x.shape, inputs, (gout) => {
    const dx = x.requiresGrad ? gradBuffer(x.size) : null; // every element written by the kernel
    const dwt = weight?.requiresGrad ? new Float32Array(C) : null;
    const db = bias?.requiresGrad ? new Float32Array(C) : null;
    k.batchNormBackward(dx, dwt, db, gout, x.data, mean, rstd, weight?.data ?? null, N, C, HW, training);
    const grads: (Float32Array | null)[] = [dx];
    if (weight) grads.push(dwt);
    if (bias) grads.push(db);
    return grads;
  });
}

/**
 * relu(maxPool2d(batchNorm2d(x, runningMean, runningVar, weight, bias, opts), 2)) in one op: the
 * batch norm → 2×2 max-pool → ReLU of a CNN block (the `cnn` job's). x (N, C, H, W) →
 * (N, C, ⌊H/2⌋, ⌊W/2⌋). The normalised activation is never stored: the forward normalises each
 * batch of planes and pools it at once (in the SIMD engine's memory, so only x is copied in and a
 * quarter of it out), and the backward rebuilds batch norm's output gradient from the pooled
 * gradient and the taps, plane by plane, for its two passes (the sums, then dx). Same function,
 * gradients and running statistics as the composition (training or evaluation, synchronised or
 * not), to rounding. Planes smaller than 2×2 run the composition.
 */
export function batchNorm2dMaxPoolRelu(
  x: Tensor, runningMean: Tensor | null, runningVar: Tensor | null,
  weight: Tensor | null = null, bias: Tensor | null = null, opts: BatchNorm2dOptions = {},
): Tensor {
  const op = "batchNorm2dMaxPoolRelu";
  const { training, momentum, eps } = batchNormSetup(op, x, { runningMean, runningVar, weight, bias }, opts);
  const [N, C, H, W] = x.shape;
  const PH = H >> 1, PW = W >> 1;
  if (PH === 0 || PW === 0) return relu(maxPool2d(batchNorm2d(x, runningMean, runningVar, weight, bias, opts), 2));
  const xd = x.data;
  const sync = training ? opts.sync ?? null : null;
  const k = kernels();

  const { mean, rstd, count } = batchNormStatistics(op, x, { runningMean, runningVar, weight, bias }, training, momentum, eps, sync);

  // z = x·scale + shift (batchNormApply's folding), pooled with ReLU.
  const gamma = weight?.data ?? null, beta = bias?.data ?? null;
  const scale = new Float32Array(C), shift = new Float32Array(C);
  for (let c = 0; c < C; c++) {
    scale[c] = rstd[c] * (gamma ? gamma[c] : 1);
    shift[c] = (beta ? beta[c] : 0) - mean[c] * scale[c];
  }
  const out = outputBuffer(N * C * PH * PW); // every element written
  const tap = outputBytes(N * C * PH * PW); // every tap written by the pool kernel
  k.batchNormMaxPoolRelu(out, tap, xd, scale, shift, N, C, H, W);

  const inputs = [x];
  if (weight) inputs.push(weight);
  if (bias) inputs.push(bias);
  return result(op, out, [N, C, PH, PW], inputs, (gout) => {
    const sdy = new Float64Array(C), sdyx = new Float64Array(C); // Σ dz, Σ dz·x̂ over this batch
    k.batchNormMaxPoolReluGradSums(sdy, sdyx, gout, tap, xd, mean, rstd, N, C, H, W);
    const dgamma = weight?.requiresGrad ? Float32Array.from(sdyx) : null;
    const dbeta = bias?.requiresGrad ? Float32Array.from(sdy) : null;
    // Every rank exchanges its sums, whatever needs gradients, so that the ranks stay in step.
    const sums = sync ? sync.backward(sdy, sdyx) : { sdy, sdyx };
    let dx: Float32Array | null = null;
    if (x.requiresGrad) {
      const a = new Float32Array(C), mdy = new Float32Array(C), mdyx = new Float32Array(C);
      for (let c = 0; c < C; c++) {
        a[c] = (gamma ? gamma[c] : 1) * rstd[c];
        mdy[c] = sums.sdy[c] / count;
        mdyx[c] = sums.sdyx[c] / count;
      }
      dx = gradBuffer(x.size); // every element written
      k.batchNormMaxPoolReluGradInput(dx, gout, tap, xd, mean, rstd, a, mdy, mdyx, training, N, C, H, W);
    }
    const grads: (Float32Array | null)[] = [dx];
    if (weight) grads.push(dgamma);
    if (bias) grads.push(dbeta);
    return grads;
  });
}
