/**
 * An ONNX graph under construction, and its encoding as a ModelProto.
 *
 * The protobuf encoding is onnx-proto's: ONNX's own onnx.proto compiled by protobufjs into typed
 * classes (ModelProto.encode). The schema is the ONNX project's, not a copy of ours, and
 * protobufjs is the JavaScript protobuf library most projects use; nothing here writes wire
 * bytes by hand.
 */
import onnxProto from "onnx-proto";

const { onnx } = onnxProto;

/** TensorProto.DataType values used here. */
export const DataType = { FLOAT: 1, INT8: 3, INT64: 7 } as const;
type DataTypeValue = (typeof DataType)[keyof typeof DataType];

/** A dimension of a graph input or output: a fixed size or a named dynamic one ("batch"). */
export type Dim = number | string;

/** Attribute values: numbers that are integers become INT, other numbers FLOAT; arrays INTS. */
export type AttrValue = number | number[] | string | { float: number };

/** The IR version that goes with each opset (onnx/helper.py's VERSION_TABLE). */
const IR_VERSION: Record<number, number> = { 17: 8, 18: 8, 19: 9, 20: 9, 21: 10 };
export const SUPPORTED_OPSETS = Object.keys(IR_VERSION).map(Number);

function attribute(name: string, v: AttrValue): onnxProto.onnx.IAttributeProto {
  const T = onnx.AttributeProto.AttributeType;
  if (typeof v === "string") return { name, type: T.STRING, s: new TextEncoder().encode(v) };
  if (typeof v === "object" && !Array.isArray(v)) return { name, type: T.FLOAT, f: v.float };
  if (Array.isArray(v)) return { name, type: T.INTS, ints: v };
  if (Number.isInteger(v)) return { name, type: T.INT, i: v };
  return { name, type: T.FLOAT, f: v };
}

function valueInfo(name: string, elemType: DataTypeValue, dims: Dim[]): onnxProto.onnx.IValueInfoProto {
  return {
    name,
    type: { tensorType: { elemType, shape: { dim: dims.map((d) => (typeof d === "number" ? { dimValue: d } : { dimParam: d })) } } },
  };
}

function bytesOf(a: Float32Array | Int8Array | BigInt64Array): Uint8Array {
  // ONNX raw_data is little-endian, as every platform Node runs on.
  return new Uint8Array(a.buffer.slice(a.byteOffset, a.byteOffset + a.byteLength));
}

export class OnnxGraph {
  private readonly nodes: onnxProto.onnx.INodeProto[] = [];
  private readonly initializers: onnxProto.onnx.ITensorProto[] = [];
  private readonly inputs: onnxProto.onnx.IValueInfoProto[] = [];
  private readonly outputs: onnxProto.onnx.IValueInfoProto[] = [];
  private readonly used = new Set<string>();
  private readonly scalars = new Map<number, string>();

  constructor(readonly opset: number) {}

  /** A name not used yet, from `base` (graph names must be unique). */
  fresh(base: string): string {
    let name = base, i = 1;
    while (this.used.has(name)) name = `${base}_${i++}`;
    this.used.add(name);
    return name;
  }

  input(name: string, elemType: DataTypeValue, dims: Dim[]): string {
    const n = this.fresh(name);
    this.inputs.push(valueInfo(n, elemType, dims));
    return n;
  }

  /** Declares `value` (an existing tensor name) as a graph output named `name`. */
  output(value: string, name: string, dims: Dim[]): void {
    const n = this.fresh(name);
    this.addNode("Identity", [value], [n], {});
    this.outputs.push(valueInfo(n, DataType.FLOAT, dims));
  }

  /** A constant tensor (an initializer); returns its name. */
  constant(name: string, data: Float32Array | Int8Array | BigInt64Array, dims: readonly number[]): string {
    const n = this.fresh(name);
    const dataType = data instanceof Float32Array ? DataType.FLOAT : data instanceof Int8Array ? DataType.INT8 : DataType.INT64;
    this.initializers.push({ name: n, dims: [...dims], dataType, rawData: bytesOf(data) });
    return n;
  }

  /** A float32 scalar constant, written once per value. */
  scalar(value: number): string {
    let name = this.scalars.get(value);
    if (name === undefined) this.scalars.set(value, (name = this.constant("const", Float32Array.of(value), [])));
    return name;
  }

  /** An int64 constant (shapes, axes, indices). */
  ints(name: string, values: number[]): string {
    return this.constant(name, BigInt64Array.from(values, BigInt), [values.length]);
  }

  /**
   * Adds a node; returns its (first) output's name. `opts.name` names the output (default: the
   * op type), `opts.outputs` asks for several outputs (all returned by `nodeOutputs`).
   */
  node(op: string, inputs: string[], opts: { name?: string; attrs?: Record<string, AttrValue> } = {}): string {
    return this.nodeOutputs(op, inputs, 1, opts)[0];
  }

  nodeOutputs(op: string, inputs: string[], count: number, opts: { name?: string; attrs?: Record<string, AttrValue> } = {}): string[] {
    const base = opts.name ?? op;
    const outputs = Array.from({ length: count }, (_, i) => this.fresh(count === 1 ? base : `${base}_${i}`));
    this.addNode(op, inputs, outputs, opts.attrs ?? {});
    return outputs;
  }

  private addNode(op: string, inputs: string[], outputs: string[], attrs: Record<string, AttrValue>): void {
    const attribute_ = Object.entries(attrs).map(([k, v]) => attribute(k, v));
    this.nodes.push({ opType: op, input: inputs, output: outputs, name: this.fresh(`${outputs[0]}_node`), attribute: attribute_ });
  }

  /** The ModelProto's bytes; `metadata` goes to metadata_props. */
  encode(opts: { producerVersion: string; docString?: string; metadata?: Record<string, string> }): Uint8Array {
    const irVersion = IR_VERSION[this.opset];
    if (irVersion === undefined) throw new Error(`ONNX opset ${this.opset} is not supported (supported: ${SUPPORTED_OPSETS.join(", ")})`);
    const model = onnx.ModelProto.create({
      irVersion,
      opsetImport: [{ domain: "", version: this.opset }],
      producerName: "chainrule",
      producerVersion: opts.producerVersion,
      docString: opts.docString,
      graph: { name: "chainrule", node: this.nodes, initializer: this.initializers, input: this.inputs, output: this.outputs },
      metadataProps: Object.entries(opts.metadata ?? {}).map(([key, value]) => ({ key, value })),
    });
    return onnx.ModelProto.encode(model).finish();
  }
}

/** What an ONNX file holds, read back from its bytes (the types stay plain: no protobuf classes leak out). */
export interface OnnxSummary {
  opset: number;
  /** Initializer (constant) names, in file order. */
  initializers: string[];
  /** The model's metadata_props. */
  metadata: Record<string, string>;
}

export function describeOnnx(bytes: Uint8Array): OnnxSummary {
  const model = onnx.ModelProto.decode(bytes);
  return {
    opset: Number(model.opsetImport.find((o) => !o.domain)?.version ?? 0),
    initializers: (model.graph?.initializer ?? []).map((t) => t.name ?? ""),
    metadata: Object.fromEntries(model.metadataProps.map((p) => [p.key, p.value])),
  };
}
