/** Shared helpers for bench sections (files starting with `_` are not sections). */
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { backendReport } from "../packages/core/src/index.js";

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
export function table(rows: Record<string, string | number>[]): void {
  if (rows.length === 0) return;
  const cols = Object.keys(rows[0]);
  const cell = (v: string | number) => (typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toFixed(2)) : v);
  const w = cols.map((c) => Math.max(c.length, ...rows.map((r) => cell(r[c] ?? "").length)));
  console.log(cols.map((c, i) => c.padStart(w[i])).join("  "));
  for (const r of rows) console.log(cols.map((c, i) => cell(r[c] ?? "").padStart(w[i])).join("  "));
}
