/**
 * GEMM throughput, one thread: GFLOP/s of C = A·B (n×n×n, operands on a
 * SharedArrayBuffer) for each backend, plus OpenBLAS's cblas_sgemm called
 * directly through koffi (no chainrule wrapper) as the reference. The blas
 * backend and the direct call are measured alternately, round by round, and
 * compared as the median of per-round ratios (these machines are noisy).
 * `js` is the js backend's GEMM (WebAssembly SIMD, simd/gemm.ts); `js-ts` its TypeScript
 * fallback (what CHAINRULE_SIMD=0 runs). Columns ending in "cpu" divide by the process's
 * CPU time instead of wall time (less disturbed when other jobs share the cores).
 *
 *   tsx bench/gemm.ts [--sizes 128,256,512,768,1024] [--rounds 5] [--trans nt] [--quick]
 */
import { createRequire } from "node:module";
import { jsKernels } from "../packages/core/src/kernels/js/index.js";
import { tsGemm } from "../packages/core/src/kernels/js/gemm.js";
import { loadBlas, makeBlasKernels } from "../packages/core/src/kernels/blas/index.js";
import { CblasNoTrans, CblasRowMajor, CblasTrans, type Sgemm } from "../packages/core/src/kernels/blas/loader.js";
import type { Kernels } from "../packages/core/src/kernels/kernels.js";
import { flag, hasFlag, median, numList, runIfMain, table } from "./_util.js";

type GemmFn = (A: Float32Array, B: Float32Array, C: Float32Array) => void;

/** Seconds per call (wall and CPU time), timing enough calls to fill ~`budget` seconds. */
function secondsPerCall(fn: () => void, budget: number): { wall: number; cpu: number } {
  fn();
  let reps = 1;
  for (;;) {
    const c0 = process.cpuUsage();
    const t = performance.now();
    for (let r = 0; r < reps; r++) fn();
    const dt = (performance.now() - t) / 1000;
    const c = process.cpuUsage(c0);
    if (dt >= budget || reps >= 1 << 20) return { wall: dt / reps, cpu: (c.user + c.system) / 1e6 / reps };
    reps = Math.max(reps * 2, Math.ceil((reps * budget) / Math.max(dt, 1e-6)));
  }
}

function sharedRandom(n: number, seed: number): Float32Array {
  const a = new Float32Array(new SharedArrayBuffer(n * 4));
  let s = seed;
  for (let i = 0; i < n; i++) { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; a[i] = s / 2 ** 32 - 0.5; }
  return a;
}

export async function main(args: string[]): Promise<Record<string, unknown>> {
  const quick = hasFlag(args, "quick");
  const sizes = numList(args, "sizes", quick ? [128, 256, 512] : [128, 256, 512, 768, 1024]);
  const rounds = Number(flag(args, "rounds", quick ? "3" : "5"));
  const trans = flag(args, "trans", "nn")!; // nn | nt | tn
  const tA = trans[0] === "t", tB = trans[1] === "t";
  const budget = quick ? 0.1 : 0.25;

  const contenders: [string, (n: number) => GemmFn][] = [];
  const viaKernels = (k: Kernels) => (n: number): GemmFn => (A, B, C) => k.gemm(tA, tB, n, n, n, 1, A, 0, n, B, 0, n, 0, C, 0, n);
  contenders.push(["js", viaKernels(jsKernels)]);
  contenders.push(["js-ts", (n) => (A, B, C) => tsGemm(tA, tB, n, n, n, 1, A, 0, n, B, 0, n, 0, C, 0, n)]);
  const blas = loadBlas();
  if (blas.ok) {
    contenders.push(["blas", viaKernels(makeBlasKernels(blas.lib))]);
    // The reference: the same library's cblas_sgemm, bound here on its own and called with the arrays as they are.
    const koffi = createRequire(import.meta.url)("koffi") as { load(path: string): { func(signature: string): unknown } }; // core's dependency
    const direct = koffi.load(blas.lib.path).func("void cblas_sgemm(int, int, int, int, int, int, float, float *, int, float *, int, float, float *, int)") as Sgemm;
    const ta = tA ? CblasTrans : CblasNoTrans, tb = tB ? CblasTrans : CblasNoTrans;
    contenders.push(["openblas-direct", (n) => (A, B, C) => direct(CblasRowMajor, ta, tb, n, n, n, 1, A, n, B, n, 0, C, n)]);
    console.log(`BLAS: ${blas.lib.path} [${blas.lib.description}], ${blas.lib.threading ?? "threads not set"}`);
  } else {
    console.log(`no BLAS: ${blas.error}`);
  }

  const rows: Record<string, string | number>[] = [];
  const results: Record<string, unknown>[] = [];
  for (const n of sizes) {
    const A = sharedRandom(n * n, 1), B = sharedRandom(n * n, 2), C = new Float32Array(new SharedArrayBuffer(n * n * 4));
    const flops = 2 * n * n * n;
    const gf: Record<string, number[]> = {}, gfCpu: Record<string, number[]> = {};
    for (let r = 0; r < rounds; r++) {
      for (const [name, make] of contenders) {
        // js is ~30x slower than BLAS: one short measurement per round is enough at large n.
        const fn = make(n);
        const s = secondsPerCall(() => fn(A, B, C), name.startsWith("js") && n >= 768 ? budget / 4 : budget);
        (gf[name] ??= []).push(flops / s.wall / 1e9);
        (gfCpu[name] ??= []).push(flops / s.cpu / 1e9);
      }
    }
    const row: Record<string, string | number> = { n };
    const res: Record<string, unknown> = { n, trans };
    for (const [name] of contenders) { row[name] = median(gf[name]); res[name] = { gflops: median(gf[name]), rounds: gf[name], cpuRounds: gfCpu[name] }; }
    for (const name of ["js", "js-ts"]) row[`${name} cpu`] = median(gfCpu[name]);
    row["js/js-ts"] = median(gf.js.map((g, i) => g / gf["js-ts"][i]));
    if (gf.blas && gf["openblas-direct"]) {
      const ratio = median(gf.blas.map((g, i) => g / gf["openblas-direct"][i]));
      row["blas/direct"] = ratio;
      res.blasOverDirect = ratio;
    }
    rows.push(row);
    results.push(res);
  }
  console.log(`GFLOP/s, one thread, ${trans} (median of ${rounds} alternating rounds):`);
  table(rows);
  return { trans, rounds, library: blas.ok ? { path: blas.lib.path, description: blas.lib.description } : null, sizes: results };
}

runIfMain(import.meta.url, "gemm", main);
