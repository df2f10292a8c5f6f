/** `F.*`: the functional forms of layers and losses (PyTorch's torch.nn.functional). */
export { crossEntropy, nllLoss, mseLoss, l1Loss, binaryCrossEntropyWithLogits, binaryCrossEntropy } from "../ops/loss.js";
export { linear } from "../ops/matmul.js";
export { relu, sigmoid, tanh, gelu } from "../ops/elementwise.js";
export { softmax, logSoftmax } from "../ops/softmax.js";
export { dropout, embedding } from "../ops/indexing.js";
export { layerNorm } from "../ops/layernorm.js";
