import { ArgumentError } from "../errors.js";
import type { Parameter } from "../nn/module.js";
import { type GroupSpec, Optimizer, checkHyper } from "./optimizer.js";
import { type AdamHyper, adamUpdate } from "./rules.js";

export type AdamOptions = Partial<Omit<AdamHyper, "beta1" | "beta2" | "decoupled">> & { betas?: [number, number]; beta1?: number; beta2?: number };

function hyper(opts: AdamOptions, decoupled: boolean, wdDefault: number): AdamHyper {
  return {
    lr: opts.lr ?? 1e-3,
    beta1: opts.betas?.[0] ?? opts.beta1 ?? 0.9,
    beta2: opts.betas?.[1] ?? opts.beta2 ?? 0.999,
    eps: opts.eps ?? 1e-8,
    weightDecay: opts.weightDecay ?? wdDefault,
    decoupled,
  };
}

export class Adam extends Optimizer<AdamHyper> {
  constructor(params: Parameter[] | GroupSpec<AdamHyper>[], opts: AdamOptions = {}, name = "Adam", decoupled = false, wdDefault = 0) {
    super(params, hyper(opts, decoupled, wdDefault), name);
  }
  protected validate(h: AdamHyper): void {
    const name = this.typeName;
    checkHyper(name, "lr", h.lr);
    for (const b of ["beta1", "beta2"] as const) {
      if (!(h[b] >= 0 && h[b] < 1)) throw new ArgumentError(`${name}: ${b} must be in [0, 1), got ${h[b]}`);
    }
    checkHyper(name, "eps", h.eps);
    checkHyper(name, "weightDecay", h.weightDecay);
  }
  protected stateNames(): string[] {
    return ["expAvg", "expAvgSq"];
  }
  protected updateParam(p: Parameter, g: Float32Array, st: Record<string, Float32Array>, h: AdamHyper, step: number): void {
    adamUpdate(p.data, g, st.expAvg, st.expAvgSq, 0, p.size, h, step);
  }
  protected override updateRange(data: Float32Array, g: Float32Array, st: Record<string, Float32Array>, h: AdamHyper, step: number): void {
    adamUpdate(data, g, st.expAvg, st.expAvgSq, 0, data.length, h, step);
  }
}

/** Adam with decoupled weight decay (default 0.01, as in PyTorch). */
export class AdamW extends Adam {
  constructor(params: Parameter[] | GroupSpec<AdamHyper>[], opts: AdamOptions = {}) {
    super(params, opts, "AdamW", true, 0.01);
  }
}
