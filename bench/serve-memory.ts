/**
 * Resident memory of `chainrule serve` by worker count. A GPT (6 layers × 6 heads × 384 wide,
 * 10.7M parameters, 43 MB of float32 weights) is trained briefly, then served with each
 * `--workers N` in turn (rounds alternate the order); once every worker has run a generation,
 * the server process's VmRSS (resident now) and VmHWM (its peak) are read from /proc. Medians
 * over rounds. Linux only.
 *
 *   npx tsx bench/serve-memory.ts [--workers 1,2,4] [--rounds 3] [--checkpoint DIR] [--quick]
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";
import { loadCorpus } from "../packages/core/src/index.js";
import { flag, hasFlag, median, numList, repoRoot, runIfMain, table } from "./_util.js";

const MAIN = join(repoRoot, "packages/cli/src/main.ts");

function chainrule(args: string[]): void {
  const r = spawnSync(process.execPath, ["--import", "tsx", MAIN, ...args], { cwd: repoRoot, encoding: "utf8", env: { ...process.env, CHAINRULE_PLAIN: "1" } });
  if (r.status !== 0) throw new Error(`chainrule ${args.join(" ")} failed (${r.status}): ${r.stderr.trim()}`);
}

/** A run directory with the 384-wide GPT trained for a few steps (made once). */
function trainedRun(): string {
  const dir = join(repoRoot, ".bench", "serve-memory");
  const run = join(dir, "gpt-384");
  if (existsSync(run)) return run;
  mkdirSync(dir, { recursive: true });
  const text = join(dir, "names.txt");
  writeFileSync(text, loadCorpus("female-names").slice(0, 3000));
  chainrule(["train", "gpt", "--out", run, "--epochs", "1", "--batch-size", "16", "--workers", "1",
    "--set", `data.file=${text}`, "--set", "model.nEmbd=384", "--set", "model.nLayer=6", "--set", "model.nHead=6"]);
  return run;
}

/** kB figures of /proc/PID/status. */
function memoryOf(pid: number): { rssMiB: number; hwmMiB: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(status)![1]);
  return { rssMiB: kb("VmRSS") / 1024, hwmMiB: kb("VmHWM") / 1024 };
}

/** Serves `run` with `workers` threads, has each run a generation, and reads the process's memory. */
async function measure(run: string, workers: number): Promise<{ rssMiB: number; hwmMiB: number }> {
  const child: ChildProcess = spawn(process.execPath, ["--import", "tsx", MAIN, "serve", run, "--port", "0", "--workers", String(workers)], {
    cwd: repoRoot, env: { ...process.env, CHAINRULE_PLAIN: "1" }, stdio: ["ignore", "pipe", "pipe"],
  });
  try {
    let out = "", err = "";
    child.stderr!.on("data", (d) => (err += d));
    const url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`serve --workers ${workers} did not start in 300 s: ${err}`)), 300_000);
      child.stdout!.on("data", (d) => {
        out += d;
        const m = /listening on (http:\/\/\S+)/.exec(out);
        if (m) { clearTimeout(timer); resolve(m[1]); }
      });
      child.once("exit", (code) => { clearTimeout(timer); reject(new Error(`serve exited with ${code}: ${err}`)); });
    });
    // One generation per worker at once: each goes to the worker running the fewest.
    await Promise.all(Array.from({ length: workers }, async (_, i) => {
      const res = await fetch(`${url}/v1/generate`, { method: "POST", body: JSON.stringify({ prompt: "", maxTokens: 20, seed: i }), signal: AbortSignal.timeout(120_000) });
      if (res.status !== 200) throw new Error(`generate: HTTP ${res.status}: ${await res.text()}`);
    }));
    return memoryOf(child.pid!);
  } finally {
    child.kill("SIGKILL");
  }
}

export async function main(args: string[]): Promise<Record<string, unknown>> {
  const quick = hasFlag(args, "quick");
  const counts = numList(args, "workers", [1, 2, 4]);
  const rounds = Number(flag(args, "rounds", quick ? "1" : "3"));
  const run = flag(args, "checkpoint") ?? trainedRun();
  const samples = new Map<number, { rssMiB: number; hwmMiB: number }[]>(counts.map((n) => [n, []]));
  const loads: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 === 0 ? counts : [...counts].reverse();
    for (const n of order) {
      const m = await measure(run, n);
      samples.get(n)!.push(m);
      console.log(`  round ${r + 1}: --workers ${n}: VmRSS ${m.rssMiB.toFixed(0)} MiB, VmHWM ${m.hwmMiB.toFixed(0)} MiB`);
    }
    loads.push(loadavg()[0]);
  }
  const rows = counts.map((n) => ({
    workers: n,
    "VmRSS MiB": Math.round(median(samples.get(n)!.map((s) => s.rssMiB))),
    "VmHWM MiB": Math.round(median(samples.get(n)!.map((s) => s.hwmMiB))),
  }));
  table(rows);
  console.log(`load average: ${loads.map((l) => l.toFixed(2)).join(", ")}`);
  return { rows, samples: Object.fromEntries(samples), loads };
}

runIfMain(import.meta.url, "serve-memory", main);
