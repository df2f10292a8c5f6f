/**
 * The kernel interface: plain functions over Float32Arrays that know nothing
 * about graphs. Ops, autograd, models, nn and optim call them through `kernels()`,
 * so a faster backend can replace any of them without touching autodiff.
 * Kernels write (=) into their output unless their doc says they add (+=) or work in place.
 * The backends: js/ (TypeScript loops, and WebAssembly SIMD from simd/ where it is faster)
 * and blas/ (the js kernels with GEMM through cblas_sgemm); README.md says more.
 */
export type UnaryOp = "neg" | "exp" | "log" | "sqrt" | "abs" | "relu" | "sigmoid" | "tanh" | "gelu" | "geluTanh";
export type BinaryOp = "add" | "sub" | "mul" | "div";

export interface Kernels {
  readonly name: string;

  /** C = alpha * op(A) * op(B) + beta * C, row-major; op(X) = X or Xᵀ. A is M×K after op, B is K×N. */
  gemm(
    transA: boolean, transB: boolean, M: number, N: number, K: number, alpha: number,
    A: Float32Array, aOff: number, lda: number,
    B: Float32Array, bOff: number, ldb: number,
    beta: number, C: Float32Array, cOff: number, ldc: number,
  ): void;

  /** `batch` independent GEMMs whose operands are `strideX` floats apart. */
  gemmStridedBatched(
    transA: boolean, transB: boolean, M: number, N: number, K: number, alpha: number,
    A: Float32Array, aOff: number, lda: number, strideA: number,
    B: Float32Array, bOff: number, ldb: number, strideB: number,
    beta: number, C: Float32Array, cOff: number, ldc: number, strideC: number,
    batch: number,
  ): void;

  /** out[i] = op(x[i]). */
  unary(op: UnaryOp, out: Float32Array, x: Float32Array): void;
  /** dx[i] = dout[i] * op'(x[i]) (y = op(x) is passed for ops whose derivative is cheaper from it). */
  unaryBackward(op: UnaryOp, dx: Float32Array, dout: Float32Array, x: Float32Array, y: Float32Array): void;

  /** Broadcast binary op; strides are 0 along broadcast dimensions. */
  binary(op: BinaryOp, out: Float32Array, outShape: readonly number[], a: Float32Array, aStrides: readonly number[], b: Float32Array, bStrides: readonly number[]): void;

  /** Sum over the middle axis of x viewed as (outer, n, inner) → out (outer, inner). */
  sumAxis(out: Float32Array, x: Float32Array, outer: number, n: number, inner: number): void;
  /** Max over the middle axis; argmax receives the index (0..n-1) of the first maximum. */
  maxAxis(out: Float32Array, argmax: Int32Array, x: Float32Array, outer: number, n: number, inner: number): void;

  /** Softmax over contiguous rows of length n. */
  softmax(out: Float32Array, x: Float32Array, rows: number, n: number): void;
  softmaxBackward(dx: Float32Array, dy: Float32Array, y: Float32Array, rows: number, n: number): void;
  logSoftmax(out: Float32Array, x: Float32Array, rows: number, n: number): void;
  logSoftmaxBackward(dx: Float32Array, dy: Float32Array, y: Float32Array, rows: number, n: number): void;

  /** Reorders a contiguous tensor's axes: out has shape shape[perm[i]]. */
  permute(out: Float32Array, x: Float32Array, shape: readonly number[], perm: readonly number[]): void;

  /** LayerNorm over rows of length n; saves mean and reciprocal std per row for backward. */
  layerNorm(out: Float32Array, mean: Float32Array, rstd: Float32Array, x: Float32Array, weight: Float32Array | null, bias: Float32Array | null, rows: number, n: number, eps: number): void;
  /** dweight and dbias are added to. */
  layerNormBackward(dx: Float32Array | null, dweight: Float32Array | null, dbias: Float32Array | null, dout: Float32Array, x: Float32Array, mean: Float32Array, rstd: Float32Array, weight: Float32Array | null, rows: number, n: number): void;

  /** Fused softmax + cross-entropy over rows: returns the summed loss; dlogits (if given) gets softmax - onehot (unscaled). Rows whose target is `ignoreIndex` count zero. */
  crossEntropy(logits: Float32Array, targets: Int32Array, rows: number, classes: number, dlogits: Float32Array | null, ignoreIndex: number): number;

