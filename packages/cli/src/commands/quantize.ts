/**
 * chainrule quantize RUN_OR_CHECKPOINT --out DIR: a checkpoint whose Linear and Conv2d weights
 * are int8 with one float32 scale per output channel (nn.quantizedStateDict), about a quarter of
 * the float32 size. eval, predict, generate and serve read it like any checkpoint: the weights
 * are dequantized (q · scale) as it loads, and inference runs in float32 from there.
 */
import { existsSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { MODEL_FILE, nn, saveCheckpoint } from "@chainrule/core";
import { CliError, UsageError } from "../errors.js";
import { parseFlags } from "../flags.js";
import { fmtInt } from "../progress.js";
import { deployModel } from "../deploy-model.js";
import { MODULE_FLAGS, MODULE_FLAGS_HELP, moduleConsent } from "../checkpoint-model.js";

export const QUANTIZE_HELP = `usage: chainrule quantize RUN_OR_CHECKPOINT --out DIR [--scheme int8]

Writes a copy of a checkpoint (or of a run directory's latest checkpoint) to DIR with the
weights of its Linear and Conv2d layers in int8, one float32 scale per output channel
(symmetric: scale = max|w| / 127); biases, norms and embeddings stay float32. LoRA adapters
are merged first. chainrule eval, predict, generate and serve take DIR like any checkpoint.

--out DIR        the new checkpoint directory (must not exist)
--scheme int8    the only scheme (default)
${MODULE_FLAGS_HELP}`;

/** The metadata value that marks a quantized checkpoint's model.safetensors. */
export const QUANTIZATION = "int8-per-channel";

export async function quantizeCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags("quantize", argv, { out: { type: "string" }, scheme: { type: "string" }, ...MODULE_FLAGS, help: { type: "boolean", short: "h" } });
  if (values.help) {
    process.stdout.write(QUANTIZE_HELP);
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError(`quantize takes one RUN_OR_CHECKPOINT (a run or checkpoint directory), got ${positionals.length}`);
  if ((values.scheme ?? "int8") !== "int8") throw new UsageError(`--scheme: expected int8, got ${JSON.stringify(values.scheme)}`);
  const out = values.out;
  if (!out) throw new UsageError("quantize needs --out DIR (the new checkpoint directory)");
  if (existsSync(out)) throw new CliError(`--out ${out}: already exists; choose a new directory`);
  if (!existsSync(dirname(out))) throw new CliError(`--out ${out}: no such directory ${dirname(out)}`);

  const dm = await deployModel(positionals[0], moduleConsent(values));
  if (dm.contents.metadata.chainrule_quantization) throw new UsageError(`${dm.dir} is already quantized (${dm.contents.metadata.chainrule_quantization})`);
  const weights = nn.quantizedStateDict(dm.model);
  const int8 = nn.int8WeightNames(dm.model).size;
  if (int8 === 0) throw new UsageError(`${dm.dir}: the model has no Linear or Conv2d layer to quantize`);

  saveCheckpoint(out, {
    model: dm.model, weights, metadata: { chainrule_quantization: QUANTIZATION },
    step: dm.contents.state.step, epoch: dm.contents.state.epoch, rng: null, config: dm.job,
    extra: { ...(dm.contents.state.extra ?? {}), position: undefined, quantizedFrom: dm.dir },
  });

  const before = statSync(join(dm.dir, MODEL_FILE)).size, after = statSync(join(out, MODEL_FILE)).size;
  if (dm.merged.length) process.stdout.write(`merged LoRA adapters into ${dm.merged.length} layers\n`);
  process.stdout.write(`checkpoint: ${dm.dir}\n`);
  process.stdout.write(`quantized ${int8} weights to int8 (one scale per output channel)\n`);
  process.stdout.write(`wrote ${out}: ${MODEL_FILE} ${fmtInt(after)} bytes (was ${fmtInt(before)}: ${(before / after).toFixed(2)}x smaller)\n`);
  return 0;
}
