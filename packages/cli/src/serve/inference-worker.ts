/**
 * One inference worker thread (comlink): loads a checkpoint once, then answers
 * typed calls from the server's pool — a batch of rows through the model, or text
 * sampled from a GPT, streamed back token by token.
 */
import { parentPort } from "node:worker_threads";
import * as Comlink from "comlink";
import { nodeEndpoint } from "./comlink-endpoint.js";
import { CharTokenizer, GPT, Tensor, generate, nn, noGrad, softmax, type CharTokenizerJSON } from "@chainrule/core";
import { type CheckpointModel, type ModuleConsent, describeModel, modelFromCheckpoint } from "../checkpoint-model.js";
import { UsageError } from "../errors.js";
import type { GenerateParams, ModelInfo } from "./protocol.js";

let loaded: { cm: CheckpointModel; tokenizer?: CharTokenizer } | null = null;

/** Thrown from inside sampling when the server cancels a generation (client gone, timeout, shutdown). */
class Cancelled extends Error {}

function model(): { cm: CheckpointModel; tokenizer?: CharTokenizer } {
  if (!loaded) throw new Error("inference worker: load() was not called");
  return loaded;
}

export const inferenceApi = {
  /** Rebuilds the checkpoint's model (LoRA adapters merged) and describes it. */
  async load(checkpoint: string, consent: ModuleConsent): Promise<ModelInfo> {
    const cm = await modelFromCheckpoint(checkpoint, consent).catch((e: Error) => {
      // comlink passes an error's name and message: name a usage error so the command exits 2.
      if (e instanceof UsageError) e.name = "UsageError";
      throw e;
    });
    nn.mergeLora(cm.model);
    cm.model.eval();
    const tj = (cm.contents.state.extra as { tokenizer?: CharTokenizerJSON } | undefined)?.tokenizer;
    const tokenizer = cm.model instanceof GPT && tj ? CharTokenizer.fromJSON(tj) : undefined;
    loaded = { cm, tokenizer };
    const gpt = cm.job.model.type === "gpt" && cm.model instanceof GPT ? cm.model : undefined;
    return {
      type: cm.job.model.type,
      description: describeModel(cm.job, cm.ctx, cm.model),
      parameters: cm.model.numParameters(),
      checkpoint,
      step: cm.contents.state.step,
      inputShape: cm.ctx.inputShape,
      task: gpt ? "text" : cm.classification ? "classification" : "regression",
      outputs: cm.ctx.outputSize,
      classes: !gpt && cm.classification ? cm.ctx.outputSize : undefined,
      classNames: cm.classNames,
      vocabSize: tokenizer?.vocabSize,
      vocab: tokenizer ? [...tokenizer.vocab] : undefined,
      blockSize: gpt?.config.blockSize,
      sample: gpt ? { ...cm.job.sample } : undefined,
    };
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
   * Samples text after `prompt`, calling `onToken` (a comlink proxy of the server's callback)
   * with each character as it is drawn. Stops early, returning what it has, once the server
   * sets cancel[0] to 1.
   */
  async generate(p: GenerateParams, onToken: (text: string) => Promise<void> | void, cancel: Int32Array): Promise<{ text: string; tokens: number; cancelled: boolean }> {
    const { cm, tokenizer } = model();
    if (!(cm.model instanceof GPT) || !tokenizer) throw new Error("inference worker: not a GPT text model");
    let text = "", tokens = 0, cancelled = false;
    // Tokens travel on the callback's own channel, the result on the worker's: wait until every
    // token has been delivered, so that the result never overtakes the last tokens.
    const delivered: (Promise<void> | void)[] = [];
    try {
      generate(cm.model, tokenizer.encode(p.prompt), {
        maxNewTokens: p.maxTokens, temperature: p.temperature, topK: p.topK, seed: p.seed,
        onToken: (t) => {
          if (Atomics.load(cancel, 0) !== 0) throw new Cancelled();
          const ch = tokenizer.decode([t]);
          text += ch;
          tokens++;
          delivered.push(onToken(ch));
        },
      });
    } catch (e) {
      if (!(e instanceof Cancelled)) throw e;
      cancelled = true;
    } finally {
      await Promise.allSettled(delivered);
      (onToken as { [Comlink.releaseProxy]?: () => void })[Comlink.releaseProxy]?.();
    }
    return { text, tokens, cancelled };
  },
};

export type InferenceApi = typeof inferenceApi;

if (parentPort) Comlink.expose(inferenceApi, nodeEndpoint(parentPort));
