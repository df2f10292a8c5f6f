import type { Kernels } from "../kernels.js";
import { gemmStridedBatchedVia, jsGemm } from "./gemm.js";
import { addRowVector, binary, permute, sumRows, unary, unaryBackward } from "./elementwise.js";
import { maxAxis, sumAxis } from "./reduce.js";
import { crossEntropy, layerNorm, layerNormBackward, logSoftmax, logSoftmaxBackward, softmax, softmaxBackward } from "./nn.js";

/** The reference backend: always available, pure TypeScript. */
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
};
