/**
 * The training loop of `chainrule train`: epochs of steps posted to the engine one ahead,
 * progress and metrics, held-out evaluation per epoch, checkpoints (every N steps, every N
 * epochs, at the end, on an interrupt), and the closing report.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Generator, GPT, STATE_FILE, encodeSafetensors, getRngState, nn, readCheckpoint, saveCheckpoint } from "@chainrule/core";
import { unpackNumbers } from "@chainrule/core/internal";
import { type DataParallel, ParallelStepError, type StepOutcome } from "@chainrule/parallel";
import { generateText } from "./commands/generate.js";
import { describeModel } from "./checkpoint-model.js";
import type { loadJobData } from "./data.js";
import { describeEngine, loadOptimizerState, optimizerState } from "./engine.js";
import { CliError, UsageError } from "./errors.js";
import type { Job } from "./job/schema.js";
import { Progress, fmtDuration, fmtInt, fmtPerplexity } from "./progress.js";
import { type RegressionMetrics, regressionMetrics } from "./regression-metrics.js";
import { CHECKPOINTS, MetricsLog, bestDirName, commitBestCheckpoint, commitCheckpoint, linkCheckpointFiles, writeJson } from "./rundir.js";
import { type MetricTracker, type TrackerState, describeMetric, jobTrackers, unmeasuredMetric, watchedFigure } from "./monitors.js";
import { makeSchedule } from "./schedule.js";
import { DivergenceMonitor, type DivergenceState, nonFiniteParameter } from "./divergence.js";
import { type CsvColumns, trainingCsvColumns } from "./csv-columns.js";

/** The LoRA adapters alone, next to model.safetensors in a fine-tuning run's checkpoints. */
export const ADAPTERS_FILE = "adapters.safetensors";

/** Where a run stands: saved in each checkpoint (state.json extra.position), so a resume continues mid-epoch. */
export interface Position {
  epoch: number;
  /** Batches of this epoch already done. */
  batch: number;
  step: number;
  /** Sum of losses × rows and rows so far this epoch (for the epoch's mean train loss). */
  lossSum: number;
  rows: number;
  /** Wall seconds spent training before this process. */
  wall: number;
}

export interface LoopArgs {
  job: Job;
  runDir: string;
  engine: DataParallel;
  data: ReturnType<typeof loadJobData>;
  loss: string;
  ctx: { inputShape: number[]; outputSize: number };
  workers: number;
  /** Why "auto" chose fewer workers than cores, for the engine line. */
  workersNote?: string;
  pos: Position;
  backendReason: string;
  resumedFrom: string | null;
  /** Newer checkpoints a resume skipped (corrupt or incomplete), and why. */
  skippedCheckpoints?: { dir: string; reason: string }[];
  /** The init.checkpoint load report (fresh fine-tuning runs). */
  initReport?: string;
  /** Why the run directory has the name it has, when not the one asked for (" (runs/cnn exists)"). */
  runDirNote?: string;
  /** This process writes the run directory (false: another host of an mpirun job does). */
  lead: boolean;
}

/** Seed of epoch e's shuffle (independent of the global generator, so resuming needs only (epoch, batch)). */
export function epochSeed(seed: number, epoch: number): number {
  return (Math.imul(seed ^ 0x5bd1e995, 0x9e3779b1) + Math.imul(epoch + 1, 0x85ebca6b)) >>> 0;
}

/** Runs the job from `a.pos` to its last epoch (or an interrupt); returns the exit code. */
export async function runLoop(a: LoopArgs): Promise<number> {
  const { job, engine, data } = a;
  const run = new Run(a);
  run.printHeader();
  // With several hosts a signal is a request that the next exchange tells every host, so all stop after the same step.
  const interrupts = new Interrupts(() => run.lastCheckpoint, engine.hosts > 1 ? () => engine.requestStop() : null);
  try {
    if (data.tokenizer !== undefined && !a.resumedFrom) await run.evaluateBeforeTraining();
    if (run.stoppedEarly && run.pos.epoch < job.epochs) run.reportStoppedBefore();
    while (run.pos.epoch < job.epochs && !interrupts.stop && !run.stoppedEarly) {
      try {
        await run.trainEpoch(interrupts);
      } catch (e) {
        if (!run.restartAfter(e, interrupts)) throw e;
        continue; // the epoch of the position restarted from
      }
      if (interrupts.stop) break;
      await run.endEpoch();
    }
  } catch (e) {
    if (interrupts.aborted && engine.hosts === 1) {
      // The step in flight did not finish within the grace period: its threads were terminated
      // and nothing was written; the last checkpoint stands.
      run.progress.stopBar();
      run.reportAbort(interrupts.aborted, (e as Error).message);
      return interrupts.aborted === "SIGINT" ? 130 : 143;
    }
    interrupts.remove();
    throw withFp16Advice(e, job, engine.hosts);
  } finally {
    run.progress.stopBar();
  }
  if (interrupts.stop) {
    // The handlers stay installed while the process shuts down (workers closing): a second
    // Ctrl-C in that window still exits at once with 130 instead of being killed by the signal.
    run.reportInterrupt(interrupts.stop);
    return interrupts.stop === "SIGINT" ? 130 : 143;
  }
  const path = run.checkpoint(); // the handlers stay until the last checkpoint is written: a second Ctrl-C still exits at once
  interrupts.remove();
  run.reportEnd(path, engine);
  return 0;
}

