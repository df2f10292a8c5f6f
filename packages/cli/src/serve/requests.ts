/**
 * Request bodies of the HTTP API, checked against the served model: the envelope
 * by zod schemas, the input rows by one pass that also copies them into the
 * Float32Array the model reads. Every problem is a 400 naming the field.
 */
import { z } from "zod";
import { formatIssue } from "../job/parse.js";
import { didYouMean } from "../flags.js";
import type { GenerateParams, ModelInfo } from "./protocol.js";
import { badRequest, type HttpError } from "./errors.js";

const PredictBody = z.strictObject({
  /** Rows: each a flat list of the model's features, or nested lists of its input shape. */
  inputs: z.array(z.unknown()).min(1),
  /** How many of the most likely classes to list per row. */
  top: z.int().min(1).optional(),
});

const GenerateBody = z.strictObject({
  prompt: z.string().optional(),
  maxTokens: z.int().min(0).optional(),
  temperature: z.number().min(0).optional(),
  topK: z.int().min(1).optional(),
  seed: z.int().min(0).max(2 ** 32 - 1).optional(),
  stream: z.boolean().optional(),
});

export interface PredictRequest {
  /** n × features values, row-major. */
  rows: Float32Array;
  n: number;
  top: number;
}

export interface GenerateRequest extends GenerateParams {
  stream: boolean;
}

function fieldOf(path: readonly PropertyKey[]): string {
  let out = "";
  for (const p of path) out += typeof p === "number" ? `[${p}]` : out ? `.${String(p)}` : String(p);
  return out || "body";
}

/** The first schema problem as a 400 naming its field; a misspelled key first, with the likely intended one. */
function schemaError(error: z.ZodError, body: unknown, keys: string[]): HttpError {
  const unknownKey = error.issues.find((i) => i.code === "unrecognized_keys");
  if (unknownKey) {
    const key = unknownKey.keys[0];
    const near = didYouMean(key, keys);
    return badRequest(fieldOf([...unknownKey.path, key]), `unknown key${near ? ` (did you mean ${near}?)` : ""}; expected ${keys.join(", ")}`);
  }
  const issue = error.issues[0];
  const line = formatIssue(issue, body);
  return badRequest(fieldOf(issue.path), line.slice(line.indexOf(":") + 1).trim());
}

function checkObject(body: unknown): void {
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw badRequest("body", `expected a JSON object, got ${Array.isArray(body) ? "an array" : JSON.stringify(body)}`);
  }
}

/** `{"inputs": [[...], ...], "top": K}` for a model taking rows of `info.inputShape`. */
export function parsePredict(body: unknown, info: ModelInfo, maxRows: number): PredictRequest {
  checkObject(body);
  const r = PredictBody.safeParse(body);
  if (!r.success) throw schemaError(r.error, body, Object.keys(PredictBody.shape));
  const { inputs } = r.data;
  if (inputs.length > maxRows) throw badRequest("inputs", `${inputs.length} rows, more than the ${maxRows} one request may send`);
  const shape = info.inputShape;
  const features = shape.reduce((a, b) => a * b, 1);
  const rows = new Float32Array(inputs.length * features);
  for (let i = 0; i < inputs.length; i++) readRow(inputs[i], `inputs[${i}]`, shape, features, rows, i * features);
  const top = Math.min(r.data.top ?? 3, info.outputs);
  return { rows, n: inputs.length, top };
}

/** Copies one row (flat, or nested to `shape`) into `out` at `offset`, naming the first bad value. */
function readRow(row: unknown, field: string, shape: number[], features: number, out: Float32Array, offset: number): void {
  if (!Array.isArray(row)) throw badRequest(field, `expected a list of ${features} numbers, got ${describe(row)}`);
  if (row.length === features && (shape.length === 1 || !Array.isArray(row[0]))) {
    for (let j = 0; j < features; j++) {
      const v = row[j];
      if (typeof v !== "number") throw badRequest(`${field}[${j}]`, `expected a number, got ${describe(v)}`);
      out[offset + j] = v;
    }
    return;
  }
  if (shape.length > 1 && Array.isArray(row[0])) {
    readNested(row, field, shape, 0, out, offset);
    return;
  }
  const nested = shape.length > 1 ? ` (or nested lists of shape [${shape.join(", ")}])` : "";
  throw badRequest(field, `${row.length} ${row.length === 1 ? "value" : "values"} but the model takes ${features}${nested}`);
}

/** Nested lists matching shape[dim..]; returns the next offset. */
function readNested(v: unknown, field: string, shape: number[], dim: number, out: Float32Array, offset: number): number {
  if (dim === shape.length) {
    if (typeof v !== "number") throw badRequest(field, `expected a number, got ${describe(v)}`);
    out[offset] = v;
    return offset + 1;
  }
  if (!Array.isArray(v) || v.length !== shape[dim]) {
    throw badRequest(field, `expected a list of ${shape[dim]} (dimension ${dim} of the input shape [${shape.join(", ")}]), got ${Array.isArray(v) ? `${v.length} entries` : describe(v)}`);
  }
  for (let i = 0; i < v.length; i++) offset = readNested(v[i], `${field}[${i}]`, shape, dim + 1, out, offset);
  return offset;
}

function describe(v: unknown): string {
  if (v === undefined) return "nothing";
  if (Array.isArray(v)) return `a list of ${v.length}`;
  const s = JSON.stringify(v);
  return s.length > 40 ? `${s.slice(0, 37)}...` : s;
}

/** `{"prompt", "maxTokens", "temperature", "topK", "seed", "stream"}`; defaults are the checkpoint's sample settings. */
export function parseGenerate(body: unknown, info: ModelInfo, maxTokens: number): GenerateRequest {
  checkObject(body);
  const r = GenerateBody.safeParse(body);
  if (!r.success) throw schemaError(r.error, body, Object.keys(GenerateBody.shape));
  const d = info.sample ?? { prompt: "", tokens: 200, temperature: 0.8, seed: 0 };
  const req: GenerateRequest = {
    prompt: r.data.prompt ?? d.prompt,
    maxTokens: r.data.maxTokens ?? Math.min(d.tokens, maxTokens),
    temperature: r.data.temperature ?? d.temperature,
    topK: r.data.topK ?? d.topK,
    seed: r.data.seed ?? 0,
    stream: r.data.stream ?? false,
  };
  if (req.maxTokens > maxTokens) throw badRequest("maxTokens", `${req.maxTokens} is more than this server's limit of ${maxTokens}`);
  if (info.vocab === undefined) return req; // byte-level BPE: any text
  const vocab = new Set(info.vocab);
  const bad = [...new Set(Array.from(req.prompt).filter((c) => !vocab.has(c)))];
  if (bad.length > 0) {
    throw badRequest("prompt", `${bad.length === 1 ? "character" : "characters"} ${bad.map((c) => JSON.stringify(c)).join(", ")} ${bad.length === 1 ? "is" : "are"} not in the model's vocabulary (${vocab.size} characters: ${JSON.stringify([...vocab].join(""))})`);
  }
  return req;
}
