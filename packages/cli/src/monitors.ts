/**
 * Held-out figures watched across epochs: the best checkpoint (checkpoint.keepBest, as
 * Lightning's ModelCheckpoint) and early stopping (earlyStopping, as Lightning's EarlyStopping).
 * Their state travels in each checkpoint (state.json extra.monitors), so a resumed run keeps
 * its best so far and its count of epochs without improvement.
 */
import type { Job } from "./job/schema.js";

type Metric = "heldOutLoss" | "heldOutAccuracy";

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

/** How a figure reads in a line: "held-out accuracy 97.30%", "held-out loss 0.0712". */
export function describeMetric(metric: Metric, value: number | null, heldOutName = "held-out"): string {
  if (value === null) return `${heldOutName} ${metric === "heldOutAccuracy" ? "accuracy" : "loss"} (none yet)`;
  return metric === "heldOutAccuracy" ? `${heldOutName} accuracy ${(value * 100).toFixed(2)}%` : `${heldOutName} loss ${value.toFixed(4)}`;
}

/** The trackers of a job (those it asks for), from a checkpoint's saved states where they match. */
export function jobTrackers(job: Job, saved: { keepBest?: TrackerState; earlyStopping?: TrackerState } = {}): { keepBest: MetricTracker | null; earlyStopping: MetricTracker | null } {
  const kb = job.checkpoint.keepBest, es = job.earlyStopping;
  return {
    keepBest: kb ? new MetricTracker(kb.metric, kb.mode, 0, saved.keepBest) : null,
    earlyStopping: es ? new MetricTracker(es.metric, es.mode, es.minDelta, saved.earlyStopping) : null,
  };
}
