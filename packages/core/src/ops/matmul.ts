import { ShapeError, fmtShape } from "../errors.js";
import { Tensor } from "../tensor/tensor.js";
import { broadcastShapes, sizeOf, stridesOf } from "../tensor/shape.js";
import { kernels } from "../kernels/kernels.js";
import { gradBuffer, leafGradSink } from "../autograd/engine.js";
import { outputBuffer } from "../tensor/arena.js";
import { result } from "./op.js";
import { reshape } from "./shape.js";

/**
 * Matrix product with numpy semantics: 2-D × 2-D, batched N-D with broadcast
 * batch dims, and 1-D operands promoted (and squeezed back) as in PyTorch.
 */
export function matmul(a: Tensor, b: Tensor): Tensor {
  if (a.ndim === 0 || b.ndim === 0) throw new ShapeError(`matmul: ${fmtShape(a.shape)} x ${fmtShape(b.shape)}: both operands need at least one dimension`);
  if (a.ndim === 1 || b.ndim === 1) {
    const a2 = a.ndim === 1 ? reshape(a, [1, a.shape[0]]) : a;
    const b2 = b.ndim === 1 ? reshape(b, [b.shape[0], 1]) : b;
    const out = matmul(a2, b2);
    const shape = out.shape.slice();
    if (b.ndim === 1) shape.splice(shape.length - 1, 1);
    if (a.ndim === 1) shape.splice(shape.length - (b.ndim === 1 ? 1 : 2), 1);
    return reshape(out, shape);
  }
  const M = a.shape[a.ndim - 2], K = a.shape[a.ndim - 1];
  const K2 = b.shape[b.ndim - 2], N = b.shape[b.ndim - 1];
  if (K !== K2) throw new ShapeError(`matmul: ${fmtShape(a.shape)} x ${fmtShape(b.shape)}: inner dimensions ${K} and ${K2} differ`);
  const k = kernels();

  // (..., M, K) @ (K, N): one GEMM over all rows of a.
  if (b.ndim === 2) {
    const rows = a.data.length / K;
    const out = outputBuffer(rows * N);
    k.gemm(false, false, rows, N, K, 1, a.data, 0, K, b.data, 0, N, 0, out, 0, N);
    const shape = [...a.shape.slice(0, -1), N];
    return result("matmul", out, shape, [a, b], (g) => {
      let da: Float32Array | null = null, db: Float32Array | null = null;
      if (a.requiresGrad) {
        const sink = leafGradSink(a);
        k.gemm(false, true, rows, K, N, 1, g, 0, N, b.data, 0, N, sink?.beta ?? 0, sink?.data ?? (da = gradBuffer(a.data.length)), 0, K);
      }
      if (b.requiresGrad) {
        const sink = leafGradSink(b);
        k.gemm(true, false, K, N, rows, 1, a.data, 0, K, g, 0, N, sink?.beta ?? 0, sink?.data ?? (db = gradBuffer(b.data.length)), 0, N);
      }
      return [da, db];
    });
  }

  const aBatch = a.shape.slice(0, -2), bBatch = b.shape.slice(0, -2);
  const batchShape = broadcastShapes(aBatch, bBatch, `matmul: ${fmtShape(a.shape)} x ${fmtShape(b.shape)}: batch dimensions`);
  const batch = sizeOf(batchShape);
  const outShape = [...batchShape, M, N];
  const out = outputBuffer(batch * M * N); // every matrix written with beta = 0
  const aOffs = batchOffsets(aBatch, batchShape, M * K);
  const bOffs = batchOffsets(bBatch, batchShape, K * N);
  const sameBatch = sizeOf(aBatch) === batch && sizeOf(bBatch) === batch;
  if (sameBatch) {
    k.gemmStridedBatched(false, false, M, N, K, 1, a.data, 0, K, M * K, b.data, 0, N, K * N, 0, out, 0, N, M * N, batch);
  } else {
    for (let p = 0; p < batch; p++) k.gemm(false, false, M, N, K, 1, a.data, aOffs[p], K, b.data, bOffs[p], N, 0, out, p * M * N, N);
  }
  return result("matmul", out, outShape, [a, b], (g) => {
    let da: Float32Array | null = null, db: Float32Array | null = null;
    if (a.requiresGrad) {
      da = sameBatch ? gradBuffer(a.data.length) : new Float32Array(a.data.length); // broadcast: accumulated into
      if (sameBatch) k.gemmStridedBatched(false, true, M, K, N, 1, g, 0, N, M * N, b.data, 0, N, K * N, 0, da, 0, K, M * K, batch);
      // Broadcast batch: accumulate (beta = 1) into the shared slice.
      else for (let p = 0; p < batch; p++) k.gemm(false, true, M, K, N, 1, g, p * M * N, N, b.data, bOffs[p], N, 1, da, aOffs[p], K);
    }
    if (b.requiresGrad) {
      db = sameBatch ? gradBuffer(b.data.length) : new Float32Array(b.data.length);
      if (sameBatch) k.gemmStridedBatched(true, false, K, N, M, 1, a.data, 0, K, M * K, g, 0, N, M * N, 0, db, 0, N, K * N, batch);
      else for (let p = 0; p < batch; p++) k.gemm(true, false, K, N, M, 1, a.data, aOffs[p], K, g, p * M * N, N, 1, db, bOffs[p], N);
    }
    return [da, db];
  });
}

