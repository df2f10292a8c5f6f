/**
 * LoRA (Hu et al. 2021): a frozen Linear W plus a trainable low-rank update,
 *   y = x Wᵀ + b + (alpha / r) · dropout(x) Aᵀ Bᵀ,   A (r, in), B (out, r).
 * A starts kaiming-uniform and B at zero, so an adapted model starts out equal to
 * the base. Parameter names follow loralib (`<layer>.lora_A`, `<layer>.lora_B`); the
 * base keeps its own names (`<layer>.weight`, `<layer>.bias`), so a base
 * checkpoint still loads by name into an adapted model.
 */
import { ArgumentError, ShapeError, fmtShape } from "../errors.js";
import { Tensor } from "../tensor/tensor.js";
import { noGrad } from "../autograd/engine.js";
import { kernels } from "../kernels/kernels.js";
import { type LoadReport, Module, Parameter, registerOwnModules } from "./module.js";
import { Dropout, Linear } from "./layers.js";
import { kaimingUniformDefault_ } from "./init.js";
import { linear } from "../ops/matmul.js";
import { add, mul } from "../ops/elementwise.js";

export interface LoraOptions {
  /** Rank r of the update. */
  rank: number;
  /** Scale numerator: the update is multiplied by alpha / rank. Default: rank (scale 1). */
  alpha?: number;
  /** Dropout probability on the adapter's input. Default 0. */
  dropout?: number;
}

export interface ApplyLoraOptions extends LoraOptions {
  /** Which Linear layers to adapt, matched against their module names (e.g. "transformer.h.0.attn.c_attn"). */
  targets: RegExp | string;
}

export class LoRALinear extends Module {
  /** The base layer's parameters (the same objects; frozen by applyLora). */
  weight: Parameter;
  bias: Parameter | null;
  lora_A: Parameter; // (r, in)
  lora_B: Parameter; // (out, r)
  lora_dropout: Dropout;
  readonly rank: number;
  readonly alpha: number;
  /** alpha / rank. */
  readonly scaling: number;
  readonly inFeatures: number;
  readonly outFeatures: number;
  /** The wrapped layer, put back by mergeLora. */
  private readonly _base: Linear;

  constructor(base: Linear, opts: LoraOptions) {
    super();
    const r = opts.rank;
    if (!Number.isInteger(r) || r <= 0) throw new ArgumentError(`LoRALinear: rank must be a positive integer, got ${r}`);
    const alpha = opts.alpha ?? r;
    if (!(Number.isFinite(alpha) && alpha > 0)) throw new ArgumentError(`LoRALinear: alpha must be a positive number, got ${alpha}`);
    this._base = base;
    this.weight = base.weight;
    this.bias = base.bias;
    this.inFeatures = base.inFeatures;
    this.outFeatures = base.outFeatures;
    this.lora_A = new Parameter(new Float32Array(r * base.inFeatures), [r, base.inFeatures]);
    this.lora_B = new Parameter(new Float32Array(base.outFeatures * r), [base.outFeatures, r]);
    this.lora_dropout = new Dropout(opts.dropout ?? 0);
    this.rank = r;
    this.alpha = alpha;
    this.scaling = alpha / r;
    this.resetLoraParameters();
  }

  /** A ~ kaiming-uniform (bound 1/√in, loralib's choice), B = 0: the update starts at zero. */
  resetLoraParameters(): void {
    kaimingUniformDefault_(this.lora_A);
    this.lora_B.data.fill(0);
  }

  get base(): Linear {
    return this._base;
  }

  forward(x: Tensor): Tensor {
    return this.forwardScope(() => {
      const y = linear(x, this.weight, this.bias); // (..., out)
      const a = linear(this.lora_dropout.forward(x), this.lora_A); // (..., r)
      return add(y, linear(mul(a, this.scaling), this.lora_B)); // (..., out)
    });
  }

  /** W + scaling · B·A as a new array (the weight mergeLora writes). */
  mergedWeight(): Float32Array {
    const w = this.weight.data.slice();
    kernels().gemm(false, false, this.outFeatures, this.inFeatures, this.rank, this.scaling, this.lora_B.data, 0, this.rank, this.lora_A.data, 0, this.inFeatures, 1, w, 0, this.inFeatures);
    return w;
  }
}

registerOwnModules(LoRALinear);

function toRegExp(p: RegExp | string): RegExp {
  return typeof p === "string" ? new RegExp(p) : p;
}

/** [parent, field name] of the module at dotted `name`. */
function parentOf(model: Module, name: string): [Module, string] {
  const dot = name.lastIndexOf(".");
  const parentName = dot < 0 ? "" : name.slice(0, dot);
  const parent = model.namedModules().find(([n]) => n === parentName)?.[1];
  if (!parent) throw new ArgumentError(`LoRA: no module named '${parentName}'`);
  return [parent, name.slice(dot + 1)];
}

