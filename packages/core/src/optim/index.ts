export { Optimizer, clipGradNorm, clipGradValue, type OptimizerState, type ParamGroup, type GroupSpec } from "./optimizer.js";
export { SGD } from "./sgd.js";
export { Adam, AdamW, type AdamOptions } from "./adam.js";
export { RMSprop, Adagrad } from "./rmsprop.js";
export { StepDecay, CosineWithWarmup, ConstantLr, type LrSchedule } from "./schedule.js";
export { sgdUpdate, adamUpdate, amsgradUpdate, rmspropUpdate, adagradUpdate, sumOfSquares, scaleInPlace, type SgdHyper, type AdamHyper, type RmspropHyper, type AdagradHyper } from "./rules.js";
