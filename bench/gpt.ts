/**
 * Training step time of the small char-level GPT of ../shared/anchors/torch_gpt.py
 * (nLayer 4, nHead 4, nEmbd 128, blockSize 64, batch 12, vocab 65, AdamW lr 1e-3,
 * untied head with bias, random tokens), one thread: ms/step and tokens/s, with a
 * per-phase and per-kernel breakdown from a separate instrumented pass.
 *
 *   tsx bench/gpt.ts [--steps 20] [--rounds 5] [--backends blas,js] [--reference] [--no-anchor] [--quick]
 *     --reference   also time the model with the primitive-op attention (fused: false)
 *     (default)     runs `OMP_NUM_THREADS=1 python3 torch_gpt.py 1 <steps>` alternately with ours and reports the median
 *                   ratio of wall-clock step times, and likewise of CPU time per step (ours: process.cpuUsage;
 *                   PyTorch: the same script timed with time.process_time), which a busy machine disturbs less
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { PerformanceObserver } from "node:perf_hooks";
import { GPT, manualSeed, nn, optim, useBackend } from "../packages/core/src/index.js";
import { kernels, setKernels, type Kernels } from "../packages/core/src/kernels/kernels.js";
import { flag, hasFlag, median, repoRoot, runIfMain, table } from "./_util.js";

const CFG = { vocabSize: 65, blockSize: 64, nLayer: 4, nHead: 4, nEmbd: 128, dropout: 0, bias: true, tieWeights: false };
const BATCH = 12;

interface Trainer {
  step(): number;
  model: GPT;
}

export function makeTrainer(opts: { fused?: boolean; seed?: number; batch?: number } = {}): Trainer {
  manualSeed(opts.seed ?? 0);
  const B = opts.batch ?? BATCH, T = CFG.blockSize;
  const model = new GPT(CFG);
  for (const b of model.transformer.h) (b as any).attn.fused = opts.fused ?? true;
  nn.flattenParameters(model); // one flat buffer for parameters, one for gradients
  const opt = new optim.AdamW(model.parameters(), { lr: 1e-3 });
  const x = new Int32Array(B * T), y = new Int32Array(B * T);
  for (let i = 0; i < x.length; i++) {
    x[i] = (i * 7919) % CFG.vocabSize;
    y[i] = (i * 104729 + 3) % CFG.vocabSize;
  }
  return {
    model,
    step() {
      opt.zeroGrad();
      const loss = model.loss(x, y, [B, T]); // (B, T, V) → ()
      loss.backward();
      opt.step();
      return loss.item();
    },
  };
}

/** Wall-clock and process CPU (user + system, all threads) ms per step. */
function msPerStep(t: Trainer, steps: number): { wall: number; cpu: number } {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) t.step();
  const c = process.cpuUsage(c0);
  return { wall: (performance.now() - t0) / steps, cpu: (c.user + c.system) / 1000 / steps };
}

/** Every kernel call timed, by kernel name. */
function timedKernels(k: Kernels, acc: Map<string, number>): Kernels {
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(k) as (keyof Kernels)[]) {
    const v = k[key];
    if (typeof v !== "function") { out[key] = v; continue; }
    const f = v as (...a: unknown[]) => unknown;
    out[key] = (...a: unknown[]) => {
      const t = performance.now();
      const r = f.apply(k, a);
      const name = key === "unary" || key === "unaryBackward" || key === "binary" ? `${key}:${a[0]}` : key;
      acc.set(name, (acc.get(name) ?? 0) + performance.now() - t);
      return r;
    };
  }
  return out as unknown as Kernels;
}

/** ms per step in forward / backward / optimizer, GC, and per kernel, from an instrumented run. */
function profile(steps: number, fused: boolean): Record<string, unknown> {
  const base = kernels();
  const acc = new Map<string, number>();
  setKernels(timedKernels(base, acc));
  let gcMs = 0;
  const obs = new PerformanceObserver((list) => { for (const e of list.getEntries()) gcMs += e.duration; });
  try {
    manualSeed(0);
    const model = new GPT(CFG);
    for (const b of model.transformer.h) (b as any).attn.fused = fused;
    nn.flattenParameters(model);
    const opt = new optim.AdamW(model.parameters(), { lr: 1e-3 });
    const x = new Int32Array(BATCH * 64).map((_, i) => (i * 7919) % 65), y = x.map((v) => (v + 1) % 65);
    const phase = { forward: 0, backward: 0, optimizer: 0 };
    const step = () => {
      let t = performance.now();
      opt.zeroGrad();
      const loss = model.loss(x, y, [BATCH, 64]);
      phase.forward += performance.now() - t;
      t = performance.now();
      loss.backward();
      phase.backward += performance.now() - t;
      t = performance.now();
      opt.step();
      phase.optimizer += performance.now() - t;
    };
    for (let i = 0; i < 3; i++) step();
    acc.clear(); phase.forward = phase.backward = phase.optimizer = 0;
    obs.observe({ entryTypes: ["gc"] });
    const t0 = performance.now();
    for (let i = 0; i < steps; i++) step();
    const total = performance.now() - t0;
    for (const e of obs.takeRecords?.() ?? []) gcMs += e.duration;
    const per = (ms: number) => Math.round((ms / steps) * 100) / 100;
    const kernelsMs = [...acc.values()].reduce((a, b) => a + b, 0);
    const byKernel = Object.fromEntries([...acc.entries()].sort((a, b) => b[1] - a[1]).map(([k, v]) => [k, per(v)]));
    return {
      msPerStep: per(total), forward: per(phase.forward), backward: per(phase.backward), optimizer: per(phase.optimizer),
      gc: per(gcMs), kernels: per(kernelsMs), outsideKernels: per(total - kernelsMs), byKernel,
    };
  } finally {
    obs.disconnect();
    setKernels(base);
  }
}

