import { ArgumentError } from "../errors.js";
import { Tensor } from "../tensor/tensor.js";
import { Module, Parameter, registerOwnModules } from "./module.js";
import { constant_, kaimingUniformDefault_, normal_, uniform_ } from "./init.js";
import { linear } from "../ops/matmul.js";
import { gelu, relu, sigmoid, tanh } from "../ops/elementwise.js";
import { dropout, dropout2d, embedding, paddingRow } from "../ops/indexing.js";
import { checkOptions } from "../options.js";
import { layerNorm } from "../ops/layernorm.js";
import { flatten } from "../ops/shape.js";
import { softmax } from "../ops/softmax.js";
import { type Size2, batchNorm2dMaxPoolRelu, conv2dMaxPoolRelu } from "../ops/conv.js";
import { BatchNorm2d, Conv2d, MaxPool2d } from "./conv.js";

function checkPositiveInt(op: string, name: string, v: number): void {
  if (!Number.isInteger(v) || v <= 0) throw new ArgumentError(`${op}: ${name} must be a positive integer, got ${v}`);
}

/** y = x Wᵀ + b; W (out, in) and b initialised like PyTorch (uniform ±1/√in). */
export class Linear extends Module {
  weight: Parameter;
  bias: Parameter | null;
  constructor(readonly inFeatures: number, readonly outFeatures: number, opts: { bias?: boolean } = {}) {
    super();
    checkOptions("Linear", opts, ["bias"]);
    checkPositiveInt("Linear", "inFeatures", inFeatures);
    checkPositiveInt("Linear", "outFeatures", outFeatures);
    this.weight = new Parameter(new Float32Array(outFeatures * inFeatures), [outFeatures, inFeatures]);
    this.bias = opts.bias === false ? null : new Parameter(new Float32Array(outFeatures), [outFeatures]);
    this.resetParameters();
  }
  resetParameters(): void {
    kaimingUniformDefault_(this.weight);
    if (this.bias) {
      const bound = 1 / Math.sqrt(this.inFeatures);
      uniform_(this.bias, -bound, bound);
    }
  }
  forward(x: Tensor): Tensor {
    return linear(x, this.weight, this.bias); // (..., in) → (..., out)
  }
}

/** A Linear whose forward is Linear's own (not a subclass that changes it): fused ops may then use its weight and bias directly. */
export function isPlainLinear(m: Module): m is Linear {
  return m instanceof Linear && m.forward === Linear.prototype.forward;
}

/** Whether `m` runs `cls`'s own forward (not a subclass's or an instance's replacement). */
function runs(m: Module | undefined, cls: { prototype: { forward: unknown } }): boolean {
  return m !== undefined && m.forward === cls.prototype.forward;
}

/** True for a plain MaxPool2d(2) (stride 2, no padding or dilation). */
function isPool2(m: Module | undefined): m is MaxPool2d {
  if (!(m instanceof MaxPool2d) || !runs(m, MaxPool2d)) return false;
  const { stride, padding, dilation, ceilMode } = m.opts;
  if (ceilMode) return false;
  const is = (v: Size2 | undefined, n: number) => v === undefined || (typeof v === "number" ? v === n : v[0] === n && v[1] === n);
  return is(m.kernelSize, 2) && (stride === undefined || is(stride, 2)) && is(padding, 0) && is(dilation, 1);
}

/** True when layers i and i + 1 are MaxPool2d(2) and ReLU, in either order (they commute: max(relu(a), relu(b)) = relu(max(a, b))). */
function isPoolRelu(layers: Module[], i: number): boolean {
  const a = layers[i], b = layers[i + 1];
  return (isPool2(a) && runs(b, ReLU)) || (runs(a, ReLU) && isPool2(b));
}

/**
 * Runs modules in order. Children are named "0", "1", ... as in PyTorch.
 *
 * Adjacent layers that have a fused op run as that op, the same function and gradients (to
 * float32 rounding: the fused op sums some gradients in another order): Conv2d followed by ReLU
 * and MaxPool2d(2) (either order) as conv2dMaxPoolRelu, whose full-size conv output is never
 * stored, and BatchNorm2d followed by the same pair as batchNorm2dMaxPoolRelu. Only layers
 * running their class's own forward are fused; either order of the pair gives the same bits.
 */
export class Sequential extends Module {
  constructor(...layers: Module[]) {
    super();
    layers.forEach((m, i) => ((this as any)[String(i)] = m));
  }
  get layers(): Module[] {
    return this.children();
  }
  forward(x: Tensor): Tensor {
    return this.forwardScope(() => this.runLayers(x));
  }
  private runLayers(x: Tensor): Tensor {
    const layers = this.children();
    for (let i = 0; i < layers.length; i++) {
      const m = layers[i];
      if (m instanceof Conv2d && runs(m, Conv2d) && isPoolRelu(layers, i + 1)) {
        x = conv2dMaxPoolRelu(x, m.weight, m.bias, m.opts); // (N, C, H, W) → (N, O, ⌊OH/2⌋, ⌊OW/2⌋)
        i += 2;
      } else if (m instanceof BatchNorm2d && runs(m, BatchNorm2d) && isPoolRelu(layers, i + 1)) {
        x = batchNorm2dMaxPoolRelu(x, m.runningMean, m.runningVar, m.weight, m.bias, m.nextOptions()); // (N, C, H/2, W/2)
        i += 2;
      } else {
        x = m.forward(x);
      }
    }
    return x;
  }
}

