import { ArgumentError, ShapeError, fmtShape } from "../errors.js";
import { Tensor } from "../tensor/tensor.js";
import { broadcastStrides, sizeOf } from "../tensor/shape.js";
import { kernels } from "../kernels/kernels.js";
import { result } from "./op.js";
import { gradBuffer, graphFreedAfterBackward, isGradEnabled } from "../autograd/engine.js";
import { abs, add, clamp, log, mul, neg, pow, sub } from "./elementwise.js";
import { mean, sum } from "./reduce.js";
import { checkOptions } from "../options.js";

export type Reduction = "mean" | "sum" | "none";

function reduce(x: Tensor, reduction: Reduction, op: string): Tensor {
  if (reduction === "mean") return mean(x);
  if (reduction === "sum") return sum(x);
  if (reduction === "none") return x;
  throw new ArgumentError(`${op}: unknown reduction '${reduction}' (expected mean, sum or none)`);
}

function checkReduction(op: string, reduction: string): void {
  if (reduction !== "mean" && reduction !== "sum" && reduction !== "none") throw new ArgumentError(`${op}: unknown reduction '${reduction}' (expected mean, sum or none)`);
}

function checkSame(op: string, a: Tensor, b: Tensor): void {
  if (a.ndim !== b.ndim || a.shape.some((d, i) => d !== b.shape[i])) {
    throw new ShapeError(`${op}: input ${fmtShape(a.shape)} and target ${fmtShape(b.shape)} must have the same shape`);
  }
}

/** `t` (shape ⊆ `shape` by broadcasting) expanded to a full array of `shape`'s size. */
function broadcastValues(op: string, name: string, t: Tensor, shape: readonly number[]): Float32Array {
  const n = sizeOf(shape);
  if (t.ndim > shape.length || t.shape.some((d, i) => d !== 1 && d !== shape[shape.length - t.ndim + i])) {
    throw new ShapeError(`${op}: ${name} ${fmtShape(t.shape)} does not broadcast to input ${fmtShape(shape)}`);
  }
  if (t.size === n) return t.data;
  const strides = broadcastStrides(t.shape, shape);
  const out = new Float32Array(n);
  const idx = new Array<number>(shape.length).fill(0);
  let src = 0;
  for (let o = 0; o < n; o++) {
    out[o] = t.data[src];
    for (let d = shape.length - 1; d >= 0; d--) {
      idx[d]++;
      src += strides[d];
      if (idx[d] < shape[d]) break;
      src -= strides[d] * shape[d];
      idx[d] = 0;
    }
  }
  return out;
}

/** A per-class weight tensor (C) checked against the class count. */
function classWeights(op: string, weight: Tensor | undefined | null, C: number): Float32Array | null {
  if (!weight) return null;
  if (weight.ndim !== 1 || weight.shape[0] !== C) throw new ShapeError(`${op}: weight ${fmtShape(weight.shape)} must be [${C}] (one per class)`);
  return weight.data;
}

/** Class-index targets checked against C, with ignoreIndex kept as is. */
function classTargets(op: string, targets: Tensor | Int32Array | readonly number[], rows: number, C: number, ignore: number, inputDesc: string): Int32Array {
  const rawLen = targets instanceof Tensor ? targets.size : targets.length;
  if (rawLen !== rows) {
    const tShape = targets instanceof Tensor ? fmtShape(targets.shape) : `[${rawLen}]`;
    throw new ShapeError(`${op}: ${inputDesc} ${rows} rows but targets ${tShape} have ${rawLen}`);
  }
  const src: ArrayLike<number> = targets instanceof Tensor ? targets.data : targets;
  const t = new Int32Array(rows);
  for (let i = 0; i < rows; i++) {
    const v = src[i];
    if (v === ignore) { t[i] = ignore; continue; }
    if (!Number.isInteger(v)) throw new ArgumentError(`${op}: target ${v} at position ${i} is not an integer class index`);
    if (v < 0 || v >= C) throw new ArgumentError(`${op}: target ${v} at position ${i} is out of range [0, ${C})`);
    t[i] = v;
  }
  return t;
}

export interface CrossEntropyOptions {
  /** "mean" (default): over non-ignored rows, weighted by the target classes' weights; "sum"; "none": one loss per row. */
  reduction?: Reduction;
  /** Rows whose target is this class index count for nothing (default -100). */
  ignoreIndex?: number;
  /** Mixes the target with the uniform distribution: (1 - ε)·target + ε/C (default 0). */
  labelSmoothing?: number;
  /** Per-class weights (C). */
  weight?: Tensor | null;
}

