/**
 * A background evaluator: one long-lived thread, driven through comlink's typed
 * proxy, holding a model replica bound to a snapshot of the trainer's parameters.
 * `snapshot()` copies the parameters between steps (a memcpy in the main thread);
 * `evaluate()` then runs in its thread while training continues.
 */
import { Worker } from "node:worker_threads";
import * as Comlink from "comlink";
import { nodeEndpoint } from "./comlink-node.js";
import type { DataParallel, EvalSummary } from "./data-parallel.js";
import { ParallelError } from "./errors.js";
import { datasetRef } from "./layout.js";
import { normalizeLoss, normalizeModel } from "./spec.js";
import type { EvaluatorApi } from "./evaluator-worker.js";
import type { DataParallelOptions, SharedDataset } from "./types.js";

export class Evaluator {
  private constructor(
    private readonly worker: Worker,
    private readonly api: Comlink.Remote<EvaluatorApi>,
    /** The evaluator's own copy of the parameters (shared with its thread). */
    readonly params: Float32Array,
    private readonly source: DataParallel,
    /** Its copy of the model buffers (batch-norm running statistics). */
    readonly buffers: Float32Array,
  ) {}

  /** Starts the evaluator thread for `dp`'s model (after dp.init()) and takes a first snapshot. */
  static async start(dp: DataParallel, opts: Pick<DataParallelOptions, "model" | "loss" | "seed" | "reuseActivations">): Promise<Evaluator> {
    const params = new Float32Array(new SharedArrayBuffer(dp.numParameters * 4));
    const worker = new Worker(new URL("./evaluator-entry.mjs", import.meta.url));
    const api = Comlink.wrap<EvaluatorApi>(nodeEndpoint(worker));
    const buffers = new Float32Array(new SharedArrayBuffer(Math.max(1, dp.buffers.length) * 4), 0, dp.buffers.length);
    const ev = new Evaluator(worker, api, params, dp, buffers);
    try {
      await api.load(normalizeModel(opts.model), opts.seed ?? 0, normalizeLoss(opts.loss), dp.layout, params.buffer as SharedArrayBuffer, buffers.buffer as SharedArrayBuffer, opts.reuseActivations ?? true);
    } catch (e) {
      await ev.close();
      throw new ParallelError(`Evaluator: ${(e as Error).message}`);
    }
    ev.snapshot();
    return ev;
  }

  /** Copies the trainer's current parameters (call between steps, e.g. in onEpoch). */
  snapshot(): void {
    this.params.set(this.source.params);
    this.buffers.set(this.source.buffers);
  }

  /** Evaluates the last snapshot on `dataset` in the evaluator thread. */
  evaluate(dataset: SharedDataset, opts: { batchSize?: number } = {}): Promise<EvalSummary> {
    return this.api.evaluate(datasetRef(dataset), 0, dataset.length, opts.batchSize ?? 1024) as Promise<EvalSummary>;
  }

  async close(): Promise<void> {
    this.api[Comlink.releaseProxy]();
    await this.worker.terminate();
  }
}
