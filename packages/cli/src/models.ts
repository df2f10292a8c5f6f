/**
 * The model catalogue: every built-in model is built by `buildJobModel(options)`,
 * a factory that worker threads can import by module path, so the main thread
 * and every DataParallel worker build the identical model.
 *
 * Adding a model: add a schema branch in job/schema.ts (`ModelConfig`), a case below,
 * and (optionally) a line in MODEL_HELP. Models the catalogue lacks can be used
 * without touching it: `{"type": "module", "module": "./my-model.ts", "export": "create", "options": {...}}`.
 */
import { nn, createCnn, GPT } from "@chainrule/core";
import { importExport, instantiate, moduleHref } from "@chainrule/parallel";
type Module = nn.Module;
import type { Job, ModelConfig } from "./job/schema.js";

/** What the data tells the model: input row shape and output size. */
export interface ModelContext {
  inputShape: number[];
  /** Classes (classification) or target values per row (regression). */
  outputSize: number;
}

export interface BuildOptions {
  model: ModelConfig;
  ctx: ModelContext;
  /** Fine-tuning: LoRA adapters and frozen parameters, applied after the model is built (same in every worker). */
  adapt?: Adaptation;
}

export interface Adaptation {
  lora?: Job["lora"];
  freeze?: string[];
}

/** The adaptation part of a job (undefined when the job has none). */
export function adaptationOf(job: Pick<Job, "lora" | "freeze">): Adaptation | undefined {
  return job.lora || job.freeze.length ? { lora: job.lora, freeze: job.freeze } : undefined;
}

/** Applies LoRA (which freezes all but the adapters) and freeze patterns; returns the adapted layer names. */
export function adaptModel(m: Module, a: Adaptation | undefined): string[] {
  if (!a) return [];
  const adapted = a.lora ? nn.applyLora(m, { rank: a.lora.rank, alpha: a.lora.alpha, dropout: a.lora.dropout, targets: a.lora.targets }) : [];
  if (a.freeze?.length) {
    const res = a.freeze.map((p) => new RegExp(p));
    for (const [name, p] of m.namedParameters()) if (res.some((re) => re.test(name))) p.requiresGrad = false;
  }
  return adapted;
}

export const MODEL_HELP: Record<string, string> = {
  linear: "linear regression: Flatten → Linear(D, outputs); mseLoss by default",
  logistic: "logistic (softmax) regression: Flatten → Linear(D, classes); crossEntropy",
  mlp: "multi-layer perceptron: Flatten → (Linear → activation [→ dropout]) × hidden → Linear",
  cnn: "convolutional net (core's createCnn): conv blocks → Linear → Linear; images (C, H, W)",
  gpt: "character-level GPT (nanoGPT layout): token + position embeddings → transformer blocks → LM head; text data; arch \"llama\": RMSNorm, rotary positions, grouped-query attention (nKvHead), SwiGLU, no biases",
  module: "any module you write: {module, export, options}; the export is a factory or Module class",
};

const prod = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

const ACTIVATIONS = { relu: nn.ReLU, gelu: nn.GELU, tanh: nn.Tanh, sigmoid: nn.Sigmoid } as const;

/** The factory DataParallel's replicas call (export name "buildJobModel"). */
export async function buildJobModel(o: BuildOptions): Promise<Module> {
  const m = await buildBase(o);
  adaptModel(m, o.adapt);
  return m;
}

async function buildBase(o: BuildOptions): Promise<Module> {
  const { model, ctx } = o;
  const d = prod(ctx.inputShape);
  switch (model.type) {
    case "linear":
    case "logistic":
      return new nn.Sequential(new nn.Flatten(), new nn.Linear(d, ctx.outputSize));
    case "mlp": {
      const layers: Module[] = [new nn.Flatten()];
      let prev = d;
      for (const h of model.hidden) {
        layers.push(new nn.Linear(prev, h), new ACTIVATIONS[model.activation]());
        if (model.dropout > 0) layers.push(new nn.Dropout(model.dropout));
        prev = h;
      }
      layers.push(new nn.Linear(prev, ctx.outputSize));
      return new nn.Sequential(...layers);
    }
    case "cnn": {
      const [c, h, w] = ctx.inputShape.length === 3 ? ctx.inputShape : [1, ...ctx.inputShape];
      if (ctx.inputShape.length < 2 || ctx.inputShape.length > 3) {
        throw new Error(`model.type cnn needs image inputs (C, H, W) or (H, W), the data has rows of shape [${ctx.inputShape.join(",")}]`);
      }
      const { type: _t, ...rest } = model;
      return createCnn({ ...rest, inChannels: c, height: h, width: w, numClasses: ctx.outputSize });
    }
    case "gpt": {
      // The vocabulary size is the tokenizer's (outputSize); the window length is the data's, at most blockSize.
      // arch, nKvHead, ffnHidden, ... pass through to core's GPTConfig, which fills what the job left out.
      const { type: _t, ...cfg } = model;
      return new GPT({ ...cfg, vocabSize: ctx.outputSize });
    }
    case "module": {
      // Relative paths are relative to the current directory; the factory gets the data's shapes with its options.
      const what = `model.module ${model.module}#${model.export}`;
      const f = await importExport(moduleHref(model.module), model.export, what);
      return instantiate(f, { ...(model.options as object), inputShape: ctx.inputShape, outputSize: ctx.outputSize }, what);
    }
  }
}

/** This file, for DataParallel's model spec. */
export const CATALOGUE_MODULE = new URL(import.meta.url).href;
