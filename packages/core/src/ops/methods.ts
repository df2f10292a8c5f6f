/**
 * Fluent methods on Tensor (`x.matmul(w).add(b).relu()`), each a one-line
 * forward to the op function, so every op still lives in exactly one place.
 */
import { Tensor } from "../tensor/tensor.js";
import type { TensorLike } from "./op.js";
import * as E from "./elementwise.js";
import * as M from "./matmul.js";
import * as R from "./reduce.js";
import * as S from "./shape.js";
import * as SM from "./softmax.js";
import * as I from "./indexing.js";

declare module "../tensor/tensor.js" {
  interface Tensor {
    add(other: TensorLike): Tensor;
    sub(other: TensorLike): Tensor;
    mul(other: TensorLike): Tensor;
    div(other: TensorLike): Tensor;
    neg(): Tensor;
    pow(p: number): Tensor;
    exp(): Tensor;
    log(): Tensor;
    sqrt(): Tensor;
    abs(): Tensor;
    relu(): Tensor;
    sigmoid(): Tensor;
    tanh(): Tensor;
    gelu(): Tensor;
    clamp(min?: number, max?: number): Tensor;
    matmul(other: Tensor): Tensor;
    sum(axis?: number | readonly number[], opts?: R.ReduceOptions): Tensor;
    mean(axis?: number | readonly number[], opts?: R.ReduceOptions): Tensor;
    max(axis?: number, opts?: R.ReduceOptions): Tensor;
    argmax(axis?: number): Tensor;
    reshape(shape: readonly number[]): Tensor;
    view(shape: readonly number[]): Tensor;
    flatten(startDim?: number, endDim?: number): Tensor;
    unsqueeze(axis: number): Tensor;
    squeeze(axis?: number): Tensor;
    permute(perm: readonly number[]): Tensor;
    transpose(dim0?: number, dim1?: number): Tensor;
    slice(axis: number, start: number, end?: number): Tensor;
    split(sizes: number | readonly number[], axis?: number): Tensor[];
    softmax(axis?: number): Tensor;
    logSoftmax(axis?: number): Tensor;
    maskedFill(mask: Tensor, value: number): Tensor;
  }
}

const P = Tensor.prototype;
P.add = function (o) { return E.add(this, o); };
P.sub = function (o) { return E.sub(this, o); };
P.mul = function (o) { return E.mul(this, o); };
P.div = function (o) { return E.div(this, o); };
P.neg = function () { return E.neg(this); };
P.pow = function (p) { return E.pow(this, p); };
P.exp = function () { return E.exp(this); };
P.log = function () { return E.log(this); };
P.sqrt = function () { return E.sqrt(this); };
P.abs = function () { return E.abs(this); };
P.relu = function () { return E.relu(this); };
P.sigmoid = function () { return E.sigmoid(this); };
P.tanh = function () { return E.tanh(this); };
P.gelu = function () { return E.gelu(this); };
P.clamp = function (lo, hi) { return E.clamp(this, lo, hi); };
P.matmul = function (o) { return M.matmul(this, o); };
P.sum = function (a, o) { return R.sum(this, a, o); };
P.mean = function (a, o) { return R.mean(this, a, o); };
P.max = function (a, o) { return R.max(this, a, o); };
P.argmax = function (a) { return R.argmax(this, a); };
P.reshape = function (s) { return S.reshape(this, s); };
P.view = function (s) { return S.reshape(this, s); };
P.flatten = function (s, e) { return S.flatten(this, s, e); };
P.unsqueeze = function (a) { return S.unsqueeze(this, a); };
P.squeeze = function (a) { return S.squeeze(this, a); };
P.permute = function (p) { return S.permute(this, p); };
P.transpose = function (a, b) { return S.transpose(this, a, b); };
P.slice = function (a, s, e) { return S.slice(this, a, s, e); };
P.split = function (s, a) { return S.split(this, s, a); };
P.softmax = function (a) { return SM.softmax(this, a); };
P.logSoftmax = function (a) { return SM.logSoftmax(this, a); };
P.maskedFill = function (m, v) { return I.maskedFill(this, m, v); };
