/**
 * chainrule layers as ONNX nodes, in evaluation mode: Sequential (and core's ImageClassifier)
 * of Linear, Conv2d, BatchNorm1d/2d (running statistics), MaxPool2d, AvgPool2d, global
 * AdaptiveAvgPool2d, Flatten, LayerNorm and the activations; Dropout and Identity vanish.
 * Each lowering also tracks the value's shape, so a layer that does not fit is refused here
 * rather than by the runtime, and the graph's output gets its sizes.
 */
import { ImageClassifier, nn } from "@chainrule/core";
import { CliError } from "../errors.js";
import { type AttrValue, type Dim, type OnnxGraph } from "./graph.js";
import { type GraphWeights } from "./weights.js";

/** A graph value and its shape ("batch" and other names are dynamic sizes). */
export interface Value {
  name: string;
  dims: Dim[];
}

export interface LowerContext {
  g: OnnxGraph;
  w: GraphWeights;
}

/** A module this exporter cannot express: a one-line error naming it. */
export class ExportError extends CliError {}

export function unsupported(path: string, m: nn.Module, why = ""): ExportError {
  const what = `'${path || "(the model)"}' (${m.constructor.name})`;
  return new ExportError(`export: cannot express module ${what} in ONNX${why ? `: ${why}` : ""}; supported: Sequential, Linear, Conv2d, BatchNorm1d, BatchNorm2d, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d(1), Flatten, LayerNorm, ReLU, LeakyReLU, ELU, SELU, SiLU, GELU, Tanh, Sigmoid, Hardtanh, Softmax, Dropout, Dropout2d, Identity, and the GPT model`);
}

/**
 * Whether `m` is an instance of exactly `cls`, running that class's own forward: a subclass or a
 * replaced forward may compute anything, so it is not exported as its parent.
 */
export function isExactly<T extends nn.Module>(m: nn.Module, cls: abstract new (...args: any[]) => T): m is T {
  return Object.getPrototypeOf(m) === cls.prototype && !Object.prototype.hasOwnProperty.call(m, "forward");
}

type Pair = readonly [number, number];
const pair = (v: number | readonly [number, number]): Pair => (typeof v === "number" ? [v, v] : v);

/** y = x Wᵀ + b for x (..., in): MatMul with the transposed weight, then the bias. */
export function linear(c: LowerContext, x: Value, weight: nn.Parameter, bias: nn.Parameter | null, path: string): Value {
  const [out, inF] = weight.shape;
  if (x.dims[x.dims.length - 1] !== inF) throw new ExportError(`export: ${path}: input of shape [${x.dims.join(",")}] does not end in ${inF} features`);
  let y = c.g.node("MatMul", [x.name, c.w.get(weight, "transposed")], { name: `${path}_matmul` });
  if (bias) y = c.g.node("Add", [y, c.w.get(bias)], { name: path });
  return { name: y, dims: [...x.dims.slice(0, -1), out] };
}

/** GELU, exact (erf) or tanh-approximated; opset 20 has an operator, earlier opsets its formula. */
export function gelu(c: LowerContext, x: Value, approximate: "none" | "tanh", path: string): Value {
  const { g } = c;
  if (g.opset >= 20) return { name: g.node("Gelu", [x.name], { name: path, attrs: { approximate } }), dims: x.dims };
  let inner: string;
  if (approximate === "none") {
    inner = g.node("Erf", [g.node("Mul", [x.name, g.scalar(Math.SQRT1_2)])]); // erf(x/√2)
  } else {
    const cube = g.node("Mul", [g.node("Mul", [x.name, x.name]), x.name]);
    const arg = g.node("Mul", [g.node("Add", [x.name, g.node("Mul", [cube, g.scalar(0.044715)])]), g.scalar(Math.sqrt(2 / Math.PI))]);
    inner = g.node("Tanh", [arg]); // tanh(√(2/π)(x + 0.044715x³))
  }
  const half = g.node("Mul", [x.name, g.scalar(0.5)]);
  return { name: g.node("Mul", [half, g.node("Add", [inner, g.scalar(1)])], { name: path }), dims: x.dims };
}

export function layerNorm(c: LowerContext, x: Value, ln: nn.LayerNorm, path: string): Value {
  const k = ln.normalizedShape.length;
  const tail = x.dims.slice(-k);
  if (tail.length !== k || tail.some((d, i) => d !== ln.normalizedShape[i])) throw new ExportError(`export: ${path}: LayerNorm over [${ln.normalizedShape.join(",")}] does not fit input [${x.dims.join(",")}]`);
  const n = ln.normalizedShape.reduce((a, b) => a * b, 1);
  const scale = ln.weight ? c.w.get(ln.weight) : c.g.constant(`${path}_ones`, new Float32Array(n).fill(1), ln.normalizedShape);
  const inputs = ln.bias ? [x.name, scale, c.w.get(ln.bias)] : [x.name, scale];
  return { name: c.g.node("LayerNormalization", inputs, { name: path, attrs: { axis: -k, epsilon: { float: ln.eps } } }), dims: x.dims };
}

