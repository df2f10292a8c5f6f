/** Activation layers beyond ReLU/Sigmoid/Tanh/GELU, each calling its op in ops/pointwise.ts. */
import type { Tensor } from "../tensor/tensor.js";
import { Module, registerOwnModules } from "./module.js";
import { elu, hardtanh, leakyRelu, logSigmoid, mish, selu, silu, softplus } from "../ops/pointwise.js";

export class LeakyReLU extends Module {
  constructor(readonly negativeSlope = 0.01) { super(); }
  forward(x: Tensor) { return leakyRelu(x, this.negativeSlope); }
}
export class ELU extends Module {
  constructor(readonly alpha = 1) { super(); }
  forward(x: Tensor) { return elu(x, this.alpha); }
}
export class SELU extends Module { forward(x: Tensor) { return selu(x); } }
export class SiLU extends Module { forward(x: Tensor) { return silu(x); } }
export class Softplus extends Module {
  constructor(readonly beta = 1, readonly threshold = 20) { super(); }
  forward(x: Tensor) { return softplus(x, { beta: this.beta, threshold: this.threshold }); }
}
export class Mish extends Module { forward(x: Tensor) { return mish(x); } }
export class Hardtanh extends Module {
  constructor(readonly minVal = -1, readonly maxVal = 1) { super(); }
  forward(x: Tensor) { return hardtanh(x, this.minVal, this.maxVal); }
}
export class LogSigmoid extends Module { forward(x: Tensor) { return logSigmoid(x); } }

registerOwnModules(LeakyReLU, ELU, SELU, SiLU, Softplus, Mish, Hardtanh, LogSigmoid);
