/**
 * The columns of a CSV file a model was trained on (saved in each checkpoint), and how a file
 * given to `predict` lines up with them: with or without the label column, by header name
 * (in any order) when both files have a header, by position otherwise. A file whose named
 * columns differ is refused in one line naming the missing and unexpected columns. Class
 * names in a file's label column are the model's classes by name, whatever else the file holds.
 */
import { closeSync, existsSync, openSync, readSync } from "node:fs";
import { StringDecoder } from "node:string_decoder";
import { type Dataset, loadCsv } from "@chainrule/core";
import { CliError } from "./errors.js";
import { checkCsvFinite, csvRowNamer } from "./data-checks.js";
import type { CheckpointModel } from "./checkpoint-model.js";
import type { DataConfig } from "./job/schema.js";

/** The training file's columns, as recorded in a checkpoint (state.json extra.csvColumns). */
export interface CsvColumns {
  /** Every column's name in file order (the label's included), or null when the file has no header. */
  names: string[] | null;
  /** Index of the label column. */
  label: number;
  /** Columns per row, the label's included. */
  width: number;
}

/** How an input file's columns map onto the model's features. */
export interface CsvLayout {
  header: boolean;
  /** The label column's index in the input file, or null when it has none. */
  label: number | null;
  /** For each model feature, its index among the file's feature columns (null: the same order). */
  order: number[] | null;
}

const isNum = (s: string) => s !== "" && Number.isFinite(Number(s));

/** The fields of a CSV file's first row (its first non-blank line not starting with #), read from the file's head. */
export function firstCsvRow(path: string, delimiter: string): string[] {
  const fd = openSync(path, "r");
  try {
    let text = "";
    const buf = Buffer.alloc(1 << 16), utf8 = new StringDecoder("utf8");
    for (let pos = 0; ; ) {
      const n = readSync(fd, buf, 0, buf.length, pos);
      if (n === 0) break;
      pos += n;
      text += utf8.write(buf.subarray(0, n));
      const lines = text.split(/\r?\n/);
      const first = lines.slice(0, -1).find((l) => l.trim() !== "" && !l.startsWith("#"));
      if (first !== undefined) return splitRow(first, delimiter);
    }
    const last = text.split(/\r?\n/).find((l) => l.trim() !== "" && !l.startsWith("#"));
    if (last === undefined) throw new CliError(`${path}: empty CSV file (no rows)`);
    return splitRow(last, delimiter);
  } finally {
    closeSync(fd);
  }
}

function splitRow(line: string, delimiter: string): string[] {
  return line.split(delimiter).map((f) => f.trim().replace(/^"(.*)"$/, "$1"));
}

/** The columns of a job's CSV training file (the header rule is core's loadCsv's). */
export function trainingCsvColumns(cfg: Extract<DataConfig, { type: "csv" }>): CsvColumns {
  const first = firstCsvRow(cfg.path, cfg.delimiter);
  const width = first.length;
  const numericLabel = typeof cfg.label === "number" ? (cfg.label + width) % width : -1;
  const header = cfg.header === true || (cfg.header === "auto" && (typeof cfg.label === "string" || first.some((f, i) => !isNum(f) && i !== numericLabel)));
  const label = typeof cfg.label === "string" ? first.indexOf(cfg.label) : numericLabel;
  return { names: header ? first : null, label, width };
}

const list = (names: string[]) => names.join(", ");

/**
 * Lines up `path` (whose rows must give `features` values) with the training columns: a
 * header is a first row with a non-number outside the label's place; named columns are
 * matched by name, in any order; without names, `features` columns or `features` + 1 with
 * the label where training had it.
 */
