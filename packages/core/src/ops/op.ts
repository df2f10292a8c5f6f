import { Tensor } from "../tensor/tensor.js";
import { type GradFn, checkFinite, isAnomalyDetectionEnabled, isGradEnabled } from "../autograd/engine.js";
import { type Shape, sizeOf } from "../tensor/shape.js";
import { kernels } from "../kernels/kernels.js";

export type TensorLike = Tensor | number;

/** Wraps a number as a 0-d tensor so binary ops accept scalars. */
export function asTensor(x: TensorLike): Tensor {
  return x instanceof Tensor ? x : new Tensor(new Float32Array([x]), []);
}

/**
 * Builds an op's output. When grad is enabled and an input needs a gradient,
 * attaches the node the engine will call; otherwise the backward closure is dropped
 * (tensors that need no gradient cost no backward work).
 */
export function result(
  op: string, data: Float32Array, shape: Shape, inputs: Tensor[],
  backward: (g: Float32Array) => (Float32Array | null)[],
): Tensor {
  if (isAnomalyDetectionEnabled()) checkFinite(op, "output", data);
  const needsGrad = isGradEnabled() && inputs.some((t) => t.requiresGrad);
  const out = new Tensor(data, shape, needsGrad);
  if (needsGrad) {
    const fn: GradFn = { op, inputs, backward };
    out.gradFn = fn;
  }
  return out;
}

/** Sums a broadcast gradient of shape `gShape` back down to `shape` (the one broadcasting helper). */
export function sumToShape(g: Float32Array, gShape: Shape, shape: Shape): Float32Array {
  if (g.length === sizeOf(shape)) return g;
  const nd = gShape.length;
  const padded = new Array<number>(nd - shape.length).fill(1).concat(shape);
  // Reduce one broadcast axis at a time, from the last, viewing as (outer, n, inner).
  let cur = g;
  let curShape = [...gShape];
  for (let d = nd - 1; d >= 0; d--) {
    if (padded[d] === 1 && curShape[d] !== 1) {
      const outer = sizeOf(curShape.slice(0, d));
      const n = curShape[d];
      const inner = sizeOf(curShape.slice(d + 1));
      const next = new Float32Array(outer * inner);
      kernels().sumAxis(next, cur, outer, n, inner);
      cur = next;
      curShape[d] = 1;
    }
  }
  return cur;
}

