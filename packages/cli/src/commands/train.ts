/**
 * chainrule train [JOB] [flags]: validate the job, load the data, build the
 * engine (DataParallel over 1 or N workers), then run epochs with a progress bar,
 * metrics, periodic checkpoints, exact resume and clean interrupts.
 */
import { existsSync } from "node:fs";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { Generator, getRngState, readCheckpoint, describeMismatch, saveCheckpoint, setRngState, CheckpointError, CharTokenizer, GPT, countMacs, nn, noGrad, saveSafetensors, zeros } from "@chainrule/core";
import { generateText } from "./generate.js";
import { CliError, UsageError } from "../errors.js";
import { type Job, MIN_MACS_PER_SHARD, type ModelProbe, autoWorkersChoice, parseJob, resolveWorkers } from "../job.js";
import { loadJobData } from "../data.js";
import { Progress, fmtDuration, fmtInt } from "../progress.js";
import {
  JOB_FILE, MetricsLog, commitCheckpoint, createRunDir, defaultRunDir, listCheckpoints, resolveCheckpoint, runDirExists, writeJson,
} from "../rundir.js";
import { applyBackend, defaultLoss, describeModel, firstDifference, makeSchedule, rawJob, readRunJob } from "../resolve.js";
import { type DataParallel, maxWorkersFor, optimizerStateBuffers } from "@chainrule/parallel";
import { createEngine, describeEngine, loadOptimizerState, optimizerState } from "../engine.js";
import { adaptationOf, buildJobModel, type ModelContext } from "../models.js";

/** The LoRA adapters alone, next to model.safetensors in a fine-tuning run's checkpoints. */
export const ADAPTERS_FILE = "adapters.safetensors";

export const TRAIN_HELP = `usage: chainrule train [JOB] [options]

JOB is a JSON job file or a .ts module exporting a job; without it, the default
job trains an MLP on the embedded MNIST digits over the cores. Built-in jobs by
name: gpt (a character-level GPT on the bundled names list), cnn (a CNN with
batch norm and random crops on the digits), mnist (the default).

options:
  --epochs E            epochs to train (default job: 15)
  --batch-size B        global batch size (split across workers)
  --lr X                learning rate
  --seed S              seed for init, shuffling and dropout
  --workers N|auto      workers (1: in this thread; N: worker threads; auto: one per
                        core, each with ≥ 4M multiply-adds of every batch); a run
                        resumes on any number
  --backend js|blas|auto  kernel backend
  --out DIR             run directory (default runs/<name> or runs/<timestamp>)
  --name NAME           run name
  --resume              continue the run in --out DIR from its latest checkpoint
  --checkpoint-every N  also checkpoint every N steps
  --set KEY.PATH=VALUE  override any job field, e.g. --set data.limitTrain=500
`;

/** Seed of epoch e's shuffle (independent of the global generator, so resuming needs only (epoch, batch)). */
export function epochSeed(seed: number, epoch: number): number {
  return (Math.imul(seed ^ 0x5bd1e995, 0x9e3779b1) + Math.imul(epoch + 1, 0x85ebca6b)) >>> 0;
}

