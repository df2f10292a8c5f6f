import { ArgumentError } from "../errors.js";
import { kernels } from "../kernels/kernels.js";
import { Tensor } from "../tensor/tensor.js";
import type { Module, Parameter } from "./module.js";

/** Where each parameter sits in the flat buffer. */
export interface ParamLayoutEntry {
  name: string;
  shape: number[];
  offset: number; // in floats
  size: number;
}

export interface FlatParameters {
  /** All parameter values, one contiguous range; each parameter's `.data` is a view into it. */
  data: Float32Array;
  /** All gradients, same layout; each parameter's `.grad.data` is a view into it. */
  grad: Float32Array;
  layout: ParamLayoutEntry[];
}

/**
 * The memory that `flattenParameters` packs a model into when the backend has one
 * (kernels().arenaMemory: the js backend's WebAssembly.Memory, registered with its SIMD Adam):
 * values, gradients and `stateAt.length` regions for optimizer state, each
 * `total` floats, 64-byte aligned. A parameter at float offset o of the values has its
 * state at float offset o of every state region, so an optimizer's state lies next to its
 * operands and the Adam kernel runs in place. One optimizer at a time holds the state
 * regions (`claimArenaState`); a newer one takes them over and the older one's state is
 * copied out into plain arrays first.
 */
export interface FlatArena {
  readonly buffer: ArrayBufferLike;
  readonly total: number;
  readonly dataAt: number;
  readonly gradAt: number;
  readonly stateAt: readonly number[];
  owner: WeakRef<ArenaStateHolder> | null;
}

export interface ArenaStateHolder {
  /** Copies every state buffer that lies in `arena` out into plain arrays. */
  releaseArena(arena: FlatArena): void;
}

const ARENA_STATE_REGIONS = 2;
const arenas = new WeakMap<ArrayBufferLike, FlatArena>();

/** The arena that `values` (a parameter's or a group's values) lies in, if any. */
export function flatArenaOf(values: Float32Array): FlatArena | null {
  const a = arenas.get(values.buffer);
  if (!a) return null;
  const off = values.byteOffset - a.dataAt;
  return off >= 0 && off + values.byteLength <= a.total * 4 ? a : null;
}

/** Makes `holder` the arena's state owner (the previous live owner releases it first). */
export function claimArenaState(arena: FlatArena, holder: ArenaStateHolder): void {
  const prev = arena.owner?.deref();
  if (prev === holder) return;
  if (prev) prev.releaseArena(arena);
  arena.owner = new WeakRef(holder);
}

/** State buffer `k` for the values `values` (views at the same offset in state region k). */
export function arenaStateView(arena: FlatArena, values: Float32Array, k: number): Float32Array | null {
  if (k >= arena.stateAt.length) return null;
  return new Float32Array(arena.buffer, arena.stateAt[k] + values.byteOffset - arena.dataAt, values.length);
}

function allocArena(total: number, shared: boolean): { data: Float32Array; grad: Float32Array } | null {
  const region = Math.ceil((total * 4) / 64) * 64;
  const memory = kernels().arenaMemory(region * (2 + ARENA_STATE_REGIONS), shared);
  if (memory === null) return null;
  const buffer = memory.buffer;
  const stateAt = Array.from({ length: ARENA_STATE_REGIONS }, (_, k) => (2 + k) * region);
  arenas.set(buffer, { buffer, total, dataAt: 0, gradAt: region, stateAt, owner: null });
  return { data: new Float32Array(buffer, 0, total), grad: new Float32Array(buffer, region, total) };
}

/**
 * Points each parameter at its range of `data` (copying its values in when `copy`) and its
 * gradient at the same range of `grad` (copying the gradient it has, if any). With
 * `gradsForAll` false, a parameter that neither needs a gradient nor has one keeps `.grad` null.
 */
function bindParameters(params: readonly Parameter[], data: Float32Array, grad: Float32Array, copy: boolean, gradsForAll: boolean): void {
  let offset = 0;
  for (const p of params) {
    const size = p.size;
    const view = data.subarray(offset, offset + size);
    if (copy) view.set(p.data);
    p.data = view;
    if (gradsForAll || p.requiresGrad || p.grad !== null) {
      const g = grad.subarray(offset, offset + size);
      if (p.grad !== null) g.set(p.grad.data);
      p.grad = new Tensor(g, p.shape);
    }
    offset += size;
  }
}

