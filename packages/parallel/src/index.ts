/** @chainrule/parallel: data-parallel training over worker threads and shared memory (one worker: inline, the same code). */
export {
  DataParallel, maxWorkersFor, optimizerStateBuffers, type Batch, type LrSpec, type StepOptions, type StepOutcome, type StepStats, type StepInfo, type EpochInfo,
  type FitOptions, type FitResult, type EvalSummary, type DataParallelState,
} from "./data-parallel.js";
export { shardOffsets, chunkOffsets } from "./layout.js";
export { ParallelError, ParallelStepError, LayoutMismatchError, type Phase } from "./errors.js";
export { mlp, MODELS, type MlpOptions } from "./models.js";
export { buildModel, instantiate, importExport, moduleHref } from "./spec.js";
export { type Communicator, mpiWorld, mpiLibrary, underMpirun, abortMpi, finalizeMpi } from "./mpi.js";
export type { DataParallelOptions, GradientCompression, ModelSpec, LossSpec, OptimizerSpec, OptimizerHyper, ParamGroupSpec } from "./types.js";
export { simdAvailable } from "@chainrule/core";
