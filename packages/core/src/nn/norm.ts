/** GroupNorm and RMSNorm layers (functional forms in ops/normalization.ts). */
import { ArgumentError } from "../errors.js";
import type { Tensor } from "../tensor/tensor.js";
import { Module, Parameter, registerOwnModules } from "./module.js";
import { checkOptions } from "../options.js";
import { groupNorm, rmsNorm } from "../ops/normalization.js";

/** Group norm over (N, C, ...): weight 1 and bias 0 per channel at init (affine by default). */
export class GroupNorm extends Module {
  weight: Parameter | null;
  bias: Parameter | null;
  readonly eps: number;
  constructor(readonly numGroups: number, readonly numChannels: number, opts: { eps?: number; affine?: boolean } = {}) {
    super();
    checkOptions("GroupNorm", opts, ["eps", "affine"]);
    if (!Number.isInteger(numGroups) || numGroups < 1 || !Number.isInteger(numChannels) || numChannels % numGroups !== 0) {
      throw new ArgumentError(`GroupNorm: ${numChannels} channels do not split into ${numGroups} groups`);
    }
    this.eps = opts.eps ?? 1e-5;
    const affine = opts.affine ?? true;
    this.weight = affine ? new Parameter(new Float32Array(numChannels).fill(1), [numChannels]) : null;
    this.bias = affine ? new Parameter(new Float32Array(numChannels), [numChannels]) : null;
  }
  forward(x: Tensor) { return groupNorm(x, this.numGroups, this.weight, this.bias, this.eps); }
}

/** RMS norm over the trailing `normalizedShape`, weight 1 at init; eps defaults to float32's machine epsilon (PyTorch's). */
export class RMSNorm extends Module {
  readonly normalizedShape: number[];
  weight: Parameter | null;
  readonly eps: number | undefined;
  constructor(normalizedShape: number | number[], opts: { eps?: number; elementwiseAffine?: boolean } = {}) {
    super();
    checkOptions("RMSNorm", opts, ["eps", "elementwiseAffine"]);
    this.normalizedShape = typeof normalizedShape === "number" ? [normalizedShape] : [...normalizedShape];
    this.eps = opts.eps;
    const n = this.normalizedShape.reduce((a, b) => a * b, 1);
    this.weight = opts.elementwiseAffine ?? true ? new Parameter(new Float32Array(n).fill(1), this.normalizedShape) : null;
  }
  forward(x: Tensor) { return rmsNorm(x, this.normalizedShape, this.weight, this.eps); }
}

registerOwnModules(GroupNorm, RMSNorm);