export function matchCsvColumns(path: string, delimiter: string, features: number, train: CsvColumns | null): CsvLayout {
  const first = firstCsvRow(path, delimiter);
  const width = first.length;
  const labelAt = width === features + 1 ? (train?.width === width ? train.label : width - 1) : -1;
  const header = first.some((f, i) => !isNum(f) && i !== labelAt);
  if (header && train?.names) {
    const trainLabel = train.names[train.label];
    const trainFeatures = train.names.filter((_, i) => i !== train.label);
    const label = first.indexOf(trainLabel);
    const given = first.filter((_, i) => i !== label);
    const missing = trainFeatures.filter((n) => !given.includes(n));
    const unexpected = given.filter((n) => !trainFeatures.includes(n));
    const repeated = given.filter((n, i) => given.indexOf(n) !== i);
    if (missing.length || unexpected.length || repeated.length) {
      const parts = [missing.length ? `missing ${list(missing)}` : "", unexpected.length ? `unexpected ${list(unexpected)}` : "", repeated.length ? `repeated ${list(repeated)}` : ""];
      throw new CliError(`${path}: its columns differ from the training columns (${parts.filter(Boolean).join("; ")}); expected ${list(trainFeatures)}, and optionally the label ${trainLabel}`);
    }
    const order = trainFeatures.map((n) => given.indexOf(n));
    return { header, label: label >= 0 ? label : null, order: order.every((o, j) => o === j) ? null : order };
  }
  if (width !== features && width !== features + 1) {
    throw new CliError(`${path}: rows have ${width} columns but the model takes ${features} features (or ${features + 1} with a label)`);
  }
  return { header, label: width === features + 1 ? labelAt : null, order: null };
}

/**
 * A CSV dataset's class labels as the model's class indices: a file's class names (numbered by
 * the file's own sorted names when loaded) are looked up among the model's, so a file holding
 * only some of the classes is scored right; a name or index the model does not have is an error
 * naming the row.
 */
export function toModelClasses(ds: Dataset, model: { classNames?: string[]; classes: number }, rowName: (row: number) => string): Int32Array {
  const targets = ds.targets as Int32Array;
  const names = model.classNames ?? [];
  const byName = ds.classNames?.map((n) => names.indexOf(n));
  return Int32Array.from(targets, (v, row) => {
    const c = byName ? byName[v] : v;
    if (byName && c < 0) throw new CliError(`${rowName(row)}: label ${JSON.stringify(ds.classNames![v])} is not one of the model's classes (${names.join(", ") || `0..${model.classes - 1}`})`);
    if (c >= model.classes) throw new CliError(`${rowName(row)}: label ${c} but the model has ${model.classes} classes`);
    return c;
  });
}

/** A checkpoint's training CSV columns: recorded in it, or read from the training file (older checkpoints); null when unknown. */
export function checkpointCsvColumns(cm: Pick<CheckpointModel, "contents" | "job">): CsvColumns | null {
  const recorded = (cm.contents.state.extra as { csvColumns?: CsvColumns } | undefined)?.csvColumns;
  if (recorded) return recorded;
  if (cm.job.data.type !== "csv" || !existsSync(cm.job.data.path)) return null;
  return trainingCsvColumns(cm.job.data);
}

/** A CSV file read for a model: rows in the model's feature order, and the label column (if any) as the model's classes or values. */
export interface ModelCsv {
  inputs: Float32Array;
  rows: number;
  labels: Int32Array | Float32Array | null;
}

/** Reads `path` for the checkpoint's model, its columns lined up with the training file's (matchCsvColumns). */
export function readCsvForModel(cm: CheckpointModel, path: string): ModelCsv {
  const d = cm.ctx.inputShape.reduce((a, b) => a * b, 1);
  const delimiter = cm.job.data.type === "csv" ? cm.job.data.delimiter : ",";
  const layout = matchCsvColumns(path, delimiter, d, checkpointCsvColumns(cm));
  const ds = loadCsv(path, { header: layout.header, label: layout.label, delimiter, task: cm.classification ? "classification" : "regression" });
  checkCsvFinite(ds, path);
  let inputs = ds.inputs;
  if (layout.order) {
    const order = layout.order;
    inputs = new Float32Array(ds.inputs.length);
    for (let r = 0; r < ds.length; r++) for (let j = 0; j < d; j++) inputs[r * d + j] = ds.inputs[r * d + order[j]];
  }
  if (layout.label === null) return { inputs, rows: ds.length, labels: null };
  const labels = cm.classification ? toModelClasses(ds, { classNames: cm.classNames, classes: cm.ctx.outputSize }, csvRowNamer(path, ds.length)) : (ds.targets as Float32Array);
  return { inputs, rows: ds.length, labels };
}
