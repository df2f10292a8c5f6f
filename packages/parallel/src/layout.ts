/** How work and memory are split: shards of a batch, chunks of the flat parameter range, the shared control words, dataset views. */
import { ArgumentError, type Dataset, isShared } from "@chainrule/core";
import type { DatasetRef, WorkerContext } from "./types.js";

/** Chunk boundaries are multiples of this many floats (64 bytes), so two workers never write one cache line. */
const ALIGN = 16;

/** Splits n rows into `world` shards as evenly as possible (the first n % world get one more). Returns world+1 offsets. */
export function shardOffsets(n: number, world: number): number[] {
  const base = Math.floor(n / world), extra = n % world;
  const out = [0];
  for (let r = 0; r < world; r++) out.push(out[r] + base + (r < extra ? 1 : 0));
  return out;
}

/** Splits the flat parameter range [0, numParams) into `world` chunks on 16-float boundaries. Returns world+1 offsets. */
export function chunkOffsets(numParams: number, world: number): number[] {
  const out = [0];
  for (let r = 1; r < world; r++) out.push(Math.min(numParams, Math.round((r * numParams) / world / ALIGN) * ALIGN));
  out.push(numParams);
  for (let r = 1; r <= world; r++) out[r] = Math.max(out[r], out[r - 1]);
  return out;
}

/** The trainable flat ranges [from, to, ...] of a layout (consecutive trainable parameters merged). */
export function trainableRanges(layout: readonly { offset: number; size: number }[], trainable: readonly boolean[]): number[] {
  const out: number[] = [];
  layout.forEach((e, i) => {
    if (!trainable[i] || e.size === 0) return;
    if (out.length > 0 && out[out.length - 1] === e.offset) out[out.length - 1] = e.offset + e.size;
    else out.push(e.offset, e.offset + e.size);
  });
  return out;
}

/**
 * Splits the flat range into `world` chunks holding about the same number of
 * trainable floats (boundaries on 16 floats), and returns, per rank, the trainable
 * ranges inside its chunk. With every parameter trainable this is chunkOffsets.
 */
export function trainableChunks(numParams: number, ranges: readonly number[], world: number): { chunks: number[]; segments: number[][] } {
  let T = 0;
  for (let i = 0; i < ranges.length; i += 2) T += ranges[i + 1] - ranges[i];
  /** The flat offset of trainable float number t. */
  const flatAt = (t: number): number => {
    for (let i = 0; i < ranges.length; i += 2) {
      const n = ranges[i + 1] - ranges[i];
      if (t < n) return ranges[i] + t;
      t -= n;
    }
    return numParams;
  };
  const chunks = [0];
  for (let r = 1; r < world; r++) chunks.push(Math.min(numParams, Math.round(flatAt(Math.round((r * T) / world)) / ALIGN) * ALIGN));
  chunks.push(numParams);
  for (let r = 1; r <= world; r++) chunks[r] = Math.max(chunks[r], chunks[r - 1]);
  const segments = Array.from({ length: world }, (_, r) => {
    const seg: number[] = [];
    for (let i = 0; i < ranges.length; i += 2) {
      const a = Math.max(ranges[i], chunks[r]), b = Math.min(ranges[i + 1], chunks[r + 1]);
      if (a < b) seg.push(a, b);
    }
    return seg;
  });
  return { chunks, segments };
}

/** Where the big arrays live: byte offsets, and whether the slots or the optimizer state are outside the WebAssembly memory. */
export interface MemoryPlan {
  paramsAt: number; gradAt: number; slotsAt: number; optAt: number;
  /** Bytes of the WebAssembly memory up to the end of these regions (the small regions follow). */
  end: number;
  slotsOutside: boolean;
  optOutside: boolean;
}

/**
 * Lays out parameters, mean gradient, `world` gradient slots and `optBuffers` optimizer buffers
 * (P floats each, 64-byte aligned regions) so that, with `smallBytes` more, they fit `capBytes` of
 * WebAssembly memory, where the SIMD reduce and optimizer run in place. What does not fit moves
 * to plain shared memory, slots first, then the optimizer state (their loops then run in
 * JavaScript, to the same bits for the reduce). Null when even parameters and gradient do not fit.
 * With one worker its slot is the mean gradient (no slot region).
 */