function conv2d(c: LowerContext, x: Value, m: nn.Conv2d, path: string): Value {
  const [N, C, H, W] = x.dims;
  if (x.dims.length !== 4 || C !== m.inChannels) throw new ExportError(`export: ${path}: Conv2d takes (N, ${m.inChannels}, H, W), got [${x.dims.join(",")}]`);
  const [kh, kw] = m.kernelSize;
  const [sh, sw] = pair(m.opts.stride ?? 1), [dh, dw] = pair(m.opts.dilation ?? 1);
  const p = m.opts.padding ?? 0;
  // "same" (stride 1) pads d·(k-1)/2 on each side; "valid" pads nothing.
  const [ph, pw] = p === "same" ? [(dh * (kh - 1)) / 2, (dw * (kw - 1)) / 2] : p === "valid" ? [0, 0] : pair(p);
  const inputs = [x.name, c.w.get(m.weight)];
  if (m.bias) inputs.push(c.w.get(m.bias));
  const y = c.g.node("Conv", inputs, {
    name: path,
    attrs: { kernel_shape: [kh, kw], strides: [sh, sw], pads: [ph, pw, ph, pw], dilations: [dh, dw], group: m.opts.groups ?? 1 },
  });
  return { name: y, dims: [N, m.outChannels, windowOutSize(H, kh, sh, ph, dh), windowOutSize(W, kw, sw, pw, dw)] };
}

/** BatchNorm1d ((N, C) or (N, C, L)) and BatchNorm2d ((N, C, H, W)) with their running statistics. */
function batchNorm(c: LowerContext, x: Value, m: nn.BatchNorm2d, path: string, ranks: number[]): Value {
  const cls = m.constructor.name;
  if (!m.runningMean || !m.runningVar) throw unsupported(path, m, "without running statistics it normalises with each batch's own");
  if (!ranks.includes(x.dims.length) || x.dims[1] !== m.numFeatures) {
    throw new ExportError(`export: ${path}: ${cls} takes ${m.numFeatures} channels in dimension 1 of a rank-${ranks.join(" or ")} input, got [${x.dims.join(",")}]`);
  }
  const n = m.numFeatures;
  const scale = m.weight ? c.w.get(m.weight) : c.g.constant(`${path}_ones`, new Float32Array(n).fill(1), [n]);
  const bias = m.bias ? c.w.get(m.bias) : c.g.constant(`${path}_zeros`, new Float32Array(n), [n]);
  const mean = c.w.tensor(m.runningMean, `${path}.running_mean`), variance = c.w.tensor(m.runningVar, `${path}.running_var`);
  return { name: c.g.node("BatchNormalization", [x.name, scale, bias, mean, variance], { name: path, attrs: { epsilon: { float: m.eps } } }), dims: x.dims };
}

/** Output size of a convolution or pooling window along one axis; ceilMode keeps a last partial window that starts inside the input or left padding (PyTorch's rule). */
function windowOutSize(n: Dim, k: number, s: number, pad: number, d: number, ceilMode = false): Dim {
  if (typeof n !== "number") return n;
  const span = n + 2 * pad - d * (k - 1) - 1;
  const floor = Math.floor(span / s) + 1;
  if (!ceilMode) return floor;
  let ceil = Math.ceil(span / s) + 1;
  if ((ceil - 1) * s >= n + pad) ceil--;
  return Math.max(floor, ceil);
}

function pool(c: LowerContext, x: Value, m: nn.MaxPool2d | nn.AvgPool2d, path: string): Value {
  if (x.dims.length !== 4) throw new ExportError(`export: ${path}: pooling takes (N, C, H, W), got [${x.dims.join(",")}]`);
  const [kh, kw] = pair(m.kernelSize);
  const [sh, sw] = pair(m.opts.stride ?? [kh, kw]), [ph, pw] = pair(m.opts.padding ?? 0);
  const max = m instanceof nn.MaxPool2d;
  const [dh, dw] = max ? pair((m as nn.MaxPool2d).opts.dilation ?? 1) : [1, 1];
  const ceilMode = m.opts.ceilMode ?? false;
  const countIncludePad = max ? false : ((m as nn.AvgPool2d).opts.countIncludePad ?? true);
  // A partial last window's divisor: PyTorch counts the padding it covers but not what lies past it; onnxruntime differs.
  if (ceilMode && countIncludePad && (ph > 0 || pw > 0)) throw unsupported(path, m, "ceilMode with padding counted in the average is not expressed");
  const attrs: Record<string, number[] | number> = { kernel_shape: [kh, kw], strides: [sh, sw], pads: [ph, pw, ph, pw], ceil_mode: ceilMode ? 1 : 0 };
  if (max) attrs.dilations = [dh, dw];
  else attrs.count_include_pad = countIncludePad ? 1 : 0;
  const y = c.g.node(max ? "MaxPool" : "AveragePool", [x.name], { name: path, attrs });
  return { name: y, dims: [x.dims[0], x.dims[1], windowOutSize(x.dims[2], kh, sh, ph, dh, ceilMode), windowOutSize(x.dims[3], kw, sw, pw, dw, ceilMode)] };
}

