/**
 * Speed as the model grows: the training step against PyTorch's, one thread, at three GPT sizes
 * and three MLP widths; the peak resident memory of each side; and with 2 workers the
 * 2-worker/1-worker throughput of DataParallel at each size, beside the lockstep ceiling that
 * bench/parallel.ts prints (two plain MLP trainings meeting at a barrier every step).
 *
 *   tsx bench/sizes.ts [--models gpt,mlp] [--sizes NAME,...] [--rounds 3] [--no-anchor] [--no-parallel] [--quick]
 *
 * GPT (bench/gpt.ts's trainer: vocabulary 65, AdamW, untied head with bias, random tokens):
 *   gpt-c128  4 layers,  4 heads, nEmbd 128, blockSize  64, batch 12 (bench/gpt.ts's config)
 *   gpt-c384  6 layers,  6 heads, nEmbd 384, blockSize 256, batch 4  (10.8M parameters)
 *   gpt-c768 12 layers, 12 heads, nEmbd 768, blockSize 256, batch 2  (85M parameters)
 * MLP (bench/mlp.ts's trainer: 784-W-W/2-10, ReLU, cross-entropy, Adam, batch 128):
 *   mlp-512, mlp-2048, mlp-4096
 *
 * Each round runs chainrule's step in a fresh child process, then PyTorch's (bench/torch_sizes.py,
 * the anchors' models with their sizes as arguments, OMP_NUM_THREADS=1); the ratio is the median
 * of the per-round ratios of step times (below 1: chainrule faster). Peak memory is each child's
 * VmHWM (/proc/self/status), whole process, so it includes the runtime (Node with tsx, Python with
 * torch). Data-parallel: 1 worker at batch B and 2 workers at 2B, alternating
 * rounds in this process, the median of per-round ratios of samples (tokens) per second.
 */
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { loadavg } from "node:os";
import { fileURLToPath } from "node:url";
import { Generator, backendReport, makeDataset, toShared, type Dataset } from "../packages/core/src/index.js";
import { DataParallel, MODELS } from "../packages/parallel/src/index.js";
import { CATALOGUE_MODULE } from "../packages/cli/src/models.js";
import { CFG, makeTrainer as makeGptTrainer, type GptSize } from "./gpt.js";
import { makeTrainer as makeMlpTrainer } from "./mlp.js";
import { ceiling } from "./parallel.js";
import { findPython, flag, hasFlag, median, postAhead, repoRoot, runIfMain, table, timeSteps } from "./_util.js";

interface Size {
  name: string;
  /** The GPT's sizes, or the MLP's two hidden widths. */
  gpt?: GptSize;
  mlp?: [number, number];
  /** Rows (windows for the GPT) per step with one thread. */
  batch: number;
  /** Timed steps per round and untimed steps first, per process (the same on both sides). */
  steps: number;
  warmup: number;
  /** Data-parallel: untimed steps per pool first (JIT in every worker thread) and timed steps per round. */
  dpWarmup: number;
  dpSteps: number;
}

const SIZES: Size[] = [
  { name: "gpt-c128", gpt: { nLayer: 4, nHead: 4, nEmbd: 128, blockSize: 64 }, batch: 12, steps: 10, warmup: 5, dpWarmup: 60, dpSteps: 10 },
  { name: "gpt-c384", gpt: { nLayer: 6, nHead: 6, nEmbd: 384, blockSize: 256 }, batch: 4, steps: 2, warmup: 1, dpWarmup: 2, dpSteps: 2 },
  { name: "gpt-c768", gpt: { nLayer: 12, nHead: 12, nEmbd: 768, blockSize: 256 }, batch: 2, steps: 1, warmup: 1, dpWarmup: 1, dpSteps: 1 },
  { name: "mlp-512", mlp: [512, 256], batch: 128, steps: 60, warmup: 20, dpWarmup: 100, dpSteps: 30 },
  { name: "mlp-2048", mlp: [2048, 1024], batch: 128, steps: 12, warmup: 4, dpWarmup: 8, dpSteps: 8 },
  { name: "mlp-4096", mlp: [4096, 2048], batch: 128, steps: 6, warmup: 2, dpWarmup: 3, dpSteps: 4 },
];

function describe(s: Size): string {
  if (s.gpt) return `GPT L${s.gpt.nLayer} H${s.gpt.nHead} C${s.gpt.nEmbd} T${s.gpt.blockSize} B${s.batch}`;
  return `MLP 784-${s.mlp!.join("-")}-10 B${s.batch}`;
}

/** Samples per step: tokens for a GPT, rows for the MLP. */
const perStep = (s: Size, batch = s.batch) => (s.gpt ? batch * s.gpt.blockSize : batch);

interface Measure { msPerStep: number; cpuMsPerStep: number; peakRssMiB: number; params: number }