/**
 * Cross-entropy of logits (..., C) (the class dimension is the last) against integer class
 * targets (...) or class probabilities (..., C), PyTorch's F.cross_entropy. Class targets
 * without weight or smoothing run a fused, stable log-sum-exp kernel. With every row ignored
 * the mean is NaN and the gradient 0, as in PyTorch.
 */
export function crossEntropy(
  logits: Tensor, targets: Tensor | Int32Array | readonly number[], opts: CrossEntropyOptions = {},
): Tensor {
  const op = "crossEntropy";
  checkOptions(op, opts, ["reduction", "ignoreIndex", "labelSmoothing", "weight"]);
  if (logits.ndim < 1) throw new ShapeError(`${op}: logits must have a class dimension, got ${fmtShape(logits.shape)}`);
  const reduction = opts.reduction ?? "mean";
  checkReduction(op, reduction);
  const smoothing = opts.labelSmoothing ?? 0;
  if (!(smoothing >= 0 && smoothing <= 1)) throw new ArgumentError(`${op}: labelSmoothing must be in [0, 1], got ${smoothing}`);
  const C = logits.shape[logits.ndim - 1];
  const rows = C === 0 ? 0 : logits.size / C;
  const weight = classWeights(op, opts.weight, C);
  const ignore = opts.ignoreIndex ?? -100;
  const probabilityTargets = targets instanceof Tensor && targets.ndim === logits.ndim && targets.shape.every((d, i) => d === logits.shape[i]) && logits.ndim > 1;
  if (probabilityTargets) {
    if (opts.ignoreIndex !== undefined) throw new ArgumentError(`${op}: ignoreIndex applies to class-index targets, not to probability targets ${fmtShape((targets as Tensor).shape)}`);
    return softCrossEntropy(logits, targets as Tensor, rows, C, smoothing, weight, reduction);
  }
  const t = classTargets(op, targets, rows, C, ignore, `logits ${fmtShape(logits.shape)} give`);
  if (weight === null && smoothing === 0 && reduction !== "none") return fusedCrossEntropy(logits, t, rows, C, ignore, reduction);
  // q: the target distribution each row's -Σ q·log p is taken against (weights folded in).
  const q = new Float32Array(rows * C);
  let denominator = 0;
  for (let i = 0; i < rows; i++) {
    const y = t[i];
    if (y === ignore) continue;
    const wy = weight ? weight[y] : 1;
    denominator += wy;
    const b = i * C;
    if (smoothing > 0) for (let c = 0; c < C; c++) q[b + c] = (smoothing / C) * (weight ? weight[c] : 1);
    q[b + y] += (1 - smoothing) * wy;
  }
  return distributionCrossEntropy(op, logits, q, rows, C, reduction, denominator);
}

/** Probability targets: q = w[c]·((1 - ε)·t + ε/C); mean divides by the number of rows. */
function softCrossEntropy(logits: Tensor, target: Tensor, rows: number, C: number, smoothing: number, weight: Float32Array | null, reduction: Reduction): Tensor {
  const q = new Float32Array(rows * C);
  const td = target.data;
  for (let i = 0; i < rows * C; i++) q[i] = ((1 - smoothing) * td[i] + smoothing / C) * (weight ? weight[i % C] : 1);
  const slope = new Float32Array(C); // ∂q/∂t per class
  for (let c = 0; c < C; c++) slope[c] = (1 - smoothing) * (weight ? weight[c] : 1);
  return distributionCrossEntropy("crossEntropy", logits, q, rows, C, reduction, rows, { target, slope });
}

/**
 * loss_i = -Σ_c q_ic·log softmax(z_i)_c, reduced; dz_ic = p_ic·Σ_c q_ic - q_ic. `denominator`
 * divides the mean (0: the loss is NaN and the gradient 0). Probability targets get the
 * gradient -slope[c]·log p when they require one.
 */
