/**
 * What users run: the MLP, the anchor CNN and the GPT written as the README's API tour writes
 * code (bench/user-code/models.mts: plain nn modules and optimizers, imports from
 * `@chainrule/core` alone), against the same models as the tuned benchmarks build them
 * (bench/mlp.ts, cnn.ts, gpt.ts: nn.flattenParameters, a BufferArena, createMnistCnn's layer
 * order) and PyTorch's anchors (torch_mlp.py, torch_cnn.py, torch_gpt.py, OMP_NUM_THREADS=1),
 * one thread. The three run alternately, the order rotating from round to round; the ratios are
 * medians of per-round ratios (samples/s, or tokens/s for the GPT).
 *
 *   tsx bench/user-code.ts [--models mlp,cnn,gpt] [--rounds 5] [--no-anchor] [--no-tuned] [--quick] [--profile]
 *     --profile   then, per model, where the user-code step goes: ms per step in each kernel
 *                 (GEMMs by transposes and M×N×K), from a separate pass that times every kernel call
 *
 * Goals (one thread): user code at 1.5× PyTorch for the MLP, 1.3× for the CNN, 1.2× for the GPT.
 */
import { existsSync } from "node:fs";
import { register } from "node:module";
import { loadavg } from "node:os";
import { useBackend } from "../packages/core/src/index.js";
import { makeTrainer as makeMlpTrainer } from "./mlp.js";
import { makeCnnTrainer } from "./cnn.js";
import { makeTrainer as makeGptTrainer } from "./gpt.js";
import { kernels, setKernels } from "../packages/core/src/kernels/kernels.js";
import { anchorPath, findPython, flag, hasFlag, median, runAnchor, runIfMain, table, timeSteps, timedKernels } from "./_util.js";

// The programs import `@chainrule/core` by name, as a user's do: resolved to this checkout.
register("./_core-alias.mjs", import.meta.url);
type Step = () => number;
const programs = (await import(new URL("./user-code/models.mts", import.meta.url).href)) as Record<"mlp" | "cnn" | "gpt", (batch?: number) => Step>;

interface Model {
  name: "mlp" | "cnn" | "gpt";
  title: string;
  /** Samples (tokens for the GPT) per step. */
  perStep: number;
  unit: string;
  steps: number;
  goal: number;
  tuned: () => Step;
  /** The anchor's arguments for `steps` steps, and the pattern of its throughput. */
  anchor: { script: string; args: (steps: number) => string[]; pattern: RegExp };
}

const MODELS: Model[] = [
  {
    name: "mlp", title: "MLP 784-512-256-10, Adam, batch 128", perStep: 128, unit: "samples/s", steps: 100, goal: 1.5,
    tuned: () => { const t = makeMlpTrainer(128); return () => t.step(); },
    anchor: { script: "torch_mlp.py", args: (s) => ["1", "128", String(s)], pattern: /([\d.]+) samples\/s/ },
  },
  {
    name: "cnn", title: "CNN conv32-pool-conv64-pool-fc128-fc10, Adam, batch 64", perStep: 64, unit: "samples/s", steps: 30, goal: 1.3,
    tuned: () => { const t = makeCnnTrainer(64); return () => t.step(); },
    anchor: { script: "torch_cnn.py", args: (s) => ["1", "64", String(s)], pattern: /([\d.]+) samples\/s/ },
  },
  {
    name: "gpt", title: "GPT 4 layers, 4 heads, C 128, T 64, batch 12, AdamW", perStep: 12 * 64, unit: "tokens/s", steps: 15, goal: 1.2,
    tuned: () => { const t = makeGptTrainer(); return () => t.step(); },
    anchor: { script: "torch_gpt.py", args: (s) => ["1", String(s)], pattern: /([\d.]+) tokens\/s/ },
  },
];

/** Throughput of `steps` calls of `step`, in the model's unit. */
function rate(step: Step, steps: number, perStep: number): number {
  return (steps * perStep) / (timeSteps({ step }, steps).wallMs / 1000);
}

/**
 * ms per step in each kernel over `steps` timed steps (after 3 untimed ones), the step's own
 * ms, and the share outside kernels (autograd, allocation, JavaScript between the calls).
 */
function profileSteps(step: Step, steps: number): { stepMs: number; kernels: [string, number][] } {
  const base = kernels();
  const acc = new Map<string, number>();
  setKernels(timedKernels(base, (key) => (ms, a) => {
    const name = key === "gemm" ? `gemm ${a[0] ? "T" : "N"}${a[1] ? "T" : "N"} ${a[2]}×${a[3]}×${a[4]}`
      : key === "unary" || key === "unaryBackward" || key === "binary" ? `${key}:${a[0]}` : key;
    acc.set(name, (acc.get(name) ?? 0) + ms);
  }));
  try {
    for (let i = 0; i < 3; i++) step();
    acc.clear();
    const t0 = performance.now();
    for (let i = 0; i < steps; i++) step();
    const stepMs = (performance.now() - t0) / steps;
    return { stepMs, kernels: [...acc].map(([k, ms]): [string, number] => [k, ms / steps]).sort((a, b) => b[1] - a[1]) };
  } finally {
    setKernels(base);
  }
}