/** Child-process mode: warm up, time the steps, print the measure with the process's peak RSS. */
function child(s: Size): void {
  const t = s.gpt ? makeGptTrainer({ size: s.gpt, batch: s.batch }) : makeMlpTrainer(s.batch, 0, s.mlp!);
  const params = s.gpt ? (t as ReturnType<typeof makeGptTrainer>).model.numParameters() : (t as ReturnType<typeof makeMlpTrainer>).params;
  timeSteps(t, s.warmup);
  const m = timeSteps(t, s.steps);
  const out: Measure = { msPerStep: m.wallMs / s.steps, cpuMsPerStep: m.cpuUs / 1000 / s.steps, peakRssMiB: peakRssMiB(), params };
  console.log(JSON.stringify({ ...out, backend: backendReport().name }));
}

/**
 * This process's peak resident memory: VmHWM of /proc/self/status, as torch_sizes.py reads it. Not
 * getrusage's ru_maxrss: on Linux a spawned child's ru_maxrss starts at its parent's RSS when it forked.
 */
function peakRssMiB(): number {
  try {
    const m = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync("/proc/self/status", "utf8"));
    if (m) return Number(m[1]) / 1024;
  } catch { /* not Linux */ }
  return process.resourceUsage().maxRSS / 1024;
}

function lastJsonLine(out: string, err: string, what: string): Record<string, unknown> {
  const line = out.trim().split("\n").pop() ?? "";
  try {
    return JSON.parse(line);
  } catch {
    throw new Error(`${what} failed: ${(err || line).trim().split("\n").slice(-3).join(" | ")}`);
  }
}

const CHILD_TIMEOUT_MS = 300_000;

function runOurs(s: Size): Measure & { backend: string } {
  const r = spawnSync(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), "--size-child", s.name], { encoding: "utf8", timeout: CHILD_TIMEOUT_MS });
  return lastJsonLine(r.stdout ?? "", r.stderr ?? String(r.error ?? ""), `sizes child ${s.name}`) as unknown as Measure & { backend: string };
}

function runTorch(py: string, s: Size): Measure {
  const args = s.gpt
    ? ["gpt", s.gpt.nLayer, s.gpt.nHead, s.gpt.nEmbd, s.gpt.blockSize, s.batch, s.steps, s.warmup]
    : ["mlp", ...s.mlp!, s.batch, s.steps, s.warmup];
  const r = spawnSync(py, [`${repoRoot}/bench/torch_sizes.py`, ...args.map(String)], { env: { ...process.env, OMP_NUM_THREADS: "1" }, encoding: "utf8", timeout: CHILD_TIMEOUT_MS });
  return lastJsonLine(r.stdout ?? "", r.stderr ?? String(r.error ?? ""), `torch_sizes.py ${s.name}`) as unknown as Measure;
}

/** Shared data for `steps` steps of `batch` rows: random tokens (next-token targets) or random MLP rows. */
function dataset(s: Size, rows: number): Dataset {
  const g = new Generator(0);
  if (s.gpt) {
    const T = s.gpt.blockSize, V = CFG.vocabSize;
    const x = new Float32Array(rows * T).map(() => g.randint(V)), y = new Int32Array(rows * T).map(() => g.randint(V));
    return toShared(makeDataset({ inputs: x, targets: y, inputShape: [T], targetShape: [T] }));
  }
  return toShared(makeDataset({ inputs: new Float32Array(rows * 784).map(() => g.random()), targets: new Int32Array(rows).map(() => g.randint(10)), inputShape: [784] }));
}

function makeDp(s: Size, workers: number): DataParallel {
  const model = s.gpt
    ? { module: CATALOGUE_MODULE, export: "buildJobModel", options: { model: { type: "gpt", ...CFG, ...s.gpt, vocabSize: undefined }, ctx: { inputShape: [s.gpt.blockSize], outputSize: CFG.vocabSize } } }
    : { module: MODELS, export: "mlp", options: { sizes: [784, ...s.mlp!, 10] } };
  return new DataParallel({ model, loss: "crossEntropy", optimizer: s.gpt ? { type: "adamw", lr: 1e-3 } : { type: "adam", lr: 1e-3 }, workers, seed: 0 });
}

