import { ArgumentError, ShapeError, fmtShape } from "../errors.js";
import { Tensor } from "../tensor/tensor.js";
import type { Shape } from "../tensor/shape.js";
import { sizeOf } from "../tensor/shape.js";
import { forwardScope, forwardScopeOpen } from "../tensor/arena.js";
import { checkOptions } from "../options.js";

/** A trainable tensor: a leaf that requires grad. */
export class Parameter extends Tensor {
  constructor(data: Float32Array | Tensor, shape?: Shape) {
    if (data instanceof Tensor) super(data.data, data.shape, true);
    else super(data, shape ?? [data.length], true);
  }
}

export type StateDict = Record<string, Tensor>;

export interface LoadReport {
  missingKeys: string[];
  unexpectedKeys: string[];
}

/** Prototypes of chainrule's own modules, whose methods keep no op output beyond what forward returns. */
const ownModules = new WeakSet<object>();

/** Marks classes as chainrule's own (exactly these classes: a subclass is user code). */
export function registerOwnModules(...classes: { prototype: object }[]): void {
  for (const c of classes) ownModules.add(c.prototype);
}

/**
 * Whether `m` and every module below it are instances of chainrule's own classes with no
 * method replaced on the instance: then no code of the user's sees their intermediate outputs.
 */
function ownSubtree(m: Module): boolean {
  if (!ownModules.has(Object.getPrototypeOf(m))) return false;
  for (const k in m) {
    const v = (m as any)[k];
    if (typeof v === "function" || (v instanceof Module && !ownSubtree(v))) return false;
  }
  return true;
}

/**
 * Base class of layers and models. Parameters and sub-modules assigned to
 * fields (`this.fc = new Linear(...)`) are found in field order, like PyTorch's
 * __setattr__ registration; buffers (running statistics) are registered explicitly.
 */
export abstract class Module {
  training = true;
  private readonly _buffers = new Map<string, Tensor>();

  abstract forward(...args: any[]): Tensor;

  /**
   * Runs `fn`, this module's forward: when this module and all below it are chainrule's own, the
   * op outputs made inside and not returned are recycled once nothing can read them (at once
   * without a graph, else after the backward that frees it; see tensor/arena.ts). Chainrule's
   * containers (Sequential, GPT, ...) wrap their forward in it; a user's Module need not.
   */
  protected forwardScope(fn: () => Tensor): Tensor {
    return !forwardScopeOpen() && ownSubtree(this) ? forwardScope(fn) : fn();
  }

  /**
   * Registers a non-trainable tensor that is part of the state dict; `formerNames` are names it
   * had in older checkpoints, which loadStateDict still accepts.
   */
  protected registerBuffer(name: string, t: Tensor, formerNames: readonly string[] = []): Tensor {
    this._buffers.set(name, t);
    if (formerNames.length > 0) this._formerNames.set(name, formerNames);
    return t;
  }
  private readonly _formerNames = new Map<string, readonly string[]>();

  /** Direct children: fields holding modules (in assignment order). */
  namedChildren(): [string, Module][] {
    const out: [string, Module][] = [];
    for (const [k, v] of Object.entries(this)) {
      if (k.startsWith("_")) continue;
      if (v instanceof Module) out.push([k, v]);
    }
    return out;
  }

  children(): Module[] {
    return this.namedChildren().map(([, m]) => m);
  }

  /** This module and all below it, depth first, with dotted names. */
  namedModules(prefix = ""): [string, Module][] {
    const out: [string, Module][] = [[prefix, this]];
    for (const [k, m] of this.namedChildren()) out.push(...m.namedModules(prefix ? `${prefix}.${k}` : k));
    return out;
  }

  /** Parameters of this module and its children, named like PyTorch (`layers.0.weight`). */
  namedParameters(prefix = ""): [string, Parameter][] {
    const out: [string, Parameter][] = [];
    const seen = new Set<Parameter>();
    for (const [mp, m] of this.namedModules(prefix)) {
      for (const [k, v] of Object.entries(m)) {
        if (k.startsWith("_") || !(v instanceof Parameter) || seen.has(v)) continue;
        seen.add(v); // tied weights appear once
        out.push([mp ? `${mp}.${k}` : k, v]);
      }
    }
    return out;
  }

  parameters(): Parameter[] {
    return this.namedParameters().map(([, p]) => p);
  }