interface Position {
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

export async function trainCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      epochs: { type: "string" }, "batch-size": { type: "string" }, lr: { type: "string" }, seed: { type: "string" },
      workers: { type: "string" }, backend: { type: "string" }, out: { type: "string" }, name: { type: "string" },
      resume: { type: "boolean" }, "checkpoint-every": { type: "string" }, set: { type: "string", multiple: true },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    process.stdout.write(TRAIN_HELP);
    return 0;
  }
  if (positionals.length > 1) throw new UsageError(`train takes at most one JOB, got ${positionals.length}: ${positionals.join(" ")}`);
  const jobPath = positionals[0];
  const flags = values as Record<string, string | undefined>;
  const { raw, source } = await rawJob(jobPath, flags, values.set ?? []);

  // ---- the run directory and the job (validated before any work) ----
  let runDir = values.out ?? (typeof raw.name === "string" ? join("runs", raw.name) : undefined);
  let job: Job;
  let resumeFrom: string | null = null;
  if (values.resume) {
    if (!runDir) throw new UsageError("--resume needs --out RUN_DIR (or a job with a name)");
    const saved = readRunJob(runDir);
    const savedJob = parseJob(saved, join(runDir, JOB_FILE));
    // Without JOB, the run's own job is the base; flags apply on top.
    const candidate = jobPath ? parseJob(raw, source) : parseJob({ ...(await rawJob(join(runDir, JOB_FILE), flags, values.set ?? [])).raw }, `${join(runDir, JOB_FILE)} ${source.replace(/^default job ?/, "")}`.trim());
    const diff = firstDifference(savedJob, candidate, "", new Set(["epochs", "workers", "backend", "checkpoint", "log", "name", "sample"]));
    if (diff) throw new UsageError(`--resume: the job differs from ${join(runDir, JOB_FILE)} at ${diff}; a resumed run keeps its model, data, optimizer, batch size and seed`);
    job = candidate;
    const cks = listCheckpoints(runDir);
    if (cks.length === 0) throw new CliError(`${runDir}: no checkpoint to resume from (${join(runDir, "checkpoints")} is empty); start afresh with a new --out`);
    resumeFrom = cks[cks.length - 1];
  } else {
    job = parseJob(raw, source);
    runDir ??= defaultRunDir(job.name);
    if (existsSync(runDir)) throw runDirExists(runDir);
  }

  // ---- data, loss, backend ----
  const backendReason = applyBackend(job);
  // Text: the tokenizer of the checkpoint we continue (resume) or start from (init) decides the ids.
  let tokenizer: CharTokenizer | undefined;
  const initDir = job.init && !resumeFrom ? resolveCheckpoint(job.init.checkpoint) : null;
  const init = initDir ? readCheckpoint(initDir) : null;
  if (job.data.type === "text") {
    const fromCk = resumeFrom ? readCheckpoint(resumeFrom) : init;
    const tj = (fromCk?.state.extra as { tokenizer?: unknown } | undefined)?.tokenizer;
    if (tj) tokenizer = CharTokenizer.fromJSON(tj as never);
  }
  const data = loadJobData(job.data, { blockSize: job.model.type === "gpt" ? job.model.blockSize : undefined, tokenizer });
  if (data.tokenizer && job.sample.tokens > 0 && !data.tokenizer.covers(job.sample.prompt)) {
    const bad = [...new Set(Array.from(job.sample.prompt).filter((c) => !data.tokenizer!.covers(c)))];
    throw new UsageError(`sample.prompt: ${bad.map((c) => JSON.stringify(c)).join(", ")} not in the text's vocabulary (set sample.prompt to text made of its characters, or sample.tokens to 0)`);
  }
  const loss = defaultLoss(job, data.classification);
  if (loss === "crossEntropy" && !data.classification) throw new UsageError(`loss: crossEntropy needs class labels, but ${data.description} has numeric targets (use mseLoss or l1Loss)`);
  const ctx = { inputShape: data.inputShape, outputSize: data.outputSize };
  // A resume without --workers takes the checkpoint's count: nothing to probe.
  const probe = job.workers === "auto" && !(resumeFrom && flags.workers === undefined) ? await probeModel(job, ctx) : null;
  let workers = resolveWorkers(job, probe);

  // ---- resume: read and check the checkpoint before building anything heavy ----
  let pos: Position = { epoch: 0, batch: 0, step: 0, lossSum: 0, rows: 0, wall: 0 };
  let ckpt: ReturnType<typeof readCheckpoint> | null = null;
  if (resumeFrom) {
    ckpt = readCheckpoint(resumeFrom);
    const extra = (ckpt.state.extra ?? {}) as { position?: Position; workers?: number; trainRows?: number };
    if (!extra.position) throw new CheckpointError(`${resumeFrom}: state.json has no data position (extra.position); cannot resume exactly`);
    if (extra.trainRows !== undefined && extra.trainRows !== data.train.length) {
      throw new CliError(`--resume: the training set now has ${data.train.length} rows, the checkpoint was trained on ${extra.trainRows}`);
    }
    // Without --workers, the count the run had: its shards, and so its float rounding, stay the same (bit-exact resume).
    if (flags.workers === undefined && extra.workers !== undefined) workers = extra.workers;
    pos = extra.position;
  }
  if (workers > job.batchSize) throw new UsageError(`workers: ${workers} workers but batchSize is ${job.batchSize}: every worker needs at least one row of each batch`);

  const engine = await createEngine({ job, ctx, loss, workers });
  let initReport: string | undefined;
  try {
    if (ckpt) {
      const mismatch = describeMismatch(ckpt.tensors, engine.model);
      if (mismatch) throw new CheckpointError(`checkpoint ${resumeFrom} does not match the model: ${mismatch}`);
      engine.model.loadStateDict(ckpt.tensors);
      try {
        loadOptimizerState(engine, ckpt.state.optimizer, job);
      } catch (e) {
        throw new CheckpointError(`checkpoint ${resumeFrom}: optimizer state does not match: ${(e as Error).message}`);
      }
      if (ckpt.state.rng) setRngState(ckpt.state.rng);
    } else {
      if (init && initDir) initReport = loadInit(engine.model, init, initDir, job.init!.strict);
      createRunDir(runDir);
    }
    writeJson(join(runDir, JOB_FILE), job);
    return await runLoop({ job, runDir, engine, data, loss, ctx, workers, pos, backendReason, resumedFrom: resumeFrom, initReport, workersNote: autoWorkersNote(job, probe) });
  } finally {
    await engine.close();
  }
}

