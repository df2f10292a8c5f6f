/**
 * The points that a run's charts plot, derived from its metrics.jsonl records one record at a
 * time, so that `chainrule plot` (all records at once) and the dashboard (records as they are
 * appended) draw the same thing. Also the run's position: step, epoch, throughput, ETA.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { CliError } from "./errors.js";

/** A chart panel; each plots the rows with its name. */
export type Panel = "loss" | "accuracy" | "throughput" | "lr";
export const PANELS: readonly Panel[] = ["loss", "accuracy", "throughput", "lr"];

/** One point of one series of one run. */
export interface ChartRow {
  run: string;
  panel: Panel;
  series: string;
  x: number;
  y: number;
}

/** Series names (legend entries). */
export const SERIES = {
  rawLoss: "train (raw)",
  smoothLoss: "train (smoothed)",
  heldOutLoss: "held-out",
  validationLoss: "validation",
  accuracy: "held-out accuracy",
  throughput: "throughput",
  lr: "learning rate",
} as const;

/** What the charts need to know of a run's job (job.json). */
export interface RunMeta {
  /** The run's name (its directory's name). */
  name: string;
  /** Epochs the job trains in all. */
  epochs: number | null;
  /** Tokens per sample for a text (GPT) run: its throughput is in tokens/s; null otherwise. */
  tokensPerSample: number | null;
  /** The loss function (the job's, or the default for its data), null when the job does not tell. */
  loss: string | null;
}

type Job = Record<string, any>;

/** A run's JSON file (job.json, summary.json), or null when it has none; a damaged one is an error naming the file. */
export function readRunJson(runDir: string, file: string): Job | null {
  const path = join(runDir, file);
  if (!existsSync(path)) return null;
  try {
    return JSON.parse(readFileSync(path, "utf8")) as Job;
  } catch (e) {
    throw new CliError(`${path}: not valid JSON (${(e as Error).message})`);
  }
}

/** The chart-relevant facts of a resolved job (job.json); `job` may be null (a run without one). */
export function runMeta(name: string, job: Job | null): RunMeta {
  const text = job?.data?.type === "text";
  const blockSize = job?.model?.blockSize ?? job?.data?.blockSize;
  let loss: string | null = typeof job?.loss === "string" ? job.loss : null;
  if (loss === null && job?.data) {
    const d = job.data;
    if (d.type === "mnist" || d.type === "idx" || d.type === "text" || d.task === "classification") loss = "crossEntropy";
    else if (d.task === "regression") loss = "mseLoss";
  }
  return {
    name,
    epochs: typeof job?.epochs === "number" ? job.epochs : null,
    tokensPerSample: text && typeof blockSize === "number" ? blockSize : null,
    loss,
  };
}

/** The run's state as the dashboard shows it. */
export interface RunStatus {
  /**
   * "stopped early": ended by earlyStopping before its last epoch; "stopped": no trainer holds
   * the run, yet it did not end (killed, or failed).
   */
  state: "waiting" | "running" | "finished" | "stopped early" | "interrupted" | "stopped";
  step: number;
  /** Epochs done, fractional mid-epoch. */
  epoch: number;
  epochs: number | null;
  totalSteps: number | null;
  /** Seconds left at the recent pace; null until two step records are in. */
  etaSeconds: number | null;
  wallSeconds: number;
  /** The smoothed train loss, the last held-out loss and accuracy, throughput and learning rate. */
  loss: number | null;
  heldOutLoss: number | null;
  accuracy: number | null;
  throughput: number | null;
  lr: number | null;
}

/**
 * TensorBoard's smoothing: an exponential moving average, debiased so that the first points
 * are not pulled towards zero (the average of n points divides by 1 - weight^n).
 */
export class Ema {
  private last = 0;
  private count = 0;
  constructor(readonly weight: number) {}
  next(v: number): number {
    if (!Number.isFinite(v)) return v;
    this.last = this.last * this.weight + (1 - this.weight) * v;
    this.count++;
    return this.last / (1 - this.weight ** this.count);
  }
}

/** The number of recent step records the ETA's pace is measured over. */
const PACE_WINDOW = 10;

/** A run's chart rows and status, fed its metrics records in order. */
export class RunRows {
  private readonly ema: Ema;
  private readonly pace: { step: number; wall: number }[] = [];
  private lrs = new Set<number>();
  private stepsPerEpoch: number | null = null;
  private stoppedEarly = false;
  readonly status: RunStatus;

  constructor(readonly run: string, readonly meta: RunMeta, smoothing: number) {
    this.ema = new Ema(smoothing);
    this.status = {
      state: "waiting", step: 0, epoch: 0, epochs: meta.epochs, totalSteps: null, etaSeconds: null, wallSeconds: 0,
      loss: null, heldOutLoss: null, accuracy: null, throughput: null, lr: null,
    };
  }

