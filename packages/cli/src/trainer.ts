/**
 * One small interface over the two ways to train: in the main thread with core
 * directly, or data-parallel across worker threads with @chainrule/parallel.
 * The training loop (commands/train.ts) only talks to `Trainer`, so swapping the
 * engine is this file. Both build the model with the same seed through the same
 * factory (models.ts), so they start from identical parameters.
 */
import {
  BufferArena, F, Tensor, argmax, augmentRows, manualSeed, noGrad, optim, type Dataset, nn,
} from "@chainrule/core";
import { DataParallel, type DataParallelState, type SharedDataset } from "@chainrule/parallel";
import type { Job } from "./job.js";
import { CATALOGUE_MODULE, adaptationOf, buildModel, type ModelContext } from "./models.js";
import { UsageError } from "./errors.js";

export interface EvalResult {
  loss: number;
  accuracy?: number;
  rows: number;
}

export interface Trainer {
  /** "in-process" or "DataParallel, N workers". */
  readonly description: string;
  /** Parameters always current (checkpoints read its state dict). */
  readonly model: nn.Module;
  /**
   * One optimizer step on the rows `indices` of `ds` at learning rate `lr`; resolves to the mean loss.
   * `step` (1-based, this step's number) seeds the augmentation of its rows.
   */
  step(ds: Dataset, indices: Int32Array, lr: number, step?: number): Promise<number>;
  evaluate(ds: Dataset): Promise<EvalResult>;
  /** JSON-able optimizer state (for state.json). */
  optimizerState(): unknown;
  /** Restores optimizer state saved by optimizerState(); call after loading the weights. */
  loadOptimizerState(state: unknown): void;
  close(): Promise<void>;
}

export interface TrainerOptions {
  job: Job;
  ctx: ModelContext;
  loss: string;
  workers: number;
}

/** Picks the engine: 1 worker trains in the main thread; more use DataParallel. */
export async function createTrainer(o: TrainerOptions): Promise<Trainer> {
  const t = o.workers > 1 ? new ParallelTrainer(o) : new InProcessTrainer(o);
  await t.init();
  return t;
}

type LossFn = (out: Tensor, target: Tensor | Int32Array) => Tensor;

function gather(ds: Dataset, indices: ArrayLike<number>): { x: Tensor; y: Tensor | Int32Array } {
  const rin = ds.inputs.length / ds.length;
  const rout = ds.targetShape.reduce((a, b) => a * b, 1);
  const n = indices.length;
  const x = new Float32Array(n * rin);
  const yi = ds.targets instanceof Int32Array ? new Int32Array(n * rout) : new Float32Array(n * rout);
  for (let i = 0; i < n; i++) {
    const r = indices[i];
    x.set(ds.inputs.subarray(r * rin, (r + 1) * rin), i * rin);
    yi.set(ds.targets.subarray(r * rout, (r + 1) * rout), i * rout);
  }
  const y = yi instanceof Int32Array ? yi : new Tensor(yi, [n, ...ds.targetShape]);
  return { x: new Tensor(x, [n, ...ds.inputShape]), y }; // (n, ...inputShape)
}

function correctCount(loss: string, out: Tensor, y: Tensor | Int32Array): number | undefined {
  if (loss === "crossEntropy" && y instanceof Int32Array) {
    const pred = argmax(out, -1).data;
    let c = 0;
    for (let i = 0; i < y.length; i++) if (pred[i] === y[i]) c++;
    return c;
  }
  if (loss === "binaryCrossEntropyWithLogits" && y instanceof Tensor) {
    let c = 0;
    for (let i = 0; i < y.size; i++) if ((out.data[i] > 0 ? 1 : 0) === (y.data[i] > 0.5 ? 1 : 0)) c++;
    return c;
  }
  return undefined;
}

/** (C, H, W) of image rows, for augmentation. */
function imageShape(ds: Dataset): [number, number, number] {
  const s = ds.inputShape;
  if (s.length === 3) return [s[0], s[1], s[2]];
  if (s.length === 2) return [1, s[0], s[1]];
  throw new UsageError(`augment: needs image rows (C, H, W) or (H, W); the data's rows are [${s.join(",")}]`);
}

