/** Shared helpers for bench sections (files starting with `_` are not sections). */
import { spawnSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { backendReport, useBackend } from "../packages/core/src/index.js";
import type { Kernels } from "../packages/core/src/kernels/kernels.js";

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..");

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length === 0 ? NaN : s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** `--name value` or `--name=value`, else `fallback`. */
export function flag(args: string[], name: string, fallback?: string): string | undefined {
  for (let i = 0; i < args.length; i++) {
    if (args[i] === `--${name}`) return args[i + 1];
    if (args[i].startsWith(`--${name}=`)) return args[i].slice(name.length + 3);
  }
  return fallback;
}

export function hasFlag(args: string[], name: string): boolean {
  return args.includes(`--${name}`);
}

export function numList(args: string[], name: string, fallback: number[]): number[] {
  const v = flag(args, name);
  return v === undefined ? fallback : v.split(",").map(Number);
}

export function benchMeta(): Record<string, unknown> {
  return {
    date: new Date().toISOString(),
    node: process.version,
    cpu: cpus()[0]?.model ?? "unknown",
    cores: cpus().length,
    backend: backendReport(),
    env: Object.fromEntries(Object.entries(process.env).filter(([k]) => k.startsWith("OPENBLAS") || k.startsWith("CHAINRULE") || k === "OMP_NUM_THREADS")),
  };
}

/** Writes `data` as JSON to `path` (default .bench/<prefix>-<timestamp>.json); returns the path. */
export function writeJson(path: string | undefined, prefix: string, data: unknown): string {
  const out = path ?? join(repoRoot, ".bench", `${prefix}-${new Date().toISOString().replace(/[:.]/g, "-")}.json`);
  mkdirSync(dirname(resolve(out)), { recursive: true });
  writeFileSync(out, JSON.stringify(data, null, 2) + "\n");
  return out;
}

/** Makes a section file runnable alone: `tsx bench/<name>.ts [flags] [--json out.json]`. */
export function runIfMain(metaUrl: string, name: string, main: (args: string[]) => Promise<Record<string, unknown>>): void {
  if (process.argv[1] === undefined || pathToFileURL(resolve(process.argv[1])).href !== metaUrl) return;
  const args = process.argv.slice(2);
  main(args).then(
    (r) => console.log(`\nresults written to ${writeJson(flag(args, "json"), name, { meta: benchMeta(), results: { [name]: r } })}`),
    (e) => { console.error(e); process.exit(1); },
  );
}

/** Prints rows as an aligned table. */
/**
 * Runs `n` data-parallel steps as fit() and the CLI run them: step i + 1 is posted before step i is
 * awaited, so the workers go from one step to the next without waiting for the main thread.
 * `done` gets each step's outcome, in order. With `oneByOne`, each step is awaited before the next is posted.
 */
export async function postAhead<T>(n: number, post: (i: number) => Promise<T>, done: (r: T) => void = () => {}, oneByOne = false): Promise<void> {
  let last: Promise<T> | null = null;
  for (let i = 0; i < n; i++) {
    const next = post(i);
    if (oneByOne) done(await next);
    else if (last) done(await last);
    last = next;
  }
  if (!oneByOne && last) done(await last);
}

export function table(rows: Record<string, string | number>[]): void {
  if (rows.length === 0) return;
  const cols = Object.keys(rows[0]);
  const cell = (v: string | number) => (typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toFixed(2)) : v);
  const w = cols.map((c) => Math.max(c.length, ...rows.map((r) => cell(r[c] ?? "").length)));
  console.log(cols.map((c, i) => c.padStart(w[i])).join("  "));
  for (const r of rows) console.log(cols.map((c, i) => cell(r[c] ?? "").padStart(w[i])).join("  "));
}

/** Runs every variant once a round, in order, for `rounds` rounds; returns each one's median ms. */
export function alternatingMedians(variants: [string, () => void][], rounds: number): number[] {
  const ms: number[][] = variants.map(() => []);
  for (let r = 0; r < rounds; r++) {
    variants.forEach(([, run], v) => {
      const t = performance.now();
      run();
      ms[v].push(performance.now() - t);
    });
  }
  return ms.map(median);
}

/** Wall-clock ms and process CPU µs (user + system, all threads) for `steps` calls of `t.step()`. */
export function timeSteps(t: { step(): unknown }, steps: number): { wallMs: number; cpuUs: number } {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) t.step();
  const c = process.cpuUsage(c0);
  return { wallMs: performance.now() - t0, cpuUs: c.user + c.system };
}

/**
 * Wraps every kernel with a timer: `recorder(key)` (called once per kernel) returns the
 * callback that receives each call's duration in ms and its arguments.
 */
export function timedKernels(k: Kernels, recorder: (key: keyof Kernels) => (ms: number, args: unknown[]) => void): Kernels {
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(k) as (keyof Kernels)[]) {
    const v = k[key];
    if (typeof v !== "function") { out[key] = v; continue; }
    const f = v as (...a: unknown[]) => unknown;
    const record = recorder(key);
    out[key] = (...a: unknown[]) => {
      const t = performance.now();
      const r = f.apply(k, a);
      record(performance.now() - t, a);
      return r;
    };
  }
  return out as unknown as Kernels;
}

/** Switches to `backend` and logs its reason; logs and returns undefined when it is unavailable. */
export function trySelectBackend(backend: "blas" | "js"): ReturnType<typeof useBackend> | undefined {
  let report;
  try {
    report = useBackend(backend);
  } catch (e) {
    console.log(`${backend}: unavailable (${(e as Error).message})`);
    return undefined;
  }
  console.log(`backend ${report.reason}`);
  return report;
}

/** Path of a PyTorch anchor script (in $CHAINRULE_ANCHORS, else ../shared/anchors). */
export function anchorPath(name: string): string {
  return resolve(process.env.CHAINRULE_ANCHORS ?? join(repoRoot, "..", "shared", "anchors"), name);
}

/** A Python that can import torch, or null. */
export function findPython(): string | null {
  for (const py of ["/usr/bin/python3", "python3"]) {
    const r = spawnSync(py, ["-c", "import torch"], { stdio: "ignore" });
    if (r.status === 0) return py;
  }
  return null;
}

/**
 * Runs an anchor script once (OMP_NUM_THREADS=1) and returns the number `pattern`'s first group
 * captures from its stdout. With `cpu`, the script runs unchanged except that its timer
 * (time.perf_counter) is swapped for the process's CPU time (time.process_time), which a
 * loaded machine disturbs less.
 */
export function runAnchor(py: string, script: string, scriptArgs: string[], pattern: RegExp, cpu = false): number {
  const args = cpu
    ? ["-c", "import runpy, sys, time; time.perf_counter = time.process_time; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')", script, ...scriptArgs]
    : [script, ...scriptArgs];
  const r = spawnSync(py, args, { env: { ...process.env, OMP_NUM_THREADS: "1" }, encoding: "utf8" });
  const m = pattern.exec(r.stdout ?? "");
  if (!m) throw new Error(`${basename(script)} failed: ${r.stderr || r.stdout}`);
  return Number(m[1]);
}