  /** Whether the learning rate changed during the run (a constant one gets no panel). */
  get lrVaries(): boolean {
    return this.lrs.size > 1;
  }

  private get heldOutSeries(): string {
    return this.meta.tokensPerSample !== null ? SERIES.validationLoss : SERIES.heldOutLoss;
  }

  /** Takes the next record; returns the rows it adds. */
  add(r: Record<string, any>): ChartRow[] {
    const rows: ChartRow[] = [];
    const s = this.status;
    const push = (panel: Panel, series: string, x: unknown, y: unknown) => {
      if (typeof x === "number" && typeof y === "number" && Number.isFinite(x) && Number.isFinite(y)) rows.push({ run: this.run, panel, series, x, y });
    };
    const perSecond = (samplesPerSec: unknown) => (typeof samplesPerSec === "number" ? samplesPerSec * (this.meta.tokensPerSample ?? 1) : undefined);
    if (typeof r.step === "number") s.step = r.step;
    if (typeof r.wallTime === "number") s.wallSeconds = r.wallTime;
    switch (r.kind) {
      case "start":
      case "resume":
        s.state = "running";
        if (typeof r.epoch === "number") s.epoch = r.epoch;
        break;
      case "eval":
        push("loss", this.heldOutSeries, r.step, r.heldOutLoss);
        if (typeof r.heldOutLoss === "number") s.heldOutLoss = r.heldOutLoss;
        break;
      case "step": {
        s.state = "running";
        if (typeof r.epoch === "number") {
          s.epoch = r.epoch;
          if (r.epoch >= 0.05 && r.step > 0) this.stepsPerEpoch = Math.round(r.step / r.epoch);
        }
        push("loss", SERIES.rawLoss, r.step, r.loss);
        if (typeof r.loss === "number") {
          s.loss = this.ema.next(r.loss);
          push("loss", SERIES.smoothLoss, r.step, s.loss);
        }
        const tput = perSecond(r.samplesPerSec);
        push("throughput", SERIES.throughput, r.step, tput);
        if (tput !== undefined) s.throughput = tput;
        push("lr", SERIES.lr, r.step, r.lr);
        if (typeof r.lr === "number") {
          s.lr = r.lr;
          this.lrs.add(r.lr);
        }
        if (typeof r.wallTime === "number") this.notePace(r.step, r.wallTime);
        break;
      }
      case "epoch":
        s.state = "running";
        if (typeof r.epoch === "number") {
          s.epoch = r.epoch;
          if (r.step > 0) this.stepsPerEpoch = Math.round(r.step / r.epoch);
        }
        push("loss", this.heldOutSeries, r.step, r.heldOutLoss);
        if (typeof r.heldOutLoss === "number") s.heldOutLoss = r.heldOutLoss;
        if (typeof r.heldOutAccuracy === "number") {
          s.accuracy = r.heldOutAccuracy;
          push("accuracy", SERIES.accuracy, r.epoch, r.heldOutAccuracy * 100);
        }
        break;
      case "earlyStop":
        this.stoppedEarly = true;
        break;
      case "end":
        s.state = this.stoppedEarly ? "stopped early" : "finished";
        break;
      case "interrupt":
        s.state = "interrupted";
        break;
    }
    this.updateEta();
    return rows;
  }

  private notePace(step: number, wall: number): void {
    const last = this.pace[this.pace.length - 1];
    if (last && (step <= last.step || wall < last.wall)) this.pace.length = 0; // a restart went back: measure afresh
    this.pace.push({ step, wall });
    if (this.pace.length > PACE_WINDOW) this.pace.shift();
  }

  private updateEta(): void {
    const s = this.status;
    s.totalSteps = this.stepsPerEpoch !== null && s.epochs !== null ? this.stepsPerEpoch * s.epochs : null;
    if (s.state === "finished" || s.state === "stopped early") {
      s.etaSeconds = 0;
      return;
    }
    const first = this.pace[0], last = this.pace[this.pace.length - 1];
    if (s.totalSteps === null || !first || last.step === first.step || last.wall <= first.wall) {
      s.etaSeconds = null;
      return;
    }
    const stepsPerSecond = (last.step - first.step) / (last.wall - first.wall);
    s.etaSeconds = Math.max(0, (s.totalSteps - s.step) / stepsPerSecond);
  }
}

/** The rows of a whole run (`chainrule plot`). */
export function rowsOfRun(run: string, meta: RunMeta, records: Record<string, any>[], smoothing: number): { rows: ChartRow[]; runRows: RunRows } {
  const runRows = new RunRows(run, meta, smoothing);
  const rows = records.flatMap((r) => runRows.add(r));
  return { rows, runRows };
}