/** What the job adds to the engine line: augmentation, batch-norm mode. */
function extrasOf(job: Job, workers: number): string {
  const parts: string[] = [];
  const a = job.augment;
  if (a && (a.crop > 0 || a.flip)) parts.push(`augment ${[a.crop > 0 ? `crop ${a.crop}` : "", a.flip ? "flip" : ""].filter(Boolean).join(" + ")}`);
  if (job.model.type === "cnn" && job.model.batchNorm && workers > 1) parts.push(job.syncBatchNorm ? "synchronised batch norm" : "per-worker batch norm");
  return parts.length ? ` · ${parts.join(" · ")}` : "";
}

/** Training in the main thread with core's optimizers. */
export class InProcessTrainer implements Trainer {
  readonly description: string;
  model!: nn.Module;
  private opt!: optim.Optimizer<{ lr: number }>;
  private lossFn: LossFn;
  /** Per group: its lr as a multiple of optimizer.lr (job.paramGroups; the last group is the rest). */
  private lrScale: number[] = [1];

  private steps = 0;
  private augScratch = new Float32Array(0);
  /** Activations are reused from step to step (see BufferArena): nothing of a step outlives it but the loss. */
  private arena = new BufferArena();
  private inArena<T>(fn: () => T): T {
    return this.o.job.reuseActivations ? this.arena.run(fn) : fn();
  }

  constructor(private readonly o: TrainerOptions) {
    this.lossFn = (F as unknown as Record<string, LossFn>)[o.loss];
    this.description = `in-process (1 thread)${extrasOf(o.job, 1)}`;
  }

  async init(): Promise<void> {
    const { job } = this.o;
    manualSeed(job.seed);
    this.model = await buildModel({ model: job.model, ctx: this.o.ctx, adapt: adaptationOf(job) });
    // One flat buffer for values, gradients and optimizer state: zeroGrad is one fill and
    // Adam runs as one in-place (SIMD) pass, bit-identical to the per-parameter loop.
    nn.flattenParameters(this.model);
    const oc = job.optimizer;
    let params: any = this.model.parameters();
    if (job.paramGroups?.length) {
      // The first pattern a parameter's name matches picks its group; unmatched ones form the last group (optimizer.lr).
      const res = job.paramGroups.map((g) => new RegExp(g.match));
      const groups: nn.Parameter[][] = [...res.map(() => []), []];
      for (const [name, p] of this.model.namedParameters()) {
        const i = res.findIndex((re) => re.test(name));
        groups[i < 0 ? res.length : i].push(p);
      }
      const scales = [...job.paramGroups.map((g) => g.lr / oc.lr), 1];
      const keep = groups.map((g, i) => [g, i] as const).filter(([g]) => g.length > 0);
      params = keep.map(([g, i]) => ({ params: g, lr: oc.lr * scales[i] }));
      this.lrScale = keep.map(([, i]) => scales[i]);
    }
    this.opt = oc.type === "sgd"
      ? new optim.SGD(params, { lr: oc.lr, momentum: oc.momentum, nesterov: oc.nesterov, weightDecay: oc.weightDecay })
      : oc.type === "adam"
        ? new optim.Adam(params, { lr: oc.lr, betas: oc.betas, eps: oc.eps, weightDecay: oc.weightDecay })
        : new optim.AdamW(params, { lr: oc.lr, betas: oc.betas, eps: oc.eps, weightDecay: oc.weightDecay });
  }

  async step(ds: Dataset, indices: Int32Array, lr: number, step = this.steps + 1): Promise<number> {
    this.steps = step;
    let { x, y } = gather(ds, indices);
    const a = this.o.job.augment;
    if (a && (a.crop > 0 || a.flip)) {
      // The rows DataParallel's workers would produce: seeded by (seed, step, position in the batch).
      if (this.augScratch.length < x.size) this.augScratch = new Float32Array(x.size);
      const out = augmentRows(x.data, this.augScratch, indices.length, imageShape(ds), { crop: a.crop, flip: a.flip }, this.o.job.seed, step, 0);
      x = new Tensor(out, x.shape);
    }
    this.model.train();
    this.opt.zeroGrad();
    const loss = this.inArena(() => {
      const loss = this.lossFn(this.model.forward(x), y); // mean over the batch
      loss.backward();
      return loss.item();
    });
    if (this.o.job.clipGradNorm !== undefined) optim.clipGradNorm(this.model.parameters(), this.o.job.clipGradNorm);
    this.opt.setLr(lr);
    if (this.lrScale.length > 1) this.opt.paramGroups.forEach((g, i) => (g.hyper.lr = lr * this.lrScale[i]));
    this.opt.step();
    return loss;
  }

