import { ArgumentError } from "../errors.js";
import { Tensor } from "../tensor/tensor.js";
import { Module, Parameter } from "./module.js";
import { constant_, kaimingUniformDefault_, normal_, uniform_ } from "./init.js";
import { linear } from "../ops/matmul.js";
import { gelu, relu, sigmoid, tanh } from "../ops/elementwise.js";
import { dropout, embedding } from "../ops/indexing.js";
import { layerNorm } from "../ops/layernorm.js";
import { flatten } from "../ops/shape.js";
import { softmax } from "../ops/softmax.js";

function checkPositiveInt(op: string, name: string, v: number): void {
  if (!Number.isInteger(v) || v <= 0) throw new ArgumentError(`${op}: ${name} must be a positive integer, got ${v}`);
}

/** y = x Wᵀ + b; W (out, in) and b initialised like PyTorch (uniform ±1/√in). */
export class Linear extends Module {
  weight: Parameter;
  bias: Parameter | null;
  constructor(readonly inFeatures: number, readonly outFeatures: number, opts: { bias?: boolean } = {}) {
    super();
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

/** Runs modules in order. Children are named "0", "1", ... as in PyTorch. */
/** A Linear whose forward is Linear's own (not a subclass that changes it): fused ops may then use its weight and bias directly. */
export function isPlainLinear(m: Module): m is Linear {
  return m instanceof Linear && m.forward === Linear.prototype.forward;
}

export class Sequential extends Module {
  constructor(...layers: Module[]) {
    super();
    layers.forEach((m, i) => ((this as any)[String(i)] = m));
  }
  get layers(): Module[] {
    return this.children();
  }
  forward(x: Tensor): Tensor {
    for (const m of this.children()) x = m.forward(x);
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

/** Lookup table (num, dim), initialised N(0, 1) like PyTorch. */
export class Embedding extends Module {
  weight: Parameter;
  constructor(readonly numEmbeddings: number, readonly embeddingDim: number) {
    super();
    checkPositiveInt("Embedding", "numEmbeddings", numEmbeddings);
    checkPositiveInt("Embedding", "embeddingDim", embeddingDim);
    this.weight = new Parameter(new Float32Array(numEmbeddings * embeddingDim), [numEmbeddings, embeddingDim]);
    normal_(this.weight);
  }
  forward(indices: Tensor | Int32Array): Tensor {
    return embedding(indices, this.weight); // (...) → (..., dim)
  }
}

/** LayerNorm over the trailing `normalizedShape`, weight 1 and bias 0 at init. */
export class LayerNorm extends Module {
  readonly normalizedShape: number[];
  weight: Parameter | null;
  bias: Parameter | null;
  constructor(normalizedShape: number | number[], readonly eps = 1e-5, opts: { elementwiseAffine?: boolean; bias?: boolean } = {}) {
    super();
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
