/**
 * The safetensors format (https://github.com/huggingface/safetensors), as the
 * reference implementation reads and writes it:
 *
 *   [8 bytes: N, little-endian u64][N bytes: JSON header, UTF-8, padded with spaces][byte buffer]
 *
 * The header maps each tensor name to {dtype, shape, data_offsets: [begin, end]},
 * offsets relative to the start of the byte buffer; an optional `__metadata__`
 * entry maps strings to strings. Tensors are little-endian, row-major, and
 * together cover the byte buffer contiguously with no gaps or overlaps.
 *
 * chainrule writes F32, and I8 for tensors given as Int8Array (int8-quantized weights); it
 * reads F32, F64, F16, BF16 and the integer/bool dtypes, converting to float32 (integers beyond
 * 2^24 lose precision).
 */
import { readFileNamed } from "./read.js";
import { ChainruleError, fmtShape } from "../errors.js";
import { writeFileAtomicSync } from "./atomic.js";

/** A malformed, truncated or unsupported safetensors file. The message names the file and the problem. */
export class SafetensorsError extends ChainruleError {}

/** Bytes per element of every dtype the format defines. */
export const DTYPE_SIZES: Readonly<Record<string, number>> = {
  BOOL: 1, U8: 1, I8: 1, F8_E5M2: 1, F8_E4M3: 1,
  I16: 2, U16: 2, F16: 2, BF16: 2,
  I32: 4, U32: 4, F32: 4,
  F64: 8, I64: 8, U64: 8,
};

/** dtypes this reader converts to float32. */
export const READABLE_DTYPES = ["F32", "F64", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "U16", "U32", "U64", "BOOL"] as const;

/** The reference implementation refuses headers above 100 MB. */
export const MAX_HEADER_SIZE = 100_000_000;

export interface TensorInfo {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

export interface LoadedTensor {
  /** dtype as stored in the file (data is always converted to float32). */
  dtype: string;
  shape: number[];
  data: Float32Array;
}

export interface SafetensorsContents {
  /** Tensors by name, in file order. */
  tensors: Record<string, LoadedTensor>;
  /** The `__metadata__` map ({} when absent). */
  metadata: Record<string, string>;
}

/** Anything with float32 data and a shape: a Tensor, a Parameter, or a plain object; Int8Array data is written as I8. */
export interface TensorLike {
  data: Float32Array | Int8Array | ArrayLike<number>;
  shape: readonly number[];
}

function fail(source: string, problem: string): never {
  throw new SafetensorsError(`${source}: ${problem}`);
}

/** Serialises tensors: F32 first, then I8, each sorted by name (the reference writer's order: larger alignment first). */
export function encodeSafetensors(tensors: Record<string, TensorLike>, metadata?: Record<string, string>): Uint8Array {
  const isI8 = (name: string) => tensors[name].data instanceof Int8Array;
  const names = Object.keys(tensors).sort((a, b) => Number(isI8(a)) - Number(isI8(b)) || (a < b ? -1 : a > b ? 1 : 0));
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== "string") throw new SafetensorsError(`encodeSafetensors: metadata '${k}' must be a string, got ${typeof v}`);
    }
    header.__metadata__ = metadata;
  }
  let offset = 0;
  for (const name of names) {
    if (name === "__metadata__") throw new SafetensorsError("encodeSafetensors: '__metadata__' is reserved and cannot name a tensor");
    const t = tensors[name];
    const size = t.shape.reduce((a, b) => a * b, 1);
    if (t.data.length !== size) {
      throw new SafetensorsError(`encodeSafetensors: tensor '${name}' has ${t.data.length} values but shape ${fmtShape(t.shape)} needs ${size}`);
    }
    const bytes = isI8(name) ? 1 : 4;
    header[name] = { dtype: bytes === 1 ? "I8" : "F32", shape: [...t.shape], data_offsets: [offset, offset + size * bytes] };
    offset += size * bytes;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const padded = json.length + ((8 - (json.length % 8)) % 8); // pad with spaces to 8 bytes, like the reference writer
  const out = new Uint8Array(8 + padded + offset);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(padded), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.length, 8 + padded);
  let pos = 8 + padded;
  const littleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
  for (const name of names) {
    const t = tensors[name];
    if (t.data instanceof Int8Array) {
      out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), pos);
      pos += t.data.byteLength;
      continue;
    }
    const f = t.data instanceof Float32Array ? t.data : Float32Array.from(t.data);
    if (littleEndian) out.set(new Uint8Array(f.buffer, f.byteOffset, f.byteLength), pos);
    else for (let i = 0; i < f.length; i++) view.setFloat32(pos + i * 4, f[i], true);
    pos += f.byteLength;
  }
  return out;
}

