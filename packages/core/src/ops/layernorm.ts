import { ShapeError, fmtShape } from "../errors.js";
import { Tensor } from "../tensor/tensor.js";
import { sizeOf } from "../tensor/shape.js";
import { kernels } from "../kernels/kernels.js";
import { gradBuffer, leafGradAddSink } from "../autograd/engine.js";
import { outputBuffer } from "../tensor/arena.js";
import { result } from "./op.js";

/** Layer normalisation over the trailing dims `normalizedShape`, with optional affine weight and bias. */
export function layerNorm(x: Tensor, normalizedShape: readonly number[], weight: Tensor | null = null, bias: Tensor | null = null, eps = 1e-5): Tensor {
  const nd = normalizedShape.length;
  if (nd === 0 || nd > x.ndim || normalizedShape.some((d, i) => x.shape[x.ndim - nd + i] !== d)) {
    throw new ShapeError(`layerNorm: input ${fmtShape(x.shape)} does not end with normalized shape ${fmtShape(normalizedShape)}`);
  }
  const n = sizeOf(normalizedShape);
  for (const [name, t] of [["weight", weight], ["bias", bias]] as const) {
    if (t && t.size !== n) throw new ShapeError(`layerNorm: ${name} ${fmtShape(t.shape)} does not match normalized shape ${fmtShape(normalizedShape)}`);
  }
  const k = kernels();
  const rows = x.size / n;
  const out = outputBuffer(x.size); // every element written by the kernel
  const mean = new Float32Array(rows), rstd = new Float32Array(rows);
  k.layerNorm(out, mean, rstd, x.data, weight?.data ?? null, bias?.data ?? null, rows, n, eps);
  const inputs = [x];
  if (weight) inputs.push(weight);
  if (bias) inputs.push(bias);
  return result("layerNorm", out, x.shape, inputs, (g) => {
    const dx = x.requiresGrad ? gradBuffer(x.size) : null; // every element written by the kernel
    // dweight / dbias are added straight into a leaf's .grad (leafGradAddSink), else into fresh zeroed arrays.
    const wSink = weight?.requiresGrad ? leafGradAddSink(weight) : null, bSink = bias?.requiresGrad ? leafGradAddSink(bias) : null;
    const dw = weight?.requiresGrad ? wSink ?? new Float32Array(n) : null;
    const db = bias?.requiresGrad ? bSink ?? new Float32Array(n) : null;
    k.layerNormBackward(dx, dw, db, g, x.data, mean, rstd, weight?.data ?? null, rows, n);
    const grads: (Float32Array | null)[] = [dx];
    if (weight) grads.push(wSink ? null : dw);
    if (bias) grads.push(bSink ? null : db);
    return grads;
  });
}
