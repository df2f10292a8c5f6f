/**
 * The training engine of a job: @chainrule/parallel's DataParallel, for one worker (its replica
 * runs in this thread) or many (worker threads). The model is built from the catalogue
 * (models.ts) by every replica with the job's seed, so all start from identical parameters.
 */
import { DataParallel, type DataParallelState, optimizerStateBuffers } from "@chainrule/parallel";
import { CheckpointError } from "@chainrule/core";
import type { Job } from "./job/schema.js";
import { CATALOGUE_MODULE, adaptationOf, type ModelContext } from "./models.js";

export interface EngineOptions {
  job: Job;
  ctx: ModelContext;
  loss: string;
  workers: number;
  /** Train with the other processes of an mpirun job (hosts: "mpi"). */
  hosts?: boolean;
}

/** Builds the engine (model, shared memory, worker threads when workers > 1). */
export async function createEngine(o: EngineOptions): Promise<DataParallel> {
  const { job } = o, oc = job.optimizer, a = job.augment;
  const dp = new DataParallel({
    model: { module: CATALOGUE_MODULE, export: "buildJobModel", options: { model: job.model, ctx: o.ctx, adapt: adaptationOf(job) } },
    loss: o.loss as "crossEntropy",
    optimizer: oc.type === "sgd"
      ? { type: "sgd", lr: oc.lr, momentum: oc.momentum, nesterov: oc.nesterov, weightDecay: oc.weightDecay }
      : oc.type === "adam" || oc.type === "adamw" ? { type: oc.type, lr: oc.lr, betas: oc.betas, eps: oc.eps, weightDecay: oc.weightDecay }
      : oc, // rmsprop, adagrad: the job's options are the engine's
    workers: o.workers,
    hosts: o.hosts ? "mpi" : undefined,
    seed: job.seed,
    clipGradNorm: job.clipGradNorm,
    bucketMiB: job.bucketMiB,
    gradientCompression: job.gradientCompression,
    timeoutMs: job.stepTimeout === "auto" ? "auto" : job.stepTimeout * 1000,
    syncBatchNorm: job.syncBatchNorm,
    reuseActivations: job.reuseActivations,
    paramGroups: job.paramGroups,
    augment: a && (a.crop > 0 || a.flip) ? { crop: a.crop, flip: a.flip } : undefined,
  });
  await dp.init();
  return dp;
}

/** The engine line's description: threads, augmentation, batch-norm mode. */
export function describeEngine(job: Job, workers: number, hosts = 1): string {
  const parts = [workers === 1 ? "1 worker (this thread)" : `${workers} worker threads`];
  if (hosts > 1) parts.unshift(`${hosts} hosts (MPI${job.gradientCompression !== "none" ? `, gradient sent as ${job.gradientCompression}` : ""})`);
  const a = job.augment;
  if (a && (a.crop > 0 || a.flip)) parts.push(`augment ${[a.crop > 0 ? `crop ${a.crop}` : "", a.flip ? "flip" : ""].filter(Boolean).join(" + ")}`);
  if (job.model.type === "cnn" && job.model.batchNorm && workers > 1) parts.push(job.syncBatchNorm ? "synchronised batch norm" : "per-worker batch norm");
  return `DataParallel, ${parts.join(" · ")}`;
}

/** The optimizer part of the engine's state, for state.json (weights and running statistics are in model.safetensors). */
export function optimizerState(dp: DataParallel): Omit<DataParallelState, "params" | "buffers"> {
  const { params: _params, buffers: _buffers, ...rest } = dp.getState();
  return rest;
}

/**
 * Restores what optimizerState saved (after the weights are loaded), whatever the worker count it
 * was saved with. A checkpoint of the former single-thread trainer (core's optimizer state dict:
 * moments per parameter index) is placed into the flat buffers by the parameter layout.
 */
export function loadOptimizerState(dp: DataParallel, saved: unknown, job: Job): void {
  const s = saved as Partial<DataParallelState> & { state?: Record<string, Record<string, number[]>>; step?: number; type?: string };
  let state: DataParallelState;
  if (s?.format === "chainrule.dataparallel/1") {
    const buffers = Object.fromEntries(Object.entries(s.optimizer?.buffers ?? {}).map(([k, v]) => [k, Float32Array.from(v as ArrayLike<number>)]));
    state = { ...(s as DataParallelState), params: dp.params.slice(), optimizer: { ...s.optimizer!, buffers } };
  } else if (s && typeof s.type === "string" && s.state && Number.isInteger(s.step)) {
    state = fromOptimizerStateDict(dp, s as { type: string; step: number; state: Record<string, Record<string, number[]>> }, job);
  } else {
    throw new CheckpointError("unknown optimizer state format");
  }
  dp.setState(state);
}

function fromOptimizerStateDict(dp: DataParallel, sd: { type: string; step: number; state: Record<string, Record<string, number[]>> }, job: Job): DataParallelState {
  const current = dp.getState(), layout = dp.layout, P = dp.numParameters;
  const expected = { SGD: "sgd", Adam: "adam", AdamW: "adamw", RMSprop: "rmsprop", Adagrad: "adagrad" }[sd.type];
  if (expected !== job.optimizer.type) throw new CheckpointError(`the state is for optimizer ${sd.type}, the job's is ${job.optimizer.type}`);
  const buffers = Object.fromEntries(optimizerStateBuffers(job.optimizer).map((n) => [n, new Float32Array(P)]));
  // The former trainer numbered the parameters group by group (job.paramGroups: the first pattern a
  // name matches, the rest last), in model order within a group.
  const res = (job.paramGroups ?? []).map((g) => new RegExp(g.match));
  const groupOf = (name: string) => { const i = res.findIndex((re) => re.test(name)); return i < 0 ? res.length : i; };
  const order = layout.map((e, i) => ({ e, i, g: groupOf(e.name) })).sort((a, b) => a.g - b.g || a.i - b.i).map(({ e }) => e);
  for (const [k, st] of Object.entries(sd.state)) {
    const e = order[Number(k)];
    if (!e) throw new CheckpointError(`optimizer state for parameter ${k}, the model has ${order.length} parameters`);
    for (const [name, values] of Object.entries(st)) {
      if (!buffers[name] || values.length !== e.size) throw new CheckpointError(`optimizer state '${name}' of parameter ${k} (${e.name}) does not fit: ${values.length} values, the parameter has ${e.size}`);
      buffers[name].set(values, e.offset);
    }
  }
  return { ...current, step: sd.step, optimizer: { hyper: current.optimizer.hyper, buffers } };
}
