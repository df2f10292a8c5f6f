/** chainrule eval CHECKPOINT [--data ...]: loss and accuracy of a checkpoint on held-out (or other) data. */
import { existsSync, statSync } from "node:fs";
import { F, Tensor, argmax, makeDataset, noGrad, loadCsv, loadIdxDataset, loadIdxDirectory, tokenizerFromJSON, type TextTokenizerJSON, type Dataset } from "@chainrule/core";
import { CliError, UsageError } from "../errors.js";
import { loadJobData } from "../data.js";
import { checkCsvFinite, checkIdxFinite, csvRowNamer } from "../data-checks.js";
import { checkpointCsvColumns, readCsvForModel, toModelClasses } from "../csv-columns.js";
import { fmtInt } from "../progress.js";
import { type CheckpointModel, MODULE_FLAGS, MODULE_FLAGS_HELP, modelFromCheckpoint, moduleConsent } from "../checkpoint-model.js";
import { resolveCheckpoint } from "../rundir.js";
import { parseFlags } from "../flags.js";

export const EVAL_HELP = `usage: chainrule eval CHECKPOINT [--data SOURCE] [--labels FILE] [--label COL]

CHECKPOINT is a checkpoint directory (model.safetensors + state.json) or a run
directory (its latest checkpoint). Without --data, evaluates on the held-out
set of the job the checkpoint was trained with.

--data SOURCE   mnist (the embedded held-out digits), a CSV file, an IDX images
                file (with --labels FILE), or a directory in the MNIST layout
--label COL     label column of a CSV (name or index); without it, a CSV's columns
                are matched to the training file's as predict matches them (by name
                when both have a header, in any order) and its label is the training
                file's label column
${MODULE_FLAGS_HELP}`;

/** Loads evaluation data named on the command line, or the checkpoint job's held-out set. */
export function evalData(cm: CheckpointModel, data: string | undefined, labels: string | undefined, label: string | undefined): Dataset {
  if (data === undefined && cm.job.data.type === "text") {
    // Text: the checkpoint's tokenizer and the model's window length give the same validation windows as training.
    const tj = (cm.contents.state.extra as { tokenizer?: TextTokenizerJSON } | undefined)?.tokenizer;
    return loadJobData(cm.job.data, { blockSize: cm.ctx.inputShape[0], tokenizer: tj ? tokenizerFromJSON(tj) : undefined }).heldOut;
  }
  if (data === undefined) return loadJobData(cm.job.data).heldOut;
  if (data === "mnist") return loadJobData({ type: "mnist", heldOut: 1000, splitSeed: 0 }).heldOut;
  if (!existsSync(data)) throw new CliError(`${data}: no such data file or directory`);
  if (statSync(data).isDirectory()) {
    try {
      return loadIdxDirectory(data, "test");
    } catch {
      return loadIdxDirectory(data, "train");
    }
  }
  if (/\.csv$/i.test(data) && label === undefined) return csvForModel(cm, data);
  if (/\.csv$/i.test(data)) {
    const lab = /^-?\d+$/.test(label!) ? Number(label) : label;
    const ds = loadCsv(data, { label: lab, task: cm.classification ? "classification" : "regression", numClasses: cm.classification ? cm.ctx.outputSize : undefined });
    checkCsvFinite(ds, data);
    // Class names are the model's classes by name, not by their order in this file.
    if (cm.classification && ds.classNames) return { ...ds, targets: toModelClasses(ds, { classNames: cm.classNames, classes: cm.ctx.outputSize }, csvRowNamer(data, ds.length)), classNames: cm.classNames, numClasses: cm.ctx.outputSize };
    return ds;
  }
  if (!labels) throw new UsageError(`--data ${data}: an IDX images file needs --labels FILE`);
  const ds = loadIdxDataset(data, labels);
  checkIdxFinite(ds, data);
  return ds;
}

/**
 * A CSV file with the label column, its columns lined up with the training file's as predict
 * lines them up (by header name when both have one, else by position).
 */
