/**
 * Finds the machine's BLAS at run time and binds `cblas_sgemm` through koffi.
 * Nothing here is needed by the js backend: when koffi or every library is
 * missing, `loadBlas()` returns the list of what it tried and why each failed.
 */
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

/** cblas_sgemm(order, transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc), all pointers as float*. */
export type Sgemm = (
  order: number, transA: number, transB: number, M: number, N: number, K: number, alpha: number,
  A: Float32Array, lda: number, B: Float32Array, ldb: number, beta: number, C: Float32Array, ldc: number,
) => void;

/** cblas_sgemv(order, trans, M, N, alpha, A, lda, x, incX, beta, y, incY): y = alpha·op(A)·x + beta·y. */
export type Sgemv = (
  order: number, trans: number, M: number, N: number, alpha: number,
  A: Float32Array, lda: number, x: Float32Array, incX: number, beta: number, y: Float32Array, incY: number,
) => void;

export interface BlasLibrary {
  /** The path or soname that loaded. */
  path: string;
  /** e.g. "OpenBLAS 0.3.21 ... Haswell", or the path when the library cannot say. */
  description: string;
  sgemm: Sgemm;
  /** cblas_sgemv, when the library exports it: one-row products (generation's) go through it. */
  sgemv: Sgemv | null;
  /** How BLAS was made single-threaded (e.g. "openblas_set_num_threads(1)"), or null when it offers no such call. */
  threading: string | null;
  /** OpenBLAS's kernel target (openblas_get_corename(), e.g. "Haswell"), or null for other libraries. */
  core: string | null;
}

export type BlasLoadResult = { ok: true; lib: BlasLibrary } | { ok: false; tried: string[]; error: string };

export const CblasRowMajor = 101;
export const CblasNoTrans = 111;
export const CblasTrans = 112;

/** Libraries tried in order; `CHAINRULE_BLAS_LIB` (a path or soname) replaces the list when set. */
export function blasCandidates(platform: NodeJS.Platform = process.platform, override = process.env.CHAINRULE_BLAS_LIB): string[] {
  if (override) return [override];
  const list: string[] = [];
  if (platform === "darwin") {
    list.push(
      "/System/Library/Frameworks/Accelerate.framework/Accelerate",
      "/opt/homebrew/opt/openblas/lib/libopenblas.dylib",
      "/usr/local/opt/openblas/lib/libopenblas.dylib",
      "libopenblas.dylib",
    );
  } else if (platform === "win32") {
    list.push("libopenblas.dll", "openblas.dll");
  } else {
    list.push("libopenblas.so.0", "libopenblas.so", "libblas.so.3", "libcblas.so.3");
  }
  return list;
}

let cached: BlasLoadResult | null = null;

/** Loads the first BLAS that exports cblas_sgemm (memoised per thread). */
export function loadBlas(): BlasLoadResult {
  if (cached === null) cached = tryLoadBlas(blasCandidates());
  return cached;
}

/** Tries `candidates` in order (not memoised). */
export function tryLoadBlas(candidates: string[]): BlasLoadResult {
  let koffi: typeof import("koffi");
  try {
    koffi = createRequire(import.meta.url)("koffi");
  } catch (e) {
    return { ok: false, tried: [], error: `the koffi FFI package could not be loaded (${(e as Error).message.split("\n")[0]})` };
  }
  const failures: string[] = [];
  for (const path of candidates) {
    let lib: import("koffi").IKoffiLib;
    try {
      lib = koffi.load(path);
    } catch (e) {
      failures.push(`${path}: ${shortError(e)}`);
      continue;
    }
    let sgemm: Sgemm;
    try {
      // Plain float* for every matrix: koffi hands a typed array's own memory
      // (ArrayBuffer or SharedArrayBuffer) to C without copying, in or out.
      sgemm = lib.func("void cblas_sgemm(int, int, int, int, int, int, float, float *, int, float *, int, float, float *, int)") as Sgemm;
    } catch (e) {
      failures.push(`${path}: loaded but has no cblas_sgemm`);
      continue;
    }
    let sgemv: Sgemv | null = null;
    try {
      sgemv = lib.func("void cblas_sgemv(int, int, int, int, float, float *, int, float *, int, float, float *, int)") as Sgemv;
    } catch {
      // optional: without it one-row products stay GEMMs
    }
    const threading = singleThread(lib);
    const core = coreName(lib);
    return { ok: true, lib: { path, description: describe(lib, core) ?? path, sgemm, sgemv, threading, core } };
  }
  return { ok: false, tried: candidates, error: failures.join("; ") };
}