/**
 * A run that diverged while its gradient crossed hosts as fp16: the likeliest cause is fp16's
 * range (±65504), which clipGradNorm cannot help (it clips after the exchange), so say so.
 */
function withFp16Advice(e: unknown, job: Job, hosts: number): unknown {
  if (!(e instanceof CliError) || !e.message.startsWith("diverged:") || job.gradientCompression !== "fp16" || hosts < 2) return e;
  return new CliError(`${e.message}; the gradient crosses hosts as fp16, which overflows beyond ±65504 before clipGradNorm applies: set gradientCompression to bf16 (float32's range)`);
}

/**
 * Ctrl-C / SIGTERM: the first finishes the steps in flight and checkpoints (a step that does not
 * finish within a grace period is aborted instead, and nothing is written); a second exits at once.
 */
class Interrupts {
  stop: NodeJS.Signals | null = null;
  /** The signal this host got while waiting for the hosts to agree on a step to stop after. */
  requested: NodeJS.Signals | null = null;
  /** When the first signal came (performance.now()), and the signal whose grace period ran out (the step in flight was aborted). */
  at = 0;
  aborted: NodeJS.Signals | null = null;
  private readonly handler = (sig: NodeJS.Signals) => {
    if (this.stop || this.requested) {
      const last = this.lastCheckpoint();
      process.stderr.write(`\n${sig} again: exiting now; the last checkpoint${last ? ` (${last})` : ""} is intact\n`);
      process.exit(130);
    }
    this.at = performance.now();
    if (this.requestStop) {
      this.requested = sig;
      this.requestStop();
    } else {
      this.stop = sig;
    }
    this.onStop();
    process.stderr.write(`\n${sig}: finishing the steps in flight, then writing a checkpoint (Ctrl-C again to exit at once)\n`);
  };
  onStop: () => void = () => {};

  /** Every host stops after this step (its outcome said so). */
  agreed(): void {
    this.stop ??= this.requested ?? "SIGTERM";
  }

  constructor(private readonly lastCheckpoint: () => string | null, private readonly requestStop: (() => void) | null) {
    process.on("SIGINT", this.handler);
    process.on("SIGTERM", this.handler);
  }

  remove(): void {
    process.off("SIGINT", this.handler);
    process.off("SIGTERM", this.handler);
  }
}

const yieldNow = () => new Promise<void>((r) => setImmediate(r));

/** One run's state between the phases of the loop. */
class Run {
  readonly pos: Position;
  readonly progress: Progress;
  lastCheckpoint: string | null;
  private lastCheckpointStep: number;
  /** The run's metrics (null on hosts other than the lead: it writes them). */
  private readonly metrics: MetricsLog | null;
  private readonly lrAt: (step: number) => number;
  private readonly perEpoch: number;
  private readonly totalSteps: number;
  private readonly description: string;
  private readonly t0 = performance.now();
  private readonly adapters: number;
  private readonly isText: boolean;
  private final: { loss: number; accuracy?: number; regression?: RegressionMetrics } | null = null;
  /** Numeric targets with a regression loss: MSE, MAE and R² are reported beside the loss. */
  private readonly regression: boolean;
  private samplesSeen = 0;
  /** The epoch in progress: when it started and the rows it trained in this process. */
  private epochStart = 0;
  private epochRows = 0;
  private divergence: DivergenceMonitor;
  /** Restarts after failed workers so far (job.maxRestarts at most). */
  private restarts = 0;
  /** Wall ms of recent steps (what "overdue" and the interrupt's grace period are measured against). */
  private readonly recentStepMs: number[] = [];
  /** CSV data: the training file's columns, saved with each checkpoint (predict checks its input's header against them). */
  private readonly csvColumns: CsvColumns | undefined;
  /** The best checkpoint's and early stopping's held-out figures (null: not asked for). */
  private trackers: { keepBest: MetricTracker | null; earlyStopping: MetricTracker | null };
  /** The directory holding the current step's checkpoint files once written (a second one links them). */
  private writtenAt: { step: number; dir: string } | null = null;

