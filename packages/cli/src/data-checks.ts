/**
 * Checks of loaded data, before any training: a NaN or Infinity in the inputs (float IDX images,
 * a CSV value beyond float32's range) is named by file and position at load, not found steps
 * later as a NaN loss; a class label so large that the output layer could not be allocated is
 * named by file and row instead of failing in an allocation.
 */
import { existsSync, readFileSync } from "node:fs";
import type { Dataset } from "@chainrule/core";
import { CliError } from "./errors.js";

/** More classes than this is a mislabelled file (or numeric targets meant for regression), not a classifier. */
export const MAX_CLASSES = 65_536;

function firstNonFinite(a: ArrayLike<number>): number {
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i])) return i;
  return -1;
}

/** Line numbers of a CSV file's data rows (rows are its non-blank, non-# lines, the header first when there is one). */
function csvDataLines(path: string, rows: number): number[] {
  const lines: number[] = [];
  readFileSync(path, "utf8").split(/\r?\n/).forEach((l, i) => {
    if (l.trim() !== "" && !l.startsWith("#")) lines.push(i + 1);
  });
  return lines.slice(lines.length - rows);
}

/** Throws a one-line CliError at the first non-finite value of a CSV dataset, naming the line and column. */
export function checkCsvFinite(ds: Dataset & { featureNames?: string[]; labelName?: string | null }, path: string): void {
  const d = ds.inputShape.reduce((a, b) => a * b, 1);
  const at = firstNonFinite(ds.inputs);
  const targetAt = ds.targets instanceof Float32Array ? firstNonFinite(ds.targets) : -1;
  if (at < 0 && targetAt < 0) return;
  const row = at >= 0 ? Math.floor(at / d) : targetAt;
  const column = at >= 0 ? `column '${ds.featureNames?.[at % d] ?? at % d + 1}'` : `label column${ds.labelName ? ` '${ds.labelName}'` : ""}`;
  const value = at >= 0 ? ds.inputs[at] : ds.targets[targetAt];
  throw new CliError(`${csvRowNamer(path, ds.length)(row)}: ${column}: ${value} (beyond float32's range, ±3.4e38); scale the data down`);
}

/** Throws a one-line CliError at the first non-finite pixel of an IDX image set. */
export function checkIdxFinite(ds: Dataset, imagesFile: string): void {
  const at = firstNonFinite(ds.inputs);
  if (at < 0) return;
  const per = ds.inputShape.reduce((a, b) => a * b, 1);
  const image = Math.floor(at / per), k = at % per;
  const [h, w] = ds.inputShape.slice(-2);
  const where = ds.inputShape.length >= 2 ? `row ${Math.floor((k % (h * w)) / w)}, column ${k % w}` : `value ${k}`;
  throw new CliError(`${imagesFile}: image ${image}, ${where}: ${ds.inputs[at]} (images must be finite numbers)`);
}

/**
 * Throws a one-line CliError naming the first label that would make more than MAX_CLASSES
 * classes; `where(row)` names the row ("data.csv:12", "labels.idx: label 7").
 */
export function checkClassCount(ds: Dataset, where: (row: number) => string): void {
  if (!(ds.targets instanceof Int32Array) || ds.numClasses === undefined || ds.numClasses <= MAX_CLASSES) return;
  const row = ds.targets.findIndex((t) => t >= MAX_CLASSES);
  throw new CliError(
    `${where(row)}: class label ${ds.targets[row]} would make ${ds.numClasses.toLocaleString("en-US")} classes ` +
    `(at most ${MAX_CLASSES.toLocaleString("en-US")}; class labels are 0..K-1; for numeric targets set data.task to "regression")`,
  );
}

/** "file:line" of a CSV dataset's data rows. */
export function csvRowNamer(path: string, rows: number): (row: number) => string {
  let lines: number[] | undefined;
  return (row) => `${path}:${(lines ??= csvDataLines(path, rows))[row]}`;
}

/** The file of an IDX directory's images: train-images-idx3-ubyte or t10k-..., plain or .gz. */
export function idxImagesFile(dir: string, split: "train" | "test"): string {
  const base = `${dir}/${split === "train" ? "train" : "t10k"}-images-idx3-ubyte`;
  return existsSync(`${base}.gz`) && !existsSync(base) ? `${base}.gz` : base;
}