  namedBuffers(): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [mp, m] of this.namedModules()) for (const [k, b] of m._buffers) out.push([mp ? `${mp}.${k}` : k, b]);
    return out;
  }

  /** Number of trainable scalars. */
  numParameters(): number {
    return this.parameters().reduce((n, p) => n + p.size, 0);
  }

  train(mode = true): this {
    for (const [, m] of this.namedModules()) m.training = mode;
    return this;
  }

  eval(): this {
    return this.train(false);
  }

  /** Name → tensor for every parameter and buffer (sharing storage, not copies). */
  stateDict(): StateDict {
    const out: StateDict = {};
    for (const [k, p] of this.namedParameters()) out[k] = p;
    for (const [k, b] of this.namedBuffers()) out[k] = b;
    return out;
  }

  /**
   * How `dict`'s keys map onto this module's state: the source of each own key, and the keys
   * missing or unexpected. A buffer's former name stands in for it; a tied parameter's other
   * name (`lm_head.weight` beside `transformer.wte.weight`) is accepted when its values equal
   * its twin's, or stands in for it when the twin is absent. Throws when tied copies differ.
   */
  matchStateDict<T extends { data: ArrayLike<number>; shape: readonly number[] }>(dict: Record<string, T>): { sources: Map<string, T>; missingKeys: string[]; unexpectedKeys: string[] } {
    const own = this.stateDict();
    const aliases = new Map<string, string>(); // other name → own key
    for (const [mp, m] of this.namedModules()) {
      for (const [k, formers] of m._formerNames) for (const f of formers) aliases.set(mp ? `${mp}.${f}` : f, mp ? `${mp}.${k}` : k);
    }
    const canonical = new Map<Tensor, string>();
    for (const [k, t] of Object.entries(own)) canonical.set(t, k);
    for (const [mp, m] of this.namedModules()) {
      for (const [k, v] of Object.entries(m)) {
        if (k.startsWith("_") || !(v instanceof Parameter)) continue;
        const name = mp ? `${mp}.${k}` : k, twin = canonical.get(v);
        if (twin !== undefined && twin !== name) aliases.set(name, twin);
      }
    }
    const sources = new Map<string, T>();
    for (const k of Object.keys(own)) if (k in dict) sources.set(k, dict[k]);
    const unexpectedKeys: string[] = [];
    for (const [k, src] of Object.entries(dict)) {
      if (k in own) continue;
      const target = aliases.get(k);
      if (target === undefined) { unexpectedKeys.push(k); continue; }
      const twin = sources.get(target);
      if (twin === undefined) sources.set(target, src);
      else if (twin !== src && !sameValues(twin, src)) {
        throw new ArgumentError(`loadStateDict: '${k}' is tied to '${target}' in the model but their values differ in the state dict`);
      }
    }
    const missingKeys = Object.keys(own).filter((k) => !sources.has(k));
    return { sources, missingKeys, unexpectedKeys };
  }

  /**
   * Copies values in by name. strict (default) throws on missing or unexpected keys;
   * either way a shape mismatch throws, naming the key, before anything is copied.
   * Batch-norm buffers load from PyTorch's names or chainrule's former camel-case ones, and a
   * tied weight's duplicate (nanoGPT's `lm_head.weight`) is accepted when it equals its twin.
   */
  loadStateDict(dict: Record<string, Tensor | { data: ArrayLike<number>; shape: readonly number[] }>, opts: { strict?: boolean } = {}): LoadReport {
    checkOptions("loadStateDict", opts, ["strict"]);
    const strict = opts.strict ?? true;
    const own = this.stateDict();
    const { sources, missingKeys, unexpectedKeys } = this.matchStateDict(dict);
    if (strict && (missingKeys.length > 0 || unexpectedKeys.length > 0)) {
      throw new ArgumentError(
        `loadStateDict: missing keys [${missingKeys.join(", ")}], unexpected keys [${unexpectedKeys.join(", ")}]`,
      );
    }
    for (const [k, src] of sources) {
      const t = own[k];
      if (src.shape.length !== t.shape.length || src.shape.some((d, i) => d !== t.shape[i])) {
        throw new ShapeError(`loadStateDict: key '${k}' has shape ${fmtShape(src.shape)} in the state dict but ${fmtShape(t.shape)} in the model`);
      }
      if (src.data.length !== sizeOf(t.shape)) throw new ShapeError(`loadStateDict: key '${k}' has ${src.data.length} values, expected ${t.size}`);
    }
    for (const [k, src] of sources) own[k].data.set(src.data as ArrayLike<number>);
    return { missingKeys, unexpectedKeys };
  }

  /** Sets requiresGrad on every parameter (false freezes the module). */
  requiresGrad_(flag = true): this {
    for (const p of this.parameters()) p.requiresGrad = flag;
    return this;
  }

  /** Applies `fn` to every module (e.g. custom init). */
  apply(fn: (m: Module) => void): this {
    for (const [, m] of this.namedModules()) fn(m);
    return this;
  }
}

function sameValues(a: { data: ArrayLike<number>; shape: readonly number[] }, b: { data: ArrayLike<number>; shape: readonly number[] }): boolean {
  if (a.data.length !== b.data.length || a.shape.length !== b.shape.length || a.shape.some((d, i) => d !== b.shape[i])) return false;
  for (let i = 0; i < a.data.length; i++) if (!Object.is(a.data[i], b.data[i])) return false;
  return true;
}

/** Freezes (requiresGrad = false) every parameter whose name matches the pattern; returns the names frozen. */
export function freeze(model: Module, pattern: RegExp | string): string[] {
  const re = typeof pattern === "string" ? new RegExp(pattern) : pattern;
  const names: string[] = [];
  for (const [name, p] of model.namedParameters()) {
    if (re.test(name)) {
      p.requiresGrad = false;
      names.push(name);
    }
  }
  return names;
}
