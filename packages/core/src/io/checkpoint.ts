/**
 * Checkpoints: a directory holding
 *   model.safetensors — the weights (parameters and buffers by name, float32)
 *   state.json        — optimizer state, step, epoch, RNG state, job config, extras
 *   SHA256SUMS        — the SHA-256 of each file (checksums.ts), verified on read
 * A new directory appears whole or not at all (written beside it, then renamed); into an
 * existing one each file is written atomically and SHA256SUMS last, so an interrupted save
 * fails verification instead of loading. Both files carry the same checkpoint id, so a pair
 * from different saves is detected on load instead of silently mixed.
 * Large numeric arrays in state.json (optimizer moments) are stored as base64
 * float32 ({"$f32": "..."}): exact and compact.
 */
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { randomBytes } from "node:crypto";
import { ArgumentError, ChainruleError, fmtShape } from "../errors.js";
import type { Module } from "../nn/module.js";
import { dequantizeStateDict } from "../nn/quantize.js";
import { getRngState, setRngState } from "../tensor/random.js";
import { writeDirAtomicSync, writeFileAtomicSync } from "./atomic.js";
import { CHECKSUMS_FILE, checksumMismatch, writeChecksums } from "./checksums.js";
import { SafetensorsError, loadSafetensors, saveSafetensors, type LoadedTensor, type TensorLike } from "./safetensors.js";

/** A missing, truncated, corrupted or mismatched checkpoint. One line naming the file and the problem. */
export class CheckpointError extends ChainruleError {}

export const MODEL_FILE = "model.safetensors";
export const STATE_FILE = "state.json";

/** Anything with stateDict/loadStateDict over JSON-able state (optim.Optimizer, a DataParallel trainer...). */
export interface StatefulOptimizer {
  stateDict(): unknown;
  loadStateDict(state: any): void;
}

export interface CheckpointState {
  format: "chainrule-checkpoint";
  version: 1;
  /** Shared with model.safetensors' metadata. */
  id: string;
  step: number;
  epoch: number;
  /** The global generator's state (tensor/random.ts), when saved. */
  rng?: number[];
  optimizer?: unknown;
  /** The (resolved) job configuration. */
  config?: unknown;
  /** Anything else: a tokenizer, the data order position, metrics... */
  extra?: Record<string, unknown>;
  savedAt: string;
}

export interface SaveCheckpointOptions {
  model: Module;
  optimizer?: StatefulOptimizer;
  step?: number;
  epoch?: number;
  /** RNG state to store; default: the global generator's current state. Pass null to store none. */
  rng?: number[] | null;
  config?: unknown;
  extra?: Record<string, unknown>;
  /** The tensors to write instead of model.stateDict() (e.g. an int8-quantized state dict). */
  weights?: Record<string, TensorLike>;
  /** More model.safetensors metadata (string values). */
  metadata?: Record<string, string>;
  /** More files of the checkpoint, by file name (e.g. LoRA adapters); written atomically and listed in SHA256SUMS too. */
  files?: Record<string, Uint8Array | string>;
}

const F32_MIN_LEN = 32;

function toBase64F32(a: ArrayLike<number>): string {
  const f = a instanceof Float32Array ? a : Float32Array.from(a);
  return Buffer.from(f.buffer, f.byteOffset, f.byteLength).toString("base64");
}

/** Replaces long numeric arrays / Float32Arrays with {"$f32": base64} (exact for float32 values). */
export function packNumbers(v: unknown): unknown {
  if (v instanceof Float32Array) return { $f32: toBase64F32(v) };
  if (Array.isArray(v)) {
    if (v.length >= F32_MIN_LEN && v.every((x) => typeof x === "number" && Math.fround(x) === x || Number.isNaN(x))) return { $f32: toBase64F32(v) };
    return v.map(packNumbers);
  }
  if (v && typeof v === "object" && !ArrayBuffer.isView(v)) {
    return Object.fromEntries(Object.entries(v as Record<string, unknown>).map(([k, x]) => [k, packNumbers(x)]));
  }
  return v;
}

/** Inverse of packNumbers: {"$f32": base64} → number[]. */
export function unpackNumbers(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(unpackNumbers);
  if (v && typeof v === "object") {
    const o = v as Record<string, unknown>;
    if (typeof o.$f32 === "string" && Object.keys(o).length === 1) {
      const buf = Buffer.from(o.$f32, "base64");
      if (buf.length % 4 !== 0) throw new Error(`base64 float32 block of ${buf.length} bytes is not a multiple of 4`);
      const copy = new Uint8Array(buf.length);
      copy.set(buf);
      return Array.from(new Float32Array(copy.buffer));
    }
    return Object.fromEntries(Object.entries(o).map(([k, x]) => [k, unpackNumbers(x)]));
  }
  return v;
}