  constructor(private readonly a: LoopArgs) {
    this.pos = { ...a.pos };
    this.perEpoch = Math.ceil(a.data.train.length / a.job.batchSize);
    this.totalSteps = this.perEpoch * a.job.epochs;
    this.lrAt = makeSchedule(a.job, this.totalSteps);
    this.metrics = a.lead ? new MetricsLog(a.runDir) : null;
    this.description = describeEngine(a.job, a.workers, a.engine.hosts);
    this.adapters = a.job.lora ? nn.loraLayers(a.engine.model).length : 0;
    this.isText = a.data.tokenizer !== undefined;
    this.regression = !a.data.classification && !this.isText && (a.loss === "mseLoss" || a.loss === "l1Loss");
    this.progress = new Progress(process.stdout, { tokensPerRow: this.isText ? a.ctx.inputShape[0] : undefined });
    this.lastCheckpoint = a.resumedFrom;
    this.lastCheckpointStep = a.resumedFrom ? this.pos.step : -1;
    this.csvColumns = a.job.data.type === "csv" ? trainingCsvColumns(a.job.data) : undefined;
    this.checkWatchedMetrics();
    const { monitors: saved, divergence } = a.resumedFrom ? savedLoopState(a.resumedFrom) : { monitors: {} };
    this.divergence = new DivergenceMonitor(a.job.divergence, divergence);
    this.trackers = jobTrackers(a.job, saved);
    for (const [key, t, before] of [["checkpoint.keepBest", this.trackers.keepBest, saved.keepBest], ["earlyStopping", this.trackers.earlyStopping, saved.earlyStopping]] as const) {
      if (t && before && t.state.best === null) process.stdout.write(`${key}: the run watched ${before.metric} (${before.mode}) until now; it starts afresh with ${t.state.metric} (${t.state.mode})\n`);
    }
  }

  /**
   * heldOutAccuracy is measured for class labels (and binary cross-entropy) only, the regression
   * figures for a regression only: refused before training otherwise.
   */
  private checkWatchedMetrics(): void {
    const { job, data, loss } = this.a;
    const hasAccuracy = (data.classification && !this.isText) || loss === "binaryCrossEntropyWithLogits";
    for (const [key, m] of [["checkpoint.keepBest.metric", job.checkpoint.keepBest], ["earlyStopping.metric", job.earlyStopping]] as const) {
      const why = m ? unmeasuredMetric(m.metric, { accuracy: hasAccuracy, regression: this.regression }, `${data.description} with ${loss}`) : null;
      if (why) throw new UsageError(`${key}: ${why}`);
    }
  }

  /** Early stopping's patience has run out (now, or before a resume). */
  get stoppedEarly(): boolean {
    const es = this.trackers.earlyStopping;
    return es !== null && es.state.wait >= this.a.job.earlyStopping!.patience;
  }

  private get heldOutName(): string {
    return this.isText ? "validation" : "held-out";
  }

  /** Throughput as shown: a GPT's in tokens/s (rows × window length), others' in samples/s. */
  private rate(samplesPerSec: number): string {
    return this.isText ? `${fmtInt(samplesPerSec * this.a.ctx.inputShape[0])} tokens/s` : `${fmtInt(samplesPerSec)} samples/s`;
  }

  /** A text model's perplexity after its loss (" · validation perplexity 3.44"); nothing for other models. */
  private perplexityText(loss: number, what = `${this.heldOutName} `): string {
    return this.isText ? ` · ${what}perplexity ${fmtPerplexity(loss)}` : "";
  }

  /** Tokens per second for a text model's metrics records. */
  private tokensPerSec(samplesPerSec: number): { tokensPerSec?: number } {
    return this.isText ? { tokensPerSec: samplesPerSec * this.a.ctx.inputShape[0] } : {};
  }

  /** Wall seconds of training, this process's and those before a resume. */
  private wall(): number {
    return this.pos.wall + (performance.now() - this.t0) / 1000;
  }

