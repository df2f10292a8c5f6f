/**
 * Elementwise ops written as one forward loop and one backward loop each, side by side:
 * activations (leakyRelu, elu, selu, silu, softplus, mish, hardtanh, logSigmoid), math
 * (sin, cos, log1p, expm1, rsqrt, reciprocal), the piecewise-constant sign/floor/ceil/round
 * (gradient 0, as PyTorch's), and the broadcasting maximum, minimum and tensor-exponent pow.
 */
import { ArgumentError } from "../errors.js";
import { Tensor } from "../tensor/tensor.js";
import { broadcastShapes, broadcastStrides, sizeOf } from "../tensor/shape.js";
import { gradBuffer } from "../autograd/engine.js";
import { outputBuffer } from "../tensor/arena.js";
import { type TensorLike, asTensor, result, sumToShape } from "./op.js";
import { checkOptions } from "../options.js";

/** out[i] = f(x[i]); dx[i] = g[i]·f'(x[i]) from x and y = f(x). */
function pointwise(
  op: string, x: Tensor,
  forward: (out: Float32Array, x: Float32Array) => void,
  backward: (dx: Float32Array, g: Float32Array, x: Float32Array, y: Float32Array) => void,
): Tensor {
  const out = outputBuffer(x.size);
  forward(out, x.data);
  return result(op, out, x.shape, [x], (g) => {
    const dx = gradBuffer(g.length);
    backward(dx, g, x.data, out);
    return [dx];
  });
}

function checkNumber(op: string, name: string, v: number): void {
  if (typeof v !== "number" || Number.isNaN(v)) throw new ArgumentError(`${op}: ${name} must be a number, got ${v}`);
}

const sigmoidOf = (v: number) => 1 / (1 + Math.exp(-v));
/** log(1 + exp(v)) without overflow. */
const softplusOf = (v: number) => Math.max(v, 0) + Math.log1p(Math.exp(-Math.abs(v)));

// ---- activations -------------------------------------------------------------------------

/** x where x > 0, else negativeSlope·x. */
export function leakyRelu(x: Tensor, negativeSlope = 0.01): Tensor {
  checkNumber("leakyRelu", "negativeSlope", negativeSlope);
  const s = negativeSlope;
  return pointwise("leakyRelu", x,
    (o, a) => { for (let i = 0; i < a.length; i++) o[i] = a[i] > 0 ? a[i] : a[i] * s; },
    (d, g, a) => { for (let i = 0; i < a.length; i++) d[i] = a[i] > 0 ? g[i] : g[i] * s; });
}

/** x where x > 0, else alpha·(exp(x) - 1). */
export function elu(x: Tensor, alpha = 1): Tensor {
  checkNumber("elu", "alpha", alpha);
  return pointwise("elu", x,
    (o, a) => { for (let i = 0; i < a.length; i++) o[i] = a[i] > 0 ? a[i] : alpha * Math.expm1(a[i]); },
    (d, g, a) => { for (let i = 0; i < a.length; i++) d[i] = a[i] > 0 ? g[i] : g[i] * alpha * Math.exp(a[i]); });
}

const SELU_ALPHA = 1.6732632423543772;
const SELU_SCALE = 1.0507009873554805;

/** scale·elu(x, alpha) with the self-normalising constants. */
export function selu(x: Tensor): Tensor {
  return pointwise("selu", x,
    (o, a) => { for (let i = 0; i < a.length; i++) o[i] = SELU_SCALE * (a[i] > 0 ? a[i] : SELU_ALPHA * Math.expm1(a[i])); },
    (d, g, a) => { for (let i = 0; i < a.length; i++) d[i] = g[i] * SELU_SCALE * (a[i] > 0 ? 1 : SELU_ALPHA * Math.exp(a[i])); });
}

/** x·σ(x) (swish). */
export function silu(x: Tensor): Tensor {
  return pointwise("silu", x,
    (o, a) => { for (let i = 0; i < a.length; i++) o[i] = a[i] * sigmoidOf(a[i]); },
    (d, g, a) => { for (let i = 0; i < a.length; i++) { const s = sigmoidOf(a[i]); d[i] = g[i] * s * (1 + a[i] * (1 - s)); } });
}

