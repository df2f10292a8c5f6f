/**
 * Seeded image augmentation over a batch of images stored as one (N, C, H, W) Float32Array
 * (a minibatch as the loaders hand it out). Every random draw comes from the Generator passed
 * in, so a worker seeded with (seed, rank) augments reproducibly.
 */
import { ArgumentError, ShapeError, fmtShape } from "../errors.js";
import type { Generator } from "../tensor/random.js";

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
