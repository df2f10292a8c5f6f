/**
 * The evaluator thread (comlink): a long-lived replica of the model bound to its
 * own snapshot of the parameters, answering typed calls while training goes on.
 */
import { parentPort } from "node:worker_threads";
import * as Comlink from "comlink";
import { nodeEndpoint } from "./comlink-node.js";
import { BufferArena, nn } from "@chainrule/core";
import { datasetViews } from "./layout.js";
import { type LossFn, buildModel, layoutDiff, resolveLoss } from "./spec.js";
import type { DatasetRef, LossRef } from "./types.js";
import { evalRange } from "./worker.js";

let model: nn.Module | null = null;
let loss: { fn: LossFn; name: string; ignoreIndex: number | null } | null = null;
/** Activations reused from batch to batch (null: the model keeps op outputs, see DataParallelOptions.reuseActivations). */
let arena: BufferArena | null = null;
const scratch = { xScratch: new Float32Array(0), yScratch: new Float32Array(0) as Float32Array | Int32Array };

export const evaluatorApi = {
  /** Builds the replica and binds it to `params` (the snapshot buffer). */
  async load(
    spec: { module: string; export: string; options: unknown }, seed: number, lossSpec: LossRef, layout: nn.ParamLayoutEntry[], params: SharedArrayBuffer,
    buffers?: SharedArrayBuffer, reuseActivations = true,
  ): Promise<void> {
    const m = await buildModel(spec, seed);
    const diff = layoutDiff(layout, nn.paramLayout(m));
    if (diff) throw new Error(`evaluator: the model's layout differs from the trainer's: ${diff}`);
    nn.flattenParameters(m, { dataBuffer: new Float32Array(params), copyValues: false });
    if (buffers) {
      // Buffers (running statistics) bound to the evaluator's snapshot of the trainer's.
      let at = 0;
      for (const [, t] of m.namedBuffers()) { t.data = new Float32Array(buffers, at * 4, t.size); at += t.size; }
    }
    model = m;
    loss = await resolveLoss(lossSpec);
    arena = reuseActivations ? new BufferArena() : null;
  },
  /** Mean loss (and accuracy) over rows [start, end) of a shared dataset, on the last snapshot. */
  evaluate(ref: DatasetRef, start: number, end: number, batchSize: number): { loss: number; accuracy?: number; rows: number } {
    if (!model || !loss) throw new Error("evaluator: load() first");
    const r = evalRange(model, loss.fn, loss.name, datasetViews(ref), scratch, null, 0, start, end, batchSize, loss.ignoreIndex, arena);
    const n = end - start;
    return { loss: r.lossSum / r.counted, accuracy: r.hasAccuracy ? r.correct / r.counted : undefined, rows: n };
  },
};

export type EvaluatorApi = typeof evaluatorApi;

Comlink.expose(evaluatorApi, nodeEndpoint(parentPort!));
