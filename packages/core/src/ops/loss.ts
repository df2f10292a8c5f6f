import { ArgumentError, ShapeError, fmtShape } from "../errors.js";
import { Tensor } from "../tensor/tensor.js";
import { kernels } from "../kernels/kernels.js";
import { result } from "./op.js";
import { gradBuffer, graphFreedAfterBackward, isGradEnabled } from "../autograd/engine.js";
import { toIndices } from "./indexing.js";
import { abs, add, clamp, log, mul, neg, pow, sub } from "./elementwise.js";
import { mean, sum } from "./reduce.js";

export type Reduction = "mean" | "sum" | "none";

function reduce(x: Tensor, reduction: Reduction, op: string): Tensor {
  if (reduction === "mean") return mean(x);
  if (reduction === "sum") return sum(x);
  if (reduction === "none") return x;
  throw new ArgumentError(`${op}: unknown reduction '${reduction}' (expected mean, sum or none)`);
}

function checkSame(op: string, a: Tensor, b: Tensor): void {
  if (a.ndim !== b.ndim || a.shape.some((d, i) => d !== b.shape[i])) {
    throw new ShapeError(`${op}: input ${fmtShape(a.shape)} and target ${fmtShape(b.shape)} must have the same shape`);
  }
}

/**
 * Cross-entropy of logits (N, C) — or (..., C), flattened — against integer class
 * targets (N), through a fused, stable log-sum-exp. Mean over non-ignored rows by default.
 */
export function crossEntropy(
  logits: Tensor, targets: Tensor | Int32Array | readonly number[],
  opts: { reduction?: "mean" | "sum"; ignoreIndex?: number } = {},
): Tensor {
  if (logits.ndim < 1) throw new ShapeError(`crossEntropy: logits must have a class dimension, got ${fmtShape(logits.shape)}`);
  const C = logits.shape[logits.ndim - 1];
  const rows = logits.size / C;
  const ignore = opts.ignoreIndex ?? -100;
  const rawLen = targets instanceof Tensor ? targets.size : targets.length;
  if (rawLen !== rows) {
    const tShape = targets instanceof Tensor ? fmtShape(targets.shape) : `[${rawLen}]`;
    throw new ShapeError(`crossEntropy: logits ${fmtShape(logits.shape)} give ${rows} rows but targets ${tShape} have ${rawLen}`);
  }
  const src: ArrayLike<number> = targets instanceof Tensor ? targets.data : targets;
  const t = new Int32Array(rows);
  let count = 0;
  for (let i = 0; i < rows; i++) {
    const v = src[i];
    if (v === ignore) { t[i] = ignore; continue; }
    if (!Number.isInteger(v)) throw new ArgumentError(`crossEntropy: target ${v} at position ${i} is not an integer class index`);
    if (v < 0 || v >= C) throw new ArgumentError(`crossEntropy: target ${v} at position ${i} is out of range [0, ${C})`);
    t[i] = v;
    count++;
  }
  const k = kernels();
  const needGrad = isGradEnabled() && logits.requiresGrad;
  // softmax − onehot, saved for backward only: a pooled buffer (the kernel writes every element).
  const dlogits = needGrad ? gradBuffer(logits.size) : null;
  const total = k.crossEntropy(logits.data, t, rows, C, dlogits, ignore);
  const scale = (opts.reduction ?? "mean") === "mean" ? 1 / count : 1;
  return result("crossEntropy", new Float32Array([total * scale]), [], [logits], (g) => {
    const dx = dlogits!;
    // Scaled in place when this backward is its last use, else into a fresh gradient.
    const out = graphFreedAfterBackward() ? dx : gradBuffer(dx.length);
    scaleInto(out, dx, g[0] * scale);
    return [out];
  });
}

/** out[i] = x[i]·s (top-level: a loop in a once-per-step closure would start unoptimised each time). */
function scaleInto(out: Float32Array, x: Float32Array, s: number): void {
  for (let i = 0; i < x.length; i++) out[i] = x[i] * s;
}

/** Negative log-likelihood of log-probabilities (N, C) at integer targets. */
export function nllLoss(logProbs: Tensor, targets: Tensor | Int32Array | readonly number[]): Tensor {
  const C = logProbs.shape[logProbs.ndim - 1];
  const rows = logProbs.size / C;
  const t = toIndices(targets, C, "nllLoss");
  if (t.length !== rows) throw new ShapeError(`nllLoss: ${rows} rows but ${t.length} targets`);
  let total = 0;
  for (let i = 0; i < rows; i++) total -= logProbs.data[i * C + t[i]];
  return result("nllLoss", new Float32Array([total / rows]), [], [logProbs], (g) => {
    const dx = new Float32Array(logProbs.size);
    for (let i = 0; i < rows; i++) dx[i * C + t[i]] = -g[0] / rows;
    return [dx];
  });
}

export function mseLoss(input: Tensor, target: Tensor, opts: { reduction?: Reduction } = {}): Tensor {
  checkSame("mseLoss", input, target);
  return reduce(pow(sub(input, target), 2), opts.reduction ?? "mean", "mseLoss");
}

export function l1Loss(input: Tensor, target: Tensor, opts: { reduction?: Reduction } = {}): Tensor {
  checkSame("l1Loss", input, target);
  return reduce(abs(sub(input, target)), opts.reduction ?? "mean", "l1Loss");
}

/**
 * Stable BCE on logits, elementwise max(x,0) - x·y + log(1 + exp(-|x|)). Fused, so the
 * gradient is σ(x) - y everywhere (built from relu and abs it came out as -y at x = 0).
 */
export function binaryCrossEntropyWithLogits(logits: Tensor, target: Tensor, opts: { reduction?: Reduction } = {}): Tensor {
  checkSame("binaryCrossEntropyWithLogits", logits, target);
  const x = logits.data, y = target.data, n = x.length;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.max(x[i], 0) - x[i] * y[i] + Math.log1p(Math.exp(-Math.abs(x[i])));
  const l = result("binaryCrossEntropyWithLogits", out, logits.shape, [logits, target], (g) => {
    let dx: Float32Array | null = null, dy: Float32Array | null = null;
    if (logits.requiresGrad) {
      dx = new Float32Array(n);
      for (let i = 0; i < n; i++) dx[i] = g[i] * (1 / (1 + Math.exp(-x[i])) - y[i]);
    }
    if (target.requiresGrad) {
      dy = new Float32Array(n);
      for (let i = 0; i < n; i++) dy[i] = -g[i] * x[i];
    }
    return [dx, dy];
  });
  return reduce(l, opts.reduction ?? "mean", "binaryCrossEntropyWithLogits");
}

/** BCE on probabilities in (0, 1), clamped away from 0 and 1 for stability. */
export function binaryCrossEntropy(probs: Tensor, target: Tensor, opts: { reduction?: Reduction } = {}): Tensor {
  checkSame("binaryCrossEntropy", probs, target);
  const p = clamp(probs, 1e-7, 1 - 1e-7);
  const l = neg(add(mul(target, log(p)), mul(sub(1, target), log(sub(1, p)))));
  return reduce(l, opts.reduction ?? "mean", "binaryCrossEntropy");
}
