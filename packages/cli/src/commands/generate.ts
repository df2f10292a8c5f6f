/**
 * chainrule generate CHECKPOINT [--prompt TEXT] [--tokens N] [--temperature T] [--top-k K] [--seed S]
 * streams text from a GPT checkpoint (or run directory) to stdout as each
 * character is sampled. Same checkpoint, prompt and seed → same text.
 * A LoRA fine-tuning checkpoint is merged (W + (alpha/r)·B·A) before sampling;
 * `--adapters FILE` applies adapters saved alone to a base checkpoint;
 * `--save-merged DIR` writes the merged model as a plain checkpoint.
 */
import { existsSync } from "node:fs";
import { BpeTokenizer, CharTokenizer, GPT, generate, loadSafetensors, nn, saveCheckpoint, tokenizerFromJSON, type TextTokenizer, type TextTokenizerJSON } from "@chainrule/core";
import { CliError, UsageError } from "../errors.js";
import { MODULE_FLAGS, MODULE_FLAGS_HELP, modelFromCheckpoint, moduleConsent } from "../checkpoint-model.js";
import { resolveCheckpoint } from "../rundir.js";
import { JobSchema, type Job } from "../job/schema.js";
import { parseFlags } from "../flags.js";

export const GENERATE_HELP = `usage: chainrule generate CHECKPOINT [options]

CHECKPOINT is a GPT checkpoint directory or a run directory (its latest
checkpoint). Text is written to stdout as it is sampled.

options:
  --prompt TEXT         text to continue (default: the job's sample.prompt); every
                        character must be in the checkpoint's vocabulary
  --tokens N            characters (BPE tokens for imported GPT-2 weights) to generate (default 200)
  --temperature T       < 1 sharper, > 1 more random, 0 greedy (default: the job's, 0.8)
  --top-k K             sample among the K most likely characters only
  --seed S              sampler seed (default 0): same seed, same text
  --adapters FILE       LoRA adapters saved alone (adapters.safetensors) to apply to
                        CHECKPOINT, a base model (they are merged before sampling)
  --save-merged DIR     also write the (LoRA-merged) model as a plain checkpoint to DIR
${MODULE_FLAGS_HELP.replace(/^/gm, "  ").trimEnd()}
`;

export interface SampleOptions {
  prompt: string;
  tokens: number;
  temperature: number;
  topK?: number;
  seed: number;
}

/** Samples `tokens` tokens (characters, or BPE tokens) after `prompt`, passing the text of each to `emit` as soon as it is drawn. */
export function generateText(model: GPT, tok: TextTokenizer, o: SampleOptions, emit: (text: string) => void): string {
  checkPrompt(tok, o.prompt);
  const stream = tok instanceof BpeTokenizer ? tok.streamDecoder() : { push: (t: number) => tok.decode([t]), flush: () => "" };
  const ids = generate(model, tok.encode(o.prompt), {
    maxNewTokens: o.tokens, temperature: o.temperature, topK: o.topK, seed: o.seed,
    onToken: (t) => emit(stream.push(t)),
  });
  const rest = stream.flush();
  if (rest) emit(rest);
  return tok.decode(ids);
}

/** One line naming every prompt character the vocabulary lacks (a byte-level BPE covers every text). */
export function checkPrompt(tok: TextTokenizer, prompt: string): void {
  if (!(tok instanceof CharTokenizer) || tok.covers(prompt)) return;
  const bad = [...new Set(Array.from(prompt).filter((c) => !tok.covers(c)))];
  const shown = tok.vocab.join(""); // JSON.stringify shows a newline as \n
  throw new UsageError(`--prompt: ${bad.length === 1 ? "character" : "characters"} ${bad.map((c) => JSON.stringify(c)).join(", ")} ${bad.length === 1 ? "is" : "are"} not in the checkpoint's vocabulary (${tok.vocabSize} characters: ${JSON.stringify(shown)})`);
}

function num(name: string, v: string | undefined, opts: { int?: boolean; min?: number } = {}): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === "" || !Number.isFinite(n) || (opts.int && !Number.isInteger(n)) || (opts.min !== undefined && n < opts.min)) {
    throw new UsageError(`--${name}: expected ${opts.int ? "an integer" : "a number"}${opts.min !== undefined ? ` ≥ ${opts.min}` : ""}, got ${JSON.stringify(v)}`);
  }
  return n;
}