/**
 * Saves model weights and training state into `dir`: a new directory (parents created as needed)
 * appears complete or not at all; into an existing one each file is replaced atomically and
 * SHA256SUMS written last. Returns the state written.
 */
export function saveCheckpoint(dir: string, opts: SaveCheckpointOptions): CheckpointState {
  for (const name of Object.keys(opts.files ?? {})) {
    if ([MODEL_FILE, STATE_FILE, CHECKSUMS_FILE].includes(name) || !/^[^/\\.][^/\\]*$/.test(name)) {
      throw new ArgumentError(`saveCheckpoint: files: '${name}' is not a file name the checkpoint may use (a plain name, not ${MODEL_FILE}, ${STATE_FILE} or ${CHECKSUMS_FILE})`);
    }
  }
  if (existsSync(dir)) return writeCheckpointFiles(dir, opts);
  mkdirSync(dirname(dir), { recursive: true });
  let state: CheckpointState | undefined;
  writeDirAtomicSync(dir, (tmp) => (state = writeCheckpointFiles(tmp, opts)));
  return state!;
}

/** Writes the checkpoint's files into the existing directory `dir`, each atomically, SHA256SUMS last. */
function writeCheckpointFiles(dir: string, opts: SaveCheckpointOptions): CheckpointState {
  const id = randomBytes(8).toString("hex");
  const step = opts.step ?? 0;
  const epoch = opts.epoch ?? 0;
  const tensors: Record<string, TensorLike> = {};
  for (const [k, t] of Object.entries(opts.weights ?? opts.model.stateDict())) tensors[k] = { data: t.data, shape: t.shape };
  // "format": "pt" lets Hugging Face loaders accept the file as PyTorch weights.
  saveSafetensors(join(dir, MODEL_FILE), tensors, { ...opts.metadata, format: "pt", chainrule_checkpoint_id: id, step: String(step) });
  const state: CheckpointState = {
    format: "chainrule-checkpoint",
    version: 1,
    id,
    step,
    epoch,
    rng: opts.rng === null ? undefined : (opts.rng ?? getRngState()),
    optimizer: opts.optimizer?.stateDict(),
    config: opts.config,
    extra: opts.extra,
    savedAt: new Date().toISOString(),
  };
  writeFileAtomicSync(join(dir, STATE_FILE), JSON.stringify(packNumbers(state)) + "\n");
  const more = Object.entries(opts.files ?? {});
  for (const [name, data] of more) writeFileAtomicSync(join(dir, name), data);
  writeChecksums(dir, [MODEL_FILE, STATE_FILE, ...more.map(([name]) => name)]);
  return state;
}

export interface CheckpointContents {
  tensors: Record<string, LoadedTensor>;
  metadata: Record<string, string>;
  state: CheckpointState;
}

/**
 * Reads and validates a checkpoint directory without touching any model: its files parse, come
 * from one save, and match SHA256SUMS where there is one (checkpoints written before chainrule
 * wrote checksums have none and still read). The weights of a quantized checkpoint (int8 with
 * per-channel scales, nn/quantize.ts) read as their float32 values. With `optimizerState: false`
 * the optimizer's state is left out (state.optimizer is undefined): a model rebuilt for inference
 * does not hold Adam's two parameter-sized buffers as decoded numbers.
 */
