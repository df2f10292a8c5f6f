/**
 * The in-memory dataset every loader produces: inputs as one row-major
 * Float32Array (N × prod(inputShape)) and targets as Int32Array class indices or
 * Float32Array values. Both may live on a SharedArrayBuffer (`toShared`), so
 * worker threads read rows in place without copying.
 */
import { ArgumentError, fmtShape } from "../errors.js";
import { Generator } from "../tensor/random.js";

export class DataError extends ArgumentError {}

/** Targets: Int32Array class indices, or Float32Array values. */
export type Targets = Int32Array | Float32Array;

/** A dataset; `Dataset<Int32Array>` when its targets are known to be class indices (e.g. MNIST). */
export interface Dataset<T extends Targets = Targets> {
  /** N × prod(inputShape) floats, row-major. */
  inputs: Float32Array;
  /** Shape of one input row, e.g. [1, 28, 28] or [4]. */
  inputShape: number[];
  /** N × prod(targetShape): Int32Array of class indices, or Float32Array of regression targets. */
  targets: T;
  /** Shape of one target row: [] for one class index or one value. */
  targetShape: number[];
  /** Number of rows N. */
  length: number;
  /** For classification: classes are 0..numClasses-1. */
  numClasses?: number;
  /** Optional names of the classes (CSV string labels, Fashion-MNIST...). */
  classNames?: string[];
  /** Where it came from, for messages. */
  name?: string;
}

const prod = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

/** Builds a Dataset, checking that the arrays fit the shapes. */
export function makeDataset<T extends Targets>(d: Omit<Dataset<T>, "length" | "targetShape"> & { targetShape?: number[] }): Dataset<T> {
  const rowIn = prod(d.inputShape);
  const targetShape = d.targetShape ?? [];
  const rowOut = prod(targetShape);
  if (rowIn <= 0) throw new DataError(`${d.name ?? "dataset"}: input shape ${fmtShape(d.inputShape)} is empty`);
  if (d.inputs.length % rowIn !== 0) throw new DataError(`${d.name ?? "dataset"}: ${d.inputs.length} input values are not a whole number of rows of ${fmtShape(d.inputShape)}`);
  const length = d.inputs.length / rowIn;
  if (d.targets.length !== length * rowOut) {
    throw new DataError(`${d.name ?? "dataset"}: ${length} input rows but ${d.targets.length / rowOut} target rows`);
  }
  if (d.numClasses !== undefined && d.targets instanceof Int32Array) {
    for (let i = 0; i < d.targets.length; i++) {
      const t = d.targets[i];
      if (t < 0 || t >= d.numClasses) throw new DataError(`${d.name ?? "dataset"}: row ${i} has class ${t}, outside [0, ${d.numClasses})`);
    }
  }
  return { ...d, targetShape, length };
}

/** Size of one input row. */
export function rowSize(ds: Dataset): number {
  return prod(ds.inputShape);
}

/** True when inputs and targets are on SharedArrayBuffers. */
export function isShared(ds: Dataset): boolean {
  return ds.inputs.buffer instanceof SharedArrayBuffer && ds.targets.buffer instanceof SharedArrayBuffer;
}

/** A copy of the dataset on SharedArrayBuffers (the dataset itself when it already is). */
export function toShared<T extends Targets>(ds: Dataset<T>): Dataset<T> {
  if (isShared(ds)) return ds;
  const inputs = new Float32Array(new SharedArrayBuffer(ds.inputs.byteLength));
  inputs.set(ds.inputs);
  const targets = ds.targets instanceof Int32Array
    ? new Int32Array(new SharedArrayBuffer(ds.targets.byteLength))
    : new Float32Array(new SharedArrayBuffer(ds.targets.byteLength));
  targets.set(ds.targets);
  return { ...ds, inputs, targets: targets as T };
}

/** The rows `indices` (in that order), copied; on shared memory when `shared`. */
export function subset<T extends Targets>(ds: Dataset<T>, indices: ArrayLike<number>, opts: { shared?: boolean; name?: string } = {}): Dataset<T> {
  const rin = rowSize(ds);
  const rout = prod(ds.targetShape);
  const n = indices.length;
  const alloc = (bytes: number) => (opts.shared ? new SharedArrayBuffer(bytes) : new ArrayBuffer(bytes));
  const inputs = new Float32Array(alloc(n * rin * 4));
  const targets = ds.targets instanceof Int32Array ? new Int32Array(alloc(n * rout * 4)) : new Float32Array(alloc(n * rout * 4));
  for (let i = 0; i < n; i++) {
    const r = indices[i];
    if (!(r >= 0 && r < ds.length) || !Number.isInteger(r)) throw new DataError(`${ds.name ?? "dataset"}: row index ${r} out of range [0, ${ds.length})`);
    inputs.set(ds.inputs.subarray(r * rin, (r + 1) * rin), i * rin);
    targets.set(ds.targets.subarray(r * rout, (r + 1) * rout), i * rout);
  }
  return { ...ds, inputs, targets: targets as T, length: n, name: opts.name ?? ds.name };
}

export interface SplitOptions {
  /** Held-out rows: a fraction in (0, 1) or a count. */
  heldOut: number;
  /** Seed of the shuffle that decides the split (independent of the training seed). Default 0. */
  seed?: number;
  /** Keep only this many training rows (after the split). */
  limitTrain?: number;
  /** Keep only this many held-out rows. */
  limitHeldOut?: number;
  shared?: boolean;
}

/** A deterministic shuffled train / held-out split: the same seed gives the same rows. */
export function splitDataset<T extends Targets>(ds: Dataset<T>, opts: SplitOptions): { train: Dataset<T>; heldOut: Dataset<T> } {
  const nHeld = opts.heldOut < 1 ? Math.round(ds.length * opts.heldOut) : Math.floor(opts.heldOut);
  if (!(nHeld >= 1 && nHeld < ds.length)) {
    throw new DataError(`${ds.name ?? "dataset"}: held-out size ${opts.heldOut} leaves no rows to train on or none to evaluate (dataset has ${ds.length} rows)`);
  }
  const perm = new Generator(opts.seed ?? 0).permutation(ds.length);
  let trainIdx = perm.subarray(nHeld);
  let heldIdx = perm.subarray(0, nHeld);
  if (opts.limitTrain !== undefined) trainIdx = trainIdx.subarray(0, opts.limitTrain);
  if (opts.limitHeldOut !== undefined) heldIdx = heldIdx.subarray(0, opts.limitHeldOut);
  const base = ds.name ?? "dataset";
  return {
    train: subset(ds, trainIdx, { shared: opts.shared, name: `${base} (train)` }),
    heldOut: subset(ds, heldIdx, { shared: opts.shared, name: `${base} (held-out)` }),
  };
}

/** One input row as a Float32Array view. */
export function inputRow(ds: Dataset, i: number): Float32Array {
  const r = rowSize(ds);
  return ds.inputs.subarray(i * r, (i + 1) * r);
}
