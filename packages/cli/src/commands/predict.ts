/**
 * chainrule predict CHECKPOINT INPUT: what the model says about INPUT, which is
 *   mnist:N or mnist:A-B   digit N (or digits A..B) of the embedded held-out set
 *   FILE.csv               every row (a label column, if present, is shown alongside); its
 *                          header is checked against the training file's columns
 *   FILE (IDX, plain/.gz)  every image (u8 images are scaled to [0, 1])
 *   "v1,v2,..."            one row of numbers
 */
import { existsSync } from "node:fs";
import { Tensor, noGrad, readIdx, softmax } from "@chainrule/core";
import { CliError, UsageError } from "../errors.js";
import { loadJobData } from "../data.js";
import { readCsvForModel } from "../csv-columns.js";
import { checkRows } from "./eval.js";
import { type CheckpointModel, MODULE_FLAGS, MODULE_FLAGS_HELP, modelFromCheckpoint, moduleConsent } from "../checkpoint-model.js";
import { resolveCheckpoint } from "../rundir.js";
import { parseFlags } from "../flags.js";

export const PREDICT_HELP = `usage: chainrule predict CHECKPOINT INPUT [--top K]

INPUT is one of:
  mnist:N  or  mnist:A-B   digit N (or A..B) of the embedded held-out digits
  FILE.csv                 each row: the training columns, with or without the label
                           column (named columns are matched by name, in any order)
  FILE                     an IDX file of images (plain or .gz)
  "v1,v2,..."              one row of numbers
--top K    show the K most likely classes (default 3)
${MODULE_FLAGS_HELP}`;

interface Rows {
  x: Float32Array;
  n: number;
  names: string[];
  labels?: (number | undefined)[];
}

function inputRows(cm: CheckpointModel, input: string): Rows {
  const d = cm.ctx.inputShape.reduce((a, b) => a * b, 1);
  const m = /^mnist:(\d+)(?:-(\d+))?$/.exec(input);
  if (m) {
    const cfg = cm.job.data.type === "mnist" ? cm.job.data : { type: "mnist" as const, heldOut: 1000, splitSeed: 0 };
    const ho = loadJobData({ ...cfg, limitTrain: 1, limitHeldOut: undefined }).heldOut;
    checkRows(cm, ho);
    const a = Number(m[1]), b = m[2] === undefined ? a : Number(m[2]);
    if (b < a || b >= ho.length) throw new UsageError(`${input}: the embedded held-out set has digits 0..${ho.length - 1}`);
    const n = b - a + 1;
    return {
      x: ho.inputs.slice(a * 784, (b + 1) * 784), n,
      names: Array.from({ length: n }, (_, i) => `mnist:${a + i}`),
      labels: Array.from(ho.targets.subarray(a, b + 1)),
    };
  }
  if ((input.includes(",") || /^-?\d*\.?\d+(e[+-]?\d+)?$/i.test(input)) && !existsSync(input)) {
    const fields = input.split(",").map((s) => s.trim()).filter((s) => s !== "");
    const vals = fields.map(Number);
    const bad = vals.findIndex((v) => !Number.isFinite(v));
    if (bad >= 0) throw new UsageError(`INPUT "${input}": value ${bad + 1} of ${fields.length}, ${JSON.stringify(fields[bad])}, is not a finite number`);
    if (vals.length !== d) throw new UsageError(`${input}: ${vals.length} numbers but the model takes ${d}`);
    return { x: Float32Array.from(vals), n: 1, names: ["input"] };
  }
  if (!existsSync(input)) throw new CliError(`${input}: no such file (expected mnist:N, a CSV or IDX file, or "v1,v2,...")`);
  if (/\.csv$/i.test(input)) return csvRows(cm, input);
  const idx = readIdx(input);
  const n = idx.shape[0];
  const per = idx.data.length / Math.max(1, n);
  if (per !== d) throw new CliError(`${input}: IDX rows have ${per} values ([${idx.shape.join(",")}]) but the model takes ${d}`);
  const scale = idx.type === "u8" ? 1 / 255 : 1;
  return { x: Float32Array.from(idx.data, (v) => v * scale), n, names: Array.from({ length: n }, (_, i) => `image ${i}`) };
}

/** A CSV file's rows in the model's feature order, and its labels (class names mapped to the model's classes). */
function csvRows(cm: CheckpointModel, input: string): Rows {
  const csv = readCsvForModel(cm, input);
  const names = Array.from({ length: csv.rows }, (_, i) => `row ${i + 1}`);
  return { x: csv.inputs, n: csv.rows, names, ...(csv.labels ? { labels: Array.from(csv.labels) } : {}) };
}

export async function predictCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags("predict", argv, { top: { type: "string" }, ...MODULE_FLAGS, help: { type: "boolean", short: "h" } });
  if (values.help) {
    process.stdout.write(PREDICT_HELP);
    return 0;
  }
  if (positionals.length !== 2) throw new UsageError("predict takes CHECKPOINT and INPUT (see chainrule predict --help)");
  const top = values.top === undefined ? 3 : Number(values.top);
  if (!Number.isInteger(top) || top < 1) throw new UsageError(`--top: expected a positive integer, got ${values.top}`);
  const cm = await modelFromCheckpoint(resolveCheckpoint(positionals[0]), moduleConsent(values));
  if (cm.job.model.type === "gpt") throw new UsageError(`${positionals[0]} is a GPT text model; use chainrule generate ${positionals[0]} --prompt TEXT`);
  const rows = inputRows(cm, positionals[1]);
  const name = (c: number) => (cm.classNames?.[c] !== undefined ? `${c} (${cm.classNames[c]})` : String(c));
  let correct = 0, labelled = 0;
  noGrad(() => {
    const out = cm.model.forward(new Tensor(rows.x, [rows.n, ...cm.ctx.inputShape]));
    const C = cm.ctx.outputSize;
    if (!cm.classification) {
      for (let i = 0; i < rows.n; i++) {
        const vals = Array.from(out.data.subarray(i * C, (i + 1) * C), (v) => v.toPrecision(6)).join(", ");
        const lab = rows.labels?.[i];
        process.stdout.write(`${rows.names[i]}: ${vals}${lab !== undefined ? ` (target ${lab})` : ""}\n`);
      }
      return;
    }
    const p = softmax(out, -1).data;
    for (let i = 0; i < rows.n; i++) {
      const probs = Array.from(p.subarray(i * C, (i + 1) * C));
      const order = probs.map((v, c) => [v, c] as const).sort((a, b) => b[0] - a[0]);
      const best = order[0][1];
      const lab = rows.labels?.[i];
      let mark = "";
      if (lab !== undefined) {
        labelled++;
        if (lab === best) correct++;
        mark = ` · label ${name(lab)} ${lab === best ? "✓" : "✗"}`;
      }
      const alts = order.slice(0, top).map(([v, c]) => `${name(c)}: ${v.toFixed(3)}`).join(", ");
      process.stdout.write(`${rows.names[i]}: ${name(best)}${mark} · p(${alts})\n`);
    }
  });
  if (labelled > 1) process.stdout.write(`${correct}/${labelled} correct\n`);
  return 0;
}
