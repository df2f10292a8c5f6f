/**
 * Key/value cache for autoregressive generation: each layer keeps the keys and values of
 * every position seen so far, so a new token costs one row through the projections and one
 * attention row over the cache (O(T)) instead of re-running the whole context (O(T²)).
 */
import { ArgumentError, ShapeError } from "../errors.js";
import { kernels } from "../kernels/kernels.js";

/** The keys and values of one layer: (capacity, nKvHead·headSize) each, rows 0..length-1 filled. */
export interface LayerKV {
  keys: Float32Array;
  values: Float32Array;
}

export class KVCache {
  readonly layers: LayerKV[];
  /** Positions held (the same in every layer once a forward pass has gone through all of them). */
  length = 0;

  /**
   * @param nLayer layers of the model
   * @param kvWidth nKvHead · headSize: one position's keys (and values) in one layer
   * @param capacity the longest context (the model's blockSize)
   */
  constructor(readonly nLayer: number, readonly kvWidth: number, readonly capacity: number) {
    for (const [name, v] of Object.entries({ nLayer, kvWidth, capacity })) {
      if (!Number.isInteger(v) || v <= 0) throw new ArgumentError(`KVCache: ${name} must be a positive integer, got ${v}`);
    }
    this.layers = Array.from({ length: nLayer }, () => ({ keys: new Float32Array(capacity * kvWidth), values: new Float32Array(capacity * kvWidth) }));
  }

  /** Forgets every position (the arrays are kept for reuse). */
  reset(): void {
    this.length = 0;
  }

  /** Throws unless `count` more positions fit. */
  checkRoom(count: number, op: string): void {
    if (this.length + count > this.capacity) {
      throw new ShapeError(`${op}: ${count} new positions after ${this.length} cached exceed the cache's ${this.capacity} (blockSize); reset the cache`);
    }
  }
}

/**
 * Writes `count` rows of keys and values into a layer's cache at position `start`. The rows
 * are read from `src` at `kOff` / `vOff` plus r·`stride` (a packed qkv projection, or
 * separate k and v arrays with their own offsets).
 */
export function storeKV(layer: LayerKV, width: number, start: number, count: number, src: Float32Array, kOff: number, vOff: number, stride: number, vSrc: Float32Array = src): void {
  for (let r = 0; r < count; r++) {
    const dst = (start + r) * width;
    layer.keys.set(src.subarray(kOff + r * stride, kOff + r * stride + width), dst);
    layer.values.set(vSrc.subarray(vOff + r * stride, vOff + r * stride + width), dst);
  }
}

/** Scratch arrays of attendCached, grown as needed. */
export interface AttendScratch {
  scores: Float32Array;
}

export function newAttendScratch(): AttendScratch {
  return { scores: new Float32Array(0) };
}

/**
 * Causal attention of `count` new queries, at positions start..start+count-1, over a layer's
 * cache (which already holds their own keys and values): query r sees positions 0..start+r.
 * q row r (nHead·hs) is at qOff + r·qStride; head h reads key/value head ⌊h / (nHead/nKvHead)⌋
 * (grouped-query attention; nKvHead = nHead is ordinary multi-head attention). The heads of one
 * key/value group are adjacent in q, so each group's scores are one GEMM over the cache.
 * y (count, nHead·hs), heads merged, is written at row r·yStride.
 */
export function attendCached(
  y: Float32Array, yStride: number,
  q: Float32Array, qOff: number, qStride: number,
  layer: LayerKV, start: number, count: number,
  nHead: number, nKvHead: number, hs: number, scratch: AttendScratch,
): void {
  const k = kernels();
  const group = nHead / nKvHead, width = nKvHead * hs, scale = 1 / Math.sqrt(hs);
  for (let r = 0; r < count; r++) {
    const T = start + r + 1; // positions this query sees
    const need = nHead * T;
    if (scratch.scores.length < need) scratch.scores = new Float32Array(Math.max(need, 2 * scratch.scores.length));
    const S = scratch.scores;
    // scores (group, T) per kv head g = scale · q[g heads] (group, hs) · K_g (T, hs)ᵀ
    k.gemmStridedBatched(false, true, group, T, hs, scale, q, qOff + r * qStride, hs, group * hs, layer.keys, 0, width, hs, 0, S, 0, T, group * T, nKvHead);
    softmaxRows(S, nHead, T);
    // y[r, g heads] (group, hs) = P (group, T) · V_g (T, hs)
    k.gemmStridedBatched(false, false, group, hs, T, 1, S, 0, T, group * T, layer.values, 0, width, hs, 0, y, r * yStride, hs, group * hs, nKvHead);
  }
}

/** In-place softmax of `rows` contiguous rows of length n. */
function softmaxRows(S: Float32Array, rows: number, n: number): void {
  for (let i = 0; i < rows; i++) {
    const o = i * n;
    let m = -Infinity;
    for (let j = 0; j < n; j++) if (S[o + j] > m) m = S[o + j];
    let s = 0;
    for (let j = 0; j < n; j++) {
      const e = Math.exp(S[o + j] - m);
      S[o + j] = e;
      s += e;
    }
    const inv = 1 / s;
    for (let j = 0; j < n; j++) S[o + j] *= inv;
  }
}