/** Parses and validates the header; returns tensor infos in offset order plus metadata and where the byte buffer starts. */
export function parseSafetensorsHeader(bytes: Uint8Array, source = "<buffer>"): { infos: [string, TensorInfo][]; metadata: Record<string, string>; dataStart: number } {
  if (bytes.length < 8) fail(source, `truncated: ${bytes.length} bytes, too short for the 8-byte header length`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n64 = view.getBigUint64(0, true);
  if (n64 > BigInt(MAX_HEADER_SIZE)) fail(source, `header length ${n64} exceeds the ${MAX_HEADER_SIZE}-byte limit (not a safetensors file?)`);
  const n = Number(n64);
  if (n < 2) fail(source, `header length ${n} is too small for a JSON object`);
  if (8 + n > bytes.length) fail(source, `truncated: header length ${n} but only ${bytes.length - 8} bytes follow the length field`);
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, 8 + n));
  } catch {
    fail(source, "header is not valid UTF-8");
  }
  if (!text.startsWith("{")) fail(source, "header does not start with '{' (not a safetensors file?)");
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (e) {
    fail(source, `header is not valid JSON (${(e as Error).message})`);
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) fail(source, "header must be a JSON object");
  const metadata: Record<string, string> = {};
  const infos: [string, TensorInfo][] = [];
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (typeof raw !== "object" || raw === null || Array.isArray(raw)) fail(source, "__metadata__ must be an object of strings");
      for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
        if (typeof v !== "string") fail(source, `__metadata__.${k} must be a string, got ${JSON.stringify(v)}`);
        metadata[k] = v;
      }
      continue;
    }
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) fail(source, `tensor '${name}': entry must be an object with dtype, shape and data_offsets`);
    const { dtype, shape, data_offsets: off, ...rest } = raw as Record<string, unknown>;
    const extra = Object.keys(rest);
    if (extra.length > 0) fail(source, `tensor '${name}': unknown field(s) ${extra.join(", ")}`);
    if (typeof dtype !== "string") fail(source, `tensor '${name}': dtype must be a string`);
    if (!(dtype in DTYPE_SIZES)) fail(source, `tensor '${name}': unknown dtype '${dtype}' (expected one of ${Object.keys(DTYPE_SIZES).join(", ")})`);
    if (!Array.isArray(shape) || shape.some((d) => !Number.isSafeInteger(d) || d < 0)) {
      fail(source, `tensor '${name}': shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
    }
    if (!Array.isArray(off) || off.length !== 2 || off.some((d) => !Number.isSafeInteger(d) || d < 0)) {
      fail(source, `tensor '${name}': data_offsets must be [begin, end] with non-negative integers, got ${JSON.stringify(off)}`);
    }
    const [b, e] = off as [number, number];
    if (e < b) fail(source, `tensor '${name}': data_offsets [${b}, ${e}] end before they begin`);
    const expected = (shape as number[]).reduce((a, d) => a * d, 1) * DTYPE_SIZES[dtype];
    if (e - b !== expected) {
      fail(source, `tensor '${name}': shape ${fmtShape(shape as number[])} of ${dtype} needs ${expected} bytes but data_offsets [${b}, ${e}] span ${e - b}`);
    }
    infos.push([name, { dtype, shape: shape as number[], data_offsets: [b, e] }]);
  }
  // The byte buffer must be covered exactly: sorted by begin, each tensor starts where the last ended.
  const sorted = infos.slice().sort((x, y) => x[1].data_offsets[0] - y[1].data_offsets[0] || x[1].data_offsets[1] - y[1].data_offsets[1]);
  let pos = 0;
  let prev = "";
  for (const [name, info] of sorted) {
    const [b, e] = info.data_offsets;
    if (b < pos) fail(source, `tensor '${name}': data_offsets [${b}, ${e}] overlap tensor '${prev}' (which ends at ${pos})`);
    if (b > pos) fail(source, `tensor '${name}': data_offsets [${b}, ${e}] leave a gap after byte ${pos}`);
    pos = e;
    prev = name;
  }
  const dataStart = 8 + n;
  const available = bytes.length - dataStart;
  if (pos > available) fail(source, `truncated: tensors need ${pos} data bytes but the file has ${available} after the header`);
  if (pos < available) fail(source, `${available - pos} trailing bytes after the last tensor (tensors cover ${pos} of ${available})`);
  return { infos: sorted, metadata, dataStart };
}

function convert(src: Uint8Array, dtype: string, count: number): Float32Array {
  const out = new Float32Array(count);
  const v = new DataView(src.buffer, src.byteOffset, src.byteLength);
  switch (dtype) {
    case "F32": for (let i = 0; i < count; i++) out[i] = v.getFloat32(i * 4, true); break;
    case "F64": for (let i = 0; i < count; i++) out[i] = v.getFloat64(i * 8, true); break;
    case "F16": for (let i = 0; i < count; i++) out[i] = halfToFloat(v.getUint16(i * 2, true)); break;
    case "BF16": {
      const tmp = new DataView(new ArrayBuffer(4));
      for (let i = 0; i < count; i++) {
        tmp.setUint32(0, v.getUint16(i * 2, true) << 16, true);
        out[i] = tmp.getFloat32(0, true);
      }
      break;
    }
    case "I64": for (let i = 0; i < count; i++) out[i] = Number(v.getBigInt64(i * 8, true)); break;
    case "U64": for (let i = 0; i < count; i++) out[i] = Number(v.getBigUint64(i * 8, true)); break;
    case "I32": for (let i = 0; i < count; i++) out[i] = v.getInt32(i * 4, true); break;
    case "U32": for (let i = 0; i < count; i++) out[i] = v.getUint32(i * 4, true); break;
    case "I16": for (let i = 0; i < count; i++) out[i] = v.getInt16(i * 2, true); break;
    case "U16": for (let i = 0; i < count; i++) out[i] = v.getUint16(i * 2, true); break;
    case "I8": for (let i = 0; i < count; i++) out[i] = v.getInt8(i); break;
    case "U8": case "BOOL": for (let i = 0; i < count; i++) out[i] = v.getUint8(i); break;
    default: throw new SafetensorsError(`dtype ${dtype} cannot be converted to float32`);
  }
  return out;
}

/** IEEE 754 half precision → number. */
export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24; // subnormal (or zero)
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

/** Parses a whole safetensors file held in memory. `source` names it in errors. */
export function decodeSafetensors(bytes: Uint8Array, source = "<buffer>"): SafetensorsContents {
  const { infos, metadata, dataStart } = parseSafetensorsHeader(bytes, source);
  const tensors: Record<string, LoadedTensor> = {};
  for (const [name, info] of infos) {
    if (!(READABLE_DTYPES as readonly string[]).includes(info.dtype)) {
      fail(source, `tensor '${name}': dtype ${info.dtype} is not supported (readable: ${READABLE_DTYPES.join(", ")})`);
    }
    const [b, e] = info.data_offsets;
    const count = info.shape.reduce((a, d) => a * d, 1);
    tensors[name] = { dtype: info.dtype, shape: info.shape.slice(), data: convert(bytes.subarray(dataStart + b, dataStart + e), info.dtype, count) };
  }
  return { tensors, metadata };
}

/** Reads a safetensors file; errors name the file. */
export function loadSafetensors(path: string): SafetensorsContents {
  return decodeSafetensors(readFileNamed(path, (m) => new SafetensorsError(m)), path);
}

/** Writes tensors (float32, or int8 for Int8Array data) to `path` atomically (temporary file, fsync, rename). */
export function saveSafetensors(path: string, tensors: Record<string, TensorLike>, metadata?: Record<string, string>): void {
  writeFileAtomicSync(path, encodeSafetensors(tensors, metadata));
}
