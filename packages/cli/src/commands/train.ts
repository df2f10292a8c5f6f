/**
 * chainrule train [JOB] [flags]: validate the job, load the data, build the
 * engine (DataParallel over 1 or N workers), then run epochs with a progress bar,
 * metrics, periodic checkpoints, exact resume and clean interrupts.
 */
import { existsSync, rmSync } from "node:fs";
import { join } from "node:path";
import { describeMismatch, readCheckpoint, setRngState, CheckpointError, tokenizerFromJSON, type TextTokenizer, type TextTokenizerJSON, type nn } from "@chainrule/core";
import { CliError, UsageError } from "../errors.js";
import { type Job, defaultLoss } from "../job/schema.js";
import { parseJob } from "../job/parse.js";
import { firstDifference, rawJob, readRunJob } from "../job/load.js";
import { autoWorkersNote, coresPerProcess, probeModel, resolveWorkers } from "../workers.js";
import { loadJobData } from "../data.js";
import { JOB_FILE, createRunDir, defaultRunDir, listCheckpoints, removeStaleTemporaries, resolveCheckpoint, runDirExists, writeJson } from "../rundir.js";
import { type IntactCheckpoint, newestIntactCheckpoint } from "../checkpoint-files.js";
import { RunLock } from "../run-lock.js";
import { watchLauncher } from "../launcher-watch.js";
import { applyBackend } from "../backend.js";
import { createEngine, loadOptimizerState } from "../engine.js";
import { mpiWorld, underMpirun } from "@chainrule/parallel";
import { type Position, runLoop } from "../train-loop.js";
import { parseFlags } from "../flags.js";
import { takeDashboardFlag } from "../dashboard/flag.js";
import type { Dashboard } from "../dashboard/server.js";

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
  --step-timeout S|auto seconds a step may take before the run stops naming the worker
                        holding it up (auto: 600 s for 10 steps, then 20x the median step, ≥ 60 s)
  --max-restarts N      when a worker fails, continue with fresh workers up to N times
  --set KEY.PATH=VALUE  override any job field, e.g. --set data.limitTrain=500
  --dashboard [PORT]    serve a live page of the run on http://127.0.0.1:PORT/ (default 6060;
                        0: any free port) while it trains (see chainrule dashboard --help)
