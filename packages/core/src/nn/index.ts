export { Module, Parameter, freeze, type StateDict, type LoadReport } from "./module.js";
export { Linear, Sequential, ModuleList, ReLU, Sigmoid, Tanh, GELU, Softmax, Identity, Dropout, Flatten, Embedding, LayerNorm } from "./layers.js";
export * as init from "./init.js";
export { flattenParameters, paramLayout, type FlatParameters, type ParamLayoutEntry } from "./flat.js";