  printHeader(): void {
    const { job, data, engine, runDir } = this.a, out = process.stdout, opt = job.optimizer, pos = this.pos;
    out.write(`chainrule train: ${describeModel(job, this.a.ctx, engine.model)} on ${data.description}: ${fmtInt(data.train.length)} train / ${fmtInt(data.heldOut.length)} held-out rows\n`);
    out.write(`engine: ${this.description}${this.a.workersNote ?? ""} · backend ${this.a.backendReason}\n`);
    out.write(`${opt.type} lr ${opt.lr}${job.schedule.type !== "constant" ? ` (${job.schedule.type} schedule)` : ""} · batch ${job.batchSize} · ${job.epochs} epoch${job.epochs === 1 ? "" : "s"} (${fmtInt(this.totalSteps)} steps) · seed ${job.seed} · loss ${this.a.loss}\n`);
    if (this.a.resumedFrom) {
      this.metrics?.truncateAfter(pos.step);
      const skipped = this.a.skippedCheckpoints?.length ? { skipped: this.a.skippedCheckpoints } : {};
      this.metrics?.write({ kind: "resume", step: pos.step, epoch: pos.epoch, from: this.a.resumedFrom, ...skipped, time: new Date().toISOString() });
      out.write(`resuming from ${this.a.resumedFrom}: epoch ${pos.epoch + 1}, step ${pos.step}\n`);
    } else {
      this.metrics?.write({ kind: "start", step: 0, time: new Date().toISOString(), workers: this.a.workers, backend: this.a.backendReason });
    }
    out.write(`run directory: ${runDir}${this.a.runDirNote ?? ""}\n`);
    if (this.a.initReport) out.write(this.a.initReport);
    const l = job.lora;
    if (this.adapters && l) out.write(`LoRA: rank ${l.rank}, alpha ${l.alpha ?? l.rank} on ${this.adapters} layers (${l.targets}); only the adapters train\n`);
  }

  async evaluateBeforeTraining(): Promise<void> {
    const ev = await this.a.engine.evaluate(this.a.data.heldOut);
    this.metrics?.write({ kind: "eval", step: 0, epoch: 0, heldOutLoss: ev.loss, wallTime: 0 });
    process.stdout.write(`validation loss before training: ${ev.loss.toFixed(4)}${this.perplexityText(ev.loss, "")}\n`);
  }

  /**
   * The rest of the current epoch. Steps are posted one ahead of the one awaited, so the workers
   * go on to the next step while this thread draws progress and writes metrics. Never past a
   * checkpoint (it saves that step's state) or the epoch's end; after a signal nothing more is posted.
   */
  async trainEpoch(interrupts: Interrupts): Promise<void> {
    const { job, data, engine } = this.a, pos = this.pos, N = data.train.length, B = job.batchSize;
    interrupts.onStop = () => this.progress.stopBar();
    const perm = new Generator(epochSeed(job.seed, pos.epoch)).permutation(N);
    this.progress.startEpoch(pos.epoch, job.epochs, this.perEpoch, pos.batch);
    this.epochStart = performance.now();
    this.epochRows = 0;
    const ahead: { idx: Int32Array; lr: number; out: Promise<StepOutcome> }[] = [];
    let next = pos.batch;
    const checkpointAfter = (step: number) => job.checkpoint.everySteps > 0 && step % job.checkpoint.everySteps === 0;
    while (pos.batch < this.perEpoch) {
      await yieldNow(); // lets signal handlers run between steps
      if (interrupts.stop && ahead.length === 0) break;
      while (!interrupts.stop && next < this.perEpoch && ahead.length < 2 && !(ahead.length > 0 && checkpointAfter(pos.step + ahead.length))) {
        const idx = perm.subarray(next * B, Math.min(N, (next + 1) * B));
        const lr = this.lrAt(pos.step + ahead.length);
        const out = engine.trainStep({ dataset: data.train, indices: idx }, { lr });
        out.catch(() => {}); // a step behind a failed one rejects too; the failed one is thrown below
        ahead.push({ idx, lr, out });
        next++;
      }
      const { idx, lr, out } = ahead.shift()!;
      let outcome: StepOutcome;
      try {
        outcome = await this.awaitStep(out, interrupts);
      } catch (e) {
        await Promise.allSettled(ahead.map((s) => s.out)); // the step posted behind rejects too: nothing is left in flight
        throw e;
      }
      const gradNorm = outcome.stats.gradNorm; // measured when clipGradNorm is set
      if (gradNorm !== undefined && !Number.isFinite(gradNorm)) throw new CliError(`diverged: the gradient norm became ${gradNorm} at step ${pos.step + 1} (epoch ${pos.epoch + 1}); try a lower --lr`);
      this.stepDone(outcome.loss, idx.length, lr);
      if (outcome.stop) interrupts.agreed(); // some host asked to stop: all stop after the steps posted
      if (checkpointAfter(pos.step)) this.checkpoint();
    }
  }

