/**
 * Rotary position embedding (RoPE, Su et al.), in the rotate-half layout of GPT-NeoX and
 * Hugging Face's Llama: for x (B, T, H, D) and i < D/2, the pair (x[i], x[i + D/2]) at
 * position p = positionOffset + t is rotated by the angle p·θ_i, θ_i = theta^(−2i/D):
 *   out[i]       = x[i]·cos − x[i + D/2]·sin
 *   out[i + D/2] = x[i + D/2]·cos + x[i]·sin
 * A rotation is orthogonal, so the gradient is the rotation by −p·θ_i.
 */
import { ArgumentError, ShapeError, fmtShape } from "../errors.js";
import { Tensor } from "../tensor/tensor.js";
import { outputBuffer } from "../tensor/arena.js";
import { gradBuffer } from "../autograd/engine.js";
import { checkOptions } from "../options.js";
import { result } from "./op.js";

export interface RotaryOptions {
  /** Position of the first of the T rows (a key/value cache's length when generating). Default 0. */
  positionOffset?: number;
  /** Base of the angle frequencies. Default 10000. */
  theta?: number;
}

export function rotaryEmbedding(x: Tensor, opts: RotaryOptions = {}): Tensor {
  checkOptions("rotaryEmbedding", opts, ["positionOffset", "theta"]);
  const offset = opts.positionOffset ?? 0, theta = opts.theta ?? 10000;
  if (x.ndim !== 4 || x.shape[3] % 2 !== 0) throw new ShapeError(`rotaryEmbedding: input must be (B, T, heads, headSize) with an even headSize, got ${fmtShape(x.shape)}`);
  if (!Number.isInteger(offset) || offset < 0) throw new ArgumentError(`rotaryEmbedding: positionOffset must be a non-negative integer, got ${offset}`);
  if (!(theta > 0) || !Number.isFinite(theta)) throw new ArgumentError(`rotaryEmbedding: theta must be a finite number > 0, got ${theta}`);
  const [B, T, H, D] = x.shape;
  const { cos, sin } = rotaryTable(T, D, offset, theta);
  const out = outputBuffer(x.size);
  rotate(out, x.data, cos, sin, B, T, H, D, 1);
  return result("rotaryEmbedding", out, x.shape, [x], (g) => {
    const dx = gradBuffer(x.size);
    rotate(dx, g, cos, sin, B, T, H, D, -1);
    return [dx];
  });
}

/** cos and sin of p·θ_i for the T positions from `offset`, (T, D/2) each; frequencies and angles rounded to float32 as Llama's reference code computes them. */
function rotaryTable(T: number, D: number, offset: number, theta: number): { cos: Float32Array; sin: Float32Array } {
  const half = D / 2;
  const cos = new Float32Array(T * half), sin = new Float32Array(T * half);
  for (let i = 0; i < half; i++) {
    const freq = Math.fround(1 / Math.pow(theta, (2 * i) / D));
    for (let t = 0; t < T; t++) {
      const angle = Math.fround((offset + t) * freq);
      cos[t * half + i] = Math.cos(angle);
      sin[t * half + i] = Math.sin(angle);
    }
  }
  return { cos, sin };
}

/** out = x rotated by sign·p·θ_i pairwise (sign −1: the inverse rotation, for the gradient). */
function rotate(out: Float32Array, x: Float32Array, cos: Float32Array, sin: Float32Array, B: number, T: number, H: number, D: number, sign: 1 | -1): void {
  const half = D / 2;
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const tab = t * half;
      for (let h = 0; h < H; h++) {
        const o = ((b * T + t) * H + h) * D;
        for (let i = 0; i < half; i++) {
          const c = cos[tab + i], s = sign * sin[tab + i];
          const x1 = x[o + i], x2 = x[o + half + i];
          out[o + i] = x1 * c - x2 * s;
          out[o + half + i] = x2 * c + x1 * s;
        }
      }
    }
  }
}
