/**
 * The IDX format of MNIST and Fashion-MNIST (http://yann.lecun.com/exdb/mnist/):
 *   [0x00 0x00][type][ndims][ndims × u32 big-endian sizes][data, big-endian]
 * type: 0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32, 0x0D f32, 0x0E f64.
 * Files may be gzip-compressed (detected from the gzip magic, whatever the name).
 */
import { existsSync } from "node:fs";
import { readFileNamed } from "../io/read.js";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { DataError, makeDataset, type Dataset } from "./dataset.js";

export const IDX_TYPES = { 0x08: "u8", 0x09: "i8", 0x0b: "i16", 0x0c: "i32", 0x0d: "f32", 0x0e: "f64" } as const;
type IdxTypeName = (typeof IDX_TYPES)[keyof typeof IDX_TYPES];
const SIZES: Record<IdxTypeName, number> = { u8: 1, i8: 1, i16: 2, i32: 4, f32: 4, f64: 8 };

export interface IdxArray {
  type: IdxTypeName;
  shape: number[];
  /** Values as stored (not normalised). */
  data: Float64Array;
}

function readBytes(path: string): Uint8Array {
  let bytes: Uint8Array = readFileNamed(path, (m) => new DataError(m));
  if (bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b) {
    try {
      bytes = gunzipSync(bytes);
    } catch (e) {
      throw new DataError(`${path}: corrupt gzip data (${(e as Error).message})`);
    }
  }
  return bytes;
}

