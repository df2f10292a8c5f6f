/** @chainrule/parallel: data-parallel training over worker threads and shared memory. */
export {
  DataParallel, maxWorkersFor, optimizerStateBuffers, type Batch, type LrSpec, type StepOptions, type StepOutcome, type StepStats, type StepInfo, type EpochInfo,
  type FitOptions, type FitResult, type EvalSummary, type DataParallelState,
} from "./data-parallel.js";
export { createSharedDataset, shardOffsets, chunkOffsets } from "./layout.js";
export { ParallelError, ParallelStepError, LayoutMismatchError, type Phase } from "./errors.js";
export { mlp, MODELS, type MlpOptions } from "./models.js";
export type { DataParallelOptions, ModelSpec, LossSpec, OptimizerSpec, OptimizerHyper, ParamGroupSpec, SharedDataset } from "./types.js";
export { Evaluator } from "./evaluator.js";
export { simdAvailable } from "@chainrule/core";
