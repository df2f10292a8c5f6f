import { ArgumentError } from "../errors.js";
import type { Parameter } from "../nn/module.js";
import { type GroupSpec, Optimizer, checkHyper } from "./optimizer.js";
import { type AdamHyper, adamUpdate, amsgradUpdate } from "./rules.js";
import { checkOptions } from "../options.js";

export type AdamOptions = Partial<Omit<AdamHyper, "beta1" | "beta2" | "decoupled">> & { betas?: [number, number]; beta1?: number; beta2?: number };

function hyper(opts: AdamOptions, decoupled: boolean, wdDefault: number, name: string): AdamHyper {
  checkOptions(name, opts, ["lr", "betas", "beta1", "beta2", "eps", "weightDecay", "amsgrad"]);
  return {
    lr: opts.lr ?? 1e-3,
    beta1: opts.betas?.[0] ?? opts.beta1 ?? 0.9,
    beta2: opts.betas?.[1] ?? opts.beta2 ?? 0.999,
    eps: opts.eps ?? 1e-8,
    weightDecay: opts.weightDecay ?? wdDefault,
    decoupled,
    amsgrad: opts.amsgrad ?? false,
  };
}

export class Adam extends Optimizer<AdamHyper> {
  constructor(params: Parameter[] | GroupSpec<AdamHyper>[], opts: AdamOptions = {}, name = "Adam", decoupled = false, wdDefault = 0) {
    super(params, hyper(opts, decoupled, wdDefault, name), name);
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
  protected stateNames(h: AdamHyper): string[] {
    return h.amsgrad ? ["expAvg", "expAvgSq", "maxExpAvgSq"] : ["expAvg", "expAvgSq"];
  }
  protected updateParam(p: Parameter, g: Float32Array, st: Record<string, Float32Array>, h: AdamHyper, step: number): void {
    this.updateRange(p.data, g, st, h, step);
  }
  protected override updateRange(data: Float32Array, g: Float32Array, st: Record<string, Float32Array>, h: AdamHyper, step: number): void {
    if (h.amsgrad) amsgradUpdate(data, g, st.expAvg, st.expAvgSq, st.maxExpAvgSq, 0, data.length, h, step);
    else adamUpdate(data, g, st.expAvg, st.expAvgSq, 0, data.length, h, step);
  }
}

/** Adam with decoupled weight decay (default 0.01, as in PyTorch). */
export class AdamW extends Adam {
  constructor(params: Parameter[] | GroupSpec<AdamHyper>[], opts: AdamOptions = {}) {
    super(params, opts, "AdamW", true, 0.01);
  }
}
