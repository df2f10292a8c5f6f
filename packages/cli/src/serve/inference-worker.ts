/**
 * One inference worker thread (comlink): loads a checkpoint (or attaches to the weights another
 * worker loaded into shared memory), then answers
 * typed calls from the server's pool — a batch of rows through the model, or text
 * sampled from a GPT, streamed back token by token.
 */
import { parentPort } from "node:worker_threads";
import * as Comlink from "comlink";
import { nodeEndpoint } from "./comlink-endpoint.js";
import { BpeTokenizer, CharTokenizer, GPT, Generator, Tensor, nn, nextTokenLogits, noGrad, sampleToken, softmax, tokenizerFromJSON, type TextTokenizer, type TextTokenizerJSON } from "@chainrule/core";
import { type CheckpointModel, type ModelRecipe, type ModuleConsent, describeModel, modelFromCheckpoint, modelFromRecipe } from "../checkpoint-model.js";
import { type SharedWeights, bindSharedWeights, shareWeights } from "./shared-weights.js";
import { UsageError } from "../errors.js";
import type { GenerateParams, ModelInfo } from "./protocol.js";

/** The served model, its description, and for a GPT its tokenizer. */
interface Served {
  cm: Omit<CheckpointModel, "contents">;
  tokenizer?: TextTokenizer;
}

let loaded: Served | null = null;

function model(): Served {
  if (!loaded) throw new Error("inference worker: load() was not called");
  return loaded;
}

/** comlink passes an error's name and message: name a usage error so the command exits 2. */
function named(e: Error): never {
  if (e instanceof UsageError) e.name = "UsageError";
  throw e;
}

/** Merges LoRA adapters, keeps the model for the calls to come and describes it. */
function serveModel(checkpoint: string, cm: Omit<CheckpointModel, "contents">, recipe: ModelRecipe): ModelInfo {
  nn.mergeLora(cm.model);
  cm.model.eval();
  const tj = (recipe.extra as { tokenizer?: TextTokenizerJSON } | undefined)?.tokenizer;
  const tokenizer = cm.model instanceof GPT && tj ? tokenizerFromJSON(tj) : undefined;
  loaded = { cm, tokenizer };
  const gpt = cm.job.model.type === "gpt" && cm.model instanceof GPT ? cm.model : undefined;
  return {
    type: cm.job.model.type,
    description: describeModel(cm.job, cm.ctx, cm.model),
    parameters: cm.model.numParameters(),
    checkpoint,
    step: recipe.step,
    inputShape: cm.ctx.inputShape,
    task: gpt ? "text" : cm.classification ? "classification" : "regression",
    outputs: cm.ctx.outputSize,
    classes: !gpt && cm.classification ? cm.ctx.outputSize : undefined,
    classNames: cm.classNames,
    vocabSize: tokenizer?.vocabSize,
    // A character vocabulary, for the prompt check; byte-level BPE encodes any text.
    vocab: tokenizer instanceof CharTokenizer ? [...tokenizer.vocab] : undefined,
    tokenizer: tokenizer instanceof BpeTokenizer ? "bpe" : tokenizer ? "char" : undefined,
    blockSize: gpt?.config.blockSize,
    sample: gpt ? { ...cm.job.sample } : undefined,
  };
}

export const inferenceApi = {
  /**
   * Reads the checkpoint, rebuilds its model (LoRA adapters merged) and describes it; its weights
   * move to shared memory, returned with the recipe for the other workers' `attach`.
   */
  async load(checkpoint: string, consent: ModuleConsent): Promise<{ info: ModelInfo; recipe: ModelRecipe; shared: SharedWeights }> {
    const { contents, ...cm } = await modelFromCheckpoint(checkpoint, consent).catch(named);
    const recipe: ModelRecipe = { config: contents.state.config, extra: contents.state.extra, step: contents.state.step };
    const info = serveModel(checkpoint, cm, recipe);
    return { info, recipe, shared: shareWeights(cm.model) };
  },

  /** Rebuilds the model `load` read elsewhere and runs it over the weights it shared (no copy). */
  async attach(checkpoint: string, consent: ModuleConsent, recipe: ModelRecipe, shared: SharedWeights): Promise<ModelInfo> {
    const cm = await modelFromRecipe(checkpoint, recipe, consent).catch(named);
    const info = serveModel(checkpoint, cm, recipe);
    bindSharedWeights(cm.model, shared);
    return info;
  },

  /**
   * `n` rows (n × features, row-major) through the model: class probabilities
   * (softmax) for a classifier, the output values for a regression model; n × outputs.
   */
  predict(rows: Float32Array, n: number): Float32Array {
    const { cm } = model();
    const out = noGrad(() => {
      const y = cm.model.forward(new Tensor(rows, [n, ...cm.ctx.inputShape])); // (n, outputs)
      return cm.classification ? softmax(y, -1) : y;
    });
    const data = Float32Array.from(out.data);
    return Comlink.transfer(data, [data.buffer]);
  },

  /**
   * Samples text after `prompt` as core's generate() does (key/value cache while the context
   * fits, then the moving window; the same sampler and seed, so the same text as `chainrule
   * generate`), calling `onToken` (a comlink proxy of the server's
   * callback) with each character as it is drawn. Between tokens it yields to the thread's other
   * calls, so the generations a worker holds advance in turn. Stops early, returning what it has,
   * once the server sets cancel[0] to 1.
   */
  async generate(p: GenerateParams, onToken: (text: string) => Promise<void> | void, cancel: Int32Array): Promise<{ text: string; tokens: number; cancelled: boolean }> {
    const { cm, tokenizer } = model();
    const gpt = cm.model;
    if (!(gpt instanceof GPT) || !tokenizer) throw new Error("inference worker: not a GPT text model");
    const V = gpt.config.vocabSize;
    const topK = p.topK === undefined ? V : Math.min(p.topK, V);
    const context = p.prompt.length > 0 ? Array.from(tokenizer.encode(p.prompt)) : [0]; // an empty prompt starts from token 0
    const sampler = new Generator(p.seed);
    const cache = gpt.newCache(); // this generation's keys and values
    const probs = new Float64Array(V);
    let text = "", tokens = 0, cancelled = false;
    // Tokens travel on the callback's own channel, the result on the worker's: wait until every
    // token has been delivered, so that the result never overtakes the last tokens.
    const delivered: (Promise<void> | void)[] = [];
    // BPE tokens are bytes: a character may span several, so text comes out as it completes.
    const decoder = tokenizer instanceof BpeTokenizer ? tokenizer.streamDecoder() : { push: (t: number) => tokenizer.decode([t]), flush: () => "" };
    try {
      for (let n = 0; n < p.maxTokens; n++) {
        if (n > 0) await new Promise((resolve) => setImmediate(resolve));
        if (Atomics.load(cancel, 0) !== 0) {
          cancelled = true;
          break;
        }
        const next = noGrad(() => sampleToken(nextTokenLogits(gpt, context, cache), p.temperature, topK, sampler, probs));
        context.push(next);
        const ch = decoder.push(next);
        tokens++;
        if (ch === "") continue;
        text += ch;
        delivered.push(onToken(ch));
      }
      const rest = decoder.flush();
      if (rest !== "") {
        text += rest;
        delivered.push(onToken(rest));
      }
    } finally {
      await Promise.allSettled(delivered);
      (onToken as { [Comlink.releaseProxy]?: () => void })[Comlink.releaseProxy]?.();
    }
    return { text, tokens, cancelled };
  },
};

export type InferenceApi = typeof inferenceApi;

if (parentPort) Comlink.expose(inferenceApi, nodeEndpoint(parentPort));