  /** out (rows, cols) += bias (cols) broadcast over rows. */
  addRowVector(out: Float32Array, bias: Float32Array, rows: number, cols: number): void;
  /** out (cols) = Σ_rows x (rows, cols); with `accumulate`, out += Σ_rows x (bias gradients added straight into .grad). */
  sumRows(out: Float32Array, x: Float32Array, rows: number, cols: number, accumulate?: boolean): void;

  // Images, NCHW (kernels/js/conv.ts).
  /** Unfolds one image (at xOff) into col rows (c·kh + i)·kw + j, `ldc` floats apart, columns oh·OW + ow; 0 outside the image. */
  im2col(col: Float32Array, colOff: number, ldc: number, x: Float32Array, xOff: number, g: Conv2dGeometry): void;
  /** Adjoint of im2col: writes (=) one image's C·H·W values at xOff, summing overlapping windows. */
  col2im(dx: Float32Array, xOff: number, col: Float32Array, colOff: number, ldc: number, g: Conv2dGeometry): void;
  /** Max pooling over `planes` H×W planes; argmax gets the in-plane flat index of each maximum. */
  maxPool2d(out: Float32Array, argmax: Int32Array, x: Float32Array, planes: number, g: Pool2dGeometry): void;
  maxPool2dBackward(dx: Float32Array, dout: Float32Array, argmax: Int32Array, planes: number, plane: number, oplane: number): void;
  /** 2×2 stride-2 max pooling then ReLU over a strided (n, c, h, w) source at srcOff + n·sN + c·sC + h·sH + w; out (N, C, PH, PW) and tap (window position 0-3, or 4: no gradient) at outOff. */
  maxPool2x2Relu(out: Float32Array, tap: Uint8Array, outOff: number, src: Float32Array, srcOff: number, N: number, C: number, PH: number, PW: number, sN: number, sC: number, sH: number): void;
  /** Writes gout to each window's tap in dsrc (same strides; the caller zeroes dsrc); dbias[c] += Σ of the passed gradients when given. */
  maxPool2x2ReluBackward(dsrc: Float32Array, srcOff: number, gout: Float32Array, tap: Uint8Array, outOff: number, N: number, C: number, PH: number, PW: number, sN: number, sC: number, sH: number, dbias: Float32Array | null): void;
  avgPool2d(out: Float32Array, x: Float32Array, planes: number, g: Pool2dGeometry, countIncludePad: boolean): void;
  avgPool2dBackward(dx: Float32Array, dout: Float32Array, planes: number, g: Pool2dGeometry, countIncludePad: boolean): void;
  adaptiveAvgPool2d(out: Float32Array, x: Float32Array, planes: number, H: number, W: number, OH: number, OW: number): void;
  adaptiveAvgPool2dBackward(dx: Float32Array, dout: Float32Array, planes: number, H: number, W: number, OH: number, OW: number): void;
  /** Per-channel mean and biased variance of x viewed as (N, C, HW). */
  batchNormStats(mean: Float32Array, variance: Float32Array, x: Float32Array, N: number, C: number, HW: number): void;
  /** out = (x - mean[c])·rstd[c]·weight[c] + bias[c]. */
  batchNormApply(out: Float32Array, x: Float32Array, mean: Float32Array, rstd: Float32Array, weight: Float32Array | null, bias: Float32Array | null, N: number, C: number, HW: number): void;
  /** training: mean/rstd are batch statistics (gradient flows through them); else constants. */
  batchNormBackward(dx: Float32Array | null, dweight: Float32Array | null, dbias: Float32Array | null, dout: Float32Array, x: Float32Array, mean: Float32Array, rstd: Float32Array, weight: Float32Array | null, N: number, C: number, HW: number, training: boolean): void;
  /** relu(maxPool2d(x·scale[c] + shift[c], 2)) of x (N, C, H, W): out (N, C, H/2, W/2) and taps as maxPool2x2Relu's. */
  batchNormMaxPoolRelu(out: Float32Array, tap: Uint8Array, x: Float32Array, scale: Float32Array, shift: Float32Array, N: number, C: number, H: number, W: number): void;
  /** Per channel, with dz the pooled gradient gout scattered through the taps: sdy = Σ dz, sdyx = Σ dz·(x - mean)·rstd (float64). */
  batchNormMaxPoolReluGradSums(sdy: Float64Array, sdyx: Float64Array, gout: Float32Array, tap: Uint8Array, x: Float32Array, mean: Float32Array, rstd: Float32Array, N: number, C: number, H: number, W: number): void;
  /** dx (=) a[c]·(dz - mdy[c] - (x - mean)·rstd·mdyx[c]) when training, else a[c]·dz; dz as above. */
  batchNormMaxPoolReluGradInput(dx: Float32Array, gout: Float32Array, tap: Uint8Array, x: Float32Array, mean: Float32Array, rstd: Float32Array, a: Float32Array, mdy: Float32Array, mdyx: Float32Array, training: boolean, N: number, C: number, H: number, W: number): void;
  /** out (N, C, HW) += bias[c]. */
  addChannelBias(out: Float32Array, bias: Float32Array, N: number, C: number, HW: number): void;
  /** dbias[c] = Σ_{n, i} dout (N, C, HW). */
  sumChannels(dbias: Float32Array, dout: Float32Array, N: number, C: number, HW: number): void;
  /** dst (C, N, Hp, Wp)[c, n, top + h, left + w] = x (N, C, H, W)[n, c, h, w]; other cells untouched. */
  nchwToPadded(dst: Float32Array, x: Float32Array, N: number, C: number, H: number, W: number, top: number, left: number, Hp: number, Wp: number): void;
  /** x (N, C, H, W) = src (C, N, Hp, Wp) at [c, n, top + h, left + w]. */
  paddedToNchw(x: Float32Array, src: Float32Array, N: number, C: number, H: number, W: number, top: number, left: number, Hp: number, Wp: number): void;