/** A list of modules registered by index (PyTorch's ModuleList). */
export class ModuleList extends Module {
  constructor(modules: Module[] = []) {
    super();
    modules.forEach((m, i) => ((this as any)[String(i)] = m));
  }
  get length(): number {
    return this.children().length;
  }
  at(i: number): Module {
    return this.children()[i];
  }
  [Symbol.iterator](): Iterator<Module> {
    return this.children()[Symbol.iterator]();
  }
  forward(): Tensor {
    throw new ArgumentError("ModuleList: has no forward; iterate over its modules");
  }
}

export class ReLU extends Module { forward(x: Tensor) { return relu(x); } }
export class Sigmoid extends Module { forward(x: Tensor) { return sigmoid(x); } }
export class Tanh extends Module { forward(x: Tensor) { return tanh(x); } }
export class GELU extends Module {
  constructor(readonly approximate: "none" | "tanh" = "none") { super(); }
  forward(x: Tensor) { return gelu(x, { approximate: this.approximate }); }
}
export class Softmax extends Module {
  constructor(readonly axis = -1) { super(); }
  forward(x: Tensor) { return softmax(x, this.axis); }
}
export class Identity extends Module { forward(x: Tensor) { return x; } }

export class Dropout extends Module {
  constructor(readonly p = 0.5) {
    super();
    if (!(p >= 0 && p <= 1)) throw new ArgumentError(`Dropout: probability must be in [0, 1], got ${p}`);
  }
  forward(x: Tensor) { return dropout(x, this.p, this.training); }
}

export class Flatten extends Module {
  constructor(readonly startDim = 1, readonly endDim = -1) { super(); }
  forward(x: Tensor) { return flatten(x, this.startDim, this.endDim); }
}

/**
 * Lookup table (num, dim), initialised N(0, 1) like PyTorch. `paddingIdx`: that row starts at
 * zero and gets no gradient.
 */
export class Embedding extends Module {
  weight: Parameter;
  readonly paddingIdx: number | null;
  constructor(readonly numEmbeddings: number, readonly embeddingDim: number, opts: { paddingIdx?: number | null } = {}) {
    super();
    checkOptions("Embedding", opts, ["paddingIdx"]);
    checkPositiveInt("Embedding", "numEmbeddings", numEmbeddings);
    checkPositiveInt("Embedding", "embeddingDim", embeddingDim);
    const row = paddingRow("Embedding", opts.paddingIdx, numEmbeddings);
    this.paddingIdx = row < 0 ? null : row;
    this.weight = new Parameter(new Float32Array(numEmbeddings * embeddingDim), [numEmbeddings, embeddingDim]);
    this.resetParameters();
  }
  resetParameters(): void {
    normal_(this.weight);
    if (this.paddingIdx !== null) this.weight.data.fill(0, this.paddingIdx * this.embeddingDim, (this.paddingIdx + 1) * this.embeddingDim);
  }
  forward(indices: Tensor | Int32Array): Tensor {
    return embedding(indices, this.weight, { paddingIdx: this.paddingIdx }); // (...) → (..., dim)
  }
}

/** Zeroes whole channels of (N, C, ...) with probability p while training (PyTorch's Dropout2d). */
export class Dropout2d extends Module {
  constructor(readonly p = 0.5) {
    super();
    if (!(p >= 0 && p <= 1)) throw new ArgumentError(`Dropout2d: probability must be in [0, 1], got ${p}`);
  }
  forward(x: Tensor) { return dropout2d(x, this.p, this.training); }
}

/** LayerNorm over the trailing `normalizedShape`, weight 1 and bias 0 at init. */
export class LayerNorm extends Module {
  readonly normalizedShape: number[];
  weight: Parameter | null;
  bias: Parameter | null;
  constructor(normalizedShape: number | number[], readonly eps = 1e-5, opts: { elementwiseAffine?: boolean; bias?: boolean } = {}) {
    super();
    checkOptions("LayerNorm", opts, ["elementwiseAffine", "bias"]);
    this.normalizedShape = typeof normalizedShape === "number" ? [normalizedShape] : normalizedShape;
    const n = this.normalizedShape.reduce((a, b) => a * b, 1);
    const affine = opts.elementwiseAffine ?? true;
    this.weight = affine ? constant_(new Parameter(new Float32Array(n), this.normalizedShape), 1) as Parameter : null;
    this.bias = affine && opts.bias !== false ? new Parameter(new Float32Array(n), this.normalizedShape) : null;
  }
  forward(x: Tensor) {
    return layerNorm(x, this.normalizedShape, this.weight, this.bias, this.eps);
  }
}

registerOwnModules(Linear, Sequential, ModuleList, ReLU, Sigmoid, Tanh, GELU, Softmax, Identity, Dropout, Dropout2d, Flatten, Embedding, LayerNorm);
