/**
 * Held-out figures watched across epochs: the best checkpoint (checkpoint.keepBest, as
 * Lightning's ModelCheckpoint) and early stopping (earlyStopping, as Lightning's EarlyStopping).
 * Their state travels in each checkpoint (state.json extra.monitors), so a resumed run keeps
 * its best so far and its count of epochs without improvement.
 */
import type { Job, MonitoredMetric as Metric } from "./job/schema.js";
import type { RegressionMetrics } from "./regression-metrics.js";

/** What a tracker has seen: saved with each checkpoint. */
export interface TrackerState {
  metric: Metric;
  mode: "min" | "max";
  /** The best value so far and where (null before the first epoch). */
  best: number | null;
  bestEpoch: number;
  bestStep: number;
  /** Epochs since the best (early stopping). */
  wait: number;
}

/** The best value of one held-out figure, improvement meaning better by more than minDelta. */
export class MetricTracker {
  state: TrackerState;

  constructor(metric: Metric, mode: "min" | "max", private readonly minDelta = 0, saved?: TrackerState) {
    this.state = saved && saved.metric === metric && saved.mode === mode ? { ...saved } : { metric, mode, best: null, bestEpoch: 0, bestStep: 0, wait: 0 };
  }

  /** Records an epoch's value; true when it is the new best. A NaN never is. */
  observe(value: number, epoch: number, step: number): boolean {
    const s = this.state;
    const better = !Number.isNaN(value) && (s.best === null || (s.mode === "min" ? value < s.best - this.minDelta : value > s.best + this.minDelta));
    if (better) Object.assign(s, { best: value, bestEpoch: epoch, bestStep: step, wait: 0 });
    else s.wait++;
    return better;
  }
}

/** A figure's name in lines, after "held-out". */
const METRIC_NAMES: Record<Metric, string> = { heldOutLoss: "loss", heldOutAccuracy: "accuracy", heldOutMse: "MSE", heldOutMae: "MAE", heldOutR2: "R²" };

/** How a figure reads in a line: "held-out accuracy 97.30%", "held-out loss 0.0712", "held-out R² 0.9512". */
export function describeMetric(metric: Metric, value: number | null, heldOutName = "held-out"): string {
  const name = `${heldOutName} ${METRIC_NAMES[metric]}`;
  if (value === null) return `${name} (none yet)`;
  return metric === "heldOutAccuracy" ? `${name} ${(value * 100).toFixed(2)}%` : `${name} ${value.toFixed(4)}`;
}

/** What an epoch's evaluation measured: the loss always, accuracy for classes, MSE/MAE/R² for a regression. */
export interface EpochFigures {
  loss: number;
  accuracy?: number;
  regression?: RegressionMetrics;
}

/** The value of `metric` in an epoch's figures (NaN when the evaluation did not measure it: never a best). */
export function watchedFigure(metric: Metric, f: EpochFigures): number {
  switch (metric) {
    case "heldOutLoss": return f.loss;
    case "heldOutAccuracy": return f.accuracy ?? NaN;
    case "heldOutMse": return f.regression?.mse ?? NaN;
    case "heldOutMae": return f.regression?.mae ?? NaN;
    case "heldOutR2": return f.regression?.r2 ?? NaN;
  }
}

/**
 * Why a job cannot watch `metric` (its task does not measure it), in one line after the key; null
 * when it can. `measured`: what the run's evaluation produces.
 */
export function unmeasuredMetric(metric: Metric, measured: { accuracy: boolean; regression: boolean }, task: string): string | null {
  const produced: Metric[] = ["heldOutLoss", ...(measured.accuracy ? ["heldOutAccuracy" as const] : []), ...(measured.regression ? ["heldOutMse", "heldOutMae", "heldOutR2"] as const : [])];
  if (produced.includes(metric)) return null;
  const needs = metric === "heldOutAccuracy" ? "class labels" : "a regression (numeric targets, mseLoss or l1Loss)";
  return `${metric} is measured for ${needs}, not for ${task}; watch ${produced.join(", ")}`;
}

/** The trackers of a job (those it asks for), from a checkpoint's saved states where they match. */
export function jobTrackers(job: Job, saved: { keepBest?: TrackerState; earlyStopping?: TrackerState } = {}): { keepBest: MetricTracker | null; earlyStopping: MetricTracker | null } {
  const kb = job.checkpoint.keepBest, es = job.earlyStopping;
  return {
    keepBest: kb ? new MetricTracker(kb.metric, kb.mode, 0, saved.keepBest) : null,
    earlyStopping: es ? new MetricTracker(es.metric, es.mode, es.minDelta, saved.earlyStopping) : null,
  };
}