/** Parses IDX bytes; `source` names the file in errors. */
export function decodeIdx(bytes: Uint8Array, source = "<buffer>"): IdxArray {
  if (bytes.length < 4) throw new DataError(`${source}: not an IDX file (${bytes.length} bytes, too short for the magic number)`);
  const type = IDX_TYPES[bytes[2] as keyof typeof IDX_TYPES];
  if (bytes[0] !== 0 || bytes[1] !== 0 || type === undefined) {
    const magic = Array.from(bytes.subarray(0, 4), (b) => b.toString(16).padStart(2, "0")).join(" ");
    throw new DataError(`${source}: bad IDX magic number ${magic} (expected 00 00 <type 08/09/0b/0c/0d/0e> <ndims>)`);
  }
  const ndims = bytes[3];
  if (ndims === 0) throw new DataError(`${source}: IDX header has 0 dimensions`);
  const headerLen = 4 + 4 * ndims;
  if (bytes.length < headerLen) throw new DataError(`${source}: truncated IDX header (${ndims} dimensions need ${headerLen} bytes, file has ${bytes.length})`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const shape: number[] = [];
  for (let i = 0; i < ndims; i++) shape.push(view.getUint32(4 + 4 * i, false));
  const count = shape.reduce((a, b) => a * b, 1);
  const need = headerLen + count * SIZES[type];
  if (bytes.length !== need) {
    throw new DataError(`${source}: size mismatch: header says [${shape.join(",")}] of ${type} (${need} bytes) but the file has ${bytes.length} bytes${bytes.length < need ? " (truncated?)" : ""}`);
  }
  const data = new Float64Array(count);
  const o = headerLen;
  switch (type) {
    case "u8": for (let i = 0; i < count; i++) data[i] = bytes[o + i]; break;
    case "i8": for (let i = 0; i < count; i++) data[i] = view.getInt8(o + i); break;
    case "i16": for (let i = 0; i < count; i++) data[i] = view.getInt16(o + 2 * i, false); break;
    case "i32": for (let i = 0; i < count; i++) data[i] = view.getInt32(o + 4 * i, false); break;
    case "f32": for (let i = 0; i < count; i++) data[i] = view.getFloat32(o + 4 * i, false); break;
    case "f64": for (let i = 0; i < count; i++) data[i] = view.getFloat64(o + 8 * i, false); break;
  }
  return { type, shape, data };
}

/** Reads an IDX file (plain or gzip). */
export function readIdx(path: string): IdxArray {
  return decodeIdx(readBytes(path), path);
}

/** Encodes an IDX array (for tests, fixtures and exporting). */
export function encodeIdx(type: IdxTypeName, shape: readonly number[], data: ArrayLike<number>): Uint8Array {
  const code = Number(Object.entries(IDX_TYPES).find(([, t]) => t === type)![0]);
  const count = shape.reduce((a, b) => a * b, 1);
  if (data.length !== count) throw new DataError(`encodeIdx: ${data.length} values do not fit shape [${shape.join(",")}]`);
  const headerLen = 4 + 4 * shape.length;
  const out = new Uint8Array(headerLen + count * SIZES[type]);
  const v = new DataView(out.buffer);
  out[2] = code;
  out[3] = shape.length;
  shape.forEach((d, i) => v.setUint32(4 + 4 * i, d, false));
  for (let i = 0; i < count; i++) {
    const p = headerLen + i * SIZES[type];
    switch (type) {
      case "u8": v.setUint8(p, data[i]); break;
      case "i8": v.setInt8(p, data[i]); break;
      case "i16": v.setInt16(p, data[i], false); break;
      case "i32": v.setInt32(p, data[i], false); break;
      case "f32": v.setFloat32(p, data[i], false); break;
      case "f64": v.setFloat64(p, data[i], false); break;
    }
  }
  return out;
}

/**
 * Images (N, H, W) + labels (N) → a Dataset with inputs (N, 1, H, W); u8 images are
 * divided by 255 into [0, 1]. Labels must be integers ≥ 0.
 */
export function loadIdxDataset(imagesPath: string, labelsPath: string, opts: { shared?: boolean; numClasses?: number; classNames?: string[] } = {}): Dataset {
  const img = readIdx(imagesPath);
  const lab = readIdx(labelsPath);
  if (img.shape.length < 2) throw new DataError(`${imagesPath}: expected images with at least 2 dimensions (N, ...), got [${img.shape.join(",")}]`);
  if (lab.shape.length !== 1) throw new DataError(`${labelsPath}: expected labels with 1 dimension (N), got [${lab.shape.join(",")}]`);
  const n = img.shape[0];
  if (lab.shape[0] !== n) throw new DataError(`${labelsPath}: ${lab.shape[0]} labels but ${imagesPath} has ${n} images`);
  const alloc = (bytes: number) => (opts.shared ? new SharedArrayBuffer(bytes) : new ArrayBuffer(bytes));
  const inputs = new Float32Array(alloc(img.data.length * 4));
  const scale = img.type === "u8" ? 1 / 255 : 1;
  for (let i = 0; i < img.data.length; i++) inputs[i] = img.data[i] * scale;
  const targets = new Int32Array(alloc(n * 4));
  let maxLabel = 0;
  for (let i = 0; i < n; i++) {
    const l = lab.data[i];
    if (!Number.isInteger(l) || l < 0) throw new DataError(`${labelsPath}: label ${l} at index ${i} is not a class index (integer ≥ 0)`);
    targets[i] = l;
    if (l > maxLabel) maxLabel = l;
  }
  const rowShape = img.shape.slice(1);
  const inputShape = rowShape.length === 2 ? [1, ...rowShape] : rowShape;
  return makeDataset({ inputs, inputShape, targets, numClasses: opts.numClasses ?? maxLabel + 1, classNames: opts.classNames, name: imagesPath });
}

export const FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/**
 * The standard file pair in a directory (MNIST / Fashion-MNIST layout):
 * {train,t10k}-images-idx3-ubyte[.gz] and {train,t10k}-labels-idx1-ubyte[.gz].
 */
export function loadIdxDirectory(dir: string, split: "train" | "test", opts: { shared?: boolean; classNames?: string[] } = {}): Dataset {
  const prefix = split === "train" ? "train" : "t10k";
  const find = (stem: string) => {
    for (const name of [stem, `${stem}.gz`]) if (existsSync(join(dir, name))) return join(dir, name);
    throw new DataError(`${join(dir, stem)}[.gz]: no such file (expected the MNIST/Fashion-MNIST file layout in ${dir})`);
  };
  return loadIdxDataset(find(`${prefix}-images-idx3-ubyte`), find(`${prefix}-labels-idx1-ubyte`), opts);
}