/** log(1 + exp(beta·x)) / beta, and x itself where beta·x > threshold (PyTorch's). */
export function softplus(x: Tensor, opts: { beta?: number; threshold?: number } = {}): Tensor {
  const beta = opts.beta ?? 1, threshold = opts.threshold ?? 20;
  checkOptions("softplus", opts, ["beta", "threshold"]);
  checkNumber("softplus", "beta", beta);
  checkNumber("softplus", "threshold", threshold);
  return pointwise("softplus", x,
    (o, a) => { for (let i = 0; i < a.length; i++) { const z = a[i] * beta; o[i] = z > threshold ? a[i] : softplusOf(z) / beta; } },
    (d, g, a) => { for (let i = 0; i < a.length; i++) { const z = a[i] * beta; d[i] = z > threshold ? g[i] : g[i] * sigmoidOf(z); } });
}

/** x·tanh(softplus(x)). */
export function mish(x: Tensor): Tensor {
  return pointwise("mish", x,
    (o, a) => { for (let i = 0; i < a.length; i++) o[i] = a[i] * Math.tanh(softplusOf(a[i])); },
    (d, g, a) => {
      for (let i = 0; i < a.length; i++) {
        const t = Math.tanh(softplusOf(a[i]));
        d[i] = g[i] * (t + a[i] * (1 - t * t) * sigmoidOf(a[i]));
      }
    });
}

/** Clamps into [min, max]; the gradient passes strictly inside (PyTorch's hardtanh). */
export function hardtanh(x: Tensor, min = -1, max = 1): Tensor {
  checkNumber("hardtanh", "min", min);
  checkNumber("hardtanh", "max", max);
  if (min > max) throw new ArgumentError(`hardtanh: min ${min} is greater than max ${max}`);
  return pointwise("hardtanh", x,
    (o, a) => { for (let i = 0; i < a.length; i++) o[i] = a[i] < min ? min : a[i] > max ? max : a[i]; },
    (d, g, a) => { for (let i = 0; i < a.length; i++) d[i] = a[i] > min && a[i] < max ? g[i] : 0; });
}

/** log σ(x) = -softplus(-x), stable for large |x|. */
export function logSigmoid(x: Tensor): Tensor {
  return pointwise("logSigmoid", x,
    (o, a) => { for (let i = 0; i < a.length; i++) o[i] = -softplusOf(-a[i]); },
    (d, g, a) => { for (let i = 0; i < a.length; i++) d[i] = g[i] * sigmoidOf(-a[i]); });
}

// ---- math ------------------------------------------------------------------------------

export const sin = (x: Tensor) => pointwise("sin", x,
  (o, a) => { for (let i = 0; i < a.length; i++) o[i] = Math.sin(a[i]); },
  (d, g, a) => { for (let i = 0; i < a.length; i++) d[i] = g[i] * Math.cos(a[i]); });

export const cos = (x: Tensor) => pointwise("cos", x,
  (o, a) => { for (let i = 0; i < a.length; i++) o[i] = Math.cos(a[i]); },
  (d, g, a) => { for (let i = 0; i < a.length; i++) d[i] = -g[i] * Math.sin(a[i]); });

/** log(1 + x), accurate near 0. */
export const log1p = (x: Tensor) => pointwise("log1p", x,
  (o, a) => { for (let i = 0; i < a.length; i++) o[i] = Math.log1p(a[i]); },
  (d, g, a) => { for (let i = 0; i < a.length; i++) d[i] = g[i] / (1 + a[i]); });

/** exp(x) - 1, accurate near 0. */
export const expm1 = (x: Tensor) => pointwise("expm1", x,
  (o, a) => { for (let i = 0; i < a.length; i++) o[i] = Math.expm1(a[i]); },
  (d, g, _a, y) => { for (let i = 0; i < y.length; i++) d[i] = g[i] * (y[i] + 1); });

/** 1 / √x. */
export const rsqrt = (x: Tensor) => pointwise("rsqrt", x,
  (o, a) => { for (let i = 0; i < a.length; i++) o[i] = 1 / Math.sqrt(a[i]); },
  (d, g, a, y) => { for (let i = 0; i < a.length; i++) d[i] = -0.5 * g[i] * y[i] / a[i]; });

/** 1 / x. */
export const reciprocal = (x: Tensor) => pointwise("reciprocal", x,
  (o, a) => { for (let i = 0; i < a.length; i++) o[i] = 1 / a[i]; },
  (d, g, _a, y) => { for (let i = 0; i < y.length; i++) d[i] = -g[i] * y[i] * y[i]; });