/** Offset (in floats) of each broadcast batch index's matrix inside an operand with batch shape `shape`. */
function batchOffsets(shape: readonly number[], batchShape: readonly number[], matSize: number): Int32Array {
  const batch = sizeOf(batchShape);
  const offs = new Int32Array(batch);
  const strides = stridesOf(shape);
  const pad = batchShape.length - shape.length;
  const bStrides = stridesOf(batchShape);
  for (let p = 0; p < batch; p++) {
    let off = 0;
    for (let d = 0; d < shape.length; d++) {
      const idx = Math.floor(p / bStrides[pad + d]) % batchShape[pad + d];
      if (shape[d] !== 1) off += idx * strides[d];
    }
    offs[p] = off * matSize;
  }
  return offs;
}

/** The shapes of a linear layer's operands, checked: x (..., in), W (out, in), b (out). */
interface LinearDims {
  rows: number;
  inF: number;
  outF: number;
  /** Output shape (..., out). */
  shape: number[];
}

/**
 * h = x · Wᵀ + b (one GEMM, the bias broadcast into the output first), after checking the
 * shapes; `op` names the caller in errors. Shared by `linear` and fused linear+activation ops.
 * With `residual` (same shape as h): h = residual + x · Wᵀ + b, the GEMM accumulating onto a
 * copy of it (no separate add pass, no second output array).
 */
export function linearForward(op: string, x: Tensor, weight: Tensor, bias: Tensor | null, residual: Tensor | null = null): { out: Float32Array } & LinearDims {
  if (weight.ndim !== 2) throw new ShapeError(`${op}: weight must be 2-D (out, in), got ${fmtShape(weight.shape)}`);
  const [outF, inF] = weight.shape;
  if (x.ndim === 0 || x.shape[x.ndim - 1] !== inF) {
    throw new ShapeError(`${op}: input ${fmtShape(x.shape)} x weight ${fmtShape(weight.shape)}: last input dimension must be ${inF}`);
  }
  if (bias && (bias.ndim !== 1 || bias.shape[0] !== outF)) throw new ShapeError(`${op}: bias ${fmtShape(bias.shape)} must be [${outF}]`);
  const rows = x.size / inF;
  const shape = [...x.shape.slice(0, -1), outF];
  if (residual && (residual.ndim !== shape.length || residual.shape.some((d, i) => d !== shape[i]))) {
    throw new ShapeError(`${op}: residual ${fmtShape(residual.shape)} does not match the output ${fmtShape(shape)}`);
  }
  const k = kernels();
  let out: Float32Array;
  if (residual) {
    out = outputBuffer(rows * outF);
    out.set(residual.data); // a memcpy; the bias add below is a K = 1 GEMM under BLAS (one rounding, as res + b)
    if (bias) k.addRowVector(out, bias.data, rows, outF);
  } else {
    out = outputBuffer(rows * outF); // every element written: the bias rows below, or the GEMM with beta = 0
    if (bias) for (let r = 0; r < rows; r++) out.set(bias.data, r * outF);
  }
  k.gemm(false, true, rows, outF, inF, 1, x.data, 0, inF, weight.data, 0, inF, bias || residual ? 1 : 0, out, 0, outF); // (rows, out)
  return { out, rows, inF, outF, shape };
}

/**
 * Gradients of h = x · Wᵀ + b given dh (rows, out): [dx, dW(, db)]. Leaf parameters get theirs
 * written straight into .grad (the sink's beta: 1 adds, 0 overwrites a stale one): no temporary, no second pass.
 */
export function linearBackward(dh: Float32Array, x: Tensor, weight: Tensor, bias: Tensor | null, { rows, inF, outF }: LinearDims): (Float32Array | null)[] {
  const k = kernels();
  let dx: Float32Array | null = null, dw: Float32Array | null = null, db: Float32Array | null = null;
  if (x.requiresGrad) {
    const sink = leafGradSink(x);
    k.gemm(false, false, rows, inF, outF, 1, dh, 0, outF, weight.data, 0, inF, sink?.beta ?? 0, sink?.data ?? (dx = gradBuffer(x.size)), 0, inF); // (rows, in)
  }
  if (weight.requiresGrad) {
    const sink = leafGradSink(weight);
    k.gemm(true, false, outF, inF, rows, 1, dh, 0, outF, x.data, 0, inF, sink?.beta ?? 0, sink?.data ?? (dw = gradBuffer(weight.size)), 0, inF); // (out, in)
  }
  if (bias && bias.requiresGrad) {
    const sink = leafGradSink(bias);
    k.sumRows(sink?.data ?? (db = gradBuffer(outF)), dh, rows, outF, sink?.beta === 1); // (out)
  }
  return bias ? [dx, dw, db] : [dx, dw];
}

/**
 * Fused linear layer, PyTorch layout: y = x · Wᵀ + b with W (out, in), b (out).
 * x may have any leading dims: (..., in) → (..., out). One GEMM forward, two backward.
 */
export function linear(x: Tensor, weight: Tensor, bias: Tensor | null = null): Tensor {
  const f = linearForward("linear", x, weight, bias);
  const inputs = bias ? [x, weight, bias] : [x, weight];
  return result("linear", f.out, f.shape, inputs, (g) => linearBackward(g, x, weight, bias, f));
}

/**
 * residual + linear(x, W, b) as one op: the transformer's `x + c_proj(h)`. The GEMM adds onto a
 * copy of the residual, so the sum needs no add pass and no array for the linear's own output.
 * residual has the output's shape (..., out); the gradient passes to it unchanged.
 */
export function linearResidual(residual: Tensor, x: Tensor, weight: Tensor, bias: Tensor | null = null): Tensor {
  const f = linearForward("linearResidual", x, weight, bias, residual);
  const inputs = bias ? [residual, x, weight, bias] : [residual, x, weight];
  return result("linearResidual", f.out, f.shape, inputs, (g) => [residual.requiresGrad ? g : null, ...linearBackward(g, x, weight, bias, f)]);
}
