/**
 * int8 weight quantization, symmetric and per output channel: row r of a weight (the first
 * axis: a Linear's output feature, a Conv2d's output channel) is stored as int8 values q in
 * [-127, 127] and one float32 scale s_r = max|w_r| / 127, and read back as q · s_r. A state
 * dict stores the int8 tensor under the weight's own name and the scales under `<name>_scale`.
 * Biases, norms and embeddings stay float32: they are a small part of the weights.
 *
 * Dequantizing gives each weight as the float32 product q · s_r, which is what ONNX's
 * DequantizeLinear computes, so an exported int8 model and a quantized checkpoint hold the
 * same weights bit for bit.
 */
import { ArgumentError } from "../errors.js";
import { type Module, Parameter } from "./module.js";
import { Linear } from "./layers.js";
import { Conv2d } from "./conv.js";

/** A weight in int8 with one scale per output channel (row). */
export interface Int8Weight {
  q: Int8Array;
  /** One scale per row (shape[0] of them). */
  scale: Float32Array;
  shape: number[];
}

/** Suffix of the scales' name in a quantized state dict: `0.weight` → `0.weight_scale`. */
export const SCALE_SUFFIX = "_scale";

/** Quantizes a weight of `shape` per row (first axis); `name` appears in errors. */
export function quantizeInt8(data: Float32Array, shape: readonly number[], name = "weight"): Int8Weight {
  const rows = shape[0] ?? 1;
  const cols = rows === 0 ? 0 : data.length / rows;
  if (shape.length === 0 || !Number.isInteger(cols)) throw new ArgumentError(`quantizeInt8: ${name}: ${data.length} values do not fill rows of shape [${shape.join(",")}]`);
  const q = new Int8Array(data.length);
  const scale = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    let maxAbs = 0;
    for (let i = r * cols; i < (r + 1) * cols; i++) {
      const v = Math.abs(data[i]);
      if (!Number.isFinite(v)) throw new ArgumentError(`quantizeInt8: ${name}: non-finite value ${data[i]} in row ${r}`);
      if (v > maxAbs) maxAbs = v;
    }
    // An all-zero row keeps scale 1 (its values are 0 whatever the scale).
    const s = maxAbs > 0 ? Math.fround(maxAbs / 127) : 1;
    scale[r] = s;
    for (let i = r * cols; i < (r + 1) * cols; i++) q[i] = Math.max(-127, Math.min(127, Math.round(data[i] / s)));
  }
  return { q, scale, shape: [...shape] };
}

/** The float32 weight q · scale[row]. */
export function dequantizeInt8(w: Pick<Int8Weight, "q" | "scale">): Float32Array {
  const rows = w.scale.length;
  const cols = rows === 0 ? 0 : w.q.length / rows;
  const out = new Float32Array(w.q.length);
  for (let r = 0; r < rows; r++) {
    const s = w.scale[r];
    for (let i = r * cols; i < (r + 1) * cols; i++) out[i] = w.q[i] * s;
  }
  return out;
}

/** The weights int8 quantization applies to: those of Linear and Conv2d layers, by state-dict name (a tied weight once). */
export function int8WeightNames(model: Module): Map<Parameter, string> {
  const names = new Map(model.namedParameters().map(([n, p]) => [p, n] as const));
  const out = new Map<Parameter, string>();
  for (const [, m] of model.namedModules()) {
    if (m instanceof Linear || m instanceof Conv2d) out.set(m.weight, names.get(m.weight)!);
  }
  return out;
}

/** A state-dict entry: float32 values, or int8 ones for a quantized weight. */
export interface StateTensor {
  data: Float32Array | Int8Array;
  shape: readonly number[];
}

/** The model's state dict with its Linear and Conv2d weights in int8 plus `<name>_scale` (float32, one per row). */
export function quantizedStateDict(model: Module): Record<string, StateTensor> {
  const int8 = new Set(int8WeightNames(model).values());
  const out: Record<string, StateTensor> = {};
  for (const [name, t] of Object.entries(model.stateDict())) {
    if (!int8.has(name)) {
      out[name] = { data: t.data, shape: t.shape };
      continue;
    }
    const w = quantizeInt8(t.data, t.shape, name);
    out[name] = { data: w.q, shape: w.shape };
    out[name + SCALE_SUFFIX] = { data: w.scale, shape: [w.scale.length] };
  }
  return out;
}

/**
 * The inverse, for a state dict as read from a file (int8 values already widened to float32,
 * `dtype` "I8"): every I8 tensor with a `<name>_scale` becomes its float32 weight; the scales are
 * dropped; everything else is kept as it is. Throws naming the key when the scales do not fit
 * their weight's rows.
 */
export function dequantizeStateDict<T extends { dtype: string; data: Float32Array; shape: number[] }>(tensors: Record<string, T>): Record<string, T> {
  const out: Record<string, T> = {};
  for (const [name, t] of Object.entries(tensors)) {
    if (name.endsWith(SCALE_SUFFIX) && tensors[name.slice(0, -SCALE_SUFFIX.length)]?.dtype === "I8") continue;
    const s = tensors[name + SCALE_SUFFIX];
    if (t.dtype !== "I8" || !s) {
      out[name] = t;
      continue;
    }
    if (s.data.length !== (t.shape[0] ?? 1)) throw new ArgumentError(`dequantizeStateDict: '${name + SCALE_SUFFIX}' has ${s.data.length} scales but '${name}' has ${t.shape[0]} rows`);
    const q = Int8Array.from(t.data);
    out[name] = { ...t, dtype: "F32", data: dequantizeInt8({ q, scale: s.data }) };
  }
  return out;
}
