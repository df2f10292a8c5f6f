import { ArgumentError, AutogradError, ShapeError, fmtShape } from "../errors.js";
import { type Shape, checkShape, sizeOf } from "./shape.js";
import type { GradFn } from "../autograd/engine.js";
import { runBackward } from "../autograd/engine.js";

/**
 * A dense, contiguous, row-major float32 tensor. Its storage is a Float32Array
 * over an ordinary ArrayBuffer or a region of a SharedArrayBuffer (so other
 * threads can see parameters, gradients and datasets without copying).
 * Ops are added to the prototype in ops/methods.ts.
 */
export class Tensor {
  data: Float32Array;
  readonly shape: number[];
  requiresGrad: boolean;
  /** Accumulated gradient (leaf tensors only). */
  grad: Tensor | null = null;
  /** The op that produced this tensor, when it was built with grad enabled. */
  gradFn: GradFn | null = null;
  /** Optional name, used in error messages and state dicts. */
  name?: string;

  constructor(data: Float32Array, shape: Shape, requiresGrad = false) {
    const s = checkShape(shape);
    if (data.length !== sizeOf(s)) {
      throw new ShapeError(`Tensor: data of length ${data.length} does not fit shape ${fmtShape(s)} (${sizeOf(s)} elements)`);
    }
    this.data = data;
    this.shape = s;
    this.requiresGrad = requiresGrad;
  }

  /** A tensor over `shape` elements of a SharedArrayBuffer starting at `byteOffset`. */
  static fromShared(buffer: SharedArrayBuffer, byteOffset: number, shape: Shape, requiresGrad = false): Tensor {
    const n = sizeOf(checkShape(shape, "Tensor.fromShared"));
    if (byteOffset % 4 !== 0 || byteOffset < 0 || byteOffset + n * 4 > buffer.byteLength) {
      throw new ArgumentError(`Tensor.fromShared: ${n} floats at byte offset ${byteOffset} do not fit a buffer of ${buffer.byteLength} bytes (offset must be a multiple of 4)`);
    }
    return new Tensor(new Float32Array(buffer, byteOffset, n), shape, requiresGrad);
  }

  get ndim(): number {
    return this.shape.length;
  }

  get size(): number {
    return this.data.length;
  }

  /** True when the storage is a SharedArrayBuffer. */
  get isShared(): boolean {
    return this.data.buffer instanceof SharedArrayBuffer;
  }

  get isLeaf(): boolean {
    return this.gradFn === null;
  }

  item(): number {
    if (this.data.length !== 1) throw new ShapeError(`item: tensor of shape ${fmtShape(this.shape)} has ${this.data.length} elements, expected 1`);
    return this.data[0];
  }

  /** Nested JS arrays (a number for a 0-d tensor). */
  toArray(): any {
    if (this.shape.length === 0) return this.data[0];
    const build = (dim: number, offset: number): any => {
      const n = this.shape[dim];
      if (dim === this.shape.length - 1) return Array.from(this.data.subarray(offset, offset + n));
      const stride = sizeOf(this.shape.slice(dim + 1));
      const out = new Array(n);
      for (let i = 0; i < n; i++) out[i] = build(dim + 1, offset + i * stride);
      return out;
    };
    return build(0, 0);
  }

  /** Runs reverse-mode autodiff from this tensor, accumulating into leaves' `.grad`. */
  backward(grad?: Tensor | Float32Array, opts: { retainGraph?: boolean } = {}): void {
    if (!this.requiresGrad) throw new AutogradError("backward: tensor does not require grad and has no grad_fn");
    let g: Float32Array;
    if (grad === undefined) {
      if (this.data.length !== 1) {
        throw new AutogradError(`backward: output of shape ${fmtShape(this.shape)} is not a scalar; pass a gradient of the same shape`);
      }
      g = new Float32Array([1]);
    } else {
      g = grad instanceof Tensor ? grad.data : grad;
      if (g.length !== this.data.length) {
        throw new ShapeError(`backward: gradient of ${g.length} elements does not match output shape ${fmtShape(this.shape)}`);
      }
    }
    runBackward(this, g, opts.retainGraph ?? false);
  }

  /** Same storage, cut from the graph. */
  detach(): Tensor {
    return new Tensor(this.data, this.shape, false);
  }

  /** A copy with its own storage (ArrayBuffer), cut from the graph. */
  clone(): Tensor {
    return new Tensor(this.data.slice(), this.shape, false);
  }

  /** Marks this leaf as needing a gradient (PyTorch's `requires_grad_`). */
  requiresGrad_(flag = true): this {
    if (!this.isLeaf) throw new AutogradError("requiresGrad_: only leaf tensors can change requiresGrad");
    this.requiresGrad = flag;
    return this;
  }

  toString(): string {
    return `Tensor(shape=${fmtShape(this.shape)}${this.requiresGrad ? ", requiresGrad" : ""})`;
  }
}
