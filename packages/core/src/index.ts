/** @chainrule/core: tensors, reverse-mode autodiff, ops, nn, losses, optimizers. */
import "./ops/methods.js";
import "./kernels/select.js";

export { Tensor } from "./tensor/tensor.js";
export { type Shape, sizeOf, broadcastShapes } from "./tensor/shape.js";
export { Generator, manualSeed, getRngState, setRngState, defaultGenerator } from "./tensor/random.js";
export { noGrad, isGradEnabled, setGradEnabled, setAnomalyDetection, detectAnomaly } from "./autograd/engine.js";
export { ChainruleError, ShapeError, ArgumentError, AutogradError, AnomalyError } from "./errors.js";
export { tensor, zeros, ones, full, zerosLike, onesLike, rand, randn, randint, arange, type CreateOptions } from "./ops/creation.js";
export { add, sub, mul, div, neg, pow, exp, log, sqrt, abs, relu, sigmoid, tanh, gelu, clamp } from "./ops/elementwise.js";
export { matmul, linear } from "./ops/matmul.js";
export { sum, mean, max, argmax } from "./ops/reduce.js";
export { reshape, view, flatten, unsqueeze, squeeze, permute, transpose, slice, concat, stack, split } from "./ops/shape.js";
export { softmax, logSoftmax } from "./ops/softmax.js";
export { embedding, where, maskedFill, dropout } from "./ops/indexing.js";
export { layerNorm } from "./ops/layernorm.js";
export { conv2d, maxPool2d, avgPool2d, adaptiveAvgPool2d, batchNorm2d, type Conv2dOptions, type Pool2dOptions, type AvgPool2dOptions, type BatchNorm2dOptions, type Size2 } from "./ops/conv.js";
export { kernels, setKernels, type Kernels, type UnaryOp, type BinaryOp } from "./kernels/kernels.js";
export { jsKernels } from "./kernels/js/index.js";
export { selectBackend, useBackend, backendReport, type BackendName, type BackendReport } from "./kernels/select.js";
export * as nn from "./nn/index.js";
export * as F from "./nn/functional.js";
export * as optim from "./optim/index.js";
export * from "./io/safetensors.js";
export { writeFileAtomicSync, fsyncDirSync } from "./io/atomic.js";
export { saveCheckpoint, loadCheckpoint, readCheckpoint, describeMismatch, packNumbers, unpackNumbers, CheckpointError, MODEL_FILE, STATE_FILE, type CheckpointState, type CheckpointContents, type SaveCheckpointOptions, type LoadCheckpointOptions, type StatefulOptimizer } from "./io/checkpoint.js";
