/** A model as a run describes it, and rebuilt from a checkpoint (eval, predict, generate). */
import { join } from "node:path";
import { type CheckpointContents, CheckpointError, describeMismatch, type nn, readCheckpoint } from "@chainrule/core";
import { CliError } from "./errors.js";
import { type Job, defaultLoss } from "./job/schema.js";
import { parseJob } from "./job/parse.js";
import { adaptationOf, buildJobModel, type ModelContext } from "./models.js";

/** One line: the model's kind, sizes and parameter count. */
export function describeModel(job: Job, ctx: ModelContext, model: nn.Module): string {
  const d = ctx.inputShape.reduce((a, b) => a * b, 1);
  const n = model.numParameters().toLocaleString("en-US");
  switch (job.model.type) {
    case "mlp": return `MLP ${[d, ...job.model.hidden, ctx.outputSize].join("-")} (${n} parameters)`;
    case "linear": return `linear regression ${d}→${ctx.outputSize} (${n} parameters)`;
    case "logistic": return `logistic regression ${d}→${ctx.outputSize} (${n} parameters)`;
    case "cnn": {
      const m = job.model;
      return `CNN ${ctx.inputShape.join("×")} → conv ${(m.channels ?? [32, 64]).join(", ")}${m.batchNorm ? " (batch norm)" : ""} → ${m.hidden ?? 128} → ${ctx.outputSize} (${n} parameters)`;
    }
    case "module": return `${job.model.module}#${job.model.export} (${n} parameters)`;
    case "gpt": {
      const m = job.model;
      const trainable = model.parameters().filter((p) => p.requiresGrad).reduce((a, p) => a + p.size, 0);
      const tr = trainable < model.numParameters() ? `, ${trainable.toLocaleString("en-US")} trainable` : "";
      return `GPT ${m.nLayer} layers × ${m.nHead} heads × ${m.nEmbd} wide, context ${m.blockSize}, vocab ${ctx.outputSize} (${n} parameters${tr})`;
    }
  }
}

export interface CheckpointModel {
  job: Job;
  ctx: ModelContext;
  model: nn.Module;
  loss: string;
  classification: boolean;
  classNames?: string[];
  contents: CheckpointContents;
}

/** Rebuilds the model a checkpoint was trained with (from its stored job) and loads the weights. */
export async function modelFromCheckpoint(dir: string): Promise<CheckpointModel> {
  const contents = readCheckpoint(dir);
  const { state } = contents;
  if (!state.config) throw new CliError(`${dir}: the checkpoint has no job config (state.json "config"); was it written by chainrule train?`);
  const job = parseJob(state.config, join(dir, "state.json config"));
  const extra = (state.extra ?? {}) as { modelContext?: ModelContext; loss?: string; classification?: boolean; classNames?: string[] };
  if (!extra.modelContext) throw new CliError(`${dir}: state.json lacks extra.modelContext (input shape and outputs)`);
  const model = await buildJobModel({ model: job.model, ctx: extra.modelContext, adapt: adaptationOf(job) });
  const mismatch = describeMismatch(contents.tensors, model);
  if (mismatch) throw new CheckpointError(`checkpoint ${dir} does not match its model: ${mismatch}`);
  model.loadStateDict(contents.tensors);
  model.eval();
  return {
    job, ctx: extra.modelContext, model, loss: extra.loss ?? defaultLoss(job, extra.classification ?? true),
    classification: extra.classification ?? true, classNames: extra.classNames, contents,
  };
}
