/**
 * glibc malloc tuning for tensor-sized buffers (Linux only, through koffi).
 *
 * Node allocates each Float32Array's memory with calloc. glibc serves blocks
 * above its mmap threshold (128 KiB at start) with a fresh mmap, so every new
 * activation or gradient of a training step page-faults on first touch: a
 * 1 MiB array then costs ~3x what writing it costs (measured with
 * bench/mlp.ts, where it was ~10% of a step at batch 512). Raising the mmap
 * and trim thresholds keeps such blocks on the heap, where freed ones are reused.
 * Disable with CHAINRULE_MALLOC_TUNE=0.
 */
import { createRequire } from "node:module";

const M_TRIM_THRESHOLD = -1;
const M_MMAP_THRESHOLD = -3;
const MMAP_THRESHOLD = 32 << 20; // glibc's own ceiling for its dynamic threshold (64-bit)
const TRIM_THRESHOLD = 128 << 20;

let done: string | null = null;

/** Applies the tuning once per process; returns a short note of what was done (for the backend report). */
export function tuneMalloc(): string {
  if (done !== null) return done;
  done = apply();
  return done;
}

function apply(): string {
  if (process.env.CHAINRULE_MALLOC_TUNE === "0") return "malloc untouched (CHAINRULE_MALLOC_TUNE=0)";
  if (process.platform !== "linux") return "malloc untouched (not Linux)";
  const report = process.report?.getReport?.() as { header?: { glibcVersionRuntime?: string } } | undefined;
  if (!report?.header?.glibcVersionRuntime) return "malloc untouched (not glibc)";
  try {
    const koffi = createRequire(import.meta.url)("koffi") as typeof import("koffi");
    const mallopt = koffi.load("libc.so.6").func("int mallopt(int, int)");
    const ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) === 1 && mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) === 1;
    return ok ? "glibc malloc: buffers up to 32 MiB from the heap" : "malloc untouched (mallopt refused)";
  } catch {
    return "malloc untouched (koffi or libc unavailable)";
  }
}
