/** batchNorm1d, groupNorm and rmsNorm, composed from batchNorm2d and the reductions. */
import { ArgumentError, ShapeError, fmtShape } from "../errors.js";
import type { Tensor } from "../tensor/tensor.js";
import { type BatchNorm2dOptions, batchNorm2d } from "./conv.js";
import { add, mul, sub } from "./elementwise.js";
import { mean, variance } from "./reduce.js";
import { rsqrt } from "./pointwise.js";
import { reshape } from "./shape.js";

/** Batch norm per channel of (N, C) or (N, C, L): batchNorm2d over (N, C, L, 1), same options. */
export function batchNorm1d(
  x: Tensor, runningMean: Tensor | null, runningVar: Tensor | null,
  weight: Tensor | null = null, bias: Tensor | null = null, opts: BatchNorm2dOptions = {},
): Tensor {
  if (x.ndim !== 2 && x.ndim !== 3) throw new ShapeError(`batchNorm1d: input must be (N, C) or (N, C, L), got ${fmtShape(x.shape)}`);
  const [N, C] = x.shape, L = x.ndim === 3 ? x.shape[2] : 1;
  return reshape(batchNorm2d(reshape(x, [N, C, L, 1]), runningMean, runningVar, weight, bias, opts), x.shape);
}

/**
 * Group norm of x (N, C, ...): each sample's channels split into `numGroups` groups, each
 * normalised by its own mean and biased variance; then weight (C) and bias (C) per channel.
 */
export function groupNorm(x: Tensor, numGroups: number, weight: Tensor | null = null, bias: Tensor | null = null, eps = 1e-5): Tensor {
  if (x.ndim < 2) throw new ShapeError(`groupNorm: input must be (N, C, ...), got ${fmtShape(x.shape)}`);
  const [N, C] = x.shape;
  if (!Number.isInteger(numGroups) || numGroups < 1 || C % numGroups !== 0) throw new ArgumentError(`groupNorm: ${C} channels do not split into ${numGroups} groups`);
  for (const [name, t] of [["weight", weight], ["bias", bias]] as const) {
    if (t && (t.ndim !== 1 || t.shape[0] !== C)) throw new ShapeError(`groupNorm: ${name} ${fmtShape(t.shape)} must be [${C}]`);
  }
  const g = reshape(x, [N, numGroups, -1]); // (N, G, C/G·...)
  const centred = sub(g, mean(g, 2, { keepDims: true }));
  const normed = reshape(mul(centred, rsqrt(add(variance(g, 2, { keepDims: true, correction: 0 }), eps))), x.shape);
  const perChannel = [1, C, ...x.shape.slice(2).map(() => 1)]; // weight and bias broadcast over (N, ·, spatial)
  let y = normed;
  if (weight) y = mul(y, reshape(weight, perChannel));
  if (bias) y = add(y, reshape(bias, perChannel));
  return y;
}

/** Machine epsilon of float32: RMSNorm's default eps, as PyTorch's (torch.finfo(float32).eps). */
const FLOAT32_EPS = 1.1920928955078125e-7;

/** x / √(mean(x²) + eps) over the trailing `normalizedShape`, times weight (PyTorch's F.rms_norm). */
export function rmsNorm(x: Tensor, normalizedShape: number | readonly number[], weight: Tensor | null = null, eps = FLOAT32_EPS): Tensor {
  const dims = typeof normalizedShape === "number" ? [normalizedShape] : [...normalizedShape];
  const tail = x.shape.slice(x.ndim - dims.length);
  if (dims.length > x.ndim || tail.some((d, i) => d !== dims[i])) throw new ShapeError(`rmsNorm: normalizedShape ${fmtShape(dims)} does not end input ${fmtShape(x.shape)}`);
  if (weight && (weight.ndim !== dims.length || weight.shape.some((d, i) => d !== dims[i]))) throw new ShapeError(`rmsNorm: weight ${fmtShape(weight.shape)} must be ${fmtShape(dims)}`);
  const axes = dims.map((_, i) => x.ndim - dims.length + i);
  const y = mul(x, rsqrt(add(mean(mul(x, x), axes, { keepDims: true }), eps)));
  return weight ? mul(y, weight) : y;
}