/** 2 workers at 2B against 1 worker at B, alternating rounds (which goes first alternates too); samples/s and the median ratio. */
async function dataParallel(s: Size, rounds: number): Promise<{ one: number[]; two: number[]; ratio: number }> {
  const steps = Math.max(s.dpWarmup, s.dpSteps);
  const data = dataset(s, 2 * s.batch * steps);
  const pools = [{ dp: makeDp(s, 1), batch: s.batch }, { dp: makeDp(s, 2), batch: 2 * s.batch }];
  const run = async (p: (typeof pools)[number], n: number) => {
    const t0 = performance.now();
    await postAhead(n, (i) => p.dp.step({ dataset: data, start: i * p.batch, end: (i + 1) * p.batch }));
    return (perStep(s, p.batch) * n * 1000) / (performance.now() - t0);
  };
  try {
    for (const p of pools) {
      await p.dp.init();
      await run(p, s.dpWarmup);
    }
    const got: number[][] = [[], []];
    for (let r = 0; r < rounds; r++) {
      for (const i of r % 2 === 0 ? [0, 1] : [1, 0]) got[i].push(await run(pools[i], s.dpSteps));
    }
    return { one: got[0], two: got[1], ratio: median(got[1].map((t, i) => t / got[0][i])) };
  } finally {
    for (const p of pools) await p.dp.close();
  }
}

export async function main(args: string[]): Promise<Record<string, unknown>> {
  const quick = hasFlag(args, "quick");
  const rounds = Number(flag(args, "rounds", quick ? "1" : "3"));
  const models = (flag(args, "models") ?? "gpt,mlp").split(",");
  const names = flag(args, "sizes")?.split(",");
  for (const n of names ?? []) if (!SIZES.some((s) => s.name === n)) throw new Error(`bench sizes: unknown size '${n}' (sizes: ${SIZES.map((s) => s.name).join(", ")})`);
  const sizes = SIZES.filter((s) => (names ? names.includes(s.name) : models.includes(s.gpt ? "gpt" : "mlp")));
  const py = hasFlag(args, "no-anchor") ? null : findPython();
  if (!hasFlag(args, "no-anchor") && (py === null || !existsSync(`${repoRoot}/bench/torch_sizes.py`))) console.log("anchor: python3 with PyTorch not found; chainrule alone");

  const load = [loadavg()[0]];
  const rows: Record<string, string | number>[] = [];
  const results: Record<string, unknown>[] = [];
  for (const s of sizes) {
    const ours: Measure[] = [], torch: Measure[] = [];
    let backend = "";
    for (let r = 0; r < rounds; r++) {
      const o = runOurs(s);
      backend = o.backend;
      ours.push(o);
      if (py) torch.push(runTorch(py, s));
    }
    const ms = median(ours.map((m) => m.msPerStep));
    const row: Record<string, string | number> = {
      model: describe(s), params: ours[0].params, "ms/step": ms, "samples/s": Math.round((perStep(s) * 1000) / ms), "peak MiB": median(ours.map((m) => m.peakRssMiB)),
    };
    const res: Record<string, unknown> = { size: s, backend, ours };
    if (torch.length > 0) {
      const ratio = median(ours.map((m, i) => m.msPerStep / torch[i].msPerStep));
      Object.assign(row, {
        "torch ms": median(torch.map((m) => m.msPerStep)), "time x torch": ratio,
        "cpu x torch": median(ours.map((m, i) => m.cpuMsPerStep / torch[i].cpuMsPerStep)), "torch MiB": median(torch.map((m) => m.peakRssMiB)),
      });
      Object.assign(res, { torch, ratioVsTorch: ratio });
    }
    if (!hasFlag(args, "no-parallel")) {
      const dp = await dataParallel(s, rounds);
      row["2w/1w"] = dp.ratio;
      res.dataParallel = dp;
    }
    load.push(loadavg()[0]);
    console.log(`${describe(s)}: ${JSON.stringify(row)}`);
    rows.push(row);
    results.push(res);
  }
  let lockstep: { ratio: number; runs: number[] } | undefined;
  if (!hasFlag(args, "no-parallel")) lockstep = await ceiling("lockstep", quick ? 3 : 5);
  load.push(loadavg()[0]);
  console.log(`\nTraining step by size, one thread (${rounds} rounds alternating with PyTorch, medians; samples: tokens for a GPT; time x torch: step time ratio, below 1 is faster; peak MiB: whole-process VmHWM); backend ${backendReport().reason}; load average ${load.map((l) => l.toFixed(1)).join(", ")}:`);
  table(rows);
  if (lockstep) console.log(`2w/1w: DataParallel, 2 workers at 2B vs 1 worker at B; lockstep ceiling (bench/parallel.ts: two plain MLP trainings, a barrier after every step) ${lockstep.ratio.toFixed(2)}x [${lockstep.runs.map((x) => x.toFixed(2)).join(" ")}]`);
  return { rounds, loadAverage: load, sizes: results, lockstep };
}

if (process.argv.includes("--size-child")) {
  const name = flag(process.argv, "size-child");
  const s = SIZES.find((x) => x.name === name);
  if (!s) throw new Error(`bench sizes: unknown size '${name}'`);
  child(s);
} else {
  runIfMain(import.meta.url, "sizes", main);
}
