import { ArgumentError } from "../errors.js";
import type { Parameter } from "../nn/module.js";
import { type GroupSpec, Optimizer, checkHyper } from "./optimizer.js";
import { type AdagradHyper, type RmspropHyper, adagradUpdate, rmspropUpdate } from "./rules.js";
import { checkOptions } from "../options.js";

/** RMSprop (PyTorch's defaults: lr 1e-2, alpha 0.99, eps 1e-8), optionally centered and with momentum. */
export class RMSprop extends Optimizer<RmspropHyper> {
  constructor(params: Parameter[] | GroupSpec<RmspropHyper>[], opts: Partial<RmspropHyper> = {}) {
    checkOptions("RMSprop", opts, ["lr", "alpha", "eps", "weightDecay", "momentum", "centered"]);
    super(params, { lr: 1e-2, alpha: 0.99, eps: 1e-8, weightDecay: 0, momentum: 0, centered: false, ...opts }, "RMSprop");
  }
  protected validate(h: RmspropHyper): void {
    checkHyper("RMSprop", "lr", h.lr);
    if (!(h.alpha >= 0 && h.alpha <= 1)) throw new ArgumentError(`RMSprop: alpha must be in [0, 1], got ${h.alpha}`);
    checkHyper("RMSprop", "eps", h.eps);
    checkHyper("RMSprop", "weightDecay", h.weightDecay);
    checkHyper("RMSprop", "momentum", h.momentum);
  }
  protected stateNames(h: RmspropHyper): string[] {
    return ["squareAvg", ...(h.centered ? ["gradAvg"] : []), ...(h.momentum > 0 ? ["momentumBuffer"] : [])];
  }
  protected updateParam(p: Parameter, g: Float32Array, st: Record<string, Float32Array>, h: RmspropHyper): void {
    this.updateRange(p.data, g, st, h);
  }
  protected override updateRange(data: Float32Array, g: Float32Array, st: Record<string, Float32Array>, h: RmspropHyper): void {
    rmspropUpdate(data, g, st.squareAvg, st.gradAvg ?? null, st.momentumBuffer ?? null, 0, data.length, h);
  }
}

/** Adagrad (PyTorch's defaults: lr 1e-2, eps 1e-10, no decay). */
export class Adagrad extends Optimizer<AdagradHyper> {
  constructor(params: Parameter[] | GroupSpec<AdagradHyper>[], opts: Partial<AdagradHyper> = {}) {
    checkOptions("Adagrad", opts, ["lr", "lrDecay", "weightDecay", "initialAccumulatorValue", "eps"]);
    super(params, { lr: 1e-2, lrDecay: 0, weightDecay: 0, initialAccumulatorValue: 0, eps: 1e-10, ...opts }, "Adagrad");
  }
  protected validate(h: AdagradHyper): void {
    for (const k of ["lr", "lrDecay", "weightDecay", "initialAccumulatorValue", "eps"] as const) checkHyper("Adagrad", k, h[k]);
  }
  protected stateNames(): string[] {
    return ["sum"];
  }
  protected updateParam(p: Parameter, g: Float32Array, st: Record<string, Float32Array>, h: AdagradHyper, step: number, fresh: boolean): void {
    this.updateRange(p.data, g, st, h, step, fresh);
  }
  protected override updateRange(data: Float32Array, g: Float32Array, st: Record<string, Float32Array>, h: AdagradHyper, step: number, fresh: boolean): void {
    if (fresh) st.sum.fill(h.initialAccumulatorValue);
    adagradUpdate(data, g, st.sum, 0, data.length, h, step);
  }
}