  /**
   * Awaits a step, watching it once a second: past 5× the typical step (10 s at least) the
   * progress line says which worker holds it up; after a signal, a step still running past the
   * grace period (3× the typical step, 5 s at least) is aborted.
   */
  private async awaitStep(out: Promise<StepOutcome>, interrupts: Interrupts): Promise<StepOutcome> {
    const engine = this.a.engine, typical = this.typicalStepMs();
    const watch = setInterval(() => {
      const p = engine.pendingStep();
      if (p === null) return;
      const signalled = interrupts.stop ?? interrupts.requested;
      // With hosts a stop is agreed in the exchange: a host waiting for another's checkpoint must not abort.
      if (signalled && engine.hosts === 1 && !interrupts.aborted && performance.now() - interrupts.at > Math.max(5000, 3 * typical)) {
        interrupts.aborted = signalled;
        engine.abort(signalled);
        return;
      }
      if (p.elapsedMs < Math.max(10_000, 5 * typical) || p.waitingFor.length === 0) return;
      const who = p.waitingFor.map((w) => `worker ${w.rank} (${w.stage})`).join(", ");
      this.progress.waiting(`waiting for ${who}: ${Math.round(p.elapsedMs / 1000)} s`);
    }, 1000);
    watch.unref();
    try {
      const outcome = await out;
      this.recentStepMs.push(outcome.stats.wallMs);
      if (this.recentStepMs.length > 50) this.recentStepMs.shift();
      return outcome;
    } finally {
      clearInterval(watch);
    }
  }

  /**
   * After a step failed: whether the run goes on (a worker failed, restarts are left, no signal
   * came). The next step starts a fresh pool; from where: the failed step itself when no
   * parameter was touched (the position still names it), else the last checkpoint, loaded back.
   * Either way the run repeats what an uninterrupted one computes.
   */
  restartAfter(e: unknown, interrupts: Interrupts): boolean {
    const { job, engine } = this.a;
    if (!(e instanceof ParallelStepError) || this.restarts >= job.maxRestarts || interrupts.stop || interrupts.requested || engine.hosts > 1) return false;
    if (e.paramsModified && !this.lastCheckpoint) return false;
    this.restarts++;
    this.progress.stopBar();
    let from: string;
    if (e.paramsModified) {
      this.restoreCheckpoint(this.lastCheckpoint!);
      from = `the last checkpoint (${this.lastCheckpoint}), step ${this.pos.step}`;
    } else {
      from = `step ${this.pos.step + 1} (parameters untouched)`;
    }
    this.metrics?.write({ kind: "restart", step: this.pos.step, restart: this.restarts, of: job.maxRestarts, error: e.message, from: e.paramsModified ? this.lastCheckpoint : "step", time: new Date().toISOString() });
    process.stdout.write(`restart ${this.restarts}/${job.maxRestarts} after: ${e.message}\ncontinuing with fresh workers from ${from}\n`);
    return true;
  }

  /** Loads a checkpoint of this run back into the engine: parameters, buffers, optimizer state, position. */
  private restoreCheckpoint(dir: string): void {
    const { engine, job } = this.a, ck = readCheckpoint(dir);
    engine.model.loadStateDict(ck.tensors);
    loadOptimizerState(engine, ck.state.optimizer, job);
    const extra = ck.state.extra as { position: Position; monitors?: { keepBest?: TrackerState; earlyStopping?: TrackerState }; divergence?: DivergenceState };
    Object.assign(this.pos, extra.position);
    this.trackers = jobTrackers(job, extra.monitors ?? {});
    // The loss history of the restored step, not the one that ran past it: the rolled-back steps'
    // losses must not count twice. Restored rather than reset, so the run stops where one that
    // never failed would (a reset would forget the loss level reached, missing a divergence under way).
    this.divergence = new DivergenceMonitor(job.divergence, extra.divergence);
    this.metrics?.truncateAfter(this.pos.step);
  }

  /** The median of the recent steps' wall times (ms); 0 before the first. */
  private typicalStepMs(): number {
    const s = [...this.recentStepMs].sort((a, b) => a - b);
    return s.length === 0 ? 0 : s[s.length >> 1];
  }

  /** Counts a completed step: position, progress bar, metrics. */
  private stepDone(loss: number, rows: number, lr: number): void {
    const pos = this.pos;
    this.divergence.check(loss, pos.step + 1, pos.epoch + 1);
    pos.batch++;
    pos.step++;
    pos.lossSum += loss * rows;
    pos.rows += rows;
    this.epochRows += rows;
    this.samplesSeen += rows;
    const sps = this.epochRows / ((performance.now() - this.epochStart) / 1000);
    this.progress.update(pos.batch, { step: pos.step, loss, meanLoss: pos.lossSum / pos.rows, samplesPerSec: sps });
    if (pos.step % this.a.job.log.everySteps === 0) {
      this.checkParameters();
      this.metrics?.write({ kind: "step", step: pos.step, epoch: pos.epoch + pos.batch / this.perEpoch, loss, lr, samplesPerSec: sps, ...this.tokensPerSec(sps), wallTime: this.wall() });
    }
  }

