/** Image layers over NCHW tensors; each forward calls the functional op in ops/conv.ts. */
import { ArgumentError } from "../errors.js";
import { Tensor } from "../tensor/tensor.js";
import { Module, Parameter, registerOwnModules } from "./module.js";
import { checkOptions } from "../options.js";
import { batchNorm1d } from "../ops/normalization.js";
import { type Conv1dOptions, type ConvTranspose2dOptions, conv1d, convTranspose2d } from "../ops/conv-transpose.js";
import { constant_, fanIn, kaimingUniformDefault_, uniform_ } from "./init.js";
import {
  type AvgPool2dOptions, type BatchNorm2dOptions, type BatchNormSync, type Conv2dOptions, type Pool2dOptions, type Size2,
  adaptiveAvgPool2d, avgPool2d, batchNorm2d, conv2d, maxPool2d,
} from "../ops/conv.js";

function checkPositiveInt(op: string, name: string, v: number): void {
  if (!Number.isInteger(v) || v <= 0) throw new ArgumentError(`${op}: ${name} must be a positive integer, got ${v}`);
}

function pair(v: Size2): [number, number] {
  return typeof v === "number" ? [v, v] : [v[0], v[1]];
}

export interface Conv2dLayerOptions extends Conv2dOptions {
  /** Learnable per-channel bias (default true). */
  bias?: boolean;
}

/**
 * 2-D convolution layer: weight (out, in/groups, kh, kw), bias (out). PyTorch's default init:
 * kaiming_uniform(a=√5) for the weight and uniform ±1/√fan_in for the bias, fan_in = in/groups·kh·kw.
 */

/** PyTorch's initialisation of a convolution: Kaiming-uniform weight, bias uniform in ±1/√fan_in. */
function resetConvParameters(weight: Parameter, bias: Parameter | null): void {
  kaimingUniformDefault_(weight);
  if (bias) {
    const bound = 1 / Math.sqrt(fanIn(weight.shape));
    uniform_(bias, -bound, bound);
  }
}

export class Conv2d extends Module {
  weight: Parameter;
  bias: Parameter | null;
  readonly kernelSize: [number, number];
  readonly opts: Conv2dOptions;
  constructor(readonly inChannels: number, readonly outChannels: number, kernelSize: Size2, opts: Conv2dLayerOptions = {}) {
    super();
    checkPositiveInt("Conv2d", "inChannels", inChannels);
    checkPositiveInt("Conv2d", "outChannels", outChannels);
    const [kh, kw] = pair(kernelSize);
    checkPositiveInt("Conv2d", "kernelSize", kh);
    checkPositiveInt("Conv2d", "kernelSize", kw);
    checkOptions("Conv2d", opts, ["stride", "padding", "dilation", "groups", "bias"]);
    const groups = opts.groups ?? 1;
    checkPositiveInt("Conv2d", "groups", groups);
    if (inChannels % groups !== 0 || outChannels % groups !== 0) {
      throw new ArgumentError(`Conv2d: inChannels ${inChannels} and outChannels ${outChannels} must be divisible by groups ${groups}`);
    }
    this.kernelSize = [kh, kw];
    this.opts = { stride: opts.stride ?? 1, padding: opts.padding ?? 0, dilation: opts.dilation ?? 1, groups };
    this.weight = new Parameter(new Float32Array(outChannels * (inChannels / groups) * kh * kw), [outChannels, inChannels / groups, kh, kw]);
    this.bias = opts.bias === false ? null : new Parameter(new Float32Array(outChannels), [outChannels]);
    this.resetParameters();
  }
  resetParameters(): void {
    resetConvParameters(this.weight, this.bias);
  }
  forward(x: Tensor): Tensor {
    return conv2d(x, this.weight, this.bias, this.opts); // (N, in, H, W) → (N, out, OH, OW)
  }
}

/** Max pooling; stride defaults to the kernel size. */
export class MaxPool2d extends Module {
  constructor(readonly kernelSize: Size2, readonly opts: Pool2dOptions = {}) { super(); }
  forward(x: Tensor): Tensor {
    return maxPool2d(x, this.kernelSize, this.opts);
  }
}

/** Average pooling; stride defaults to the kernel size, countIncludePad to true. */
export class AvgPool2d extends Module {
  constructor(readonly kernelSize: Size2, readonly opts: AvgPool2dOptions = {}) { super(); }
  forward(x: Tensor): Tensor {
    return avgPool2d(x, this.kernelSize, this.opts);
  }
}

