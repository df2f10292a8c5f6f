/**
 * Shared helpers for the CLI tests that run the real command in child processes:
 * `node --import tsx packages/cli/src/main.ts ...`, temp dirs, jobs, checkpoints.
 */
import { expect } from "vitest";
import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { loadSafetensors } from "@chainrule/core";
import { parseJob } from "../packages/cli/src/job/parse.js";

export const REPO = join(dirname(fileURLToPath(import.meta.url)), "..");
export const MAIN = join(REPO, "packages/cli/src/main.ts");

/** A fresh temp dir under the OS temp dir, named `<prefix>XXXXXX`. */
export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export interface Result { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }

export interface CliOptions {
  onSpawn?: (kill: (s: NodeJS.Signals) => void) => void;
  onStderr?: (all: string) => void;
  env?: Record<string, string>;
}

/** Runs the CLI with `args` (cwd: repo root, CHAINRULE_PLAIN=1) and collects its output. */
export function cli(args: string[], opts: CliOptions = {}): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", MAIN, ...args], {
      cwd: REPO,
      env: { ...process.env, CHAINRULE_PLAIN: "1", ...opts.env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "", stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => {
      stderr += d;
      opts.onStderr?.(stderr);
    });
    child.on("error", reject);
    child.on("close", (code, signal) => resolve({ code, signal, stdout, stderr }));
    opts.onSpawn?.((s) => child.kill(s));
  });
}

/** Writes `job` as `<dir>/<name>.json`; returns the path. */
export function writeJobIn(dir: string, name: string, job: unknown): string {
  const p = join(dir, `${name}.json`);
  writeFileSync(p, JSON.stringify(job));
  return p;
}

/** The newest `checkpoints/step-*` directory of a run. */
export function latestCheckpoint(run: string): string {
  const names = readdirSync(join(run, "checkpoints")).filter((n) => n.startsWith("step-")).sort();
  return join(run, "checkpoints", names[names.length - 1]);
}

/** The tensors of `<ckpt>/model.safetensors`, by name. */
export function checkpointTensors(ckpt: string): ReturnType<typeof loadSafetensors>["tensors"] {
  return loadSafetensors(join(ckpt, "model.safetensors")).tensors;
}

/** A one-line error on stderr and a non-zero exit. */
export function expectOneLineError(r: Pick<Result, "code" | "stdout" | "stderr">, re: RegExp, code?: number): void {
  expect(r.code, r.stdout + r.stderr).not.toBe(0);
  if (code !== undefined) expect(r.code).toBe(code);
  const lines = r.stderr.trim().split("\n");
  expect(lines.length, r.stderr).toBe(1);
  expect(lines[0]).toMatch(/^chainrule: error: /);
  expect(lines[0]).toMatch(re);
}

/** The one-line message parseJob throws for `raw`, or "no error". */
export function jobParseError(raw: unknown): string {
  try {
    parseJob(raw, "job.json");
  } catch (e) {
    return (e as Error).message;
  }
  return "no error";
}
