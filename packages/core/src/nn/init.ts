import type { Tensor } from "../tensor/tensor.js";
import { defaultGenerator } from "../tensor/random.js";

/** In-place initialisers (PyTorch's nn.init), drawing from the global seeded generator. */
export function uniform_(t: Tensor, low: number, high: number): Tensor {
  for (let i = 0; i < t.data.length; i++) t.data[i] = low + (high - low) * defaultGenerator.random();
  return t;
}

export function normal_(t: Tensor, mean = 0, std = 1): Tensor {
  for (let i = 0; i < t.data.length; i++) t.data[i] = mean + std * defaultGenerator.normal();
  return t;
}

export function constant_(t: Tensor, v: number): Tensor {
  t.data.fill(v);
  return t;
}

/** fan_in of a weight shaped (out, in, ...kernel). */
export function fanIn(shape: readonly number[]): number {
  let receptive = 1;
  for (let i = 2; i < shape.length; i++) receptive *= shape[i];
  return (shape[1] ?? 1) * receptive;
}

/** kaiming_uniform_ with a = sqrt(5): PyTorch's default for Linear and Conv weights, bound 1/sqrt(fan_in). */
export function kaimingUniformDefault_(t: Tensor): Tensor {
  const bound = 1 / Math.sqrt(fanIn(t.shape));
  return uniform_(t, -bound, bound);
}

export function xavierUniform_(t: Tensor, gain = 1): Tensor {
  const fi = fanIn(t.shape);
  const fo = t.shape[0] * (fi / (t.shape[1] ?? 1));
  const a = gain * Math.sqrt(6 / (fi + fo));
  return uniform_(t, -a, a);
}
