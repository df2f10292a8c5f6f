import type { Kernels } from "../kernels.js";
import { gemmStridedBatchedVia, jsGemm } from "./gemm.js";
import { accumulate, addRowVector, binary, mul, permute, sumRows, unary, unaryBackward } from "./elementwise.js";
import { maxAxis, sumAxis } from "./reduce.js";
import { crossEntropy, layerNorm, layerNormBackward, logSoftmax, logSoftmaxBackward, softmax, softmaxBackward } from "./nn.js";
import * as conv from "./conv.js";
import { geluInPlace, geluInPlaceWithGrad } from "./gelu.js";
import { causalAttentionBackwardVia, causalAttentionForwardVia, causalSoftmax, causalSoftmaxBackward } from "./attention.js";
import { adamUpdate, scaleInPlace, sgdUpdate, sumOfSquares } from "./optim.js";
import { arenaMemory } from "../simd/optim.js";

/**
 * The js backend, always available: TypeScript loops (the reference), with WebAssembly SIMD
 * (../simd) where it is faster and available: the GEMM, and many elementwise, image, attention
 * and optimizer kernels. Each such kernel runs its TypeScript loop where SIMD is off
 * (CHAINRULE_SIMD=0, setSimdEnabled(false)) or missing, or where the operands do not fit it.
 */
export const jsKernels: Kernels = {
  name: "js",
  gemm: jsGemm,
  gemmStridedBatched: gemmStridedBatchedVia(jsGemm),
  unary,
  unaryBackward,
  binary,
  sumAxis,
  maxAxis,
  softmax,
  softmaxBackward,
  logSoftmax,
  logSoftmaxBackward,
  permute,
  layerNorm,
  layerNormBackward,
  crossEntropy,
  addRowVector,
  sumRows,
  im2col: conv.im2col,
  col2im: conv.col2im,
  maxPool2d: conv.maxPool2d,
  maxPool2dBackward: conv.maxPool2dBackward,
  maxPool2x2Relu: conv.maxPool2x2Relu,
  maxPool2x2ReluBackward: conv.maxPool2x2ReluBackward,
  avgPool2d: conv.avgPool2d,
  avgPool2dBackward: conv.avgPool2dBackward,
  adaptiveAvgPool2d: conv.adaptiveAvgPool2d,
  adaptiveAvgPool2dBackward: conv.adaptiveAvgPool2dBackward,
  batchNormStats: conv.batchNormStats,
  batchNormApply: conv.batchNormApply,
  batchNormBackward: conv.batchNormBackward,
  batchNormMaxPoolRelu: conv.batchNormMaxPoolRelu,
  batchNormMaxPoolReluGradSums: conv.batchNormMaxPoolReluGradSums,
  batchNormMaxPoolReluGradInput: conv.batchNormMaxPoolReluGradInput,
  addChannelBias: conv.addChannelBias,
  sumChannels: conv.sumChannels,
  nchwToPadded: conv.nchwToPadded,
  paddedToNchw: conv.paddedToNchw,
  accumulate,
  mul,
  geluInPlace,
  geluInPlaceWithGrad,
  causalSoftmax,
  causalSoftmaxBackward,
  causalAttentionForward: causalAttentionForwardVia(jsGemm),
  causalAttentionBackward: causalAttentionBackwardVia(jsGemm),
  sgdUpdate,
  adamUpdate,
  sumOfSquares,
  scaleInPlace,
  arenaMemory,
};
