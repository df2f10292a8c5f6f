/**
 * Numeric CSV files with a label column: one row per example, every other column
 * a number. A header line is detected (or forced); the label column is picked by
 * name or index (negative counts from the end). Labels that are all integers ≥ 0
 * or all non-numeric strings make a classification dataset (strings become
 * classes in sorted order); `task: "regression"` keeps them as float targets.
 */
import { readFileNamed } from "../io/read.js";
import { DataError, makeDataset, type Dataset } from "./dataset.js";

export interface CsvOptions {
  /** Label column: a header name or a 0-based index (negative from the end). Default: the last column. null: no labels (targets all 0). */
  label?: string | number | null;
  /** true: the first line is a header; false: none; "auto" (default): a header when the first line has a non-numeric field other than the label. */
  header?: boolean | "auto";
  /** Field delimiter. Default ",". */
  delimiter?: string;
  /** "classification" (default when labels are integers or strings) or "regression". */
  task?: "classification" | "regression";
  /** Force the number of classes (default max label + 1). */
  numClasses?: number;
  shared?: boolean;
}

export interface CsvDataset extends Dataset {
  /** Names of the feature columns (from the header, or "col<i>"). */
  featureNames: string[];
  labelName: string | null;
}

function splitLine(line: string, delim: string): string[] {
  return line.split(delim).map((f) => f.trim().replace(/^"(.*)"$/, "$1"));
}

const isNum = (s: string) => s !== "" && Number.isFinite(Number(s));

/** Parses CSV text; `source` names the file in errors (`file:line: column N ('name'): ...`). */
export function parseCsv(text: string, source: string, opts: CsvOptions = {}): CsvDataset {
  const delim = opts.delimiter ?? ",";
  const lines = text.split(/\r?\n/);
  const rows: { line: number; fields: string[] }[] = [];
  lines.forEach((l, i) => {
    if (l.trim() !== "" && !l.startsWith("#")) rows.push({ line: i + 1, fields: splitLine(l, delim) });
  });
  if (rows.length === 0) throw new DataError(`${source}: empty CSV file (no rows)`);
  const width = rows[0].fields.length;
  let header: string[] | null = null;
  const first = rows[0].fields;
  const labelSpec = opts.label === undefined ? -1 : opts.label;
  const wantHeader = opts.header ?? "auto";
  if (wantHeader === true || (wantHeader === "auto" && (typeof labelSpec === "string" || first.some((f, i) => !isNum(f) && !(typeof labelSpec === "number" && (labelSpec + width) % width === i))))) {
    header = first;
    rows.shift();
  }
  if (rows.length === 0) throw new DataError(`${source}: CSV has a header but no data rows`);
  let labelCol: number | null = null;
  if (labelSpec !== null) {
    if (typeof labelSpec === "string") {
      if (!header) throw new DataError(`${source}: label column '${labelSpec}' named but the file has no header`);
      labelCol = header.indexOf(labelSpec);
      if (labelCol < 0) throw new DataError(`${source}: no column named '${labelSpec}' in the header (columns: ${header.join(", ")})`);
    } else {
      if (!Number.isInteger(labelSpec) || labelSpec >= width || labelSpec < -width) throw new DataError(`${source}: label column index ${labelSpec} is out of range for ${width} columns`);
      labelCol = (labelSpec + width) % width;
    }
  }
  const colName = (c: number) => (header ? `'${header[c]}'` : `${c + 1}`);
  const featureCols = Array.from({ length: width }, (_, c) => c).filter((c) => c !== labelCol);
  if (featureCols.length === 0) throw new DataError(`${source}: no feature columns besides the label`);
  const n = rows.length;
  const d = featureCols.length;
  const alloc = (bytes: number) => (opts.shared ? new SharedArrayBuffer(bytes) : new ArrayBuffer(bytes));
  const inputs = new Float32Array(alloc(n * d * 4));
  const rawLabels: string[] = [];
  rows.forEach(({ line, fields }, r) => {
    if (fields.length !== width) throw new DataError(`${source}:${line}: expected ${width} fields (as on line ${header ? "1" : rows[0].line}), found ${fields.length}`);
    featureCols.forEach((c, j) => {
      const f = fields[c];
      if (!isNum(f)) throw new DataError(`${source}:${line}: column ${c + 1}${header ? ` (${colName(c)})` : ""}: ${JSON.stringify(f)} is not a number`);
      inputs[r * d + j] = Number(f);
    });
    if (labelCol !== null) rawLabels.push(fields[labelCol]);
  });
  const featureNames = featureCols.map((c) => (header ? header[c] : `col${c}`));
  const labelName = labelCol === null ? null : header ? header[labelCol] : `col${labelCol}`;
  const base = { inputs, inputShape: [d], featureNames, labelName, name: source };
  if (labelCol === null) return { ...makeDataset({ ...base, targets: new Int32Array(alloc(n * 4)) }), featureNames, labelName };

  const allNumeric = rawLabels.every(isNum);
  const task = opts.task ?? (allNumeric && !rawLabels.every((s) => Number.isInteger(Number(s)) && Number(s) >= 0) ? "regression" : "classification");
  if (task === "regression") {
    const targets = new Float32Array(alloc(n * 4));
    rawLabels.forEach((s, r) => {
      if (!isNum(s)) throw new DataError(`${source}:${rows[r].line}: column ${labelCol! + 1} (label${header ? ` ${colName(labelCol!)}` : ""}): ${JSON.stringify(s)} is not a number`);
      targets[r] = Number(s);
    });
    return { ...makeDataset({ ...base, targets, targetShape: [1] }), featureNames, labelName };
  }
  const targets = new Int32Array(alloc(n * 4));
  let classNames: string[] | undefined;
  let numClasses: number;
  if (allNumeric) {
    let max = 0;
    rawLabels.forEach((s, r) => {
      const v = Number(s);
      if (!Number.isInteger(v) || v < 0) throw new DataError(`${source}:${rows[r].line}: column ${labelCol! + 1} (label): ${JSON.stringify(s)} is not a class index (integer ≥ 0)`);
      targets[r] = v;
      if (v > max) max = v;
    });
    numClasses = opts.numClasses ?? max + 1;
    if (max >= numClasses) throw new DataError(`${source}: label ${max} is outside the ${numClasses} classes`);
  } else {
    const empty = rawLabels.findIndex((s) => s === "");
    if (empty >= 0) throw new DataError(`${source}:${rows[empty].line}: column ${labelCol + 1} (label): empty label`);
    classNames = Array.from(new Set(rawLabels)).sort();
    const idx = new Map(classNames.map((c, i) => [c, i]));
    rawLabels.forEach((s, r) => (targets[r] = idx.get(s)!));
    numClasses = classNames.length;
  }
  return { ...makeDataset({ ...base, targets, numClasses, classNames }), featureNames, labelName };
}

/** Reads a CSV file into a Dataset; errors name the file, line and column. */
export function loadCsv(path: string, opts: CsvOptions = {}): CsvDataset {
  const text = readFileNamed(path, (m) => new DataError(m)).toString("utf8");
  return parseCsv(text, path, opts);
}
