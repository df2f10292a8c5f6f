import { ArgumentError } from "../errors.js";
import type { Parameter } from "../nn/module.js";
import { type GroupSpec, Optimizer, checkHyper } from "./optimizer.js";
import { type SgdHyper, sgdUpdate } from "./rules.js";
import { checkOptions } from "../options.js";

export class SGD extends Optimizer<SgdHyper> {
  constructor(params: Parameter[] | GroupSpec<SgdHyper>[], opts: Partial<SgdHyper> = {}) {
    checkOptions("SGD", opts, ["lr", "momentum", "dampening", "nesterov", "weightDecay"]);
    super(params, { lr: 1e-3, momentum: 0, dampening: 0, nesterov: false, weightDecay: 0, ...opts }, "SGD");
  }
  protected validate(h: SgdHyper): void {
    checkHyper("SGD", "lr", h.lr);
    checkHyper("SGD", "momentum", h.momentum);
    checkHyper("SGD", "weightDecay", h.weightDecay);
    if (h.nesterov && (h.momentum <= 0 || h.dampening !== 0)) throw new ArgumentError("SGD: nesterov needs momentum > 0 and dampening 0");
  }
  protected stateNames(h: SgdHyper): string[] {
    return h.momentum > 0 ? ["momentumBuffer"] : [];
  }
  protected updateParam(p: Parameter, g: Float32Array, st: Record<string, Float32Array>, h: SgdHyper, _step: number, fresh: boolean): void {
    sgdUpdate(p.data, g, st.momentumBuffer ?? null, 0, p.size, h, fresh);
  }
  protected override updateRange(data: Float32Array, g: Float32Array, st: Record<string, Float32Array>, h: SgdHyper, _step: number, fresh: boolean): void {
    sgdUpdate(data, g, st.momentumBuffer ?? null, 0, data.length, h, fresh);
  }
}
