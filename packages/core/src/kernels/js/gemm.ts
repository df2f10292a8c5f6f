/**
 * Reference GEMM in TypeScript: C = alpha·op(A)·op(B) + beta·C, row-major.
 * Transposed operands are packed into contiguous panels first so the inner loop
 * always runs along contiguous rows (an i-k-j loop, cache-blocked over k and j).
 */
const KC = 256; // depth block
const NC = 512; // column block

let packBufA = new Float32Array(0);
let packBufB = new Float32Array(0);

function scratchA(n: number): Float32Array {
  if (packBufA.length < n) packBufA = new Float32Array(n);
  return packBufA;
}
function scratchB(n: number): Float32Array {
  if (packBufB.length < n) packBufB = new Float32Array(n);
  return packBufB;
}

export function jsGemm(
  transA: boolean, transB: boolean, M: number, N: number, K: number, alpha: number,
  A: Float32Array, aOff: number, lda: number,
  B: Float32Array, bOff: number, ldb: number,
  beta: number, C: Float32Array, cOff: number, ldc: number,
): void {
  // Scale C by beta first.
  for (let i = 0; i < M; i++) {
    const row = cOff + i * ldc;
    if (beta === 0) C.fill(0, row, row + N);
    else if (beta !== 1) for (let j = 0; j < N; j++) C[row + j] *= beta;
  }
  if (K === 0 || alpha === 0 || M === 0 || N === 0) return;

  // Make A row-major M×K (a) and B row-major K×N (b).
  let a = A, ao = aOff, al = lda;
  if (transA) {
    a = scratchA(M * K);
    for (let k = 0; k < K; k++) for (let i = 0; i < M; i++) a[i * K + k] = A[aOff + k * lda + i];
    ao = 0; al = K;
  }
  let b = B, bo = bOff, bl = ldb;
  if (transB) {
    b = scratchB(K * N);
    for (let j = 0; j < N; j++) {
      const src = bOff + j * ldb;
      for (let k = 0; k < K; k++) b[k * N + j] = B[src + k];
    }
    bo = 0; bl = N;
  }

  for (let j0 = 0; j0 < N; j0 += NC) {
    const j1 = Math.min(N, j0 + NC);
    for (let k0 = 0; k0 < K; k0 += KC) {
      const k1 = Math.min(K, k0 + KC);
      for (let i = 0; i < M; i++) {
        const cRow = cOff + i * ldc;
        const aRow = ao + i * al;
        let k = k0;
        // Four rows of B at a time: four multiply-adds per load/store of C.
        for (; k + 3 < k1; k += 4) {
          const a0 = alpha * a[aRow + k], a1 = alpha * a[aRow + k + 1];
          const a2 = alpha * a[aRow + k + 2], a3 = alpha * a[aRow + k + 3];
          const b0 = bo + k * bl, b1 = b0 + bl, b2 = b1 + bl, b3 = b2 + bl;
          for (let j = j0; j < j1; j++) {
            C[cRow + j] += a0 * b[b0 + j] + a1 * b[b1 + j] + a2 * b[b2 + j] + a3 * b[b3 + j];
          }
        }
        for (; k < k1; k++) {
          const av = alpha * a[aRow + k];
          if (av === 0) continue;
          const bRow = bo + k * bl;
          for (let j = j0; j < j1; j++) C[cRow + j] += av * b[bRow + j];
        }
      }
    }
  }
}

export function gemmStridedBatchedVia(gemm: typeof jsGemm) {
  return function gemmStridedBatched(
    transA: boolean, transB: boolean, M: number, N: number, K: number, alpha: number,
    A: Float32Array, aOff: number, lda: number, strideA: number,
    B: Float32Array, bOff: number, ldb: number, strideB: number,
    beta: number, C: Float32Array, cOff: number, ldc: number, strideC: number,
    batch: number,
  ): void {
    for (let p = 0; p < batch; p++) {
      gemm(transA, transB, M, N, K, alpha, A, aOff + p * strideA, lda, B, bOff + p * strideB, ldb, beta, C, cOff + p * strideC, ldc);
    }
  };
}