  /** End of an epoch: held-out evaluation, metrics, the epoch line, a checkpoint when due. */
  async endEpoch(): Promise<void> {
    const { job, engine, data } = this.a, pos = this.pos;
    const trainLoss = pos.lossSum / Math.max(1, pos.rows);
    const ev = await engine.evaluate(data.heldOut);
    const sps = this.epochRows / ((performance.now() - this.epochStart) / 1000);
    const regression = this.regression ? regressionMetrics(engine.model, data.heldOut) : undefined;
    this.final = { ...ev, regression };
    this.metrics?.write({
      kind: "epoch", step: pos.step, epoch: pos.epoch + 1, trainLoss, heldOutLoss: ev.loss, heldOutAccuracy: ev.accuracy,
      ...(regression ? { heldOutMse: regression.mse, heldOutMae: regression.mae, heldOutR2: regression.r2 } : {}),
      lr: this.lrAt(Math.max(0, pos.step - 1)), samplesPerSec: sps, ...this.tokensPerSec(sps), wallTime: this.wall(),
    });
    this.progress.endEpoch(
      `epoch ${pos.epoch + 1}/${job.epochs}: train loss ${trainLoss.toFixed(4)} · ${this.heldOutName} loss ${ev.loss.toFixed(4)}${this.perplexityText(ev.loss)}` +
      `${regression ? ` · ${regressionText(regression)}` : ""}` +
      `${ev.accuracy !== undefined ? ` · held-out accuracy ${(ev.accuracy * 100).toFixed(2)}%` : ""} · ${this.rate(sps)} · ${fmtDuration(this.wall())}`,
    );
    const figure = (metric: TrackerState["metric"]) => watchedFigure(metric, { ...ev, regression });
    const { keepBest, earlyStopping } = this.trackers;
    const isBest = keepBest?.observe(figure(keepBest.state.metric), pos.epoch + 1, pos.step) ?? false;
    earlyStopping?.observe(figure(earlyStopping.state.metric), pos.epoch + 1, pos.step);
    pos.epoch++;
    pos.batch = 0;
    pos.lossSum = 0;
    pos.rows = 0;
    if (isBest) this.checkpointBest();
    if (this.stoppedEarly && pos.epoch < job.epochs) this.reportEarlyStop();
    if (pos.epoch % job.checkpoint.everyEpochs === 0 || pos.epoch === job.epochs || this.stoppedEarly) this.checkpoint();
  }

  /** Writes the best checkpoint (the current step), replacing the previous best. */
  private checkpointBest(): void {
    if (!this.a.lead) return;
    this.checkParameters();
    const pos = this.pos, best = this.trackers.keepBest!.state;
    const path = commitBestCheckpoint(this.a.runDir, pos.step, (dir) => this.fillCheckpoint(dir));
    this.writtenAt = { step: pos.step, dir: path };
    this.metrics?.write({ kind: "best", step: pos.step, epoch: best.bestEpoch, metric: best.metric, mode: best.mode, value: best.best, path });
  }

  /** The line and record that say why the run ends before its last epoch. */
  private reportEarlyStop(): void {
    const es = this.a.job.earlyStopping!, s = this.trackers.earlyStopping!.state;
    this.metrics?.write({ kind: "earlyStop", step: this.pos.step, epoch: this.pos.epoch, metric: s.metric, mode: s.mode, best: s.best, bestEpoch: s.bestEpoch, patience: es.patience, minDelta: es.minDelta });
    process.stdout.write(`${this.earlyStopReason()}; stopping after epoch ${this.pos.epoch} of ${this.a.job.epochs}\n`);
  }

  /** "early stopping: held-out loss has not improved by more than 0 for 3 epochs (best: held-out loss 0.0712 at epoch 4)". */
  private earlyStopReason(): string {
    const es = this.a.job.earlyStopping!, s = this.trackers.earlyStopping!.state;
    const what = describeMetric(s.metric, null, this.heldOutName).replace(/ \(none yet\)$/, "");
    return `early stopping: ${what} has not ${s.mode === "min" ? "decreased" : "increased"} by more than ${es.minDelta} for ${s.wait} epoch${s.wait === 1 ? "" : "s"} ` +
      `(patience ${es.patience}; best: ${describeMetric(s.metric, s.best, this.heldOutName)} at epoch ${s.bestEpoch})`;
  }

  /** A resumed run whose patience had already run out trains no further. */
  reportStoppedBefore(): void {
    process.stdout.write(`${this.earlyStopReason()}: the run stopped at epoch ${this.pos.epoch} of ${this.a.job.epochs}; nothing to train (raise earlyStopping.patience, or drop earlyStopping, to go on)\n`);
  }