function distributionCrossEntropy(
  op: string, logits: Tensor, q: Float32Array, rows: number, C: number, reduction: Reduction, denominator: number,
  soft?: { target: Tensor; slope: Float32Array },
): Tensor {
  const k = kernels();
  const logp = new Float32Array(rows * C);
  k.logSoftmax(logp, logits.data, rows, C);
  const perRow = new Float32Array(rows);
  let total = 0;
  for (let i = 0; i < rows; i++) {
    let s = 0;
    for (let c = 0, b = i * C; c < C; c++) if (q[b + c] !== 0) s -= q[b + c] * logp[b + c];
    perRow[i] = s;
    total += s;
  }
  const scale = reduction === "mean" ? 1 / denominator : 1;
  const data = reduction === "none" ? perRow : new Float32Array([total * scale]);
  const inputs = soft ? [logits, soft.target] : [logits];
  return result(op, data, reduction === "none" ? logits.shape.slice(0, -1) : [], inputs, (g) => {
    const rowGrad = (i: number) => (reduction === "none" ? g[i] : denominator === 0 ? 0 : g[0] * scale);
    let dx: Float32Array | null = null, dt: Float32Array | null = null;
    if (logits.requiresGrad) {
      dx = new Float32Array(rows * C);
      for (let i = 0; i < rows; i++) {
        const gi = rowGrad(i), b = i * C;
        if (gi === 0) continue;
        let qs = 0;
        for (let c = 0; c < C; c++) qs += q[b + c];
        for (let c = 0; c < C; c++) dx[b + c] = gi * (Math.exp(logp[b + c]) * qs - q[b + c]);
      }
    }
    if (soft?.target.requiresGrad) {
      dt = new Float32Array(rows * C);
      for (let i = 0; i < rows; i++) {
        const gi = rowGrad(i);
        for (let c = 0, b = i * C; c < C; c++) dt[b + c] = -gi * soft.slope[c] * logp[b + c];
      }
    }
    return soft ? [dx, dt] : [dx];
  });
}

/** Class targets, no weight or smoothing, reduced: the fused kernel (softmax - onehot saved for backward). */
function fusedCrossEntropy(logits: Tensor, t: Int32Array, rows: number, C: number, ignore: number, reduction: "mean" | "sum"): Tensor {
  let count = 0;
  for (let i = 0; i < rows; i++) if (t[i] !== ignore) count++;
  const k = kernels();
  const needGrad = isGradEnabled() && logits.requiresGrad;
  // softmax − onehot, saved for backward only: a pooled buffer (the kernel writes every element).
  const dlogits = needGrad ? gradBuffer(logits.size) : null;
  const total = k.crossEntropy(logits.data, t, rows, C, dlogits, ignore);
  const scale = reduction === "mean" ? 1 / count : 1; // count 0: NaN loss (0/0), gradient 0 below
  const gradScale = count === 0 ? 0 : scale;
  return result("crossEntropy", new Float32Array([total * scale]), [], [logits], (g) => {
    const dx = dlogits!;
    // Scaled in place when this backward is its last use, else into a fresh gradient.
    const out = graphFreedAfterBackward() ? dx : gradBuffer(dx.length);
    scaleInto(out, dx, g[0] * gradScale);
    return [out];
  });
}

/** out[i] = x[i]·s (top-level: a loop in a once-per-step closure would start unoptimised each time). */
function scaleInto(out: Float32Array, x: Float32Array, s: number): void {
  for (let i = 0; i < x.length; i++) out[i] = x[i] * s;
}

export interface NllLossOptions {
  reduction?: Reduction;
  ignoreIndex?: number;
  weight?: Tensor | null;
}

/**
 * Negative log-likelihood of log-probabilities (..., C) at integer targets, PyTorch's F.nll_loss:
 * -w[y]·logp[y] per row; the mean divides by Σ w[y] over non-ignored rows (NaN, gradient 0, when none).
 */
export function nllLoss(logProbs: Tensor, targets: Tensor | Int32Array | readonly number[], opts: NllLossOptions = {}): Tensor {
  const op = "nllLoss";
  checkOptions(op, opts, ["reduction", "ignoreIndex", "weight"]);
  if (logProbs.ndim < 1) throw new ShapeError(`${op}: input must have a class dimension, got ${fmtShape(logProbs.shape)}`);
  const reduction = opts.reduction ?? "mean";
  checkReduction(op, reduction);
  const C = logProbs.shape[logProbs.ndim - 1];
  const rows = C === 0 ? 0 : logProbs.size / C;
  const ignore = opts.ignoreIndex ?? -100;
  const weight = classWeights(op, opts.weight, C);
  const t = classTargets(op, targets, rows, C, ignore, `input ${fmtShape(logProbs.shape)} gives`);
  const w = new Float32Array(rows); // each row's weight (0 when ignored)
  let denominator = 0;
  for (let i = 0; i < rows; i++) if (t[i] !== ignore) { w[i] = weight ? weight[t[i]] : 1; denominator += w[i]; }
  const perRow = new Float32Array(rows);
  let total = 0;
  for (let i = 0; i < rows; i++) if (w[i] !== 0) { perRow[i] = -w[i] * logProbs.data[i * C + t[i]]; total += perRow[i]; }
  const scale = reduction === "mean" ? 1 / denominator : 1;
  const data = reduction === "none" ? perRow : new Float32Array([total * scale]);
  return result(op, data, reduction === "none" ? logProbs.shape.slice(0, -1) : [], [logProbs], (g) => {
    const dx = new Float32Array(logProbs.size);
    for (let i = 0; i < rows; i++) {
      if (w[i] === 0) continue;
      const gi = reduction === "none" ? g[i] : denominator === 0 ? 0 : g[0] * scale;
      dx[i * C + t[i]] = -w[i] * gi;
    }
    return [dx];
  });
}