export function planMemory(P: number, world: number, optBuffers: number, smallBytes: number, capBytes: number): MemoryPlan | null {
  const region = Math.ceil((P * 4) / 64) * 64;
  for (const [slotsOutside, optOutside] of [[false, false], [true, false], [true, true]] as const) {
    if (slotsOutside && world === 1 && !optOutside) continue; // one worker has no slots to move
    const slotsInside = world > 1 && !slotsOutside, gradAt = region;
    const slotsAt = world === 1 ? gradAt : slotsOutside ? 0 : 2 * region;
    const optStart = slotsInside ? slotsAt + world * region : 2 * region;
    const optAt = optOutside ? 0 : optStart;
    const end = optOutside ? optStart : optStart + optBuffers * region;
    if (end + smallBytes <= capBytes) return { paramsAt: 0, gradAt, slotsAt, optAt, end, slotsOutside: slotsOutside && world > 1, optOutside };
  }
  return null;
}

/** The ranks' gradient slots (one: the mean gradient itself), in the WebAssembly memory or the plain shared memory they moved to. */
export function gradientSlots(ctx: WorkerContext, grad: Float32Array): Float32Array[] {
  if (ctx.world === 1) return [grad];
  const region = Math.ceil((ctx.numParams * 4) / 64) * 64, buf = ctx.slotMemory ?? ctx.memory.buffer;
  return Array.from({ length: ctx.world }, (_, r) => new Float32Array(buf, ctx.slotsAt + r * region, ctx.numParams));
}

/** A bucket of the exchange between hosts: parameters (layout indices) and the flat ranges [from, to, ...] they cover. */
export interface GradientBucket { params: number[]; pieces: number[] }

/**
 * Groups the trainable parameters into buckets of at most `capFloats` floats (a parameter larger
 * than that is a bucket of its own), in reverse layout order — roughly the order backward
 * finishes their gradients, the output layers first — so the first buckets cross the network
 * while backward still computes the input layers' gradients (as PyTorch DDP's reducer does).
 * Adjacent parameters' ranges are merged into one piece.
 */
export function gradientBuckets(layout: readonly { offset: number; size: number }[], trainable: readonly boolean[], capFloats: number): GradientBucket[] {
  const buckets: GradientBucket[] = [];
  let cur: GradientBucket = { params: [], pieces: [] }, floats = 0;
  for (let i = layout.length - 1; i >= 0; i--) {
    const e = layout[i];
    if (!trainable[i] || e.size === 0) continue;
    if (floats > 0 && floats + e.size > capFloats) {
      buckets.push(cur);
      cur = { params: [], pieces: [] };
      floats = 0;
    }
    cur.params.push(i);
    if (cur.pieces.length > 0 && cur.pieces[cur.pieces.length - 2] === e.offset + e.size) cur.pieces[cur.pieces.length - 2] = e.offset;
    else cur.pieces.push(e.offset, e.offset + e.size);
    floats += e.size;
  }
  if (cur.params.length > 0) buckets.push(cur);
  return buckets;
}

/**
 * Where the combine of the hosts' gradients finds its operands in the WebAssembly memory, so its
 * SIMD kernel runs in place (host-exchange.ts): the hosts' copies of a bucket as the collective
 * delivers them (`gathered`, hosts × the largest bucket), this host's summed part of a
 * reduce-scatter (`mine`), and the hosts' weights (float64). Byte offsets from `at` (64-byte aligned).
 */
export interface HostCombineRegion { gatheredAt: number; gatheredFloats: number; mineAt: number; mineFloats: number; weightsAt: number; end: number }

export function hostCombineRegion(at: number, hosts: number, buckets: readonly GradientBucket[]): HostCombineRegion {
  let largest = 0;
  for (const b of buckets) {
    let n = 0;
    for (let i = 0; i < b.pieces.length; i += 2) n += b.pieces[i + 1] - b.pieces[i];
    largest = Math.max(largest, n);
  }
  const align = (bytes: number) => Math.ceil(bytes / 64) * 64;
  const gatheredAt = align(at), gatheredFloats = hosts * largest;
  const mineAt = align(gatheredAt + 4 * gatheredFloats), mineFloats = Math.ceil(largest / hosts);
  const weightsAt = align(mineAt + 4 * mineFloats);
  return { gatheredAt, gatheredFloats, mineAt, mineFloats, weightsAt, end: weightsAt + 8 * hosts };
}