  /** Non-finite weights (from non-finite gradients) stop the run before they reach a checkpoint. */
  private checkParameters(): void {
    const bad = nonFiniteParameter(this.a.engine.model);
    if (bad) throw new CliError(`diverged: a parameter became non-finite by step ${this.pos.step} (epoch ${this.pos.epoch + 1}): ${bad}; the gradients overflowed (try a lower --lr or set clipGradNorm); the last checkpoint${this.lastCheckpoint ? ` (${this.lastCheckpoint})` : ""} is intact`);
  }

  /** Writes a checkpoint of the current step (once per step); returns its directory. */
  checkpoint(): string {
    const { job, runDir } = this.a, pos = this.pos;
    if (this.lastCheckpointStep === pos.step && this.lastCheckpoint) return this.lastCheckpoint;
    if (!this.a.lead) return ""; // the lead host writes the checkpoints
    this.checkParameters();
    this.lastCheckpoint = commitCheckpoint(runDir, pos.step, job.checkpoint.keep, (dir) => this.fillCheckpoint(dir));
    this.writtenAt = { step: pos.step, dir: this.lastCheckpoint };
    this.lastCheckpointStep = pos.step;
    this.metrics?.write({ kind: "checkpoint", step: pos.step, path: this.lastCheckpoint });
    return this.lastCheckpoint;
  }

  /**
   * Writes the current step's checkpoint files into `dir`: model, optimizer state, position,
   * random state, the job, the watched figures' state, LoRA adapters; hard links to them when
   * this step's checkpoint is already written (the best and the step checkpoint of one step).
   */
  private fillCheckpoint(dir: string): void {
    const { job, engine, data } = this.a, pos = this.pos;
    if (this.writtenAt?.step === pos.step && existsSync(this.writtenAt.dir)) {
      linkCheckpointFiles(this.writtenAt.dir, dir);
      return;
    }
    const monitors = { keepBest: this.trackers.keepBest?.state, earlyStopping: this.trackers.earlyStopping?.state };
    const extra = {
      modelContext: this.a.ctx, loss: this.a.loss, classification: data.classification, classNames: data.classNames, workers: this.a.workers, trainRows: data.train.length,
      ...(data.tokenizer ? { tokenizer: data.tokenizer.toJSON() } : {}),
      ...(this.csvColumns ? { csvColumns: this.csvColumns } : {}),
      ...(job.init ? { init: job.init.checkpoint } : {}),
      position: { ...pos, wall: this.wall() },
      ...(monitors.keepBest || monitors.earlyStopping ? { monitors } : {}),
      divergence: this.divergence.state(),
    };
    // The adapters alone (a few KB): `chainrule generate BASE --adapters FILE` applies them to the base checkpoint.
    let files: Record<string, Uint8Array> | undefined;
    if (this.adapters) {
      const t = Object.fromEntries(Object.entries(nn.loraStateDict(engine.model)).map(([k, v]) => [k, { data: v.data, shape: v.shape }]));
      files = { [ADAPTERS_FILE]: encodeSafetensors(t, { format: "pt", chainrule_lora: JSON.stringify(job.lora), base: job.init?.checkpoint ?? "" }) };
    }
    saveCheckpoint(dir, {
      model: engine.model,
      optimizer: { stateDict: () => optimizerState(engine), loadStateDict: () => {} },
      step: pos.step, epoch: pos.epoch, rng: getRngState(), config: job, extra, files,
    });
  }

  reportAbort(signal: NodeJS.Signals, error: string): void {
    const pos = this.pos, out = process.stdout;
    this.metrics?.write({ kind: "interrupt", step: pos.step, signal, aborted: error, wallTime: this.wall() });
    out.write(`interrupted (${signal}): ${error}; nothing written, the last checkpoint${this.lastCheckpoint ? ` (${this.lastCheckpoint})` : ""} is intact\n`);
    if (this.lastCheckpoint) out.write(`resume with: npx -y pnpm@10 chainrule train --resume --out ${this.a.runDir}\n`);
  }

  reportInterrupt(signal: NodeJS.Signals): void {
    const path = this.checkpoint(), pos = this.pos, out = process.stdout;
    this.metrics?.write({ kind: "interrupt", step: pos.step, signal, wallTime: this.wall() });
    out.write(`interrupted (${signal}) at epoch ${pos.epoch + 1}, step ${pos.step}: checkpoint written to ${path}\n`);
    out.write(`resume with: npx -y pnpm@10 chainrule train --resume --out ${this.a.runDir}\n`);
  }

