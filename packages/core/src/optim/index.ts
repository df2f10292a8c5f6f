export { Optimizer, clipGradNorm, type OptimizerState, type ParamGroup, type GroupSpec } from "./optimizer.js";
export { SGD } from "./sgd.js";
export { Adam, AdamW, type AdamOptions } from "./adam.js";
export { StepDecay, CosineWithWarmup, ConstantLr, type LrSchedule } from "./schedule.js";
export { sgdUpdate, adamUpdate, sumOfSquares, scaleInPlace, type SgdHyper, type AdamHyper } from "./rules.js";