function flatten(c: LowerContext, x: Value, m: nn.Flatten, path: string): Value {
  const end = m.endDim < 0 ? x.dims.length + m.endDim : m.endDim;
  // ONNX Flatten gives 2-D (d0 · … · d(axis-1), rest): torch's flatten(1, -1) exactly.
  if (m.startDim !== 1 || end !== x.dims.length - 1) throw unsupported(path, m, `only Flatten(1, -1) is expressed, got Flatten(${m.startDim}, ${m.endDim})`);
  const rest = x.dims.slice(1);
  const size = rest.every((d): d is number => typeof d === "number") ? rest.reduce((a, b) => a * b, 1) : "features";
  return { name: c.g.node("Flatten", [x.name], { name: path, attrs: { axis: 1 } }), dims: [x.dims[0], size] };
}

/** One module (and what is below it) applied to `x`. */
export function lowerModule(c: LowerContext, m: nn.Module, x: Value, path: string): Value {
  const { g } = c;
  const same = (op: string, attrs?: Record<string, AttrValue>) => ({ name: g.node(op, [x.name], { name: path || op, attrs }), dims: x.dims });
  if (isExactly(m, ImageClassifier)) return lowerSequential(c, m, imageInput(c, m, x), path);
  if (isExactly(m, nn.Sequential)) return lowerSequential(c, m, x, path);
  if (isExactly(m, nn.Linear)) return linear(c, x, m.weight, m.bias, path);
  if (isExactly(m, nn.Conv2d)) return conv2d(c, x, m, path);
  if (isExactly(m, nn.BatchNorm2d)) return batchNorm(c, x, m, path, [4]);
  if (isExactly(m, nn.MaxPool2d) || isExactly(m, nn.AvgPool2d)) return pool(c, x, m, path);
  if (isExactly(m, nn.AdaptiveAvgPool2d)) {
    const [oh, ow] = pair(m.outputSize);
    if (oh !== 1 || ow !== 1 || x.dims.length !== 4) throw unsupported(path, m, "only global average pooling (output size 1) is expressed");
    return { name: g.node("GlobalAveragePool", [x.name], { name: path }), dims: [x.dims[0], x.dims[1], 1, 1] };
  }
  if (isExactly(m, nn.Flatten)) return flatten(c, x, m, path);
  if (isExactly(m, nn.LayerNorm)) return layerNorm(c, x, m, path);
  if (isExactly(m, nn.BatchNorm1d)) return batchNorm(c, x, m, path, [2, 3]);
  if (isExactly(m, nn.ReLU)) return same("Relu");
  if (isExactly(m, nn.LeakyReLU)) return same("LeakyRelu", { alpha: { float: m.negativeSlope } });
  if (isExactly(m, nn.ELU)) return same("Elu", { alpha: { float: m.alpha } });
  if (isExactly(m, nn.SELU)) return same("Selu"); // ONNX's default alpha and gamma are SELU's constants
  if (isExactly(m, nn.SiLU)) return { name: g.node("Mul", [x.name, g.node("Sigmoid", [x.name])], { name: path }), dims: x.dims };
  if (isExactly(m, nn.Hardtanh)) return { name: g.node("Clip", [x.name, g.scalar(m.minVal), g.scalar(m.maxVal)], { name: path }), dims: x.dims };
  if (isExactly(m, nn.Sigmoid)) return same("Sigmoid");
  if (isExactly(m, nn.Tanh)) return same("Tanh");
  if (isExactly(m, nn.GELU)) return gelu(c, x, m.approximate, path);
  if (isExactly(m, nn.Softmax)) return same("Softmax", { axis: m.axis });
  // Evaluation mode: dropout passes its input through.
  if (isExactly(m, nn.Dropout) || isExactly(m, nn.Dropout2d) || isExactly(m, nn.Identity)) return x;
  if (m instanceof nn.LoRALinear) throw unsupported(path, m, "merge the adapters first (nn.mergeLora; chainrule export merges them itself)");
  throw unsupported(path, m);
}

function lowerSequential(c: LowerContext, m: nn.Sequential, x: Value, path: string): Value {
  for (const [name, child] of m.namedChildren()) x = lowerModule(c, child, x, path ? `${path}.${name}` : name);
  return x;
}

/** ImageClassifier takes (N, C, H, W) or flat rows (N, C·H·W): reshape the latter, as its forward does. */
function imageInput(c: LowerContext, m: ImageClassifier, x: Value): Value {
  const { inChannels: C, height: H, width: W } = m.config;
  const want = [C, H, W];
  if (x.dims.length === 4 && want.every((d, i) => x.dims[i + 1] === d)) return x;
  const rest = x.dims.slice(1);
  if (rest.some((d) => typeof d !== "number") || rest.reduce<number>((a, b) => a * (b as number), 1) !== C * H * W) {
    throw new ExportError(`export: the CNN takes (N, ${C}, ${H}, ${W}) or (N, ${C * H * W}), the input is [${x.dims.join(",")}]`);
  }
  return { name: c.g.node("Reshape", [x.name, c.g.ints("image_shape", [-1, C, H, W])], { name: "image" }), dims: [x.dims[0], C, H, W] };
}
