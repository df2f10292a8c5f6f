/**
 * Parameters as graph constants: each parameter is written once (a tied weight too), as float32,
 * or, when int8 export is on and it is a Linear/Conv2d weight, as int8 with per-output-channel
 * scales behind a DequantizeLinear node (the QDQ form onnxruntime runs).
 */
import { nn } from "@chainrule/core";
import { type OnnxGraph } from "./graph.js";

type Parameter = nn.Parameter;

/** How a graph wants a weight: as stored (out, in, ...) or transposed to (in, out) for MatMul. */
export type Layout = "stored" | "transposed";

export class GraphWeights {
  private readonly names: Map<Parameter, string>;
  private readonly emitted = new Map<Parameter, Partial<Record<Layout, string>>>();

  /** `int8`: the parameters to quantize (nn.int8WeightNames), or null for a float32 graph. */
  constructor(private readonly g: OnnxGraph, model: nn.Module, private readonly int8: Set<Parameter> | null) {
    this.names = new Map(model.namedParameters().map(([n, p]) => [p, n] as const));
  }

  /** Any tensor of the model (a parameter, a running statistic) as a float32 constant. */
  tensor(t: { data: Float32Array; shape: readonly number[] }, name: string): string {
    return this.g.constant(name, t.data, t.shape);
  }

  /** The graph value holding parameter `p` in `layout` (2-D weights only for "transposed"). */
  get(p: Parameter, layout: Layout = "stored"): string {
    const have = this.emitted.get(p) ?? {};
    this.emitted.set(p, have);
    const cached = have[layout];
    if (cached) return cached;
    const other = have[layout === "stored" ? "transposed" : "stored"];
    const name = this.names.get(p) ?? "weight";
    // Already written in the other layout (a tied weight): transpose that instead of writing it twice.
    have[layout] = other ? this.g.node("Transpose", [other], { name: `${name}_T`, attrs: { perm: [1, 0] } }) : this.write(p, name, layout);
    return have[layout]!;
  }

  private write(p: Parameter, name: string, layout: Layout): string {
    const transposed = layout === "transposed";
    if (transposed && p.ndim !== 2) throw new Error(`export: ${name}: only a 2-D weight can be transposed, got shape [${p.shape.join(",")}]`);
    const shape = transposed ? [p.shape[1], p.shape[0]] : [...p.shape];
    if (!this.int8?.has(p)) return this.g.constant(name, transposed ? transpose(p.data, p.shape[0], p.shape[1]) : p.data, shape);
    // Quantized per output channel (the stored layout's rows): in the transposed layout the channel is axis 1.
    const w = nn.quantizeInt8(p.data, p.shape, name);
    const q = transposed ? transpose(w.q, p.shape[0], p.shape[1]) : w.q;
    const qName = this.g.constant(`${name}_int8`, q, shape);
    const scale = this.g.constant(`${name}_scale`, w.scale, [w.scale.length]);
    const zero = this.g.constant(`${name}_zero_point`, new Int8Array(w.scale.length), [w.scale.length]);
    return this.g.node("DequantizeLinear", [qName, scale, zero], { name, attrs: { axis: transposed ? 1 : 0 } });
  }
}

function transpose<T extends Float32Array | Int8Array>(a: T, rows: number, cols: number): T {
  const out = new (a.constructor as { new (n: number): T })(a.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = a[r * cols + c];
  return out;
}
