/**
 * The `blas` backend: the js kernels, with gemm and gemmStridedBatched through
 * the machine's `cblas_sgemm` (OpenBLAS, a cblas-exporting libblas, Accelerate).
 * Operands with an offset are passed as `subarray` views, which koffi hands to C
 * as a pointer into the same memory (no copy, SharedArrayBuffer included).
 */
import type { Kernels } from "../kernels.js";
import { jsKernels } from "../js/index.js";
import { jsGemm } from "../js/gemm.js";
import { causalAttentionBackwardVia, causalAttentionForwardVia } from "../js/attention.js";
import { type BlasLibrary, CblasNoTrans, CblasRowMajor, CblasTrans, type Sgemm, type Sgemv } from "./loader.js";

export { loadBlas, blasCandidates, coreTypeAdvice, cpuFlags, type BlasLibrary, type BlasLoadResult } from "./loader.js";

/**
 * Below this many multiply-adds the ~1 µs FFI call costs more than the js loop
 * (measured with bench/gemm.ts: js wins up to about 8×8×8).
 */
const SMALL_GEMM = 512;

function view(x: Float32Array, off: number): Float32Array {
  return off === 0 ? x : x.subarray(off);
}

/**
 * With `sgemv`, a one-row product against a transposed B (a Linear layer on one row, as each
 * generated token is) runs as cblas_sgemv: OpenBLAS 0.3.21's sgemm packs all of B for one row,
 * and the GEMVs of a 6-layer, 384-wide GPT's token took 4.3 ms instead of 5.3 (weights out of cache).
 */
export function makeBlasGemm(sgemm: Sgemm, sgemv: Sgemv | null = null): Kernels["gemm"] {
  return function blasGemm(transA, transB, M, N, K, alpha, A, aOff, lda, B, bOff, ldb, beta, C, cOff, ldc) {
    if (M === 0 || N === 0) return;
    // K = 0 (nothing to multiply) and tiny products stay in js; cblas also rejects lda = 0 then.
    if (K === 0 || M * N * K <= SMALL_GEMM) {
      jsGemm(transA, transB, M, N, K, alpha, A, aOff, lda, B, bOff, ldb, beta, C, cOff, ldc);
      return;
    }
    if (M === 1 && transB && sgemv) {
      // C (1 × N) = alpha · A (1 × K) · Bᵀ + beta · C  ⇔  y = alpha · B (N × K) · x + beta · y; a transposed A is a column (stride lda).
      sgemv(CblasRowMajor, CblasNoTrans, N, K, alpha, view(B, bOff), ldb, view(A, aOff), transA ? lda : 1, beta, view(C, cOff), 1);
      return;
    }
    sgemm(
      CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans, M, N, K, alpha,
      view(A, aOff), lda, view(B, bOff), ldb, beta, view(C, cOff), ldc,
    );
  };
}

let ones = new Float32Array(0);

export function makeBlasKernels(lib: BlasLibrary): Kernels {
  const gemm = makeBlasGemm(lib.sgemm, lib.sgemv);
  return {
    ...jsKernels,
    name: "blas",
    gemm,
    /** Column sums as a (1 × rows) · (rows × cols) GEMM with a ones vector: vectorised by BLAS. */
    sumRows(out, x, rows, cols, accumulate = false) {
      if (rows * cols < 4096) { jsKernels.sumRows(out, x, rows, cols, accumulate); return; }
      if (ones.length < rows) ones = new Float32Array(rows).fill(1);
      gemm(false, false, 1, cols, rows, 1, ones, 0, rows, x, 0, cols, accumulate ? 1 : 0, out, 0, cols);
    },
    /**
     * out (rows, cols) += bias broadcast over rows, as the rank-1 GEMM ones (rows × 1) · bias (1 × cols)
     * with beta = 1: vectorised by BLAS, and bit-identical to the loop (1·b is exact, one rounding).
     */
    addRowVector(out, bias, rows, cols) {
      if (rows * cols < 4096) { jsKernels.addRowVector(out, bias, rows, cols); return; }
      if (ones.length < rows) ones = new Float32Array(rows).fill(1);
      gemm(false, false, rows, cols, 1, 1, ones, 0, 1, bias, 0, cols, 1, out, 0, cols);
    },
    gemmStridedBatched(transA, transB, M, N, K, alpha, A, aOff, lda, strideA, B, bOff, ldb, strideB, beta, C, cOff, ldc, strideC, batch) {
      for (let p = 0; p < batch; p++) {
        gemm(transA, transB, M, N, K, alpha, A, aOff + p * strideA, lda, B, bOff + p * strideB, ldb, beta, C, cOff + p * strideC, ldc);
      }
    },
    causalAttentionForward: causalAttentionForwardVia(gemm),
    causalAttentionBackward: causalAttentionBackwardVia(gemm),
  };
}