  /** summary.json, the end record, the final figures, a GPT's sample, and where everything is. */
  reportEnd(path: string, engine: DataParallel): void {
    const { job, data, runDir, workers } = this.a, pos = this.pos, out = process.stdout, final = this.final;
    if (!this.a.lead) return;
    const total = this.wall();
    const samplesPerSec = this.samplesSeen / ((performance.now() - this.t0) / 1000);
    const best = this.trackers.keepBest?.state;
    const bestPath = best && best.best !== null ? join(runDir, CHECKPOINTS, bestDirName(best.bestStep)) : null;
    writeJson(join(runDir, "summary.json"), {
      epochs: pos.epoch, steps: pos.step, wallSeconds: total, samplesPerSec, ...this.tokensPerSec(samplesPerSec),
      heldOutLoss: final?.loss, heldOutAccuracy: final?.accuracy,
      ...(final?.regression ? { heldOutMse: final.regression.mse, heldOutMae: final.regression.mae, heldOutR2: final.regression.r2 } : {}),
      heldOutRows: data.heldOut.length, checkpoint: path,
      engine: this.description, workers,
      ...(bestPath ? { bestCheckpoint: { path: bestPath, metric: best!.metric, value: best!.best, epoch: best!.bestEpoch, step: best!.bestStep } } : {}),
      ...(this.stoppedEarly ? { stoppedEarly: { epoch: pos.epoch, reason: this.earlyStopReason() } } : {}),
    });
    this.metrics?.write({ kind: "end", step: pos.step, wallTime: total });
    if (final) {
      out.write(final.accuracy !== undefined
        ? `held-out accuracy: ${(final.accuracy * 100).toFixed(2)}% (loss ${final.loss.toFixed(4)}, ${fmtInt(data.heldOut.length)} rows)\n`
        : `${this.heldOutName} loss: ${final.loss.toFixed(5)} (${fmtInt(data.heldOut.length)} ${this.isText ? "windows" : "rows"})${this.perplexityText(final.loss, "")}${final.regression ? ` · ${regressionText(final.regression)}` : ""}\n`);
    }
    if (this.isText && job.sample.tokens > 0 && engine.model instanceof GPT) {
      const sm = job.sample;
      out.write(`sample (seed ${sm.seed}, temperature ${sm.temperature}${sm.topK ? `, top-k ${sm.topK}` : ""}):\n`);
      out.write(sm.prompt);
      generateText(engine.model, data.tokenizer!, { prompt: sm.prompt, tokens: sm.tokens, temperature: sm.temperature, topK: sm.topK, seed: sm.seed }, (t) => out.write(t));
      out.write("\n");
    }
    out.write(`trained ${pos.epoch} epoch${pos.epoch === 1 ? "" : "s"}${pos.epoch < job.epochs ? ` of ${job.epochs} (early stopping)` : ""} (${fmtInt(pos.step)} steps) in ${fmtDuration(total)} · ${this.rate(samplesPerSec)} · ${this.description}\n`);
    out.write(`checkpoint: ${path}${this.adapters ? ` (LoRA adapters alone: ${join(path, ADAPTERS_FILE)})` : ""}\n`);
    if (bestPath) out.write(`best checkpoint: ${bestPath} (${describeMetric(best!.metric, best!.best, this.heldOutName)}, epoch ${best!.bestEpoch})\n`);
    if (this.isText) out.write(`generate: npx -y pnpm@10 chainrule generate ${runDir} --prompt "..." --tokens 200 --seed 1\n`);
    out.write(`metrics: ${join(runDir, "metrics.jsonl")} (charts: npx -y pnpm@10 chainrule plot ${runDir})\n`);
  }
}

/** "MSE 0.012345 · MAE 0.087654 · R² 0.9876" (R² "n/a" when the targets are constant). */
function regressionText(m: RegressionMetrics): string {
  return `MSE ${m.mse.toPrecision(5)} · MAE ${m.mae.toPrecision(5)} · R² ${Number.isFinite(m.r2) ? m.r2.toFixed(4) : "n/a"}`;
}

/** The watched figures' state and the loss history saved in a checkpoint (state.json extra; its checksums were verified when the run resumed). */
function savedLoopState(dir: string): { monitors: { keepBest?: TrackerState; earlyStopping?: TrackerState }; divergence?: DivergenceState } {
  const state = unpackNumbers(JSON.parse(readFileSync(join(dir, STATE_FILE), "utf8"))) as { extra?: { monitors?: { keepBest?: TrackerState; earlyStopping?: TrackerState }; divergence?: DivergenceState } };
  return { monitors: state.extra?.monitors ?? {}, divergence: state.extra?.divergence };
}