/** Average pooling to a fixed (OH, OW); `1` gives global average pooling. */
export class AdaptiveAvgPool2d extends Module {
  constructor(readonly outputSize: Size2) { super(); }
  forward(x: Tensor): Tensor {
    return adaptiveAvgPool2d(x, this.outputSize);
  }
}

export interface BatchNorm2dLayerOptions {
  /** Added to the variance (default 1e-5). */
  eps?: number;
  /** Running-average factor (default 0.1); null: cumulative average over all batches seen. */
  momentum?: number | null;
  /** Learnable weight (init 1) and bias (init 0) per channel (default true). */
  affine?: boolean;
  /** Keep running mean/var for evaluation (default true); false uses batch statistics always. */
  trackRunningStats?: boolean;
}

/**
 * Batch normalisation per channel of (N, C, H, W), PyTorch semantics. Training: normalises with
 * the batch's mean and biased variance, and updates the buffers runningMean (init 0), runningVar
 * (init 1, updated with the unbiased variance) and numBatchesTracked; eval(): uses the running ones.
 * The buffers are in stateDict() under PyTorch's names (running_mean, running_var,
 * num_batches_tracked), so a PyTorch BatchNorm state dict loads by name. In data-parallel training each worker normalises with its own
 * shard's statistics unless `sync` is set (see @chainrule/parallel's README, "Batch norm").
 */
export class BatchNorm2d extends Module {
  weight: Parameter | null;
  bias: Parameter | null;
  readonly runningMean: Tensor | null;
  readonly runningVar: Tensor | null;
  readonly numBatchesTracked: Tensor | null;
  readonly eps: number;
  readonly momentum: number | null;
  /**
   * Synchronised batch norm: set by data-parallel training (@chainrule/parallel with
   * `syncBatchNorm`) so that training statistics are those of the whole global batch. null: local.
   */
  sync: BatchNormSync | null = null;
  constructor(readonly numFeatures: number, opts: BatchNorm2dLayerOptions = {}) {
    super();
    checkOptions(new.target.name, opts, ["eps", "momentum", "affine", "trackRunningStats"]);
    checkPositiveInt("BatchNorm2d", "numFeatures", numFeatures);
    this.eps = opts.eps ?? 1e-5;
    this.momentum = opts.momentum === undefined ? 0.1 : opts.momentum;
    if (!(this.eps > 0)) throw new ArgumentError(`BatchNorm2d: eps must be positive, got ${this.eps}`);
    if (this.momentum !== null && !(this.momentum >= 0 && this.momentum <= 1)) throw new ArgumentError(`BatchNorm2d: momentum must be in [0, 1] or null, got ${this.momentum}`);
    const affine = opts.affine ?? true;
    this.weight = affine ? new Parameter(new Float32Array(numFeatures), [numFeatures]) : null;
    this.bias = affine ? new Parameter(new Float32Array(numFeatures), [numFeatures]) : null;
    if (opts.trackRunningStats ?? true) {
      // PyTorch's state-dict names; the camel-case names of older checkpoints still load.
      this.runningMean = this.registerBuffer("running_mean", new Tensor(new Float32Array(numFeatures), [numFeatures]), ["runningMean"]);
      this.runningVar = this.registerBuffer("running_var", new Tensor(new Float32Array(numFeatures), [numFeatures]), ["runningVar"]);
      this.numBatchesTracked = this.registerBuffer("num_batches_tracked", new Tensor(new Float32Array(1), []), ["numBatchesTracked"]);
    } else {
      this.runningMean = this.runningVar = this.numBatchesTracked = null;
    }
    this.resetParameters();
  }
  /** Running stats to mean 0, var 1, count 0. */
  resetRunningStats(): void {
    if (this.runningMean) constant_(this.runningMean, 0);
    if (this.runningVar) constant_(this.runningVar, 1);
    if (this.numBatchesTracked) constant_(this.numBatchesTracked, 0);
  }
  resetParameters(): void {
    this.resetRunningStats();
    if (this.weight) constant_(this.weight, 1);
    if (this.bias) constant_(this.bias, 0);
  }
  forward(x: Tensor): Tensor {
    return batchNorm2d(x, this.runningMean, this.runningVar, this.weight, this.bias, this.nextOptions());
  }
  /**
   * The options of this layer's next batch-norm op (what forward passes to batchNorm2d, and
   * ImageClassifier to the fused batchNorm2dMaxPoolRelu); counts the batch when training.
   */
  nextOptions(): BatchNorm2dOptions {
    let momentum = this.momentum ?? 0;
    if (this.training && this.numBatchesTracked) {
      this.numBatchesTracked.data[0] += 1;
      if (this.momentum === null) momentum = 1 / this.numBatchesTracked.data[0];
    }
    // Without running statistics, evaluation also normalises with the batch's own.
    const useBatchStats = this.training || this.runningMean === null;
    return { training: useBatchStats, momentum, eps: this.eps, sync: this.training ? this.sync : null };
  }
}