/** " (auto: …)" when `workers: "auto"` stopped below one worker per core: shards too small, or memory. */
function autoWorkersNote(job: Job, probe: ModelProbe | null): string | undefined {
  if (job.workers !== "auto" || probe === null) return undefined;
  const cores = availableParallelism();
  const { workers, limit } = autoWorkersChoice(cores, job.batchSize, probe);
  if (limit === "memory") return ` (auto: ${workers} of ${cores} cores: more workers' gradient slots do not fit WebAssembly's 4 GiB)`;
  if (limit !== "shards") return undefined;
  const m = (v: number) => (v >= 1e6 ? `${(v / 1e6).toFixed(1)}M` : `${Math.round(v / 1e3)}k`);
  return ` (auto: ${workers} of ${cores} cores: ${m(probe.macsPerRow)} multiply-adds per row × ${job.batchSize} rows, shards of ≥ ${m(MIN_MACS_PER_SHARD)})`;
}

/**
 * What `workers: "auto"` sizes by: the model's forward multiply-adds for one row (one forward of a
 * zero row, GEMMs counted) and how many workers' shared memory fits. A model that cannot be built
 * fails the job here; one whose probe forward fails is reported, and auto then counts cores and
 * rows only. The engine seeds its own build, so this one does not change the run.
 */
async function probeModel(job: Job, ctx: ModelContext): Promise<ModelProbe | null> {
  const model = await buildJobModel({ model: job.model, ctx, adapt: adaptationOf(job) });
  const P = model.parameters().reduce((n, p) => n + p.data.length, 0);
  try {
    model.eval();
    const macsPerRow = countMacs(() => noGrad(() => { model.forward(zeros([1, ...ctx.inputShape])); }));
    return { macsPerRow, maxWorkers: maxWorkersFor(P, optimizerStateBuffers(job.optimizer).length) };
  } catch (e) {
    process.stderr.write(`workers auto: a forward of one zero row failed (${(e as Error).message}); choosing by cores and batch rows only\n`);
    return null;
  }
}

/**
 * Copies a checkpoint's weights into the model by name (job.init). LoRA adapter
 * tensors the checkpoint lacks are expected (they start at B = 0); any other
 * missing or unexpected key is reported, and refused when `strict`.
 */
function loadInit(model: nn.Module, ck: ReturnType<typeof readCheckpoint>, dir: string, strict: boolean): string {
  const own = model.stateDict();
  const isAdapter = (k: string) => /\.lora_[AB]$/.test(k);
  const missing = Object.keys(own).filter((k) => !(k in ck.tensors) && !isAdapter(k));
  const adapters = Object.keys(own).filter((k) => !(k in ck.tensors) && isAdapter(k));
  const unexpected = Object.keys(ck.tensors).filter((k) => !(k in own));
  const list = (a: string[]) => (a.length ? `[${a.length > 6 ? `${a.slice(0, 6).join(", ")}, … (${a.length})` : a.join(", ")}]` : "none");
  if (strict && (missing.length || unexpected.length)) {
    throw new CheckpointError(`init.checkpoint ${dir}: missing keys ${list(missing)}, unexpected keys ${list(unexpected)} (set init.strict to false to load the rest)`);
  }
  try {
    model.loadStateDict(ck.tensors, { strict: false });
  } catch (e) {
    throw new CheckpointError(`init.checkpoint ${dir}: ${(e as Error).message}`);
  }
  const loaded = Object.keys(own).filter((k) => k in ck.tensors).length;
  return `init: loaded ${loaded} tensors from ${dir} · missing keys ${list(missing)} · unexpected keys ${list(unexpected)}` +
    `${adapters.length ? ` · ${adapters.length} LoRA adapter tensors start fresh (B = 0)` : ""}\n`;
}