function findPython(): string | null {
  for (const py of ["/usr/bin/python3", "python3"]) {
    const r = spawnSync(py, ["-c", "import torch"], { stdio: "ignore" });
    if (r.status === 0) return py;
  }
  return null;
}

/**
 * One run of the anchor: ms/step as it prints it. With `cpu`, the script runs
 * unchanged except that its timer (time.perf_counter) is swapped for the
 * process's CPU time (time.process_time), which a loaded machine disturbs less.
 */
function runTorch(py: string, script: string, steps: number, cpu = false): number {
  const args = cpu
    ? ["-c", "import runpy, sys, time; time.perf_counter = time.process_time; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')", script, "1", String(steps)]
    : [script, "1", String(steps)];
  const r = spawnSync(py, args, { env: { ...process.env, OMP_NUM_THREADS: "1" }, encoding: "utf8" });
  const m = /([\d.]+) ms\/step/.exec(r.stdout ?? "");
  if (!m) throw new Error(`torch_gpt.py failed: ${r.stderr || r.stdout}`);
  return Number(m[1]);
}

export async function main(args: string[]): Promise<Record<string, unknown>> {
  const quick = hasFlag(args, "quick");
  const steps = Number(flag(args, "steps", quick ? "5" : "20"));
  const rounds = Number(flag(args, "rounds", quick ? "1" : "5"));
  const backends = (flag(args, "backends") ?? "blas,js").split(",") as ("blas" | "js")[];
  const anchorScript = resolve(process.env.CHAINRULE_ANCHORS ?? join(repoRoot, "..", "shared", "anchors"), "torch_gpt.py");
  const py = hasFlag(args, "no-anchor") ? null : findPython();
  if (!hasFlag(args, "no-anchor") && (py === null || !existsSync(anchorScript))) console.log(`anchor: PyTorch or ${anchorScript} not found; skipping it`);
  const variants = hasFlag(args, "reference") ? [true, false] : [true];

  const rows: Record<string, string | number>[] = [];
  const runs: Record<string, unknown>[] = [];
  for (const backend of backends) {
    let report;
    try {
      report = useBackend(backend);
    } catch (e) {
      console.log(`${backend}: unavailable (${(e as Error).message})`);
      continue;
    }
    console.log(`backend ${report.reason}`);
    for (const fused of variants) {
      const t = makeTrainer({ fused });
      msPerStep(t, quick ? 2 : 5); // warm-up, as the anchor does
      const ours: number[] = [], oursCpu: number[] = [], torch: number[] = [], torchCpu: number[] = [];
      const s = backend === "js" ? Math.max(2, Math.round(steps / 4)) : steps;
      const withTorch = py !== null && existsSync(anchorScript) && backend === "blas" && fused;
      for (let r = 0; r < rounds; r++) {
        const m = msPerStep(t, s);
        ours.push(m.wall);
        oursCpu.push(m.cpu);
        if (withTorch) {
          torch.push(runTorch(py, anchorScript, steps));
          torchCpu.push(runTorch(py, anchorScript, steps, true));
        }
      }
      const prof = profile(Math.max(2, Math.round(s / 2)), fused);
      const ms = median(ours);
      const row: Record<string, string | number> = {
        backend, attention: fused ? "fused" : "reference", "ms/step": ms, "tokens/s": Math.round((BATCH * CFG.blockSize * 1000) / ms),
        "fwd ms": prof.forward as number, "bwd ms": prof.backward as number, "opt ms": prof.optimizer as number, "gc ms": prof.gc as number,
      };
      row["cpu ms"] = median(oursCpu);
      const res: Record<string, unknown> = {
        backend: report, fused, steps: s, msPerStep: ms, tokensPerSec: (BATCH * CFG.blockSize * 1000) / ms, rounds: ours, cpuMsPerStep: oursCpu, profile: prof,
      };
      if (torch.length > 0) {
        const ratio = median(ours.map((o, i) => o / torch[i]));
        const cpuRatio = median(oursCpu.map((o, i) => o / torchCpu[i]));
        row["torch ms"] = median(torch);
        row["x torch"] = ratio;
        row["torch cpu ms"] = median(torchCpu);
        row["x torch (cpu)"] = cpuRatio;
        Object.assign(res, {
          torchMsPerStep: torch, ratioVsTorch: ratio, torchTokensPerSec: (BATCH * CFG.blockSize * 1000) / median(torch),
          torchCpuMsPerStep: torchCpu, cpuRatioVsTorch: cpuRatio,
        });
      }
      rows.push(row);
      runs.push(res);
      console.log(`  per kernel (ms/step): ${JSON.stringify(prof.byKernel)}`);
    }
  }
  useBackend("auto");
  console.log(`GPT L4 H4 C128 T64 B${BATCH} V65 training step, AdamW, one thread (median of ${rounds} rounds, alternating with PyTorch; breakdown from a separate instrumented pass):`);
  table(rows);
  return { config: { ...CFG, batch: BATCH }, params: makeTrainer().model.numParameters(), runs };
}

runIfMain(import.meta.url, "gpt", main);
