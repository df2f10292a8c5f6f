import { ArgumentError } from "../errors.js";
import { Tensor } from "../tensor/tensor.js";
import { broadcastShapes, broadcastStrides, sizeOf } from "../tensor/shape.js";
import { type BinaryOp, type UnaryOp, kernels } from "../kernels/kernels.js";
import { type TensorLike, asTensor, result, sumToShape } from "./op.js";
import { gradBuffer, releaseGradBuffer } from "../autograd/engine.js";
import { outputBuffer } from "../tensor/arena.js";
import { powTensor } from "./pointwise.js";

// ---- binary ops with numpy broadcasting -------------------------------------------------

function binaryForward(op: BinaryOp, a: Tensor, b: Tensor): { data: Float32Array; shape: number[] } {
  const shape = broadcastShapes(a.shape, b.shape, op);
  const data = outputBuffer(sizeOf(shape));
  kernels().binary(op, data, shape, a.data, broadcastStrides(a.shape, shape), b.data, broadcastStrides(b.shape, shape));
  return { data, shape };
}

export function add(x: TensorLike, y: TensorLike): Tensor {
  const a = asTensor(x), b = asTensor(y);
  const { data, shape } = binaryForward("add", a, b);
  return result("add", data, shape, [a, b], (g) => [
    a.requiresGrad ? sumToShape(g, shape, a.shape) : null,
    b.requiresGrad ? sumToShape(g, shape, b.shape) : null,
  ]);
}

export function sub(x: TensorLike, y: TensorLike): Tensor {
  const a = asTensor(x), b = asTensor(y);
  const { data, shape } = binaryForward("sub", a, b);
  return result("sub", data, shape, [a, b], (g) => {
    let gb: Float32Array | null = null;
    if (b.requiresGrad) {
      const neg = gradBuffer(g.length);
      for (let i = 0; i < g.length; i++) neg[i] = -g[i];
      gb = sumToShape(neg, shape, b.shape);
    }
    return [a.requiresGrad ? sumToShape(g, shape, a.shape) : null, gb];
  });
}

export function mul(x: TensorLike, y: TensorLike): Tensor {
  const a = asTensor(x), b = asTensor(y);
  const { data, shape } = binaryForward("mul", a, b);
  const k = kernels();
  return result("mul", data, shape, [a, b], (g) => {
    const tmp = (other: Tensor, to: readonly number[]) => {
      const o = gradBuffer(g.length); // fully written by the kernel
      k.binary("mul", o, shape, g, broadcastStrides(shape, shape), other.data, broadcastStrides(other.shape, shape));
      const r = sumToShape(o, shape, to);
      if (r.buffer !== o.buffer) releaseGradBuffer(o);
      return r;
    };
    return [
      a.requiresGrad ? tmp(b, a.shape) : null,
      b.requiresGrad ? tmp(a, b.shape) : null,
    ];
  });
}

export function div(x: TensorLike, y: TensorLike): Tensor {
  const a = asTensor(x), b = asTensor(y);
  const { data, shape } = binaryForward("div", a, b);
  const k = kernels();
  return result("div", data, shape, [a, b], (g) => {
    const full = broadcastStrides(shape, shape);
    let ga: Float32Array | null = null, gb: Float32Array | null = null;
    if (a.requiresGrad) {
      const o = gradBuffer(g.length);
      k.binary("div", o, shape, g, full, b.data, broadcastStrides(b.shape, shape)); // g / b
      ga = sumToShape(o, shape, a.shape);
    }
    if (b.requiresGrad) {
      // d(a/b)/db = -(a/b) / b = -out / b
      const o = gradBuffer(g.length);
      k.binary("div", o, shape, data, full, b.data, broadcastStrides(b.shape, shape));
      for (let i = 0; i < o.length; i++) o[i] = -o[i] * g[i];
      gb = sumToShape(o, shape, b.shape);
    }
    return [ga, gb];
  });
}

// ---- unary ops -----------------------------------------------------------------------

function unaryOp(op: UnaryOp, x: Tensor): Tensor {
  const k = kernels();
  const out = outputBuffer(x.data.length);
  k.unary(op, out, x.data);
  return result(op, out, x.shape, [x], (g) => {
    const dx = gradBuffer(g.length);
    k.unaryBackward(op, dx, g, x.data, out);
    return [dx];
  });
}

export const neg = (x: Tensor) => unaryOp("neg", x);
export const exp = (x: Tensor) => unaryOp("exp", x);
export const log = (x: Tensor) => unaryOp("log", x);
export const sqrt = (x: Tensor) => unaryOp("sqrt", x);
export const abs = (x: Tensor) => unaryOp("abs", x);
export const relu = (x: Tensor) => unaryOp("relu", x);
export const sigmoid = (x: Tensor) => unaryOp("sigmoid", x);
export const tanh = (x: Tensor) => unaryOp("tanh", x);
/** GELU; `approximate: "tanh"` selects the tanh form (GPT-2's), default is exact (erf), as in PyTorch. */
export const gelu = (x: Tensor, opts: { approximate?: "none" | "tanh" } = {}) =>
  unaryOp(opts.approximate === "tanh" ? "geluTanh" : "gelu", x);

/** x ** p for a scalar exponent p, or elementwise for a tensor exponent (broadcast). */
export function pow(x: Tensor, p: number | Tensor): Tensor {
  if (p instanceof Tensor) return powTensor(x, p);
  if (typeof p !== "number" || Number.isNaN(p)) throw new ArgumentError(`pow: exponent must be a number, got ${p}`);
  const out = outputBuffer(x.data.length);
  const xd = x.data;
  if (p === 2) for (let i = 0; i < xd.length; i++) out[i] = xd[i] * xd[i];
  else for (let i = 0; i < xd.length; i++) out[i] = Math.pow(xd[i], p);
  return result("pow", out, x.shape, [x], (g) => {
    const dx = gradBuffer(g.length);
    if (p === 0) dx.fill(0);
    if (p === 2) for (let i = 0; i < g.length; i++) dx[i] = 2 * xd[i] * g[i];
    else if (p !== 0) for (let i = 0; i < g.length; i++) dx[i] = p * Math.pow(xd[i], p - 1) * g[i]; // x^0 is constant: 0, not 0·∞ at x = 0
    return [dx];
  });
}

/** Clamps into [min, max]; the gradient passes where the input was inside. */
export function clamp(x: Tensor, min = -Infinity, max = Infinity): Tensor {
  const out = outputBuffer(x.data.length);
  const xd = x.data;
  for (let i = 0; i < xd.length; i++) out[i] = xd[i] < min ? min : xd[i] > max ? max : xd[i];
  return result("clamp", out, x.shape, [x], (g) => {
    const dx = gradBuffer(g.length);
    for (let i = 0; i < g.length; i++) dx[i] = xd[i] >= min && xd[i] <= max ? g[i] : 0;
    return [dx];
  });
}