function printProfile(name: string, p: { stepMs: number; kernels: [string, number][] }): void {
  const inKernels = p.kernels.reduce((t, [, ms]) => t + ms, 0);
  const gemm = p.kernels.filter(([k]) => k.startsWith("gemm")).reduce((t, [, ms]) => t + ms, 0);
  const pct = (ms: number) => `${((100 * ms) / p.stepMs).toFixed(1)}%`;
  console.log(`${name}: ${p.stepMs.toFixed(2)} ms a step (timed kernels): GEMMs ${pct(gemm)}, other kernels ${pct(inKernels - gemm)}, outside kernels ${pct(p.stepMs - inKernels)}`);
  for (const [k, ms] of p.kernels.slice(0, 12)) console.log(`  ${ms.toFixed(3).padStart(8)} ms  ${pct(ms).padStart(6)}  ${k}`);
}

export async function main(args: string[]): Promise<Record<string, unknown>> {
  const quick = hasFlag(args, "quick");
  const rounds = Number(flag(args, "rounds", quick ? "2" : "5"));
  const names = (flag(args, "models") ?? "mlp,cnn,gpt").split(",");
  const withTuned = !hasFlag(args, "no-tuned");
  const py = hasFlag(args, "no-anchor") ? null : findPython();
  if (!hasFlag(args, "no-anchor") && py === null) console.log("PyTorch not found (python3 -c 'import torch'): no anchor ratios");
  useBackend("auto");
  const load0 = loadavg()[0];
  const rows: Record<string, string | number>[] = [];
  const results: Record<string, unknown>[] = [];
  for (const m of MODELS.filter((x) => names.includes(x.name))) {
    const steps = Number(flag(args, "steps") ?? (quick ? Math.ceil(m.steps / 2) : m.steps));
    const script = anchorPath(m.anchor.script);
    const anchor = py !== null && existsSync(script);
    const user = programs[m.name]();
    const tuned = withTuned ? m.tuned() : null;
    for (let i = 0; i < Math.max(5, steps / 2); i++) { user(); tuned?.(); } // warm-up (JIT, pools)
    const runs: Record<"user" | "tuned" | "torch", number[]> = { user: [], tuned: [], torch: [] };
    const kinds = (["user", "tuned", "torch"] as const).filter((k) => (k === "tuned" ? tuned !== null : k === "torch" ? anchor : true));
    for (let r = 0; r < rounds; r++) {
      const order = kinds.map((_, i) => kinds[(i + r) % kinds.length]); // rotate who goes first
      for (const k of order) {
        if (k === "user") runs.user.push(rate(user, steps, m.perStep));
        else if (k === "tuned") runs.tuned.push(rate(tuned!, steps, m.perStep));
        else runs.torch.push(runAnchor(py!, script, m.anchor.args(Math.max(steps, 20)), m.anchor.pattern));
      }
      console.log(`  ${m.name} round ${r + 1}: user ${Math.round(runs.user[r])}` + (tuned ? `, tuned ${Math.round(runs.tuned[r])}` : "") +
        (anchor ? `, PyTorch ${Math.round(runs.torch[r])}` : "") + ` ${m.unit} (load ${loadavg()[0].toFixed(1)})`);
    }
    const per = (a: number[], b: number[]) => median(a.map((v, i) => v / b[i]));
    const row: Record<string, string | number> = { model: m.name, unit: m.unit, "user code": Math.round(median(runs.user)) };
    if (tuned) Object.assign(row, { tuned: Math.round(median(runs.tuned)), "user/tuned": per(runs.user, runs.tuned) });
    if (anchor) Object.assign(row, { PyTorch: Math.round(median(runs.torch)), "user/PyTorch": per(runs.user, runs.torch), goal: m.goal });
    if (anchor && tuned) row["tuned/PyTorch"] = per(runs.tuned, runs.torch);
    rows.push(row);
    results.push({
      model: m.name, title: m.title, unit: m.unit, steps, rounds: runs,
      userVsTuned: tuned ? per(runs.user, runs.tuned) : null,
      userVsTorch: anchor ? per(runs.user, runs.torch) : null,
      tunedVsTorch: anchor && tuned ? per(runs.tuned, runs.torch) : null,
      goalVsTorch: m.goal,
    });
  }
  if (hasFlag(args, "profile")) {
    console.log("Where the user-code step goes (ms per step in each kernel; the largest 12):");
    for (const r of results) {
      const name = r.model as Model["name"];
      const p = profileSteps(programs[name](), MODELS.find((m) => m.name === name)!.steps);
      printProfile(name, p);
      r.profile = p;
    }
  }
  const load1 = loadavg()[0];
  console.log(`User code (plain nn modules and optimizers, bench/user-code/models.mts) vs the tuned benchmarks and PyTorch, one thread; ` +
    `median of ${rounds} rotating rounds (ratios: medians of per-round ratios); load average ${load0.toFixed(1)} → ${load1.toFixed(1)}:`);
  table(rows);
  return { runs: results, loadavg: [load0, load1] };
}

runIfMain(import.meta.url, "user-code", main);