function csvForModel(cm: CheckpointModel, path: string): Dataset {
  const csv = readCsvForModel(cm, path);
  const training = checkpointCsvColumns(cm);
  const trainingLabel = training?.names ? ` '${training.names[training.label]}'` : "";
  if (!csv.labels) throw new CliError(`${path}: no label column${trainingLabel} to score against (name it with --label COL)`);
  const classes = cm.classification ? { numClasses: cm.ctx.outputSize, classNames: cm.classNames } : { targetShape: [cm.ctx.outputSize] };
  return makeDataset({ inputs: csv.inputs, inputShape: cm.ctx.inputShape, targets: csv.labels, ...classes, name: path });
}

export function checkRows(cm: CheckpointModel, ds: Dataset): void {
  const want = cm.ctx.inputShape.reduce((a, b) => a * b, 1);
  const got = ds.inputs.length / Math.max(1, ds.length);
  if (ds.length > 0 && got !== want) {
    throw new CliError(`${ds.name ?? "data"}: rows have ${got} values but the model takes ${want} (input shape [${cm.ctx.inputShape.join(",")}])`);
  }
}

/** Mean loss and accuracy of the model over a dataset, in batches, without gradients. */
export function evaluateModel(cm: CheckpointModel, ds: Dataset): { loss: number; accuracy?: number; correct: number } {
  const lossFn = (F as any)[cm.loss] as (o: Tensor, t: Tensor | Int32Array) => Tensor;
  const rin = ds.inputs.length / ds.length;
  const rout = ds.targetShape.reduce((a, b) => a * b, 1);
  let lossSum = 0, correct = 0;
  const classification = cm.classification && ds.targets instanceof Int32Array;
  noGrad(() => {
    for (let s = 0; s < ds.length; s += 1000) {
      const n = Math.min(1000, ds.length - s);
      const x = new Tensor(ds.inputs.slice(s * rin, (s + n) * rin), [n, ...cm.ctx.inputShape]);
      const out = cm.model.forward(x);
      const t = ds.targets.slice(s * rout, (s + n) * rout);
      const y = t instanceof Int32Array ? t : new Tensor(t, [n, ...ds.targetShape]);
      lossSum += lossFn(out, y).item() * n;
      if (classification) {
        const p = argmax(out, -1).data;
        for (let i = 0; i < n * rout; i++) if (p[i] === (t as Int32Array)[i]) correct++; // per target (a GPT: per character)
      }
    }
  });
  return { loss: lossSum / ds.length, accuracy: classification ? correct / (ds.length * rout) : undefined, correct };
}

export async function evalCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags("eval", argv, { data: { type: "string" }, labels: { type: "string" }, label: { type: "string" }, ...MODULE_FLAGS, help: { type: "boolean", short: "h" } });
  if (values.help) {
    process.stdout.write(EVAL_HELP);
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError("eval takes one CHECKPOINT (a checkpoint or run directory)");
  const dir = resolveCheckpoint(positionals[0]);
  const cm = await modelFromCheckpoint(dir, moduleConsent(values));
  const ds = evalData(cm, values.data, values.labels, values.label);
  checkRows(cm, ds);
  if (cm.classification && ds.targets instanceof Int32Array) {
    for (let i = 0; i < ds.length; i++) {
      if (ds.targets[i] >= cm.ctx.outputSize) throw new CliError(`${ds.name ?? "data"}: row ${i} has class ${ds.targets[i]} but the model has ${cm.ctx.outputSize} classes`);
    }
  }
  const t0 = performance.now();
  const r = evaluateModel(cm, ds);
  const secs = (performance.now() - t0) / 1000;
  process.stdout.write(`checkpoint: ${dir} (step ${cm.contents.state.step}, epoch ${cm.contents.state.epoch})\n`);
  process.stdout.write(`data: ${ds.name ?? "held-out set"} (${fmtInt(ds.length)} rows)\n`);
  process.stdout.write(`loss: ${r.loss.toFixed(5)} (${cm.loss})\n`);
  if (r.accuracy !== undefined) process.stdout.write(`accuracy: ${(r.accuracy * 100).toFixed(2)}% (${fmtInt(r.correct)}/${fmtInt(ds.length * ds.targetShape.reduce((a, b) => a * b, 1))})\n`);
  process.stdout.write(`time: ${secs.toFixed(2)}s (${fmtInt(ds.length / secs)} rows/s)\n`);
  return 0;
}
