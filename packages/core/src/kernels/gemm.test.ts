import { describe, expect, it } from "vitest";
import { gemmStridedBatchedVia, jsGemm, tsGemm } from "./js/gemm.js";
import { jsKernels } from "./js/index.js";
import { simdGemm, simdGemmAvailable } from "./simd/gemm.js";
import { setSimdEnabled, simdEnabled } from "./simd/switch.js";
import { loadBlas, makeBlasKernels } from "./blas/index.js";
import type { Kernels } from "./kernels.js";

/** Deterministic values in [-1, 1). */
function fill(n: number, seed: number, buf?: Float32Array): Float32Array {
  const out = buf ?? new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 31 - 1;
  }
  return out;
}

/** C = alpha·op(A)·op(B) + beta·C in float64, the obvious way. */
function refGemm(
  tA: boolean, tB: boolean, M: number, N: number, K: number, alpha: number,
  A: Float32Array, aOff: number, lda: number, B: Float32Array, bOff: number, ldb: number,
  beta: number, C: Float32Array, cOff: number, ldc: number,
): void {
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      let s = 0;
      for (let k = 0; k < K; k++) {
        const a = tA ? A[aOff + k * lda + i] : A[aOff + i * lda + k];
        const b = tB ? B[bOff + j * ldb + k] : B[bOff + k * ldb + j];
        s += a * b;
      }
      const c = cOff + i * ldc + j;
      C[c] = alpha * s + (beta === 0 ? 0 : beta * C[c]);
    }
  }
}

function expectClose(got: Float32Array, want: Float32Array, K: number): void {
  expect(got.length).toBe(want.length);
  const tol = 1e-5 * Math.max(1, K);
  let worst = 0, at = -1;
  for (let i = 0; i < got.length; i++) {
    const d = Math.abs(got[i] - want[i]) / (1 + Math.abs(want[i]));
    if (!(d <= worst)) { worst = d; at = i; }
  }
  expect(worst, `worst relative error ${worst} at ${at}: got ${got[at]}, want ${want[at]}`).toBeLessThanOrEqual(tol);
}

const blas = loadBlas();
// js runs the WebAssembly SIMD GEMM where it is available; "js-ts" is the TypeScript fallback it keeps.
const tsKernels: Kernels = { ...jsKernels, gemm: tsGemm, gemmStridedBatched: gemmStridedBatchedVia(tsGemm) };
const backends: [string, Kernels][] = [["js", jsKernels], ["js-ts", tsKernels]];
if (blas.ok) backends.push(["blas", makeBlasKernels(blas.lib)]);

// Sizes that are not multiples of the 4×4 tile, span several KC/MC blocks, and include degenerate ones.
const shapes: [number, number, number][] = [
  [1, 1, 1], [3, 5, 7], [4, 4, 4], [17, 9, 33], [65, 70, 300], [130, 6, 257], [5, 1030, 3], [1, 64, 64], [64, 1, 64], [8, 8, 0],
  [127, 33, 5], [33, 127, 65], [5, 17, 513], [260, 9, 3], [3, 2100, 2], [0, 5, 3], [5, 0, 3],
];

describe.each(backends)("%s gemm", (_name, k) => {
  for (const tA of [false, true]) {
    for (const tB of [false, true]) {
      it(`transA=${tA} transB=${tB}, alpha/beta, padded leading dims and offsets`, () => {
        for (const [M, N, K] of shapes) {
          for (const [alpha, beta] of [[1, 0], [0.5, 1], [-2, 0.25]]) {
            const lda = (tA ? M : K) + 3, ldb = (tB ? K : N) + 2, ldc = N + 5;
            const aOff = 7, bOff = 11, cOff = 13;
            const A = fill(aOff + (tA ? K : M) * lda, 1 + M);
            const B = fill(bOff + (tB ? N : K) * ldb, 2 + N);
            const C0 = fill(cOff + M * ldc, 3 + K);
            const want = C0.slice(), got = C0.slice();
            refGemm(tA, tB, M, N, K, alpha, A, aOff, lda, B, bOff, ldb, beta, want, cOff, ldc);
            k.gemm(tA, tB, M, N, K, alpha, A, aOff, lda, B, bOff, ldb, beta, got, cOff, ldc);
            expectClose(got, want, K);
          }
        }
      });
    }
  }

  it("operates in place on SharedArrayBuffer views (subarrays with byte offsets)", () => {
    const M = 37, N = 29, K = 45;
    const sab = new SharedArrayBuffer(4 * 10_000);
    const whole = new Float32Array(sab);
    fill(whole.length, 9, whole);
    // Views that start inside the buffer, as parameters packed in a flat buffer are.
    const A = new Float32Array(sab, 4 * 100, M * K);
    const B = whole.subarray(3000, 3000 + K * N);
    const C = new Float32Array(sab, 4 * 6000, M * N);
    const before = whole.slice();
    const want = new Float32Array(M * N);
    refGemm(false, true, M, N, K, 1, A, 0, K, B, 0, K, 0, want, 0, N);
    k.gemm(false, true, M, N, K, 1, A, 0, K, B, 0, K, 0, C, 0, N);
    expectClose(C.slice(), want, K);
    // Nothing outside C was touched.
    for (let i = 0; i < whole.length; i++) if (i < 6000 || i >= 6000 + M * N) expect(whole[i]).toBe(before[i]);
    // Offsets into the shared whole, too.
    const C2 = new Float32Array(M * N);
    k.gemm(false, true, M, N, K, 1, whole, 100, K, whole, 3000, K, 0, C2, 0, N);
    expectClose(C2, want, K);
  });

  it("strided batched GEMM equals one GEMM per batch entry", () => {
    const M = 9, N = 13, K = 21, batch = 5;
    for (const tA of [false, true]) {
      for (const tB of [false, true]) {
        const sA = M * K + 4, sB = K * N + 1, sC = M * N + 2;
        const A = fill(3 + batch * sA, 4), B = fill(5 + batch * sB, 5), C0 = fill(7 + batch * sC, 6);
        const got = C0.slice(), want = C0.slice();
        const lda = tA ? M : K, ldb = tB ? K : N;
        k.gemmStridedBatched(tA, tB, M, N, K, 1, A, 3, lda, sA, B, 5, ldb, sB, 0.5, got, 7, N, sC, batch);
        for (let p = 0; p < batch; p++) refGemm(tA, tB, M, N, K, 1, A, 3 + p * sA, lda, B, 5 + p * sB, ldb, 0.5, want, 7 + p * sC, N);
        expectClose(got, want, K);
      }
    }
  });

  it("propagates NaN from A and B", () => {
    const A = new Float32Array(16).fill(1), B = new Float32Array(16).fill(1), C = new Float32Array(16);
    A[5] = NaN; // row 1
    k.gemm(false, false, 4, 4, 4, 1, A, 0, 4, B, 0, 4, 0, C, 0, 4);
    expect(Number.isNaN(C[4])).toBe(true);
    expect(C[0]).toBe(4);
  });
});

