import { Tensor } from "../tensor/tensor.js";
import { normAxis, sizeOf } from "../tensor/shape.js";
import { kernels } from "../kernels/kernels.js";
import { gradBuffer } from "../autograd/engine.js";
import { outputBuffer } from "../tensor/arena.js";
import { result } from "./op.js";
import { transpose } from "./shape.js";

function lastAxisOp(x: Tensor, axis: number, op: "softmax" | "logSoftmax"): Tensor {
  const a = normAxis(axis, x.ndim, op);
  if (a !== x.ndim - 1) return transpose(lastAxisOp(transpose(x, a, -1), -1, op), a, -1);
  const k = kernels();
  const n = x.shape[a] ?? 1;
  const rows = sizeOf(x.shape) / Math.max(n, 1);
  const out = outputBuffer(x.size);
  if (op === "softmax") k.softmax(out, x.data, rows, n);
  else k.logSoftmax(out, x.data, rows, n);
  return result(op, out, x.shape, [x], (g) => {
    const dx = gradBuffer(g.length);
    if (op === "softmax") k.softmaxBackward(dx, g, out, rows, n);
    else k.logSoftmaxBackward(dx, g, out, rows, n);
    return [dx];
  });
}

/** Softmax along `axis` (default last), computed stably (max subtracted). */
export const softmax = (x: Tensor, axis = -1) => lastAxisOp(x, axis, "softmax");
/** log(softmax(x)) through log-sum-exp. */
export const logSoftmax = (x: Tensor, axis = -1) => lastAxisOp(x, axis, "logSoftmax");