  // Flat elementwise passes (no shapes or broadcasting: `unary` and `binary` have those).
  /** dst += src over dst.length (the autograd engine's gradient sums). */
  accumulate(dst: Float32Array, src: Float32Array): void;
  /** out = a ⊙ b over the first n floats; out may alias a or b. */
  mul(out: Float32Array, a: Float32Array, b: Float32Array, n: number): void;

  // GELU (exact, erf form) in place, the GPT's fused linearGelu (models/gpt-ops.ts).
  /** h ← gelu(h) over the first n floats. */
  geluInPlace(h: Float32Array, n: number): void;
  /** h ← gelu(h) and d ← gelu'(h) over the first n floats, in one pass. */
  geluInPlaceWithGrad(h: Float32Array, d: Float32Array, n: number): void;

  // Causal attention's softmax (ops/attention.ts), over H score matrices (T, T).
  /** In place at P[pb..]: row i ← softmax of its first i + 1 entries, zeros after; with a dropout mask, Pd ← P ⊙ mask as well. */
  causalSoftmax(P: Float32Array, pb: number, H: number, T: number, mask: Float32Array | null, Pd: Float32Array): void;
  /** In place at dP[0..] (probabilities at P[pb..]): dP ← P ⊙ (dP·mask − Σ_j P·dP·mask) on j ≤ i, zeros after. */
  causalSoftmaxBackward(dP: Float32Array, P: Float32Array, pb: number, H: number, T: number, mask: Float32Array | null): void;

  // Causal self-attention of one sequence without dropout, all H heads (ops/attention.ts): q, k, v read
  // in place from qkv[base..], rows of 3C = 3·H·hs floats [q | k | v], head h at columns h·hs of each.
  /**
   * Per head: P_h ← the causal softmax of scale · q_h k_hᵀ (T, T) at P[pb + h·T·T ..], zeros above the
   * diagonal; y_h ← P_h v_h written at y[yb ..], columns h·hs (leading dimension C).
   */
  causalAttentionForward(qkv: Float32Array, base: number, P: Float32Array, pb: number, y: Float32Array, yb: number, H: number, T: number, hs: number, scale: number): void;
  /** Its backward from dy[yb ..] (T, C) and the saved P: dqkv[base ..] ← [dq | dk | dv] (written, not added). */
  causalAttentionBackward(dqkv: Float32Array, dy: Float32Array, yb: number, qkv: Float32Array, base: number, P: Float32Array, pb: number, H: number, T: number, hs: number, scale: number): void;