  async evaluate(ds: Dataset): Promise<EvalResult> {
    this.model.eval();
    let lossSum = 0, correct = 0, hasAcc = false;
    const bs = 1000;
    noGrad(() => {
      for (let s = 0; s < ds.length; s += bs) {
        const idx = Int32Array.from({ length: Math.min(bs, ds.length - s) }, (_, i) => s + i);
        const { x, y } = gather(ds, idx);
        const c = this.inArena(() => {
          const out = this.model.forward(x);
          lossSum += this.lossFn(out, y).item() * idx.length;
          // Accuracy per row needs one target per row (as DataParallel's evaluate); a GPT's (T) targets get none.
          return ds.targetShape.length === 0 ? correctCount(this.o.loss, out, y) : undefined;
        });
        if (c !== undefined) { correct += c; hasAcc = true; }
      }
    });
    this.model.train();
    return { loss: lossSum / ds.length, accuracy: hasAcc ? correct / ds.length : undefined, rows: ds.length };
  }

  optimizerState(): unknown {
    return this.opt.stateDict();
  }

  loadOptimizerState(state: unknown): void {
    this.opt.loadStateDict(state as optim.OptimizerState);
  }

  async close(): Promise<void> {}
}

function shared(ds: Dataset): SharedDataset {
  return { x: ds.inputs, y: ds.targets, xShape: ds.inputShape, yShape: ds.targetShape, length: ds.length };
}

/** Data-parallel training: parameters in shared memory, each batch sharded across worker threads. */
export class ParallelTrainer implements Trainer {
  readonly description: string;
  private dp: DataParallel;
  private cache = new WeakMap<Dataset, SharedDataset>();

  constructor(private readonly o: TrainerOptions) {
    const { job } = o;
    this.description = `DataParallel, ${o.workers} worker threads${extrasOf(job, o.workers)}`;
    const oc = job.optimizer;
    this.dp = new DataParallel({
      model: { module: CATALOGUE_MODULE, export: "buildModel", options: { model: job.model, ctx: o.ctx, adapt: adaptationOf(job) } },
      loss: o.loss as "crossEntropy",
      optimizer: oc.type === "sgd"
        ? { type: "sgd", lr: oc.lr, momentum: oc.momentum, nesterov: oc.nesterov, weightDecay: oc.weightDecay }
        : { type: oc.type, lr: oc.lr, betas: oc.betas, eps: oc.eps, weightDecay: oc.weightDecay },
      workers: o.workers,
      seed: job.seed,
      clipGradNorm: job.clipGradNorm,
      syncBatchNorm: job.syncBatchNorm,
      reuseActivations: job.reuseActivations,
      paramGroups: job.paramGroups,
      augment: job.augment && (job.augment.crop > 0 || job.augment.flip) ? { crop: job.augment.crop, flip: job.augment.flip } : undefined,
    });
  }

  async init(): Promise<void> {
    await this.dp.init();
  }

  get model(): nn.Module {
    return this.dp.model;
  }

  private sh(ds: Dataset): SharedDataset {
    let s = this.cache.get(ds);
    if (!s) this.cache.set(ds, (s = shared(ds)));
    return s;
  }

  step(ds: Dataset, indices: Int32Array, lr: number): Promise<number> {
    return this.dp.step({ dataset: this.sh(ds), indices }, { lr });
  }

  async evaluate(ds: Dataset): Promise<EvalResult> {
    const r = await this.dp.evaluate(this.sh(ds));
    return { loss: r.loss, accuracy: r.accuracy, rows: r.rows };
  }

  optimizerState(): unknown {
    const { params: _params, buffers: _buffers, ...rest } = this.dp.getState(); // weights and running statistics are in model.safetensors
    return rest;
  }

  loadOptimizerState(state: unknown): void {
    const s = state as Omit<DataParallelState, "params">;
    const buffers = Object.fromEntries(Object.entries(s.optimizer?.buffers ?? {}).map(([k, v]) => [k, Float32Array.from(v as ArrayLike<number>)]));
    this.dp.setState({ ...s, params: this.dp.params.slice(), optimizer: { ...s.optimizer, buffers } });
  }

  close(): Promise<void> {
    return this.dp.close();
  }
}