interface LoopArgs {
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
  /** The init.checkpoint load report (fresh fine-tuning runs). */
  initReport?: string;
}

async function runLoop(a: LoopArgs): Promise<number> {
  const { job, runDir, engine, data, loss, workers } = a;
  const description = describeEngine(job, workers);
  const out = process.stdout;
  const N = data.train.length;
  const B = job.batchSize;
  const perEpoch = Math.ceil(N / B);
  const totalSteps = perEpoch * job.epochs;
  const lrAt = makeSchedule(job, totalSteps);
  const metrics = new MetricsLog(runDir);
  const progress = new Progress();
  const pos = { ...a.pos };
  const opt = job.optimizer;

  out.write(`chainrule train: ${describeModel(job, a.ctx, engine.model)} on ${data.description}: ${fmtInt(N)} train / ${fmtInt(data.heldOut.length)} held-out rows\n`);
  out.write(`engine: ${description}${a.workersNote ?? ""} · backend ${a.backendReason}\n`);
  out.write(`${opt.type} lr ${opt.lr}${job.schedule.type !== "constant" ? ` (${job.schedule.type} schedule)` : ""} · batch ${B} · ${job.epochs} epoch${job.epochs === 1 ? "" : "s"} (${fmtInt(totalSteps)} steps) · seed ${job.seed} · loss ${loss}\n`);
  if (a.resumedFrom) {
    metrics.truncateAfter(pos.step);
    metrics.write({ kind: "resume", step: pos.step, epoch: pos.epoch, from: a.resumedFrom, time: new Date().toISOString() });
    out.write(`resuming from ${a.resumedFrom}: epoch ${pos.epoch + 1}, step ${pos.step}\n`);
  } else {
    metrics.write({ kind: "start", step: 0, time: new Date().toISOString(), workers, backend: a.backendReason });
  }
  out.write(`run directory: ${runDir}\n`);

  const extraBase = {
    modelContext: a.ctx, loss, classification: data.classification, classNames: data.classNames, workers, trainRows: N,
    ...(data.tokenizer ? { tokenizer: data.tokenizer.toJSON() } : {}),
    ...(job.init ? { init: job.init.checkpoint } : {}),
  };
  const isText = data.tokenizer !== undefined;
  const heldOutName = isText ? "validation" : "held-out";
  const adapters = job.lora ? nn.loraLayers(engine.model).length : 0;
  if (a.initReport) out.write(a.initReport);
  if (adapters) out.write(`LoRA: rank ${job.lora!.rank}, alpha ${job.lora!.alpha ?? job.lora!.rank} on ${adapters} layers (${job.lora!.targets}); only the adapters train\n`);
  const t0 = performance.now();
  const wall = () => pos.wall + (performance.now() - t0) / 1000;
  let lastCheckpoint: string | null = a.resumedFrom;
  let lastCheckpointStep = a.resumedFrom ? pos.step : -1;
  const checkpoint = (): string => {
    if (lastCheckpointStep === pos.step && lastCheckpoint) return lastCheckpoint;
    const position: Position = { ...pos, wall: wall() };
    lastCheckpoint = commitCheckpoint(runDir, pos.step, job.checkpoint.keep, (dir) => {
      saveCheckpoint(dir, {
        model: engine.model,
        optimizer: { stateDict: () => optimizerState(engine), loadStateDict: () => {} },
        step: pos.step,
        epoch: pos.epoch,
        rng: getRngState(),
        config: job,
        extra: { ...extraBase, position },
      });
      // The adapters alone (a few KB): `chainrule generate BASE --adapters FILE` applies them to the base checkpoint.
      if (adapters) {
        const t = Object.fromEntries(Object.entries(nn.loraStateDict(engine.model)).map(([k, v]) => [k, { data: v.data, shape: v.shape }]));
        saveSafetensors(join(dir, ADAPTERS_FILE), t, { format: "pt", chainrule_lora: JSON.stringify(job.lora), base: job.init?.checkpoint ?? "" });
      }
    });
    lastCheckpointStep = pos.step;
    metrics.write({ kind: "checkpoint", step: pos.step, path: lastCheckpoint });
    return lastCheckpoint;
  };

  // ---- interrupts: finish the step, checkpoint, exit non-zero; a second one exits at once ----
  let stop: NodeJS.Signals | null = null;
  const onSignal = (sig: NodeJS.Signals) => {
    if (stop) {
      process.stderr.write(`\n${sig} again: exiting now; the last checkpoint${lastCheckpoint ? ` (${lastCheckpoint})` : ""} is intact\n`);
      process.exit(130);
    }
    stop = sig;
    progress.stopBar();
    process.stderr.write(`\n${sig}: finishing the steps in flight, then writing a checkpoint (Ctrl-C again to exit at once)\n`);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  const yieldNow = () => new Promise<void>((r) => setImmediate(r));

  let final: { loss: number; accuracy?: number } | null = null;
  let samplesSeen = 0;
  if (isText && !a.resumedFrom) {
    const ev0 = await engine.evaluate(data.heldOut);
    metrics.write({ kind: "eval", step: 0, epoch: 0, heldOutLoss: ev0.loss, wallTime: 0 });
    out.write(`validation loss before training: ${ev0.loss.toFixed(4)}\n`);
  }
  try {
    while (pos.epoch < job.epochs) {
      const perm = new Generator(epochSeed(job.seed, pos.epoch)).permutation(N);
      progress.startEpoch(pos.epoch, job.epochs, perEpoch, pos.batch);
      const te = performance.now();
      let epochRows = 0;
      // Steps are posted one ahead of the one awaited, so DataParallel's workers go on to the next
      // step while this thread draws progress and writes metrics. Never past a checkpoint (it
      // saves that step's state) or the epoch's end; after a signal nothing more is posted.
      const ahead: { idx: Int32Array; lr: number; out: Promise<number> }[] = [];
      let next = pos.batch;
      const checkpointAfter = (step: number) => job.checkpoint.everySteps > 0 && step % job.checkpoint.everySteps === 0;
      while (pos.batch < perEpoch) {
        await yieldNow(); // lets signal handlers run between steps
        if (stop && ahead.length === 0) break;
        while (!stop && next < perEpoch && ahead.length < 2 && !(ahead.length > 0 && checkpointAfter(pos.step + ahead.length))) {
          const idx = perm.subarray(next * B, Math.min(N, (next + 1) * B));
          const lr = lrAt(pos.step + ahead.length);
          const out = engine.step({ dataset: data.train, indices: idx }, { lr });
          out.catch(() => {}); // a step behind a failed one rejects too; the failed one is thrown below
          ahead.push({ idx, lr, out });
          next++;
        }
        const { idx, lr, out } = ahead.shift()!;
        const l = await out;
        if (!Number.isFinite(l)) throw new CliError(`loss became ${l} at step ${pos.step + 1} (epoch ${pos.epoch + 1}); try a lower --lr`);
        pos.batch++;
        pos.step++;
        pos.lossSum += l * idx.length;
        pos.rows += idx.length;
        epochRows += idx.length;
        samplesSeen += idx.length;
        const sps = epochRows / ((performance.now() - te) / 1000);
        progress.update(pos.batch, { step: pos.step, loss: l, samplesPerSec: sps });
        if (pos.step % job.log.everySteps === 0) {
          metrics.write({ kind: "step", step: pos.step, epoch: pos.epoch + pos.batch / perEpoch, loss: l, lr, samplesPerSec: sps, wallTime: wall() });
        }
        if (job.checkpoint.everySteps > 0 && pos.step % job.checkpoint.everySteps === 0) checkpoint();
      }
      if (stop) break;
      // ---- end of epoch: held-out evaluation, metrics, checkpoint ----
      const trainLoss = pos.lossSum / Math.max(1, pos.rows);
      const ev = await engine.evaluate(data.heldOut);
      const secs = (performance.now() - te) / 1000;
      const sps = epochRows / secs;
      final = ev;
      metrics.write({
        kind: "epoch", step: pos.step, epoch: pos.epoch + 1, trainLoss, heldOutLoss: ev.loss, heldOutAccuracy: ev.accuracy,
        lr: lrAt(Math.max(0, pos.step - 1)), samplesPerSec: sps, wallTime: wall(),
      });
      progress.endEpoch(
        `epoch ${pos.epoch + 1}/${job.epochs}: train loss ${trainLoss.toFixed(4)} · ${heldOutName} loss ${ev.loss.toFixed(4)}` +
        `${ev.accuracy !== undefined ? ` · held-out accuracy ${(ev.accuracy * 100).toFixed(2)}%` : ""} · ${fmtInt(sps)} samples/s · ${fmtDuration(wall())}`,
      );
      pos.epoch++;
      pos.batch = 0;
      pos.lossSum = 0;
      pos.rows = 0;
      if (pos.epoch % job.checkpoint.everyEpochs === 0 || pos.epoch === job.epochs) checkpoint();
    }
  } catch (e) {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    throw e;
  } finally {
    progress.stopBar();
  }
  // The handlers stay until the last checkpoint is written: a second Ctrl-C still exits at once.
  const done = () => {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  };

  if (stop) {
    const path = checkpoint();
    metrics.write({ kind: "interrupt", step: pos.step, signal: stop, wallTime: wall() });
    out.write(`interrupted (${stop}) at epoch ${pos.epoch + 1}, step ${pos.step}: checkpoint written to ${path}\n`);
    out.write(`resume with: npx -y pnpm@10 chainrule train --resume --out ${runDir}\n`);
    // The handlers stay installed while the process shuts down (workers closing): a second
    // Ctrl-C in that window still exits at once with 130 instead of being killed by the signal.
    return stop === "SIGINT" ? 130 : 143;
  }

  const path = checkpoint();
  done();
  const total = wall();
  const thisRun = (performance.now() - t0) / 1000;
  const summary = {
    epochs: job.epochs, steps: pos.step, wallSeconds: total, samplesPerSec: samplesSeen / thisRun,
    heldOutLoss: final?.loss, heldOutAccuracy: final?.accuracy, heldOutRows: data.heldOut.length, checkpoint: path,
    engine: description, workers,
  };
  writeJson(join(runDir, "summary.json"), summary);
  metrics.write({ kind: "end", step: pos.step, wallTime: total });
  if (final) {
    out.write(final.accuracy !== undefined
      ? `held-out accuracy: ${(final.accuracy * 100).toFixed(2)}% (loss ${final.loss.toFixed(4)}, ${fmtInt(data.heldOut.length)} rows)\n`
      : `${heldOutName} loss: ${final.loss.toFixed(5)} (${fmtInt(data.heldOut.length)} ${isText ? "windows" : "rows"})\n`);
  }
  if (isText && job.sample.tokens > 0 && engine.model instanceof GPT) {
    const sm = job.sample;
    out.write(`sample (seed ${sm.seed}, temperature ${sm.temperature}${sm.topK ? `, top-k ${sm.topK}` : ""}):\n`);
    out.write(sm.prompt);
    generateText(engine.model, data.tokenizer!, { prompt: sm.prompt, tokens: sm.tokens, temperature: sm.temperature, topK: sm.topK, seed: sm.seed }, (t) => out.write(t));
    out.write("\n");
  }
  out.write(`trained ${job.epochs} epoch${job.epochs === 1 ? "" : "s"} (${fmtInt(pos.step)} steps) in ${fmtDuration(total)} · ${fmtInt(summary.samplesPerSec)} samples/s · ${description}\n`);
  out.write(`checkpoint: ${path}${adapters ? ` (LoRA adapters alone: ${join(path, ADAPTERS_FILE)})` : ""}\n`);
  if (isText) out.write(`generate: npx -y pnpm@10 chainrule generate ${runDir} --prompt "..." --tokens 200 --seed 1\n`);
  out.write(`metrics: ${join(runDir, "metrics.jsonl")} (charts: npx -y pnpm@10 chainrule plot ${runDir})\n`);
  return 0;
}