export function mseLoss(input: Tensor, target: Tensor, opts: { reduction?: Reduction } = {}): Tensor {
  checkOptions("mseLoss", opts, ["reduction"]);
  checkSame("mseLoss", input, target);
  return reduce(pow(sub(input, target), 2), opts.reduction ?? "mean", "mseLoss");
}

export function l1Loss(input: Tensor, target: Tensor, opts: { reduction?: Reduction } = {}): Tensor {
  checkOptions("l1Loss", opts, ["reduction"]);
  checkSame("l1Loss", input, target);
  return reduce(abs(sub(input, target)), opts.reduction ?? "mean", "l1Loss");
}

export interface BceWithLogitsOptions {
  reduction?: Reduction;
  /** Weight of the positive term per class, broadcast over the last dimension (PyTorch's pos_weight). */
  posWeight?: Tensor | null;
  /** Weight of each element's loss, broadcast to the input. */
  weight?: Tensor | null;
}

/**
 * Stable BCE on logits, PyTorch's formula: w·[(1 - y)·x + (1 + (pw - 1)·y)·(log1p(exp(-|x|)) + max(-x, 0))].
 * Fused, so the gradient is w·[(1 + (pw - 1)·y)·σ(x) - pw·y] everywhere (σ(x) - y without weights,
 * also at x = 0). weight and posWeight are constants (no gradient).
 */
export function binaryCrossEntropyWithLogits(logits: Tensor, target: Tensor, opts: BceWithLogitsOptions = {}): Tensor {
  const op = "binaryCrossEntropyWithLogits";
  checkOptions(op, opts, ["reduction", "posWeight", "weight"]);
  checkSame(op, logits, target);
  const x = logits.data, y = target.data, n = x.length;
  const pw = opts.posWeight ? broadcastValues(op, "posWeight", opts.posWeight, logits.shape) : null;
  const w = opts.weight ? broadcastValues(op, "weight", opts.weight, logits.shape) : null;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const p = pw ? pw[i] : 1;
    const lw = 1 + (p - 1) * y[i];
    out[i] = ((1 - y[i]) * x[i] + lw * (Math.log1p(Math.exp(-Math.abs(x[i]))) + Math.max(-x[i], 0))) * (w ? w[i] : 1);
  }
  const l = result(op, out, logits.shape, [logits, target], (g) => {
    let dx: Float32Array | null = null, dy: Float32Array | null = null;
    if (logits.requiresGrad) {
      dx = new Float32Array(n);
      for (let i = 0; i < n; i++) {
        const p = pw ? pw[i] : 1, s = 1 / (1 + Math.exp(-x[i]));
        dx[i] = g[i] * ((1 + (p - 1) * y[i]) * s - p * y[i]) * (w ? w[i] : 1);
      }
    }
    if (target.requiresGrad) {
      dy = new Float32Array(n);
      for (let i = 0; i < n; i++) {
        const p = pw ? pw[i] : 1;
        const softplusNeg = Math.log1p(Math.exp(-Math.abs(x[i]))) + Math.max(-x[i], 0); // -log σ(x)
        dy[i] = g[i] * (-x[i] + (p - 1) * softplusNeg) * (w ? w[i] : 1);
      }
    }
    return [dx, dy];
  });
  return reduce(l, opts.reduction ?? "mean", op);
}

/** BCE on probabilities in (0, 1), clamped away from 0 and 1 for stability. */
export function binaryCrossEntropy(probs: Tensor, target: Tensor, opts: { reduction?: Reduction; weight?: Tensor | null } = {}): Tensor {
  checkOptions("binaryCrossEntropy", opts, ["reduction", "weight"]);
  checkSame("binaryCrossEntropy", probs, target);
  const p = clamp(probs, 1e-7, 1 - 1e-7);
  let l = neg(add(mul(target, log(p)), mul(sub(1, target), log(sub(1, p)))));
  if (opts.weight) l = mul(l, new Tensor(broadcastValues("binaryCrossEntropy", "weight", opts.weight, probs.shape), probs.shape));
  return reduce(l, opts.reduction ?? "mean", "binaryCrossEntropy");
}

