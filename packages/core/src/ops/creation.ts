import { ArgumentError } from "../errors.js";
import { Tensor } from "../tensor/tensor.js";
import { type Shape, checkShape, sizeOf } from "../tensor/shape.js";
import { defaultGenerator } from "../tensor/random.js";

export interface CreateOptions {
  requiresGrad?: boolean;
  /** Allocate on a SharedArrayBuffer, so worker threads can see it. */
  shared?: boolean;
}

export function allocate(n: number, shared = false): Float32Array {
  return shared ? new Float32Array(new SharedArrayBuffer(n * 4)) : new Float32Array(n);
}

type Nested = number | Nested[];

function inferShape(data: Nested): number[] {
  const shape: number[] = [];
  let cur: Nested = data;
  while (Array.isArray(cur)) {
    shape.push(cur.length);
    cur = cur[0] as Nested;
    if (cur === undefined) break;
  }
  return shape;
}

function flattenInto(data: Nested, shape: number[], dim: number, out: Float32Array, offset: { i: number }): void {
  if (dim === shape.length) {
    if (typeof data !== "number") throw new ArgumentError(`tensor: ragged nested array (expected a number at depth ${dim})`);
    out[offset.i++] = data;
    return;
  }
  if (!Array.isArray(data) || data.length !== shape[dim]) {
    throw new ArgumentError(`tensor: ragged nested array: expected ${shape[dim]} elements at depth ${dim}`);
  }
  for (const d of data) flattenInto(d, shape, dim + 1, out, offset);
}

/** `tensor(3)`, `tensor([[1, 2], [3, 4]])`, `tensor(float32Array, { shape: [2, 2] })`. */
export function tensor(data: Nested | Float32Array | ArrayLike<number>, opts: CreateOptions & { shape?: Shape } = {}): Tensor {
  let flat: Float32Array;
  let shape: number[];
  if (typeof data === "number") {
    flat = allocate(1, opts.shared);
    flat[0] = data;
    shape = [];
  } else if (Array.isArray(data)) {
    shape = inferShape(data as Nested);
    flat = allocate(sizeOf(shape), opts.shared);
    flattenInto(data as Nested, shape, 0, flat, { i: 0 });
  } else {
    const src = data as ArrayLike<number>;
    if (data instanceof Float32Array && !opts.shared) {
      flat = data; // no copy: the tensor shares the caller's array (like torch.from_numpy)
    } else {
      flat = allocate(src.length, opts.shared);
      for (let i = 0; i < src.length; i++) flat[i] = src[i];
    }
    shape = [src.length];
  }
  if (opts.shape) {
    shape = checkShape(opts.shape, "tensor");
    if (sizeOf(shape) !== flat.length) throw new ArgumentError(`tensor: ${flat.length} values do not fit shape [${shape.join(",")}]`);
  }
  return new Tensor(flat, shape, opts.requiresGrad ?? false);
}

export function full(shape: Shape, value: number, opts: CreateOptions = {}): Tensor {
  const s = checkShape(shape, "full");
  const data = allocate(sizeOf(s), opts.shared);
  if (value !== 0) data.fill(value);
  return new Tensor(data, s, opts.requiresGrad ?? false);
}

export const zeros = (shape: Shape, opts: CreateOptions = {}) => full(shape, 0, opts);
export const ones = (shape: Shape, opts: CreateOptions = {}) => full(shape, 1, opts);
export const zerosLike = (t: Tensor, opts: CreateOptions = {}) => full(t.shape, 0, opts);
export const onesLike = (t: Tensor, opts: CreateOptions = {}) => full(t.shape, 1, opts);

/** Uniform in [low, high) from the global seeded generator. */
export function rand(shape: Shape, opts: CreateOptions & { low?: number; high?: number } = {}): Tensor {
  const t = full(shape, 0, opts);
  const lo = opts.low ?? 0, hi = opts.high ?? 1;
  for (let i = 0; i < t.data.length; i++) t.data[i] = lo + (hi - lo) * defaultGenerator.random();
  return t;
}

/** Normal(mean, std) from the global seeded generator. */
export function randn(shape: Shape, opts: CreateOptions & { mean?: number; std?: number } = {}): Tensor {
  const t = full(shape, 0, opts);
  const m = opts.mean ?? 0, s = opts.std ?? 1;
  for (let i = 0; i < t.data.length; i++) t.data[i] = m + s * defaultGenerator.normal();
  return t;
}

/** Integers in [low, high) as float values. */
export function randint(low: number, high: number, shape: Shape): Tensor {
  const t = full(shape, 0);
  for (let i = 0; i < t.data.length; i++) t.data[i] = low + defaultGenerator.randint(high - low);
  return t;
}

/** `arange(end)`, `arange(start, end, step?)`. */
export function arange(start: number, end?: number, step = 1): Tensor {
  if (end === undefined) { end = start; start = 0; }
  if (step === 0 || !Number.isFinite(step)) throw new ArgumentError(`arange: step must be a non-zero finite number, got ${step}`);
  const n = Math.max(0, Math.ceil((end - start) / step));
  const t = full([n], 0);
  for (let i = 0; i < n; i++) t.data[i] = start + i * step;
  return t;
}