  // Optimizer passes over [from, to) of flat arrays (optim/rules.ts computes the scalars).
  /** PyTorch's SGD step; buf (the momentum buffer) may be null when momentum is 0. */
  sgdUpdate(p: Float32Array, g: Float32Array, buf: Float32Array | null, from: number, to: number, s: SgdScalars): void;
  /** One Adam / AdamW step in float32 arithmetic; p, m, v updated in place. */
  adamUpdate(p: Float32Array, g: Float32Array, m: Float32Array, v: Float32Array, from: number, to: number, s: AdamScalars): void;
  /** Σ x² over [from, to), in float64. */
  sumOfSquares(x: Float32Array, from: number, to: number): number;
  /** x *= s over [from, to). */
  scaleInPlace(x: Float32Array, s: number, from: number, to: number): void;
  /**
   * Memory of at least `bytes` (shared: on a SharedArrayBuffer) on which adamUpdate runs in place
   * when p, g, m and v all lie in it (nn.flattenParameters puts parameters, gradients and optimizer
   * state there); null where the backend has none, and plain buffers are used.
   */
  arenaMemory(bytes: number, shared: boolean): { readonly buffer: ArrayBufferLike } | null;
}

/** One SGD step's scalars (PyTorch's SGD). */
export interface SgdScalars {
  lr: number;
  momentum: number;
  dampening: number;
  nesterov: boolean;
  weightDecay: number;
  /** The momentum buffer starts as the gradient. */
  firstStep: boolean;
}

/** One Adam / AdamW step's scalars, each rounded to float32 (optim/rules.ts adamScalars). */
export interface AdamScalars {
  beta1: number;
  beta2: number;
  /** 1 − β1 and 1 − β2. */
  b1c: number;
  b2c: number;
  /** lr / (1 − β1^t). */
  stepSize: number;
  /** 1 / √(1 − β2^t). */
  invSqrtBc2: number;
  eps: number;
  /** AdamW: p ← p·decay (1 − lr·wd); else 1. */
  decay: number;
  /** Adam's L2 term: g ← g + l2·p (wd); else 0. */
  l2: number;
  /** False: no weight decay of either kind, and decay and l2 are not applied (the faster pass). */
  weightDecay: boolean;
}

/** One image's convolution geometry: C input channels (all groups), kernel, stride, padding, dilation, output size. */
export interface Conv2dGeometry {
  C: number; H: number; W: number;
  kh: number; kw: number; sh: number; sw: number; ph: number; pw: number; dh: number; dw: number;
  OH: number; OW: number;
}

/** A pooling window's geometry over H×W planes. */
export interface Pool2dGeometry {
  H: number; W: number;
  kh: number; kw: number; sh: number; sw: number; ph: number; pw: number; dh: number; dw: number;
  OH: number; OW: number;
}

let current: Kernels | null = null;
let resolver: (() => Kernels) | null = null;

/** The active backend (resolved on first use; see kernels/select.ts). */
export function kernels(): Kernels {
  if (current === null) {
    if (resolver === null) throw new Error("kernels: no backend registered");
    current = resolver();
  }
  return current;
}

export function setKernels(k: Kernels): void {
  current = k;
}

export function setKernelResolver(fn: () => Kernels): void {
  resolver = fn;
}

/**
 * Multiply-adds of the GEMMs `fn` runs (gemm and gemmStridedBatched: M·N·K each; the linear,
 * convolution and attention ops all reach them; causalAttentionForward / Backward count their
 * GEMMs by shape), counted by wrapping the active backend for the call. For sizing work, e.g. how
 * many rows a worker needs before its shard outweighs a step's
 * fixed costs: `countMacs(() => noGrad(() => model.forward(oneRow)))`.
 */
export function countMacs(fn: () => void): number {
  const k = kernels();
  let macs = 0;
  const counting: Kernels = Object.assign(Object.create(k) as Kernels, {
    gemm(...a: Parameters<Kernels["gemm"]>) {
      macs += a[2] * a[3] * a[4];
      k.gemm(...a);
    },
    gemmStridedBatched(...a: Parameters<Kernels["gemmStridedBatched"]>) {
      macs += a[2] * a[3] * a[4] * a[19];
      k.gemmStridedBatched(...a);
    },
    causalAttentionForward(...a: Parameters<Kernels["causalAttentionForward"]>) {
      macs += 2 * a[6] * a[7] * a[7] * a[8]; // two T·T·hs GEMMs per head
      k.causalAttentionForward(...a);
    },
    causalAttentionBackward(...a: Parameters<Kernels["causalAttentionBackward"]>) {
      macs += 4 * a[7] * a[8] * a[8] * a[9]; // four per head
      k.causalAttentionBackward(...a);
    },
  });
  setKernels(counting);
  try {
    fn();
  } finally {
    setKernels(k);
  }
  return macs;
}