describe("js gemm: WebAssembly SIMD path", () => {
  it("is the one that runs (WebAssembly SIMD is in Node 20) unless CHAINRULE_SIMD=0", () => {
    expect(simdGemmAvailable()).toBe(simdEnabled());
  });

  it("agrees with the TypeScript GEMM on every odd size up to 127, each transpose combination", () => {
    const sizes = [1, 2, 3, 5, 8, 17, 33, 65, 127];
    for (const tA of [false, true]) {
      for (const tB of [false, true]) {
        for (const M of sizes) {
          for (const N of sizes) {
            const K = sizes[(M + N) % sizes.length];
            const A = fill(M * K, M), B = fill(K * N, N), C0 = fill(M * N, K);
            const want = C0.slice(), got = C0.slice();
            tsGemm(tA, tB, M, N, K, 1.5, A, 0, tA ? M : K, B, 0, tB ? K : N, -0.5, want, 0, N);
            expect(simdGemm(tA, tB, M, N, K, 1.5, A, 0, tA ? M : K, B, 0, tB ? K : N, -0.5, got, 0, N)).toBe(simdEnabled());
            if (simdEnabled()) expectClose(got, want, K);
          }
        }
      }
    }
  });

  it("handles a C too large to stage at once (narrower column blocks) and then small problems again", () => {
    const M = 4100, N = 1030, K = 3; // staged C would be 4100×1032 floats > 4M: split into column blocks
    const A = fill(M * K, 31), B = fill(N * K, 32), C0 = fill(M * N, 33);
    const want = C0.slice(), got = C0.slice();
    refGemm(false, true, M, N, K, 1, A, 0, K, B, 0, K, 1, want, 0, N);
    jsGemm(false, true, M, N, K, 1, A, 0, K, B, 0, K, 1, got, 0, N);
    expectClose(got, want, K);
    const a = fill(15, 34), b = fill(15, 35), c = new Float32Array(9), r = new Float32Array(9);
    refGemm(false, false, 3, 3, 5, 1, a, 0, 5, b, 0, 3, 0, r, 0, 3);
    jsGemm(false, false, 3, 3, 5, 1, a, 0, 5, b, 0, 3, 0, c, 0, 3);
    expectClose(c, r, 5);
  });

  it("beta = 0 overwrites NaN in C; SIMD off (setSimdEnabled(false)) falls back to TypeScript", () => {
    const A = fill(6 * 7, 41), B = fill(7 * 5, 42);
    const want = new Float32Array(30);
    refGemm(false, false, 6, 5, 7, 1, A, 0, 7, B, 0, 5, 0, want, 0, 5);
    const got = new Float32Array(30).fill(NaN);
    jsGemm(false, false, 6, 5, 7, 1, A, 0, 7, B, 0, 5, 0, got, 0, 5);
    expectClose(got, want, 7);
    const was = simdEnabled();
    setSimdEnabled(false);
    try {
      const c = new Float32Array(30);
      expect(simdGemm(false, false, 6, 5, 7, 1, A, 0, 7, B, 0, 5, 0, c, 0, 5)).toBe(false);
      expect(c.every((v) => v === 0)).toBe(true);
      jsGemm(false, false, 6, 5, 7, 1, A, 0, 7, B, 0, 5, 0, c, 0, 5);
      expectClose(c, want, 7);
    } finally {
      setSimdEnabled(was);
    }
  });
});

describe("blas and js agree", () => {
  it.skipIf(!blas.ok)("on a large GEMM with every transpose combination", () => {
    const b = makeBlasKernels((blas as { ok: true; lib: any }).lib);
    const M = 200, N = 150, K = 700;
    for (const tA of [false, true]) {
      for (const tB of [false, true]) {
        const A = fill(M * K, 21), B = fill(K * N, 22);
        const c1 = new Float32Array(M * N), c2 = new Float32Array(M * N);
        jsGemm(tA, tB, M, N, K, 1, A, 0, tA ? M : K, B, 0, tB ? K : N, 0, c1, 0, N);
        b.gemm(tA, tB, M, N, K, 1, A, 0, tA ? M : K, B, 0, tB ? K : N, 0, c2, 0, N);
        expectClose(c2, c1, K);
      }
    }
  });
});
