export { Module, Parameter, freeze, type StateDict, type LoadReport } from "./module.js";
export { Linear, Sequential, ModuleList, ReLU, Sigmoid, Tanh, GELU, Softmax, Identity, Dropout, Flatten, Embedding, LayerNorm } from "./layers.js";
export * as init from "./init.js";
export { flattenParameters, paramLayout, type FlatParameters, type ParamLayoutEntry } from "./flat.js";
export { Conv2d, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, BatchNorm2d, type Conv2dLayerOptions, type BatchNorm2dLayerOptions } from "./conv.js";
export { CausalSelfAttention, type CausalSelfAttentionOptions } from "./attention.js";
export { LoRALinear, applyLora, loraLayers, loraParameters, loraStateDict, loadLora, mergeLora, type LoraOptions, type ApplyLoraOptions } from "./lora.js";
export { quantizeInt8, dequantizeInt8, int8WeightNames, quantizedStateDict, dequantizeStateDict, SCALE_SUFFIX, type Int8Weight, type StateTensor } from "./quantize.js";