/** A piecewise-constant op: its gradient is 0 (PyTorch's for sign, floor, ceil and round). */
function stepwise(op: string, x: Tensor, f: (v: number) => number): Tensor {
  return pointwise(op, x,
    (o, a) => { for (let i = 0; i < a.length; i++) o[i] = f(a[i]); },
    (d) => d.fill(0));
}

/** -1, 0 or 1 (NaN stays NaN). */
export const sign = (x: Tensor) => stepwise("sign", x, Math.sign);
export const floor = (x: Tensor) => stepwise("floor", x, Math.floor);
export const ceil = (x: Tensor) => stepwise("ceil", x, Math.ceil);
/** Rounds half to even, as PyTorch (round(0.5) = 0, round(1.5) = 2). */
export const round = (x: Tensor) => stepwise("round", x, roundHalfEven);

function roundHalfEven(v: number): number {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

// ---- broadcasting binary ops ----------------------------------------------------------

/**
 * out = f(a, b) with numpy broadcasting; the backward gets both operands' partial
 * derivatives per output element (da, db: ∂out/∂a, ∂out/∂b) and sums them to the inputs' shapes.
 */
function broadcastBinary(
  op: string, x: TensorLike, y: TensorLike, f: (a: number, b: number) => number,
  partials: (a: number, b: number, out: number) => [number, number],
): Tensor {
  const a = asTensor(x), b = asTensor(y);
  const shape = broadcastShapes(a.shape, b.shape, op);
  const n = sizeOf(shape);
  const ai = new Int32Array(n), bi = new Int32Array(n); // source element of each output
  const aS = broadcastStrides(a.shape, shape), bS = broadcastStrides(b.shape, shape);
  const idx = new Array<number>(shape.length).fill(0);
  let ia = 0, ib = 0;
  for (let o = 0; o < n; o++) {
    ai[o] = ia;
    bi[o] = ib;
    for (let d = shape.length - 1; d >= 0; d--) {
      idx[d]++;
      ia += aS[d]; ib += bS[d];
      if (idx[d] < shape[d]) break;
      ia -= aS[d] * shape[d]; ib -= bS[d] * shape[d];
      idx[d] = 0;
    }
  }
  const out = new Float32Array(n);
  for (let o = 0; o < n; o++) out[o] = f(a.data[ai[o]], b.data[bi[o]]);
  return result(op, out, shape, [a, b], (g) => {
    const ga = new Float32Array(n), gb = new Float32Array(n);
    for (let o = 0; o < n; o++) {
      const [pa, pb] = partials(a.data[ai[o]], b.data[bi[o]], out[o]);
      ga[o] = g[o] * pa;
      gb[o] = g[o] * pb;
    }
    return [a.requiresGrad ? sumToShape(ga, shape, a.shape) : null, b.requiresGrad ? sumToShape(gb, shape, b.shape) : null];
  });
}

/** Elementwise maximum (NaN if either is NaN); ties split the gradient evenly, as PyTorch. */
export function maximum(x: TensorLike, y: TensorLike): Tensor {
  return broadcastBinary("maximum", x, y,
    (a, b) => (a !== a || b !== b ? NaN : a > b ? a : b),
    (a, b) => (a > b ? [1, 0] : a < b ? [0, 1] : [0.5, 0.5]));
}

/** Elementwise minimum (NaN if either is NaN); ties split the gradient evenly, as PyTorch. */
export function minimum(x: TensorLike, y: TensorLike): Tensor {
  return broadcastBinary("minimum", x, y,
    (a, b) => (a !== a || b !== b ? NaN : a < b ? a : b),
    (a, b) => (a < b ? [1, 0] : a > b ? [0, 1] : [0.5, 0.5]));
}

/**
 * x ** y with a tensor exponent (broadcast): ∂/∂x = y·x^(y-1) (0 where y = 0), ∂/∂y = x^y·log x
 * (0 where x = 0 and y ≥ 0, as PyTorch).
 */
export function powTensor(x: TensorLike, y: TensorLike): Tensor {
  return broadcastBinary("pow", x, y, Math.pow,
    (a, b, out) => [b === 0 ? 0 : b * Math.pow(a, b - 1), a === 0 && b >= 0 ? 0 : out * Math.log(a)]);
}