/**
 * Replaces every Linear whose module name matches `targets` by a LoRALinear
 * around it, then freezes every parameter except the adapters (requiresGrad =
 * false), so an optimizer over `model.parameters()` — or over `loraParameters(model)`,
 * possibly in several groups with their own learning rates — trains only A and B.
 * Returns the names of the adapted layers; throws if none matched or a target's
 * weight is tied to another parameter (merging would change both).
 */
export function applyLora(model: Module, opts: ApplyLoraOptions): string[] {
  const re = toRegExp(opts.targets);
  const targets = model.namedModules().filter(([name, m]) => name !== "" && m instanceof Linear && re.test(name)) as [string, Linear][];
  if (targets.length === 0) throw new ArgumentError(`applyLora: no Linear layer name matches ${re}`);
  const owners = new Map<Parameter, number>();
  for (const [, m] of model.namedModules()) {
    for (const v of Object.values(m)) if (v instanceof Parameter) owners.set(v, (owners.get(v) ?? 0) + 1);
  }
  for (const [name, lin] of targets) {
    if ((owners.get(lin.weight) ?? 0) > 1) throw new ArgumentError(`applyLora: the weight of '${name}' is tied to another parameter; LoRA on tied weights is not supported`);
  }
  for (const [name, lin] of targets) {
    const [parent, field] = parentOf(model, name);
    (parent as any)[field] = new LoRALinear(lin, opts);
  }
  const adapters = new Set(loraParameters(model));
  for (const p of model.parameters()) p.requiresGrad = adapters.has(p);
  return targets.map(([n]) => n);
}

/** The adapter layers of a model, by module name. */
export function loraLayers(model: Module): [string, LoRALinear][] {
  return model.namedModules().filter(([, m]) => m instanceof LoRALinear) as [string, LoRALinear][];
}

/** All adapter parameters (lora_A and lora_B of every LoRALinear), in model order. */
export function loraParameters(model: Module): Parameter[] {
  return loraLayers(model).flatMap(([, m]) => [m.lora_A, m.lora_B]);
}

/** Adapter parameters only, by full name (`transformer.h.0.attn.c_attn.lora_A`), sharing storage: save these alone. */
export function loraStateDict(model: Module): Record<string, Tensor> {
  const out: Record<string, Tensor> = {};
  for (const [name, m] of loraLayers(model)) {
    out[`${name}.lora_A`] = m.lora_A;
    out[`${name}.lora_B`] = m.lora_B;
  }
  return out;
}

/**
 * Copies adapter weights (as saved by loraStateDict) into a model that already
 * has adapters of the same shapes (applyLora with the same targets and rank).
 * strict (default) throws on missing or unexpected keys; a shape mismatch always
 * throws before anything is copied.
 */
export function loadLora(
  model: Module, dict: Record<string, Tensor | { data: ArrayLike<number>; shape: readonly number[] }>, opts: { strict?: boolean } = {},
): LoadReport {
  const own = loraStateDict(model);
  if (Object.keys(own).length === 0) throw new ArgumentError("loadLora: the model has no LoRA adapters; call applyLora with the same targets and rank first");
  const missingKeys = Object.keys(own).filter((k) => !(k in dict));
  const unexpectedKeys = Object.keys(dict).filter((k) => !(k in own));
  if ((opts.strict ?? true) && (missingKeys.length > 0 || unexpectedKeys.length > 0)) {
    throw new ArgumentError(`loadLora: missing keys [${missingKeys.join(", ")}], unexpected keys [${unexpectedKeys.join(", ")}]`);
  }
  for (const [k, t] of Object.entries(own)) {
    const src = dict[k];
    if (src && (src.shape.length !== t.shape.length || src.shape.some((d, i) => d !== t.shape[i]) || src.data.length !== t.size)) {
      throw new ShapeError(`loadLora: '${k}' has shape ${fmtShape(src.shape)} in the dict but ${fmtShape(t.shape)} in the model (was it saved with another rank?)`);
    }
  }
  for (const [k, t] of Object.entries(own)) {
    const src = dict[k];
    if (src) t.data.set(src.data as ArrayLike<number>);
  }
  return { missingKeys, unexpectedKeys };
}

/**
 * Folds each adapter into its base weight (W ← W + (alpha/r)·B·A) and puts the
 * plain Linear back in its place, for inference at the base model's cost. The
 * base parameters keep their requiresGrad (frozen after applyLora). Returns the
 * names of the merged layers.
 */
export function mergeLora(model: Module): string[] {
  const layers = loraLayers(model);
  noGrad(() => {
    for (const [name, m] of layers) {
      m.weight.data.set(m.mergedWeight());
      const [parent, field] = parentOf(model, name);
      (parent as any)[field] = m.base;
    }
  });
  return layers.map(([n]) => n);
}
