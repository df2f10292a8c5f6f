/**
 * A chainrule model as an ONNX file's bytes: the GPT model, or a Sequential of the layers in
 * layers.ts (the MLP, linear/logistic regression and CNN jobs, and user models built of them),
 * in evaluation mode. int8: Linear and Conv2d weights per output channel behind
 * DequantizeLinear, activations in float32.
 */
import { GPT, nn } from "@chainrule/core";
import { DataType, type Dim, OnnxGraph, SUPPORTED_OPSETS } from "./graph.js";
import { ExportError, lowerModule } from "./layers.js";
import { lowerGpt } from "./gpt.js";
import { GraphWeights } from "./weights.js";

export { ExportError } from "./layers.js";
export { SUPPORTED_OPSETS } from "./graph.js";

export const DEFAULT_OPSET = 17;

export interface OnnxExportOptions {
  /** Shape of one input row (the data's; a Sequential's input is (batch, ...inputShape)). Ignored for a GPT. */
  inputShape: readonly number[];
  /** ONNX opset (default 17). */
  opset?: number;
  /** Linear and Conv2d weights in int8 with per-channel scales. */
  int8?: boolean;
  /** The output's name (default "logits"). */
  outputName?: string;
  /** Written to the model's metadata_props. */
  metadata?: Record<string, string>;
  producerVersion?: string;
}

export interface OnnxExport {
  bytes: Uint8Array;
  /** The graph's input and output: name, element type and shape (names are dynamic sizes). */
  input: { name: string; type: "float32" | "int64"; dims: Dim[] };
  output: { name: string; dims: Dim[] };
  /** How many weights are in int8. */
  int8Weights: number;
}

/** Exports `model` (put in evaluation mode); throws ExportError naming a module it cannot express. */
export function exportOnnx(model: nn.Module, opts: OnnxExportOptions): OnnxExport {
  const opset = opts.opset ?? DEFAULT_OPSET;
  if (!SUPPORTED_OPSETS.includes(opset)) throw new ExportError(`export: opset ${opset} is not supported (supported: ${SUPPORTED_OPSETS.join(", ")})`);
  model.eval();
  const g = new OnnxGraph(opset);
  const int8 = opts.int8 ? new Set(nn.int8WeightNames(model).keys()) : null;
  const c = { g, w: new GraphWeights(g, model, int8) };
  let input: OnnxExport["input"];
  let out;
  if (model instanceof GPT && Object.getPrototypeOf(model) === GPT.prototype) {
    out = lowerGpt(c, model);
    input = { name: "idx", type: "int64", dims: ["batch", "sequence"] };
  } else {
    const dims: Dim[] = ["batch", ...opts.inputShape];
    const name = g.input("input", DataType.FLOAT, dims);
    input = { name, type: "float32", dims };
    out = lowerModule(c, model, { name, dims }, "");
    if (out.name === name) throw new ExportError("export: the model computes nothing (its output is its input)");
  }
  const outputName = opts.outputName ?? "logits";
  g.output(out.name, outputName, out.dims);
  const bytes = g.encode({ producerVersion: opts.producerVersion ?? "", metadata: opts.metadata });
  return { bytes, input, output: { name: outputName, dims: out.dims }, int8Weights: int8?.size ?? 0 };
}
