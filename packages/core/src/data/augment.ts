/**
 * Seeded image augmentation over a batch of images stored as one (N, C, H, W) Float32Array
 * (a minibatch as the loaders hand it out). Every random draw comes from the Generator passed
 * in, so a worker seeded with (seed, rank) augments reproducibly.
 */
import { ArgumentError, ShapeError, fmtShape } from "../errors.js";
import { Generator as GeneratorCtor, type Generator } from "../tensor/random.js";

/** (N, C, H, W) of a batch. */
export type ImageBatchShape = readonly [number, number, number, number];

function checkBatch(op: string, data: Float32Array, shape: ImageBatchShape): void {
  if (shape.length !== 4 || shape.some((d) => !Number.isInteger(d) || d < 0)) throw new ShapeError(`${op}: shape must be (N, C, H, W), got ${fmtShape(shape)}`);
  const n = shape[0] * shape[1] * shape[2] * shape[3];
  if (data.length !== n) throw new ShapeError(`${op}: batch of ${data.length} floats does not fit shape ${fmtShape(shape)} (${n} floats)`);
}

/**
 * Random crop with zero padding (torchvision's RandomCrop(size=H×W, padding)): each image is
 * padded by `padding` on every side with `fill`, and an H×W window is cut at a uniformly random
 * offset in [0, 2·padding] per axis, one offset per image. Returns a new array unless `out` is given
 * (it must not alias `data`).
 */
export function randomCrop(
  data: Float32Array, shape: ImageBatchShape, padding: number, gen: Generator,
  opts: { fill?: number; out?: Float32Array } = {},
): Float32Array {
  const op = "randomCrop";
  checkBatch(op, data, shape);
  if (!Number.isInteger(padding) || padding < 0) throw new ArgumentError(`${op}: padding must be a non-negative integer, got ${padding}`);
  const [N, C, H, W] = shape;
  const out = opts.out ?? new Float32Array(data.length);
  if (out.length !== data.length) throw new ShapeError(`${op}: out has ${out.length} floats, batch has ${data.length}`);
  if (out === data) throw new ArgumentError(`${op}: out must not be the input array`);
  const fill = opts.fill ?? 0;
  const plane = H * W;
  for (let n = 0; n < N; n++) {
    // Offset of the window's top-left corner in the original image's coordinates.
    const dy = gen.randint(2 * padding + 1) - padding;
    const dx = gen.randint(2 * padding + 1) - padding;
    // Output columns whose source column x + dx lies inside [0, W).
    const x0 = Math.min(W, Math.max(0, -dx)), x1 = Math.max(x0, Math.min(W, W - dx));
    for (let c = 0; c < C; c++) {
      const base = (n * C + c) * plane;
      for (let y = 0; y < H; y++) {
        const sy = y + dy;
        const o = base + y * W;
        if (sy < 0 || sy >= H) {
          out.fill(fill, o, o + W);
          continue;
        }
        const s = base + sy * W + dx;
        for (let x = 0; x < x0; x++) out[o + x] = fill;
        for (let x = x0; x < x1; x++) out[o + x] = data[s + x];
        for (let x = x1; x < W; x++) out[o + x] = fill;
      }
    }
  }
  return out;
}

/**
 * Mirrors each image left-right with probability p (default 0.5), in place. One draw per
 * image. Returns the indices of the flipped images.
 */
export function randomHorizontalFlip(data: Float32Array, shape: ImageBatchShape, gen: Generator, p = 0.5): number[] {
  const op = "randomHorizontalFlip";
  checkBatch(op, data, shape);
  if (!(p >= 0 && p <= 1)) throw new ArgumentError(`${op}: probability must be in [0, 1], got ${p}`);
  const [N, C, H, W] = shape;
  const flipped: number[] = [];
  for (let n = 0; n < N; n++) {
    if (!(gen.random() < p)) continue;
    flipped.push(n);
    for (let r = n * C * H; r < (n + 1) * C * H; r++) {
      const o = r * W;
      for (let a = o, b = o + W - 1; a < b; a++, b--) {
        const t = data[a];
        data[a] = data[b];
        data[b] = t;
      }
    }
  }
  return flipped;
}

export interface AugmentOptions {
  /** Random-crop padding in pixels (0: no crop). */
  cropPadding?: number;
  /** Horizontal flip probability (0: no flip). Leave it 0 for digits and text. */
  flipProbability?: number;
}

/**
 * Applies the configured augmentations in torchvision's usual order (crop, then flip) and
 * returns the augmented batch (a new array when a crop is done, else `data` itself, flipped in place).
 */
export function augmentBatch(data: Float32Array, shape: ImageBatchShape, opts: AugmentOptions, gen: Generator): Float32Array {
  let x = data;
  if ((opts.cropPadding ?? 0) > 0) x = randomCrop(x, shape, opts.cropPadding!, gen);
  if ((opts.flipProbability ?? 0) > 0) randomHorizontalFlip(x, shape, gen, opts.flipProbability);
  return x;
}

/** Augmentation of training rows as data-parallel workers apply it: per row, seeded by its place in the run. */
export interface RowAugmentOptions {
  /** Random-crop padding in pixels (0: none). */
  crop?: number;
  /** Horizontal flip with probability 0.5 (true) or the given probability; false/0: none. */
  flip?: boolean | number;
}

/** The 32-bit seed of the augmentation of the row at `position` of step `step`'s global batch. */
export function augmentSeed(seed: number, step: number, position: number): number {
  let h = 0x41554721; // "AUG!": a stream apart from dropout's and the shuffles'
  for (const p of [seed, step, position]) {
    h = Math.imul(h ^ (p >>> 0), 0x85ebca6b) >>> 0;
    h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
    h = (h ^ (h >>> 16)) >>> 0;
  }
  return h;
}

/**
 * Augments `rows` consecutive images of shape (C, H, W) from `src` into `out` (both rows × C·H·W;
 * `out` must not alias `src`): random crop with `crop` padding, then horizontal flip. Row i gets its
 * own generator seeded by augmentSeed(seed, step, position0 + i), so a row is augmented the same
 * however a batch is split across workers, and a resumed run (same step numbers) repeats it exactly.
 */
export function augmentRows(
  src: Float32Array, out: Float32Array, rows: number, imageShape: readonly [number, number, number],
  opts: RowAugmentOptions, seed: number, step: number, position0: number,
): Float32Array {
  const [C, H, W] = imageShape, D = C * H * W;
  if (src.length < rows * D || out.length < rows * D) throw new ShapeError(`augmentRows: ${rows} rows of ${fmtShape(imageShape)} need ${rows * D} floats (src ${src.length}, out ${out.length})`);
  if (out.buffer === src.buffer && out.byteOffset < src.byteOffset + rows * D * 4 && src.byteOffset < out.byteOffset + rows * D * 4) {
    throw new ArgumentError("augmentRows: out must not overlap src");
  }
  const crop = opts.crop ?? 0;
  const p = opts.flip === true ? 0.5 : opts.flip === false || opts.flip === undefined ? 0 : opts.flip;
  const shape: ImageBatchShape = [1, C, H, W];
  for (let i = 0; i < rows; i++) {
    const s = src.subarray(i * D, (i + 1) * D), o = out.subarray(i * D, (i + 1) * D);
    const gen = new GeneratorCtor(augmentSeed(seed, step, position0 + i));
    if (crop > 0) randomCrop(s, shape, crop, gen, { out: o });
    else o.set(s);
    if (p > 0) randomHorizontalFlip(o, shape, gen, p);
  }
  return out.subarray(0, rows * D);
}
