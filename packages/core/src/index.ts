/** @chainrule/core: tensors, reverse-mode autodiff, ops, nn, losses, optimizers. */
import "./ops/methods.js";
import "./kernels/select.js";

export { Tensor } from "./tensor/tensor.js";
export { BufferArena } from "./tensor/arena.js";
export { type Shape, sizeOf, broadcastShapes } from "./tensor/shape.js";
export { Generator, manualSeed, getRngState, setRngState, defaultGenerator } from "./tensor/random.js";
export { noGrad, isGradEnabled, setGradEnabled, setAnomalyDetection, detectAnomaly } from "./autograd/engine.js";
export { ChainruleError, ShapeError, ArgumentError, AutogradError, AnomalyError } from "./errors.js";
export { tensor, zeros, ones, full, zerosLike, onesLike, rand, randn, randint, arange, type CreateOptions } from "./ops/creation.js";
export { add, sub, mul, div, neg, pow, exp, log, sqrt, abs, relu, sigmoid, tanh, gelu, clamp } from "./ops/elementwise.js";
export { matmul, linear } from "./ops/matmul.js";
export { sum, mean, max, argmax, min, argmin, prod, variance, variance as var, std, logsumexp, norm, type ReduceOptions, type VarianceOptions } from "./ops/reduce.js";
export { leakyRelu, elu, selu, silu, softplus, mish, hardtanh, logSigmoid, sin, cos, log1p, expm1, rsqrt, reciprocal, sign, floor, ceil, round, maximum, minimum } from "./ops/pointwise.js";
export { cumsum, sort, topk, type SortResult } from "./ops/sort.js";
export { gather, scatter, scatterAdd, indexSelect, oneHot } from "./ops/gather.js";
export { expand, repeat, flip, pad, tril, triu, type PadOptions } from "./ops/layout.js";
export { einsum } from "./ops/einsum.js";
export { reshape, view, flatten, unsqueeze, squeeze, permute, transpose, slice, concat, stack, split } from "./ops/shape.js";
export { softmax, logSoftmax } from "./ops/softmax.js";
export { embedding, where, maskedFill, dropout } from "./ops/indexing.js";
export { layerNorm } from "./ops/layernorm.js";
export { conv2d, maxPool2d, avgPool2d, adaptiveAvgPool2d, batchNorm2d, type Conv2dOptions, type Pool2dOptions, type AvgPool2dOptions, type BatchNorm2dOptions, type BatchNormSync, type Size2 } from "./ops/conv.js";
export {
  kernels, setKernels, countMacs, jsKernels, selectBackend, useBackend, backendReport, setSimdEnabled, simdEnabled, simdAvailable, encodeHalf, decodeHalf, type HalfFormat,
  type Kernels, type UnaryOp, type BinaryOp, type AdamScalars, type SgdScalars, type BackendName, type BackendReport,
} from "./kernels/index.js";
export * as nn from "./nn/index.js";
export * as F from "./nn/functional.js";
export * as optim from "./optim/index.js";
export * from "./io/safetensors.js";
export { writeFileAtomicSync, writeDirAtomicSync, fsyncDirSync } from "./io/atomic.js";
export { CHECKSUMS_FILE, writeChecksums, checksumMismatch } from "./io/checksums.js";
export { saveCheckpoint, loadCheckpoint, readCheckpoint, describeMismatch, CheckpointError, MODEL_FILE, STATE_FILE, type CheckpointState, type CheckpointContents, type SaveCheckpointOptions, type LoadCheckpointOptions, type StatefulOptimizer } from "./io/checkpoint.js";
export { causalAttention, type CausalAttentionOptions } from "./ops/attention.js";
export { GPT, GPTTransformer, Block, MLP, GPT_DEFAULTS, gptConfig, generate, nextTokenLogits, sampleToken, estimateLoss, tokenBatch, type GPTConfig, type GenerateOptions, type TokenBatch } from "./models/gpt.js";
export { KVCache, attendCached, type LayerKV } from "./models/kv-cache.js";
export { LlamaAttention, LlamaBlock, LlamaRMSNorm, SwiGLU } from "./models/llama.js";
export { gpt2StateDict, type Gpt2Config, type Gpt2Options, type NamedArrays } from "./models/gpt2-weights.js";
export { rotaryEmbedding, type RotaryOptions } from "./ops/rope.js";
export { CharTokenizer, TextBatchSampler, trainValSplit, loadCorpus, loadDefaultCorpus, shuffleLines, CORPORA, type CharTokenizerJSON, type TextBatch, type CorpusName } from "./data/text.js";
export { BpeTokenizer, type BpeTokenizerJSON } from "./data/bpe.js";
export { tokenizerFromJSON, type TextTokenizer, type TextTokenizerJSON } from "./data/tokenizer.js";
export { createCnn, createMnistCnn, mnistCnnDefaults, ImageClassifier, type CnnConfig } from "./models/cnn.js";
export { randomCrop, randomHorizontalFlip, augmentBatch, augmentRows, augmentSeed, type AugmentOptions, type RowAugmentOptions, type ImageBatchShape } from "./data/augment.js";
export { type Dataset, DataError, makeDataset, subset, splitDataset, toShared, isShared, rowSize, inputRow, type SplitOptions } from "./data/dataset.js";
export { loadEmbeddedMnist, embeddedMnistSplit, resolveMnistModule, type MnistModule, type MnistOptions, type MnistSplitOptions } from "./data/mnist.js";
export { readIdx, decodeIdx, encodeIdx, loadIdxDataset, loadIdxDirectory, FASHION_MNIST_CLASSES, type IdxArray } from "./data/idx.js";
export { loadCsv, parseCsv, type CsvOptions, type CsvDataset } from "./data/csv.js";