`;

export async function trainCommand(argv: string[]): Promise<number> {
  const lock: { held: RunLock | null } = { held: null };
  try {
    return await train(argv, lock);
  } finally {
    lock.held?.release();
  }
}

/** Takes the run directory's lock (lead host only) and removes what a killed run left half-written. */
function lockRunDir(runDir: string, lock: { held: RunLock | null }): void {
  const say = (line: string) => process.stdout.write(`${line}\n`);
  lock.held = RunLock.acquire(runDir, say);
  const removed = removeStaleTemporaries(runDir);
  if (removed.length) say(`removed ${removed.length} temporar${removed.length === 1 ? "y" : "ies"} a killed run left in ${runDir}`);
}

async function train(argvWithDashboard: string[], lock: { held: RunLock | null }): Promise<number> {
  const { argv, port: dashboardPort } = takeDashboardFlag(argvWithDashboard);
  const { values, positionals } = parseFlags("train", argv, {
      epochs: { type: "string" }, "batch-size": { type: "string" }, lr: { type: "string" }, seed: { type: "string" },
      workers: { type: "string" }, backend: { type: "string" }, out: { type: "string" }, name: { type: "string" },
      resume: { type: "boolean" }, "checkpoint-every": { type: "string" }, "step-timeout": { type: "string" }, "max-restarts": { type: "string" }, set: { type: "string", multiple: true },
      help: { type: "boolean", short: "h" },
    });
  if (values.help) {
    process.stdout.write(TRAIN_HELP);
    return 0;
  }
  if (positionals.length > 1) throw new UsageError(`train takes at most one JOB, got ${positionals.length}: ${positionals.join(" ")}`);
  if (values.out !== undefined && values.out.trim() === "") throw new UsageError(`--out: empty path (name the run directory, e.g. --out runs/my-run)`);
  // Killing the command that started this trainer (npx, pnpm, a script) stops the trainer too.
  watchLauncher();
  // Under mpirun each process is a host; host 0 alone prints, writes the run directory and checkpoints.
  const hosts = underMpirun() ? mpiWorld() : null;
  const lead = hosts === null || hosts.rank === 0;
  if (!lead) process.stdout.write = (() => true) as typeof process.stdout.write;
  const jobPath = positionals[0];
  const flags = values as Record<string, string | undefined>;
  const { raw, source } = await rawJob(jobPath, flags, values.set ?? []);

  // ---- the run directory and the job (validated before any work) ----
  const named = values.out ?? (typeof raw.name === "string" ? join("runs", raw.name) : undefined);
  let runDir: string;
  let runDirNote: string | undefined;
  let job: Job;
  let resumeFrom: string | null = null;
  let intact: IntactCheckpoint | null = null;
  if (values.resume) {
    if (!named) throw new UsageError("--resume needs --out RUN_DIR (or a job with a name)");
    runDir = named;
    const saved = readRunJob(runDir);
    const savedJob = parseJob(saved, join(runDir, JOB_FILE));
    // Without JOB, the run's own job is the base; flags apply on top.
    const candidate = jobPath ? parseJob(raw, source) : parseJob({ ...(await rawJob(join(runDir, JOB_FILE), flags, values.set ?? [])).raw }, `${join(runDir, JOB_FILE)} ${source.replace(/^default job ?/, "")}`.trim());
    const diff = firstDifference(savedJob, candidate, "", new Set(["epochs", "workers", "backend", "checkpoint", "log", "name", "sample", "divergence", "stepTimeout", "bucketMiB", "gradientCompression", "maxRestarts", "earlyStopping"]));
    if (diff) throw new UsageError(`--resume: the job differs from ${join(runDir, JOB_FILE)} at ${diff}; a resumed run keeps its model, data, optimizer, batch size and seed`);
    job = candidate;
    if (lead) lockRunDir(runDir, lock);
    const cks = listCheckpoints(runDir);
    if (cks.length === 0) throw new CliError(`${runDir}: no checkpoint to resume from (${join(runDir, "checkpoints")} is empty); start afresh with a new --out`);
    // The newest checkpoint that verifies; a corrupt or incomplete newer one is skipped, and said so.
    intact = newestIntactCheckpoint(cks, (c, dir) => {
      if (!(c.state.extra as { position?: unknown } | undefined)?.position) throw new CheckpointError(`${dir}: state.json has no data position (extra.position); cannot resume exactly`);
    });
    for (const s of intact.skipped) process.stdout.write(`skipping checkpoint ${s.dir}: ${s.reason}\n`);
    resumeFrom = intact.dir;
  } else {
    job = parseJob(raw, source);
    if (values.out !== undefined) {
      runDir = values.out;
      if (lead && existsSync(runDir)) throw runDirExists(runDir);
    } else {
      // A second run of a job gets the next free name (runs/cnn-2, ...), as Lightning's version_N.
      runDir = defaultRunDir(job.name);
      if (job.name !== undefined && runDir !== join("runs", job.name)) runDirNote = ` (${join("runs", job.name)} exists)`;
    }
  }

  // ---- data, loss, backend ----
  const backendReason = applyBackend(job);
  // Text: the tokenizer of the checkpoint we continue (resume) or start from (init) decides the ids.
  let tokenizer: TextTokenizer | undefined;
  const initDir = job.init && !resumeFrom ? resolveCheckpoint(job.init.checkpoint) : null;
  const init = initDir ? readCheckpoint(initDir) : null;
  if (job.data.type === "text") {
    const fromCk = intact ? intact.contents : init;
    const tj = (fromCk?.state.extra as { tokenizer?: unknown } | undefined)?.tokenizer;
    if (tj) tokenizer = tokenizerFromJSON(tj as TextTokenizerJSON);
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
  let workers = resolveWorkers(job, probe, coresPerProcess(), hosts?.size ?? 1);

  // ---- resume: read and check the checkpoint before building anything heavy ----
  let pos: Position = { epoch: 0, batch: 0, step: 0, lossSum: 0, rows: 0, wall: 0 };
  const ckpt = intact?.contents ?? null;
  if (ckpt) {
    const extra = (ckpt.state.extra ?? {}) as { position: Position; workers?: number; trainRows?: number };
    if (extra.trainRows !== undefined && extra.trainRows !== data.train.length) {
      throw new CliError(`--resume: the training set now has ${data.train.length} rows, the checkpoint was trained on ${extra.trainRows}`);
    }
    // Without --workers, the count the run had: its shards, and so its float rounding, stay the same (bit-exact resume).
    if (flags.workers === undefined && extra.workers !== undefined) workers = extra.workers;
    pos = extra.position;
  }
  const ranks = workers * (hosts?.size ?? 1);
  if (ranks > job.batchSize) {
    throw new UsageError(`workers: ${hosts ? `${hosts.size} hosts × ${workers} workers` : `${workers} workers`} but batchSize is ${job.batchSize}: every worker needs at least one row of each batch`);
  }

  const engine = await createEngine({ job, ctx, loss, workers, hosts: hosts !== null });
  let initReport: string | undefined;
  /** The run directory this command made (removed again if the run fails before a checkpoint). */
  let created: string | null = null;
  let dashboard: Dashboard | null = null;
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
      if (lead) {
        createRunDir(runDir);
        created = runDir;
        lockRunDir(runDir, lock);
      }
    }
    if (lead) writeJson(join(runDir, JOB_FILE), job);
    if (lead && dashboardPort !== undefined) {
      // Imported only when asked for: the charting library is not loaded for every run.
      dashboard = await (await import("../dashboard/server.js")).startDashboard([runDir], { host: "127.0.0.1", port: dashboardPort });
      process.stdout.write(`dashboard: ${dashboard.url}\n`);
    }
    return await runLoop({ job, runDir, engine, data, loss, ctx, workers, pos, backendReason, resumedFrom: resumeFrom, skippedCheckpoints: intact?.skipped, initReport, workersNote: autoWorkersNote(job, probe, hosts?.size ?? 1), lead, runDirNote });
  } catch (e) {
    // A new run that failed before its first checkpoint leaves nothing behind.
    if (created !== null && listCheckpoints(created).length === 0) rmSync(created, { recursive: true, force: true });
    throw e;
  } finally {
    await dashboard?.close(); // pushes the run's last records to the page first
    await engine.close();
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