/**
 * Int32 words of the exchange between hosts (hostSync, see host-exchange.ts). Each is a count the
 * exchange waits for and takes off again, so it starts from 0 at every step: ranks that entered
 * the step (their counted targets are in the exchange), parameters whose gradient is final per
 * bucket (READY + b; ready at parameters × world), rank 0's averaged buffers. DONE counts the
 * steps whose exchange is complete: ranks wait for it before updating.
 */
export const HOSTX = {
  DONE: 0,
  ENTERED: 1,
  SETTLED: 2,
  /** 1 after the exchange failed (its message is in hostError). */
  FAILED: 3,
  /** 1 tells the exchange thread to end. */
  QUIT: 4,
  READY: 5,
  size: (buckets: number) => 5 + buckets,
} as const;

/** Float64 words of the exchange between hosts (hostTotals): written by ranks at step start, and by the exchange after it. */
export const HOST_TOTALS = {
  /** Written by rank 0 at step start: ranks of this host with rows. */
  ACTIVE: 0,
  /** Written by the exchange: counted targets and loss sum over all hosts, ms of its work, stop agreed. */
  COUNTED: 1, LOSS_SUM: 2, MS: 3, STOP: 4,
  size: 5,
} as const;

/** Int32 words of the control buffer. */
export const CONTROL = {
  /** Init barrier: arrivals. */
  INIT: 0,
  /**
   * Step barriers: arrivals, counted on from one step to the next while steps follow each other in
   * the step loops (each step's description carries the count its barriers start from); reset by the
   * main thread only when no step is in flight.
   */
  BARRIER: 1,
  /** Synchronised batch norm: arrivals at its exchanges so far in this step (reset by rank 0 after the step's gradient barrier, when no rank is in an exchange). */
  BN: 2,
  /** 1 once this host asked to stop (DataParallel.requestStop); rank 0 tells the other hosts in the next exchange. */
  STOP: 3,
  /** How long (ms) a rank waits at a barrier or for the host exchange: the step timeout plus a margin, set by the main thread as it adapts. */
  WAIT_MS: 4,
  /** Per rank r: its stage in the current step, at STAGE + r (see STAGE_*). */
  STAGE: 5,
  /** Control words for `world` ranks. */
  size: (world: number) => 5 + 3 * world,
  /** Per rank r: the count of barriers it has reached (BARRIER's numbering), at arrivedAt(world) + r. */
  arrivedAt: (world: number) => 5 + world,
  /** Per rank r: the step it is running or last ran, at stepOf(world) + r (after a failure: which step its stage is for). */
  stepOf: (world: number) => 5 + 2 * world,
} as const;

/** The bound on a rank's waits now (CONTROL.WAIT_MS). */
export function waitBoundMs(control: Int32Array): number {
  return Atomics.load(control, CONTROL.WAIT_MS);
}

/**
 * Int32 words of the step doorbell. Rank r's loop waits on SEQ + r for a command after the one
 * it handled: the number of the last step command rung (the loop runs them one after another, in
 * order: the main thread may ring the next one while the last still runs), STOP, or — written by
 * the loop itself with compareExchange when it gives up idling — EXITED, so the main thread knows
 * to start a new loop instead of ringing an empty one. Command `seq` uses the step description,
 * result rows, index half and done count of parity `seq & 1`.
 */
export const BELL = {
  /** Ranks that finished command seq, at DONE + (seq & 1). */
  DONE: 0,
  SEQ: 2,
  STOP: -1,
  EXITED: -2,
  size: (world: number) => 2 + world,
} as const;

/**
 * Float64 step description (one per parity): step, rowStart, lr, active ranks, indices used (0/1),
 * the barrier count this step's barriers start from, whether the step starts with a barrier (it was
 * rung while the step before still ran: no rank may read the parameters before every rank updated
 * its chunk), where its indices start in the index buffer, then world+1 shard offsets.
 */
