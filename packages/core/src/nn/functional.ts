/** `F.*`: the functional forms of layers and losses (PyTorch's torch.nn.functional). */
export {
  crossEntropy, nllLoss, mseLoss, l1Loss, binaryCrossEntropyWithLogits, binaryCrossEntropy, huberLoss, smoothL1Loss, klDiv,
  type CrossEntropyOptions, type NllLossOptions, type BceWithLogitsOptions, type Reduction,
} from "../ops/loss.js";
export { leakyRelu, elu, selu, silu, softplus, mish, hardtanh, logSigmoid } from "../ops/pointwise.js";
export { pad, type PadOptions } from "../ops/layout.js";
export { oneHot } from "../ops/gather.js";
export { linear } from "../ops/matmul.js";
export { relu, sigmoid, tanh, gelu } from "../ops/elementwise.js";
export { softmax, logSoftmax } from "../ops/softmax.js";
export { dropout, dropout2d, embedding } from "../ops/indexing.js";
export { conv1d, convTranspose2d, convTranspose1d, type Conv1dOptions, type ConvTranspose2dOptions } from "../ops/conv-transpose.js";
export { conv2d, maxPool2d, avgPool2d, adaptiveAvgPool2d, batchNorm2d } from "../ops/conv.js";
export { batchNorm1d, groupNorm, rmsNorm } from "../ops/normalization.js";
export { scaledDotProductAttention, type ScaledDotProductAttentionOptions } from "../ops/sdpa.js";
export { layerNorm } from "../ops/layernorm.js";
export { rotaryEmbedding } from "../ops/rope.js";
