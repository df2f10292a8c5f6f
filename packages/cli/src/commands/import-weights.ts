/**
 * chainrule import-weights FILE --arch gpt2 --out CHECKPOINT: a checkpoint made from GPT-2
 * weights in Hugging Face's safetensors layout (core's gpt2StateDict: names mapped, Conv1D
 * weights transposed, head tied, tanh GELU) and GPT-2's byte-level BPE tokenizer (vocab.json +
 * merges.txt). `chainrule generate CHECKPOINT` samples from it, and a job with
 * `init: {checkpoint: CHECKPOINT}` fine-tunes it (with LoRA, for example).
 */
import { existsSync, readFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { BpeTokenizer, GPT, gpt2StateDict, loadSafetensors, saveCheckpoint } from "@chainrule/core";
import { CliError, UsageError } from "../errors.js";
import { parseFlags } from "../flags.js";
import { fmtInt } from "../progress.js";
import { JobSchema } from "../job/schema.js";

export const IMPORT_WEIGHTS_HELP = `usage: chainrule import-weights FILE --arch gpt2 --out CHECKPOINT [options]

Makes a chainrule checkpoint from GPT-2 weights in Hugging Face's layout: FILE is a
safetensors file with GPT-2's names (wte, wpe, h.N.ln_1, h.N.attn.c_attn, h.N.attn.c_proj,
h.N.ln_2, h.N.mlp.c_fc, h.N.mlp.c_proj, ln_f; with or without the "transformer." prefix).
chainrule generate CHECKPOINT then samples from it, and a job with
{"init": {"checkpoint": CHECKPOINT}} fine-tunes it (LoRA included).

options:
  --arch gpt2           the layout of FILE (gpt2 is the one there is)
  --out CHECKPOINT      the new checkpoint directory (must not exist)
  --config FILE         Hugging Face's config.json (n_head, layer_norm_epsilon, activation_function);
                        default: config.json beside FILE
  --n-head N            attention heads, when there is no config.json
  --vocab FILE          the tokenizer's vocab.json (default: beside FILE)
  --merges FILE         the tokenizer's merges.txt (default: beside FILE)
`;

/** config.json fields this import reads. */
interface HfConfig { n_head?: number; layer_norm_epsilon?: number; activation_function?: string; model_type?: string }

export async function importWeightsCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags("import-weights", argv, {
    arch: { type: "string" }, out: { type: "string" }, config: { type: "string" }, "n-head": { type: "string" },
    vocab: { type: "string" }, merges: { type: "string" }, help: { type: "boolean", short: "h" },
  });
  if (values.help) {
    process.stdout.write(IMPORT_WEIGHTS_HELP);
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError(`import-weights takes one FILE (a safetensors file), got ${positionals.length}`);
  if (values.arch === undefined) throw new UsageError("import-weights needs --arch gpt2 (the layout of FILE)");
  if (values.arch !== "gpt2") throw new UsageError(`--arch: expected gpt2, got ${JSON.stringify(values.arch)}`);
  const out = values.out;
  if (!out) throw new UsageError("import-weights needs --out CHECKPOINT (the new checkpoint directory)");
  if (existsSync(out)) throw new CliError(`--out ${out}: already exists; choose a new directory`);
  if (!existsSync(dirname(out))) throw new CliError(`--out ${out}: no such directory ${dirname(out)}`);
  const file = positionals[0];
  if (!existsSync(file)) throw new CliError(`${file}: no such file`);
  const beside = (name: string) => join(dirname(file), name);

  const hf = readConfig(values.config ?? (existsSync(beside("config.json")) ? beside("config.json") : undefined));
  let nHead = hf.n_head;
  if (values["n-head"] !== undefined) {
    nHead = Number(values["n-head"]);
    if (!Number.isInteger(nHead) || nHead < 1) throw new UsageError(`--n-head: expected an integer ≥ 1, got ${JSON.stringify(values["n-head"])}`);
  }
  if (nHead === undefined) throw new UsageError(`--n-head: the number of attention heads is not in the weights; give --n-head N or --config config.json (none beside ${file})`);
  if (hf.activation_function !== undefined && hf.activation_function !== "gelu_new") throw new CliError(`config.json: activation_function ${JSON.stringify(hf.activation_function)}; GPT-2's is "gelu_new" (tanh GELU), the one this import builds`);
  const vocabFile = values.vocab ?? beside("vocab.json"), mergesFile = values.merges ?? beside("merges.txt");
  for (const [flag, f] of [["--vocab", vocabFile], ["--merges", mergesFile]]) {
    if (!existsSync(f)) throw new CliError(`${flag} ${f}: no such file (the GPT-2 tokenizer's ${basename(f)}; give ${flag} FILE)`);
  }

  let tokenizer: BpeTokenizer, model: GPT, config: ReturnType<typeof gpt2StateDict>["config"];
  try {
    tokenizer = BpeTokenizer.fromFiles(vocabFile, mergesFile);
    const imported = gpt2StateDict(loadSafetensors(file).tensors, { nHead, normEps: hf.layer_norm_epsilon });
    config = imported.config;
    if (tokenizer.vocabSize !== config.vocabSize) throw new CliError(`${vocabFile}: ${tokenizer.vocabSize} tokens, but ${file} embeds ${config.vocabSize}`);
    model = new GPT(config);
    model.loadStateDict(imported.stateDict, { strict: true });
  } catch (e) {
    if (e instanceof CliError) throw e;
    throw new CliError(`${file}: ${(e as Error).message}`);
  }

  const { vocabSize, ...modelFields } = config;
  const job = JobSchema.parse({
    name: basename(out), model: { type: "gpt", ...modelFields }, data: { type: "text", blockSize: Math.min(64, config.blockSize) },
    sample: { tokens: 50, prompt: "", temperature: 0.8 },
  });
  saveCheckpoint(out, {
    model, step: 0, epoch: 0, rng: null, config: job,
    extra: { modelContext: { inputShape: [config.blockSize], outputSize: vocabSize }, classification: true, tokenizer: tokenizer.toJSON(), importedFrom: file },
  });
  const { nLayer, nEmbd, blockSize } = config;
  process.stdout.write(`imported GPT-2 (${nLayer} layers × ${nHead} heads × ${nEmbd} wide, context ${blockSize}, vocab ${vocabSize}; ${fmtInt(model.numParameters())} parameters) from ${file}\n`);
  process.stdout.write(`tokenizer: byte-level BPE, ${tokenizer.merges.length} merges, from ${vocabFile} and ${mergesFile}\n`);
  process.stdout.write(`wrote ${out}\n`);
  return 0;
}

function readConfig(path: string | undefined): HfConfig {
  if (path === undefined) return {};
  let c: HfConfig;
  try {
    c = JSON.parse(readFileSync(path, "utf8"));
  } catch (e) {
    throw new CliError(`--config ${path}: ${(e as Error).message}`);
  }
  if (c.model_type !== undefined && c.model_type !== "gpt2") throw new CliError(`--config ${path}: model_type ${JSON.stringify(c.model_type)}, expected "gpt2"`);
  if (c.n_head !== undefined && (!Number.isInteger(c.n_head) || c.n_head < 1)) throw new CliError(`--config ${path}: n_head must be an integer ≥ 1, got ${JSON.stringify(c.n_head)}`);
  return c;
}
