import { ArgumentError } from "../errors.js";
import { Tensor } from "../tensor/tensor.js";
import type { Module, Parameter } from "./module.js";

/** Where each parameter sits in the flat buffer. */
export interface ParamLayoutEntry {
  name: string;
  shape: number[];
  offset: number; // in floats
  size: number;
}

export interface FlatParameters {
  /** All parameter values, one contiguous range; each parameter's `.data` is a view into it. */
  data: Float32Array;
  /** All gradients, same layout; each parameter's `.grad.data` is a view into it. */
  grad: Float32Array;
  layout: ParamLayoutEntry[];
}

export function paramLayout(model: Module): ParamLayoutEntry[] {
  let offset = 0;
  return model.namedParameters().map(([name, p]) => {
    const e = { name, shape: p.shape.slice(), offset, size: p.size };
    offset += p.size;
    return e;
  });
}

/**
 * Packs every parameter of `model` into one flat Float32Array (on a
 * SharedArrayBuffer when `shared`), and likewise the gradients (llm.c's
 * malloc_and_point_parameters). Current values are copied in; afterwards each
 * parameter is a view, so zeroing, all-reduce and optimizers run over one range.
 * Pass existing buffers to bind to them without copying (workers do this).
 */
export function flattenParameters(
  model: Module,
  opts: { shared?: boolean; dataBuffer?: Float32Array; gradBuffer?: Float32Array; copyValues?: boolean } = {},
): FlatParameters {
  const layout = paramLayout(model);
  const total = layout.reduce((n, e) => n + e.size, 0);
  const alloc = (n: number) => (opts.shared ? new Float32Array(new SharedArrayBuffer(n * 4)) : new Float32Array(n));
  const data = opts.dataBuffer ?? alloc(total);
  const grad = opts.gradBuffer ?? alloc(total);
  if (data.length !== total || grad.length !== total) {
    throw new ArgumentError(`flattenParameters: model has ${total} parameters but the buffers hold ${data.length} (values) and ${grad.length} (gradients)`);
  }
  const copy = opts.copyValues ?? opts.dataBuffer === undefined;
  const params = model.namedParameters().map(([, p]) => p);
  params.forEach((p: Parameter, i) => {
    const { offset, size } = layout[i];
    const view = data.subarray(offset, offset + size);
    if (copy) view.set(p.data);
    p.data = view;
    p.grad = new Tensor(grad.subarray(offset, offset + size), p.shape);
  });
  return { data, grad, layout };
}