export const STEP_DESC = {
  STEP: 0, ROW_START: 1, LR: 2, ACTIVE: 3, HAS_IDX: 4, BARRIER_BASE: 5, START_BARRIER: 6, IDX_AT: 7, OFFSETS: 8,
  size: (world: number) => 9 + world,
} as const;

/** Float64 per-rank step result row (rank r of command seq: row ((seq & 1) · world + r)). */
export const STEP_RESULT = {
  ROWS: 0, COUNTED: 1, LOSS_SUM: 2, GATHER_MS: 3, COMPUTE_MS: 4, WAIT_MS: 5, REDUCE_MS: 6, OPT_MS: 7, GRAD_NORM: 8,
  /** The step this row is for (a rank whose row is not yet for the current step is still running). */
  STEP: 9,
  /** The rank's whole step, from reading the step description to writing this row (the rest of the wall time is dispatch). */
  STEP_MS: 10,
  /** Rank 0 with several hosts: counted targets and loss sum over all hosts. */
  HOSTS_COUNTED: 11, HOSTS_LOSS_SUM: 12,
  /** Rank 0 with several hosts: ms spent exchanging with the other hosts (MPI calls and the host-order sum). */
  HOSTS_MS: 13,
  /** Rank 0 with several hosts: 1 when some host asked to stop (every host reads the same value for the same step). */
  HOSTS_STOP: 14,
  /** Rank 0 with several hosts: ms it waited for the exchange after its backward (the exchange's time not hidden behind backward). */
  HOSTS_EXPOSED_MS: 15,
  size: 16,
} as const;

/** Stages a rank goes through in a step (CONTROL.STAGE + rank). */
export const STAGE_IDLE = 0, STAGE_GRAD = 1, STAGE_REDUCE = 2, STAGE_UPDATE = 3, STAGE_DONE = 4;

function sizeOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** A dataset as sent to worker threads: its shared buffers and shapes (the buffers are shared, not copied). */
export function datasetRef(ds: Dataset): DatasetRef {
  if (!isShared(ds)) throw new ArgumentError(`DataParallel: dataset${ds.name ? ` '${ds.name}'` : ""} must live in shared memory for worker threads (core's toShared)`);
  return {
    x: ds.inputs.buffer as SharedArrayBuffer, xOffset: ds.inputs.byteOffset, xShape: ds.inputShape,
    y: ds.targets.buffer as SharedArrayBuffer, yOffset: ds.targets.byteOffset, yShape: ds.targetShape, yInt: ds.targets instanceof Int32Array,
    length: ds.length,
  };
}

/** What a replica reads rows from: the dataset's arrays, row sizes and shapes. */
export interface DatasetViews {
  x: Float32Array; y: Float32Array | Int32Array;
  xRow: number; yRow: number;
  xShape: number[]; yShape: number[];
  length: number;
}

/** Views of a dataset sent to a worker thread. */
export function datasetViews(ref: DatasetRef): DatasetViews {
  const xRow = sizeOf(ref.xShape), yRow = sizeOf(ref.yShape);
  const x = new Float32Array(ref.x, ref.xOffset, ref.length * xRow);
  const y = ref.yInt ? new Int32Array(ref.y, ref.yOffset, ref.length * yRow) : new Float32Array(ref.y, ref.yOffset, ref.length * yRow);
  return { x, y, xRow, yRow, xShape: ref.xShape, yShape: ref.yShape, length: ref.length };
}

/** Views of a dataset in the calling thread (the replica that runs inline). */
export function localViews(ds: Dataset): DatasetViews {
  return { x: ds.inputs, y: ds.targets, xRow: sizeOf(ds.inputShape), yRow: sizeOf(ds.targetShape), xShape: ds.inputShape, yShape: ds.targetShape, length: ds.length };
}

/** splitmix-style mix of integers into a 32-bit seed (epoch shuffles, dropout masks). */
export function mixSeed(...parts: number[]): number {
  let h = 0x9e3779b9;
  for (const p of parts) {
    h = Math.imul(h ^ (p >>> 0), 0x85ebca6b) >>> 0;
    h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
    h = (h ^ (h >>> 16)) >>> 0;
  }
  return h;
}