export function readCheckpoint(dir: string, opts: { optimizerState?: boolean } = {}): CheckpointContents {
  const modelPath = join(dir, MODEL_FILE);
  const statePath = join(dir, STATE_FILE);
  if (!existsSync(dir)) throw new CheckpointError(`${dir}: checkpoint not found (no such directory)`);
  if (!existsSync(modelPath)) throw new CheckpointError(`${dir}: not a checkpoint (no ${MODEL_FILE})`);
  if (!existsSync(statePath)) throw new CheckpointError(`${dir}: not a checkpoint (no ${STATE_FILE})`);
  let tensors: Record<string, LoadedTensor>;
  let metadata: Record<string, string>;
  try {
    ({ tensors, metadata } = loadSafetensors(modelPath));
    tensors = dequantizeStateDict(tensors);
  } catch (e) {
    if (e instanceof SafetensorsError) throw new CheckpointError(`corrupted checkpoint: ${e.message}`);
    if (e instanceof ArgumentError) throw new CheckpointError(`corrupted checkpoint: ${modelPath}: ${e.message}`);
    throw e;
  }
  let raw: unknown;
  const text = readFileSync(statePath, "utf8");
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new CheckpointError(`corrupted checkpoint: ${statePath}: invalid JSON (${(e as Error).message}; ${text.length} bytes, truncated?)`);
  }
  if (opts.optimizerState === false && raw && typeof raw === "object") delete (raw as { optimizer?: unknown }).optimizer;
  let state: CheckpointState;
  try {
    state = unpackNumbers(raw) as CheckpointState;
  } catch (e) {
    throw new CheckpointError(`corrupted checkpoint: ${statePath}: ${(e as Error).message}`);
  }
  if (!state || typeof state !== "object" || state.format !== "chainrule-checkpoint") {
    throw new CheckpointError(`${statePath}: not a chainrule checkpoint state (missing "format": "chainrule-checkpoint")`);
  }
  if (state.version !== 1) throw new CheckpointError(`${statePath}: unsupported checkpoint version ${state.version} (this chainrule reads version 1)`);
  if (!Number.isInteger(state.step) || !Number.isInteger(state.epoch)) throw new CheckpointError(`${statePath}: step and epoch must be integers`);
  if (metadata.chainrule_checkpoint_id !== undefined && metadata.chainrule_checkpoint_id !== state.id) {
    throw new CheckpointError(`${dir}: ${MODEL_FILE} (id ${metadata.chainrule_checkpoint_id}) and ${STATE_FILE} (id ${state.id}) come from different saves`);
  }
  // After parsing: a truncated file is named as such; a flip that still parses is caught here.
  const mismatch = checksumMismatch(dir);
  if (mismatch) throw new CheckpointError(mismatch);
  return { tensors, metadata, state };
}

/**
 * Compares a checkpoint's tensors with a model's state dict; returns a one-line
 * description of every difference, or null when they match.
 */
export function describeMismatch(tensors: Record<string, { data: ArrayLike<number>; shape: readonly number[] }>, model: Module): string | null {
  const own = model.stateDict();
  let match: ReturnType<Module["matchStateDict"]>;
  try {
    match = model.matchStateDict(tensors); // former buffer names and tied duplicates count as present
  } catch (e) {
    return (e as Error).message.replace(/^loadStateDict: /, "");
  }
  const { sources, missingKeys: missing, unexpectedKeys: unexpected } = match;
  const shapes = [...sources]
    .filter(([k, src]) => fmtShape(src.shape) !== fmtShape(own[k].shape))
    .map(([k, src]) => `${k} ${fmtShape(src.shape)} in checkpoint vs ${fmtShape(own[k].shape)} in model`);
  const parts: string[] = [];
  const list = (a: string[]) => (a.length > 6 ? `${a.slice(0, 6).join(", ")}, … (${a.length} in all)` : a.join(", "));
  if (missing.length) parts.push(`missing keys [${list(missing)}]`);
  if (unexpected.length) parts.push(`unexpected keys [${list(unexpected)}]`);
  if (shapes.length) parts.push(`shape mismatch: ${list(shapes)}`);
  return parts.length ? parts.join("; ") : null;
}

export interface LoadCheckpointOptions {
  model: Module;
  optimizer?: StatefulOptimizer;
  /** Restore the global generator's state (default true when the checkpoint has one). */
  restoreRng?: boolean;
}

/**
 * Loads a checkpoint into `model` (and `optimizer`), restoring the RNG state.
 * Everything is validated before anything is copied: a checkpoint that does not
 * match the model throws a CheckpointError naming the keys and shapes.
 */
export function loadCheckpoint(dir: string, opts: LoadCheckpointOptions): CheckpointState {
  const { tensors, state } = readCheckpoint(dir);
  const mismatch = describeMismatch(tensors, opts.model);
  if (mismatch) throw new CheckpointError(`checkpoint ${dir} does not match the model: ${mismatch}`);
  if (opts.optimizer && state.optimizer === undefined) throw new CheckpointError(`checkpoint ${dir} has no optimizer state`);
  if (opts.optimizer) {
    try {
      opts.optimizer.loadStateDict(state.optimizer);
    } catch (e) {
      throw new CheckpointError(`checkpoint ${dir}: optimizer state does not match: ${(e as Error).message}`);
    }
  }
  opts.model.loadStateDict(tensors);
  if ((opts.restoreRng ?? true) && state.rng) setRngState(state.rng);
  return state;
}