/** Makes the library single-threaded: parallelism comes from chainrule's own workers. */
function singleThread(lib: import("koffi").IKoffiLib): string | null {
  for (const [fn, call] of [
    ["openblas_set_num_threads", "openblas_set_num_threads(1)"],
    ["bli_thread_set_num_threads", "bli_thread_set_num_threads(1)"],
    ["MKL_Set_Num_Threads", "MKL_Set_Num_Threads(1)"],
  ] as const) {
    try {
      const f = lib.func(`void ${fn}(int)`);
      f(1);
      return call;
    } catch {
      // not this library's call
    }
  }
  return null;
}

function coreName(lib: import("koffi").IKoffiLib): string | null {
  try {
    return (lib.func("const char *openblas_get_corename()")() as string) || null;
  } catch {
    return null; // not OpenBLAS, or an old one
  }
}

function describe(lib: import("koffi").IKoffiLib, core: string | null): string | null {
  try {
    const config = lib.func("const char *openblas_get_config()")() as string;
    return core && !config.includes(core) ? `${config} (${core})` : config;
  } catch {
    return null;
  }
}

// OpenBLAS kernel targets older than AVX2 + FMA (names as openblas_get_corename() spells them, any case).
const PRE_AVX2_CORES = new Set([
  "katmai", "coppermine", "northwood", "prescott", "banias", "atom", "core2", "penryn", "dunnington", "nehalem", "sandybridge",
  "opteron", "opteron_sse3", "barcelona", "bobcat", "bulldozer", "piledriver", "steamroller", "generic",
]);

/**
 * A DYNAMIC_ARCH OpenBLAS that does not know the processor (a new model, or a VM that hides its
 * identity) falls back to an old kernel target: on a 16-core Xeon VM with AVX-512, OpenBLAS 0.3.21
 * picked Prescott (SSE3) and the MLP's step took 3.3× as long as with OPENBLAS_CORETYPE=Haswell.
 * Returns the advice to print when `core` is such a target on a CPU whose `cpuFlags` (from
 * /proc/cpuinfo) have AVX2 and FMA, and the user has not chosen a target (`coretype` unset); else null.
 */
export function coreTypeAdvice(core: string | null, cpuFlags: ReadonlySet<string>, coretype: string | undefined): string | null {
  if (core === null || coretype || !PRE_AVX2_CORES.has(core.toLowerCase())) return null;
  if (!cpuFlags.has("avx2") || !cpuFlags.has("fma")) return null;
  const avx512 = ["avx512f", "avx512bw", "avx512vl", "avx512dq"].every((f) => cpuFlags.has(f));
  const fix = avx512 ? "SkylakeX" : "Haswell";
  return `OpenBLAS chose its ${core} kernels on a CPU with AVX2${avx512 ? " and AVX-512" : ""} (a model it does not recognise): GEMM runs several times slower than it can. ` +
    `Set OPENBLAS_CORETYPE=${fix} in the environment before starting to use its fast kernels.`;
}

/** The CPU's feature flags (Linux: the first "flags" line of /proc/cpuinfo); empty elsewhere or when unreadable. */
export function cpuFlags(read: () => string = () => readFileSync("/proc/cpuinfo", "utf8")): Set<string> {
  try {
    const line = read().split("\n").find((l) => /^flags\s*:/.test(l));
    return new Set(line ? line.slice(line.indexOf(":") + 1).trim().split(/\s+/) : []);
  } catch {
    return new Set();
  }
}

function shortError(e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  return msg.split("\n")[0].replace(/^Failed to load shared library: /, "");
}
