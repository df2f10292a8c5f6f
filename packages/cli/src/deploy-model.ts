/** A checkpoint's model ready to deploy (export, quantize): LoRA adapters merged, evaluation mode. */
import { nn } from "@chainrule/core";
import { type CheckpointModel, type ModuleConsent, modelFromCheckpoint } from "./checkpoint-model.js";
import { resolveCheckpoint } from "./rundir.js";

export interface DeployModel extends CheckpointModel {
  /** The checkpoint directory read. */
  dir: string;
  /** Layers whose LoRA adapters were folded into the base weight. */
  merged: string[];
}

/**
 * Loads RUN_OR_CHECKPOINT's model and folds any LoRA adapters into their base weights
 * (W + (alpha/r)·B·A, the plain layers put back); the job loses `lora` and `init`, so it describes
 * the merged model as a plain checkpoint of it would.
 */
export async function deployModel(runOrCheckpoint: string, consent: ModuleConsent = {}): Promise<DeployModel> {
  const dir = resolveCheckpoint(runOrCheckpoint);
  const cm = await modelFromCheckpoint(dir, consent);
  const merged = nn.mergeLora(cm.model);
  cm.model.eval();
  const job = merged.length ? { ...cm.job, lora: undefined, init: undefined } : cm.job;
  return { ...cm, job, dir, merged };
}
