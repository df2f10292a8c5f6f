import { type Kernels, setKernelResolver, setKernels } from "./kernels.js";
import { jsKernels } from "./js/index.js";
import { isMainThread } from "node:worker_threads";
import { coreTypeAdvice, cpuFlags, loadBlas, makeBlasKernels } from "./blas/index.js";
import { tuneMalloc } from "./blas/malloc.js";
import { simdGemmAvailable } from "./simd/gemm.js";
import { ArgumentError, ChainruleError } from "../errors.js";

export type BackendName = "js" | "blas";

export interface BackendReport {
  name: BackendName;
  /** One line saying what was picked and why. */
  reason: string;
}

let report: BackendReport = { name: "js", reason: "not yet resolved" };
let blasKernels: Kernels | null = null;
/** Advice on OpenBLAS's kernel target (coreTypeAdvice), decided once with the kernels; null: none. */
let coreAdvice: string | null = null;

function blas(): { kernels: Kernels; line: string } | { kernels: null; line: string } {
  const r = loadBlas();
  if (!r.ok) return { kernels: null, line: r.tried.length > 0 ? `no BLAS with cblas_sgemm found (tried ${r.error})` : r.error };
  if (blasKernels === null) {
    blasKernels = makeBlasKernels(r.lib);
    coreAdvice = coreTypeAdvice(r.lib.core, cpuFlags(), process.env.OPENBLAS_CORETYPE);
    // Warned by the main thread only: every worker thread loads BLAS too.
    if (coreAdvice !== null && isMainThread) process.emitWarning(coreAdvice, { code: "CHAINRULE_OPENBLAS_CORETYPE" });
  }
  const threads = r.lib.threading ?? "thread count left to the library";
  return { kernels: blasKernels, line: `cblas_sgemm from ${r.lib.path} [${r.lib.description}], ${threads}${coreAdvice ? ` — ${coreAdvice}` : ""}` };
}

/**
 * Picks the backend: CHAINRULE_BACKEND=js|blas forces one; unset (or "auto")
 * takes blas when a BLAS library is found, else js. Forcing blas when none is
 * found throws, naming the libraries tried.
 */
export function selectBackend(requested: string | undefined = process.env.CHAINRULE_BACKEND): Kernels {
  const k = pick(requested);
  report = { ...report, reason: `${report.reason}; ${tuneMalloc()}` };
  return k;
}

function pick(requested: string | undefined): Kernels {
  const want = requested === undefined || requested === "" ? "auto" : requested;
  if (want === "js") {
    report = { name: "js", reason: `js: forced (CHAINRULE_BACKEND=js or useBackend('js')); ${jsLine()}` };
    return jsKernels;
  }
  if (want === "blas") {
    const b = blas();
    if (b.kernels === null) throw new ChainruleError(`backend blas was requested but is unavailable: ${b.line}`);
    report = { name: "blas", reason: `blas: forced; ${b.line}` };
    return b.kernels;
  }
  if (want !== "auto") throw new ArgumentError(`CHAINRULE_BACKEND=${requested}: unknown backend (expected js, blas or auto)`);
  const b = blas();
  if (b.kernels !== null) {
    report = { name: "blas", reason: `blas: auto-detected; ${b.line}` };
    return b.kernels;
  }
  report = { name: "js", reason: `js: auto, because ${b.line}; ${jsLine()}` };
  return jsKernels;
}

/** What the js backend runs: WebAssembly SIMD kernels (GEMM included) beside its TypeScript loops, or (SIMD off or missing) the loops alone. */
function jsLine(): string {
  return simdGemmAvailable() ? "WebAssembly SIMD kernels (GEMM included) and TypeScript loops" : "TypeScript loops only (GEMM too: WebAssembly SIMD off or unavailable)";
}

/** What `kernels()` uses now, with a one-line reason (resolves the backend if nothing has yet). */
export function backendReport(): BackendReport {
  if (report.reason === "not yet resolved") {
    setKernels(selectBackend());
  }
  return report;
}

/** Switches the backend at run time (tests run the suite on each). */
export function useBackend(name: BackendName | "auto"): BackendReport {
  setKernels(selectBackend(name));
  return report;
}

setKernelResolver(() => selectBackend());