/** Batch norm per channel of (N, C) or (N, C, L): BatchNorm2d's options, buffers and names. */
export class BatchNorm1d extends BatchNorm2d {
  override forward(x: Tensor): Tensor {
    return batchNorm1d(x, this.runningMean, this.runningVar, this.weight, this.bias, this.nextOptions());
  }
}

export interface Conv1dLayerOptions extends Conv1dOptions {
  bias?: boolean;
}

/** 1-D convolution layer: weight (out, in/groups, k), bias (out), PyTorch's default init. */
export class Conv1d extends Module {
  weight: Parameter;
  bias: Parameter | null;
  readonly opts: Conv1dOptions;
  constructor(readonly inChannels: number, readonly outChannels: number, readonly kernelSize: number, opts: Conv1dLayerOptions = {}) {
    super();
    checkOptions("Conv1d", opts, ["stride", "padding", "dilation", "groups", "bias"]);
    for (const [name, v] of [["inChannels", inChannels], ["outChannels", outChannels], ["kernelSize", kernelSize], ["groups", opts.groups ?? 1]] as const) checkPositiveInt("Conv1d", name, v);
    const groups = opts.groups ?? 1;
    if (inChannels % groups !== 0 || outChannels % groups !== 0) throw new ArgumentError(`Conv1d: inChannels ${inChannels} and outChannels ${outChannels} must be divisible by groups ${groups}`);
    this.opts = { stride: opts.stride ?? 1, padding: opts.padding ?? 0, dilation: opts.dilation ?? 1, groups };
    this.weight = new Parameter(new Float32Array(outChannels * (inChannels / groups) * kernelSize), [outChannels, inChannels / groups, kernelSize]);
    this.bias = opts.bias === false ? null : new Parameter(new Float32Array(outChannels), [outChannels]);
    this.resetParameters();
  }
  resetParameters(): void {
    resetConvParameters(this.weight, this.bias);
  }
  forward(x: Tensor): Tensor {
    return conv1d(x, this.weight, this.bias, this.opts); // (N, in, L) → (N, out, OL)
  }
}

export interface ConvTranspose2dLayerOptions extends ConvTranspose2dOptions {
  bias?: boolean;
}

/** Transposed 2-D convolution layer: weight (in, out/groups, kh, kw), bias (out), PyTorch's default init. */
export class ConvTranspose2d extends Module {
  weight: Parameter;
  bias: Parameter | null;
  readonly opts: ConvTranspose2dOptions;
  constructor(readonly inChannels: number, readonly outChannels: number, kernelSize: Size2, opts: ConvTranspose2dLayerOptions = {}) {
    super();
    checkOptions("ConvTranspose2d", opts, ["stride", "padding", "outputPadding", "dilation", "groups", "bias"]);
    const [kh, kw] = pair(kernelSize);
    const groups = opts.groups ?? 1;
    for (const [name, v] of [["inChannels", inChannels], ["outChannels", outChannels], ["kernelSize", kh], ["kernelSize", kw], ["groups", groups]] as const) checkPositiveInt("ConvTranspose2d", name, v);
    if (inChannels % groups !== 0 || outChannels % groups !== 0) throw new ArgumentError(`ConvTranspose2d: inChannels ${inChannels} and outChannels ${outChannels} must be divisible by groups ${groups}`);
    const { bias: _bias, ...conv } = opts;
    this.opts = { ...conv, groups };
    this.weight = new Parameter(new Float32Array(inChannels * (outChannels / groups) * kh * kw), [inChannels, outChannels / groups, kh, kw]);
    this.bias = opts.bias === false ? null : new Parameter(new Float32Array(outChannels), [outChannels]);
    this.resetParameters();
  }
  resetParameters(): void {
    resetConvParameters(this.weight, this.bias);
  }
  forward(x: Tensor): Tensor {
    return convTranspose2d(x, this.weight, this.bias, this.opts); // (N, in, H, W) → (N, out, OH, OW)
  }
}

registerOwnModules(Conv2d, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, BatchNorm2d, BatchNorm1d, Conv1d, ConvTranspose2d);
