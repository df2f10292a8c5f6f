/** A model as a run describes it, and rebuilt from a checkpoint (eval, predict, generate). */
import { existsSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { type CheckpointContents, CheckpointError, describeMismatch, readCheckpoint, type nn } from "@chainrule/core";
import { CliError, UsageError } from "./errors.js";
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
      const heads = m.arch === "llama" && m.nKvHead !== undefined && m.nKvHead !== m.nHead ? `${m.nHead} heads (${m.nKvHead} key/value)` : `${m.nHead} heads`;
      return `GPT${m.arch === "llama" ? " (llama)" : ""} ${m.nLayer} layers × ${heads} × ${m.nEmbd} wide, context ${m.blockSize}, vocab ${ctx.outputSize} (${n} parameters${tr})`;
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

/** How a command may import a checkpoint's user-code model: never unless the user says so. */
export interface ModuleConsent {
  /** --model-module FILE: the module to import instead of the one the checkpoint names. */
  modelModule?: string;
  /** --trust-job-module: import the module file the checkpoint's job names. */
  trustJobModule?: boolean;
}

/** The flags every command that loads a checkpoint takes (parseFlags options), and their help lines. */
export const MODULE_FLAGS = { "model-module": { type: "string" }, "trust-job-module": { type: "boolean" } } as const;
export const MODULE_FLAGS_HELP = `--model-module FILE   the module of a checkpoint whose model is your own code
                      (model.type "module"): imported from FILE, with the export
                      and options the checkpoint's job names
--trust-job-module    import the module file the checkpoint's job names instead
`;

/** An existing file named by a path or a file: URL; anything else (data:, http:, ...) is refused. */
function moduleFile(spec: string, what: string): string {
  let path = spec;
  if (/^file:/i.test(spec)) path = fileURLToPath(spec);
  else if (/^[a-z][a-z0-9+.-]*:/i.test(spec) && !/^[a-z]:[\\/]/i.test(spec)) throw new UsageError(`${what} ${spec.slice(0, 40)}${spec.length > 40 ? "…" : ""}: not a file (a model module is imported from a file only, never a data:, http: or other URL)`);
  path = resolve(path);
  if (!existsSync(path) || !statSync(path).isFile()) throw new UsageError(`${what} ${spec}: no such file`);
  return path;
}

/**
 * The model config to build. A checkpoint is data and never runs code: built-in models are
 * rebuilt from the catalogue; a user-code model only from a module file the user names
 * (--model-module) or confirms (--trust-job-module).
 */
function consentedModel(job: Job, dir: string, consent: ModuleConsent): Job["model"] {
  const model = job.model;
  if (model.type !== "module") {
    if (consent.modelModule !== undefined) throw new UsageError(`--model-module: ${dir} holds a built-in ${model.type} model; it takes no module`);
    return model;
  }
  if (consent.modelModule !== undefined) return { ...model, module: moduleFile(consent.modelModule, "--model-module") };
  if (consent.trustJobModule) return { ...model, module: moduleFile(model.module, `--trust-job-module: ${dir}: model.module`) };
  throw new UsageError(
    `${dir}: its model is your own code (model.module ${model.module}, export ${model.export}); a checkpoint never runs code on its own: ` +
    `pass --model-module FILE, or --trust-job-module to import the file it names`,
  );
}

/** What a checkpoint's state.json says about its model: enough to rebuild it without the weights. */
export type ModelRecipe = Pick<CheckpointContents["state"], "config" | "extra" | "step">;

/**
 * Rebuilds the model a checkpoint was trained with from its stored job, freshly initialised:
 * the caller loads or binds the weights.
 */
export async function modelFromRecipe(dir: string, recipe: ModelRecipe, consent: ModuleConsent = {}): Promise<Omit<CheckpointModel, "contents">> {
  if (!recipe.config) throw new CliError(`${dir}: the checkpoint has no job config (state.json "config"); was it written by chainrule train?`);
  const job = parseJob(recipe.config, join(dir, "state.json config"));
  const extra = (recipe.extra ?? {}) as { modelContext?: ModelContext; loss?: string; classification?: boolean; classNames?: string[] };
  if (!extra.modelContext) throw new CliError(`${dir}: state.json lacks extra.modelContext (input shape and outputs)`);
  const model = await buildJobModel({ model: consentedModel(job, dir, consent), ctx: extra.modelContext, adapt: adaptationOf(job) });
  model.eval();
  return {
    job, ctx: extra.modelContext, model, loss: extra.loss ?? defaultLoss(job, extra.classification ?? true),
    classification: extra.classification ?? true, classNames: extra.classNames,
  };
}

/** Rebuilds the model a checkpoint was trained with (from its stored job) and loads the weights. */
export async function modelFromCheckpoint(dir: string, consent: ModuleConsent = {}): Promise<CheckpointModel> {
  const contents = readCheckpoint(dir, { optimizerState: false });
  const built = await modelFromRecipe(dir, contents.state, consent);
  const mismatch = describeMismatch(contents.tensors, built.model);
  if (mismatch) throw new CheckpointError(`checkpoint ${dir} does not match its model: ${mismatch}`);
  built.model.loadStateDict(contents.tensors);
  return { ...built, contents };
}

/** The module consent flags of a parsed command line. */
export function moduleConsent(values: { "model-module"?: string; "trust-job-module"?: boolean }): ModuleConsent {
  if (values["model-module"] !== undefined && values["model-module"].trim() === "") throw new UsageError("--model-module: empty path");
  return { modelModule: values["model-module"], trustJobModule: values["trust-job-module"] };
}