export async function generateCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags("generate", argv, {
      prompt: { type: "string" }, tokens: { type: "string" }, temperature: { type: "string" }, "top-k": { type: "string" },
      seed: { type: "string" }, adapters: { type: "string" }, "save-merged": { type: "string" }, ...MODULE_FLAGS, help: { type: "boolean", short: "h" },
    });
  if (values.help) {
    process.stdout.write(GENERATE_HELP);
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError(`generate takes one CHECKPOINT (a checkpoint or run directory), got ${positionals.length}`);
  const tokens = num("tokens", values.tokens, { int: true, min: 0 });
  const temperature = num("temperature", values.temperature, { min: 0 });
  const topK = num("top-k", values["top-k"], { int: true, min: 1 });
  const seed = num("seed", values.seed, { int: true, min: 0 });
  if (values["save-merged"] && existsSync(values["save-merged"])) throw new CliError(`--save-merged ${values["save-merged"]}: already exists; choose a new directory`);

  const dir = resolveCheckpoint(positionals[0]);
  const cm = await modelFromCheckpoint(dir, moduleConsent(values));
  const tj = (cm.contents.state.extra as { tokenizer?: TextTokenizerJSON } | undefined)?.tokenizer;
  if (!(cm.model instanceof GPT) || !tj) throw new UsageError(`${dir}: not a GPT text checkpoint (model ${cm.job.model.type}); generate needs one trained on text data`);
  const model = cm.model;
  const tok = tokenizerFromJSON(tj);
  let job: Job = cm.job;
  const notes: string[] = [];

  if (values.adapters) {
    if (nn.loraLayers(model).length) throw new UsageError(`--adapters: ${dir} already has LoRA adapters; give its base checkpoint instead`);
    const file = values.adapters;
    if (!existsSync(file)) throw new CliError(`--adapters ${file}: no such file`);
    const { tensors, metadata } = loadSafetensors(file);
    let lora: Job["lora"];
    try {
      lora = JobSchema.shape.lora.parse(JSON.parse(metadata.chainrule_lora ?? "null"));
    } catch {
      throw new CliError(`--adapters ${file}: no LoRA configuration in its metadata (chainrule_lora); was it written by chainrule train?`);
    }
    if (!lora) throw new CliError(`--adapters ${file}: no LoRA configuration in its metadata (chainrule_lora)`);
    nn.applyLora(model, { rank: lora.rank, alpha: lora.alpha, dropout: lora.dropout, targets: lora.targets });
    try {
      nn.loadLora(model, tensors, { strict: true });
    } catch (e) {
      throw new CliError(`--adapters ${file} do not fit ${dir}: ${(e as Error).message}`);
    }
    notes.push(`applied ${Object.keys(tensors).length} adapter tensors from ${file}`);
  }
  const merged = nn.mergeLora(model);
  if (merged.length) {
    notes.push(`merged LoRA adapters into ${merged.length} layers`);
    job = { ...job, lora: undefined, init: undefined };
  }
  model.eval();

  const sample = { ...cm.job.sample };
  const o: SampleOptions = {
    prompt: values.prompt ?? sample.prompt, tokens: tokens ?? sample.tokens, temperature: temperature ?? sample.temperature,
    topK: topK ?? sample.topK, seed: seed ?? 0,
  };
  checkPrompt(tok, o.prompt);

  if (values["save-merged"]) {
    saveCheckpoint(values["save-merged"], {
      model, step: cm.contents.state.step, epoch: cm.contents.state.epoch, rng: null, config: job,
      extra: { ...(cm.contents.state.extra ?? {}), position: undefined, mergedFrom: dir },
    });
    notes.push(`merged model written to ${values["save-merged"]}`);
  }
  if (notes.length) process.stderr.write(`${notes.join("; ")}\n`);

  const out = process.stdout;
  out.write(o.prompt);
  generateText(model, tok, o, (t) => out.write(t));
  out.write("\n");
  return 0;
}