/** Below this many values a packed set of parameters goes to a plain ArrayBuffer: SIMD would gain nothing worth a memory. */
const MIN_ARENA_FLOATS = 4096;

/** Whether `a` is a whole, unshared ArrayBuffer of its own (not a view into a larger buffer). */
function ownsBuffer(a: Float32Array): boolean {
  return a.byteOffset === 0 && a.byteLength === a.buffer.byteLength && a.buffer instanceof ArrayBuffer;
}

/**
 * Packs `params` (in this order) into one values buffer and one gradient buffer, in a
 * `FlatArena` with room for optimizer state where the backend has one: what the optimizers
 * do when they are built, so that plain code gets one contiguous range per parameter group
 * and the SIMD Adam running in place. Values and existing gradients are copied in; each
 * parameter's `.data` (and `.grad`) becomes a view, so read `p.data` after this, not a copy
 * taken before. A parameter that neither needs a gradient nor has one keeps `.grad` null.
 *
 * Does nothing and returns false unless every parameter owns its storage: an unshared
 * ArrayBuffer of its own, held by no other parameter. Parameters already packed (by
 * `flattenParameters`, an earlier optimizer, or the parallel package's shared memory) are
 * left where they are.
 */
export function packParameters(params: readonly Parameter[]): boolean {
  if (params.length === 0) return false;
  const buffers = new Set<ArrayBufferLike>();
  let total = 0;
  for (const p of params) {
    if (!ownsBuffer(p.data) || buffers.has(p.data.buffer)) return false;
    buffers.add(p.data.buffer);
    total += p.size;
  }
  const arena = total >= MIN_ARENA_FLOATS ? allocArena(total, false) : null;
  bindParameters(params, arena?.data ?? new Float32Array(total), arena?.grad ?? new Float32Array(total), true, false);
  return true;
}

export function paramLayout(model: Module): ParamLayoutEntry[] {
  let offset = 0;
  return model.namedParameters().map(([name, p]) => {
    const e = { name, shape: p.shape.slice(), offset, size: p.size };
    offset += p.size;
    return e;
  });
}

/**
 * Packs every parameter of `model` into one flat Float32Array (on a
 * SharedArrayBuffer when `shared`), and likewise the gradients (llm.c's
 * malloc_and_point_parameters). Current values are copied in; afterwards each
 * parameter is a view, so zeroing, all-reduce and optimizers run over one range.
 * Pass existing buffers to bind to them without copying (workers do this).
 * Without them, the buffers are allocated in one WebAssembly.Memory with room for the
 * optimizer state (`FlatArena`) so Adam runs in the SIMD kernel in place; plain
 * (Shared)ArrayBuffers where SIMD is off (CHAINRULE_SIMD=0) or unavailable.
 */
export function flattenParameters(
  model: Module,
  opts: { shared?: boolean; dataBuffer?: Float32Array; gradBuffer?: Float32Array; copyValues?: boolean } = {},
): FlatParameters {
  const layout = paramLayout(model);
  const total = layout.reduce((n, e) => n + e.size, 0);
  const alloc = (n: number) => (opts.shared ? new Float32Array(new SharedArrayBuffer(n * 4)) : new Float32Array(n));
  const arena = opts.dataBuffer === undefined && opts.gradBuffer === undefined ? allocArena(total, opts.shared ?? false) : null;
  const data = opts.dataBuffer ?? arena?.data ?? alloc(total);
  const grad = opts.gradBuffer ?? arena?.grad ?? alloc(total);
  if (data.length !== total || grad.length !== total) {
    throw new ArgumentError(`flattenParameters: model has ${total} parameters but the buffers hold ${data.length} (values) and ${grad.length} (gradients)`);
  }
  const copy = opts.copyValues ?? opts.dataBuffer === undefined;
  const params = model.namedParameters().map(([, p]) => p);
  for (const p of params) p.grad = null; // every parameter gets a fresh zeroed view below
  bindParameters(params, data, grad, copy, true);
  return { data, grad, layout };
}