/** An elementwise loss of d = input - target with its derivative, reduced (huberLoss, smoothL1Loss). */
function differenceLoss(op: string, input: Tensor, target: Tensor, reduction: Reduction, f: (d: number) => number, df: (d: number) => number): Tensor {
  checkSame(op, input, target);
  checkReduction(op, reduction);
  const n = input.size, a = input.data, b = target.data;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = f(a[i] - b[i]);
  const l = result(op, out, input.shape, [input, target], (g) => {
    const da = new Float32Array(n);
    for (let i = 0; i < n; i++) da[i] = g[i] * df(a[i] - b[i]);
    let db: Float32Array | null = null;
    if (target.requiresGrad) {
      db = new Float32Array(n);
      for (let i = 0; i < n; i++) db[i] = -da[i];
    }
    return [input.requiresGrad ? da : null, db];
  });
  return reduce(l, reduction, op);
}

/** Huber loss: ½d² where |d| < delta, else delta·(|d| - ½delta) (PyTorch's F.huber_loss). */
export function huberLoss(input: Tensor, target: Tensor, opts: { reduction?: Reduction; delta?: number } = {}): Tensor {
  checkOptions("huberLoss", opts, ["reduction", "delta"]);
  const delta = opts.delta ?? 1;
  if (!(delta > 0)) throw new ArgumentError(`huberLoss: delta must be positive, got ${delta}`);
  return differenceLoss("huberLoss", input, target, opts.reduction ?? "mean",
    (d) => (Math.abs(d) < delta ? 0.5 * d * d : delta * (Math.abs(d) - 0.5 * delta)),
    (d) => (Math.abs(d) < delta ? d : delta * Math.sign(d)));
}

/** Smooth L1: ½d²/beta where |d| < beta, else |d| - ½beta (PyTorch's F.smooth_l1_loss; beta 0 is L1). */
export function smoothL1Loss(input: Tensor, target: Tensor, opts: { reduction?: Reduction; beta?: number } = {}): Tensor {
  checkOptions("smoothL1Loss", opts, ["reduction", "beta"]);
  const beta = opts.beta ?? 1;
  if (!(beta >= 0)) throw new ArgumentError(`smoothL1Loss: beta must be ≥ 0, got ${beta}`);
  return differenceLoss("smoothL1Loss", input, target, opts.reduction ?? "mean",
    (d) => (Math.abs(d) < beta ? (0.5 * d * d) / beta : Math.abs(d) - 0.5 * beta),
    (d) => (Math.abs(d) < beta ? d / beta : Math.sign(d)));
}

/**
 * KL divergence with `input` as log-probabilities, PyTorch's F.kl_div: target·(log target - input)
 * per element (0 where target is 0), or exp(target)·(target - input) with `logTarget`.
 * reduction "batchmean" divides the sum by the first dimension (the mathematically right KL).
 */
export function klDiv(input: Tensor, target: Tensor, opts: { reduction?: Reduction | "batchmean"; logTarget?: boolean } = {}): Tensor {
  const op = "klDiv";
  checkOptions(op, opts, ["reduction", "logTarget"]);
  checkSame(op, input, target);
  const reduction = opts.reduction ?? "mean";
  if (reduction !== "batchmean") checkReduction(op, reduction);
  const logTarget = opts.logTarget ?? false;
  const n = input.size, x = input.data, t = target.data;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    if (logTarget) out[i] = Math.exp(t[i]) * (t[i] - x[i]);
    else out[i] = t[i] === 0 ? 0 * -x[i] : t[i] * (Math.log(t[i]) - x[i]); // 0·(-x) keeps a NaN input NaN
  }
  const l = result(op, out, input.shape, [input, target], (g) => {
    let dx: Float32Array | null = null, dt: Float32Array | null = null;
    if (input.requiresGrad) {
      dx = new Float32Array(n);
      for (let i = 0; i < n; i++) dx[i] = -g[i] * (logTarget ? Math.exp(t[i]) : t[i]);
    }
    if (target.requiresGrad) {
      dt = new Float32Array(n);
      for (let i = 0; i < n; i++) dt[i] = g[i] * (logTarget ? Math.exp(t[i]) * (t[i] - x[i] + 1) : t[i] === 0 ? 0 : Math.log(t[i]) - x[i] + 1);
    }
    return [dx, dt];
  });
  if (reduction !== "batchmean") return reduce(l, reduction, op);
  const batch = input.ndim === 0 ? 1 : input.shape[0];
  return mul(sum(l), 1 / batch);
}
