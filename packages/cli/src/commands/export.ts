/**
 * chainrule export RUN_OR_CHECKPOINT --format onnx [--out FILE] [--opset N] [--quantize int8]:
 * the checkpoint's model as an ONNX file that onnxruntime (or any ONNX runtime) runs, with
 * LoRA adapters merged, dropout removed and batch norm in evaluation mode.
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import { dirname } from "node:path";
import { type CharTokenizerJSON, writeFileAtomicSync } from "@chainrule/core";
import { CliError, UsageError } from "../errors.js";
import { parseFlags } from "../flags.js";
import { fmtInt } from "../progress.js";
import { deployModel } from "../deploy-model.js";
import { MODULE_FLAGS, MODULE_FLAGS_HELP, moduleConsent } from "../checkpoint-model.js";
import { DEFAULT_OPSET, SUPPORTED_OPSETS, exportOnnx } from "../onnx/export.js";

export const EXPORT_HELP = `usage: chainrule export RUN_OR_CHECKPOINT [--format onnx] [--out FILE] [--opset N] [--quantize int8]

Writes the model of a checkpoint (or of a run directory's latest checkpoint) as ONNX, in
evaluation mode: dropout removed, batch norm with its running statistics, LoRA adapters merged.
Models: mlp, linear, logistic, cnn, gpt, and your own modules built of the layers listed in the
README ("Export to ONNX"). Classifiers output logits (batch, classes) from "input" (batch, ...row
shape), float32; a GPT outputs logits (batch, sequence, vocab) from token ids "idx" (batch,
sequence), int64, the sequence at most the model's blockSize.

--format onnx      the only format (default)
--out FILE         where to write (default: <run name>.onnx, or <run name>-int8.onnx, here)
--opset N          ONNX opset: ${SUPPORTED_OPSETS.join(", ")} (default ${DEFAULT_OPSET})
--quantize int8    Linear and Conv2d weights in int8, one scale per output channel
                   (DequantizeLinear before each; activations stay float32): about 4x smaller
${MODULE_FLAGS_HELP}`;

function cliVersion(): string {
  return (JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }).version;
}

export async function exportCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags("export", argv, {
    format: { type: "string" }, out: { type: "string" }, opset: { type: "string" }, quantize: { type: "string" }, ...MODULE_FLAGS, help: { type: "boolean", short: "h" },
  });
  if (values.help) {
    process.stdout.write(EXPORT_HELP);
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError(`export takes one RUN_OR_CHECKPOINT (a run or checkpoint directory), got ${positionals.length}`);
  if ((values.format ?? "onnx") !== "onnx") throw new UsageError(`--format: expected onnx, got ${JSON.stringify(values.format)}`);
  const opset = values.opset === undefined ? DEFAULT_OPSET : Number(values.opset);
  if (!SUPPORTED_OPSETS.includes(opset)) throw new UsageError(`--opset: expected one of ${SUPPORTED_OPSETS.join(", ")}, got ${JSON.stringify(values.opset)}`);
  if (values.quantize !== undefined && values.quantize !== "int8") throw new UsageError(`--quantize: expected int8, got ${JSON.stringify(values.quantize)}`);
  const int8 = values.quantize === "int8";

  const dm = await deployModel(positionals[0], moduleConsent(values));
  const extra = (dm.contents.state.extra ?? {}) as { tokenizer?: CharTokenizerJSON };
  const isText = dm.job.model.type === "gpt";
  const metadata: Record<string, string> = {
    "chainrule.model": JSON.stringify(dm.job.model),
    "chainrule.input_shape": JSON.stringify(dm.ctx.inputShape),
    "chainrule.task": isText ? "text" : dm.classification ? "classification" : "regression",
    "chainrule.checkpoint": dm.dir,
  };
  if (dm.classNames) metadata["chainrule.classes"] = JSON.stringify(dm.classNames);
  if (extra.tokenizer) metadata["chainrule.tokenizer"] = JSON.stringify(extra.tokenizer);
  if (int8) metadata["chainrule.quantization"] = "int8 per output channel (Linear, Conv2d weights)";

  const result = exportOnnx(dm.model, {
    inputShape: dm.ctx.inputShape, opset, int8, metadata, producerVersion: cliVersion(),
    outputName: isText || dm.classification ? "logits" : "output",
  });
  const out = values.out ?? `${dm.job.name ?? "model"}${int8 ? "-int8" : ""}.onnx`;
  if (!existsSync(dirname(out))) throw new CliError(`--out ${out}: no such directory ${dirname(out)}`);
  writeFileAtomicSync(out, result.bytes);

  const shape = (d: (number | string)[]) => `(${d.join(", ")})`;
  if (dm.merged.length) process.stdout.write(`merged LoRA adapters into ${dm.merged.length} layers\n`);
  process.stdout.write(`checkpoint: ${dm.dir}\n`);
  process.stdout.write(`wrote ${out}: ${fmtInt(statSync(out).size)} bytes, ONNX opset ${opset}${int8 ? `, ${result.int8Weights} weights in int8` : ""}\n`);
  process.stdout.write(`input ${result.input.name} ${result.input.type} ${shape(result.input.dims)} → output ${result.output.name} float32 ${shape(result.output.dims)}\n`);
  return 0;
}
