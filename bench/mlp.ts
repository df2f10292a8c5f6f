/**
 * Training throughput of the reference MLP (784-512-256-10, ReLU, cross-entropy,
 * Adam lr 1e-3, random data; the model of ../shared/anchors/torch_mlp.py), one
 * thread, per backend and batch size: samples/s, and from a separate
 * instrumented pass the share of step time in GEMM, other kernels (elementwise,
 * softmax/cross-entropy, reductions), the optimizer, garbage collection, and
 * the rest (graph building, op glue, allocation).
 *
 *   tsx bench/mlp.ts [--batches 32,128,512] [--backends blas,js] [--rounds 3] [--steps N] [--quick]
 *                    [--anchor]   also run PyTorch's torch_mlp.py alternately (OMP_NUM_THREADS=1) and report ratios
 *                    [--tfjs [DIR]]  for the js backend, also run TensorFlow.js's cpu backend alternately
 *                                 (`node tfjs_mlp.cjs cpu BATCH STEPS` with DIR's node_modules; DIR defaults
 *                                 to $CHAINRULE_TFJS or /tmp/tfjs) and report the median ratio of the rounds
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { PerformanceObserver } from "node:perf_hooks";
import { BufferArena, F, Tensor, manualSeed, nn, optim, rand, useBackend } from "../packages/core/src/index.js";
import { kernels, setKernels } from "../packages/core/src/kernels/kernels.js";
import { anchorPath, findPython, flag, hasFlag, median, numList, runAnchor, runIfMain, table, timeSteps, timedKernels, trySelectBackend } from "./_util.js";

interface Trainer {
  step(): number;
  params: number;
}

/** `hidden`: the two hidden widths (bench/sizes.ts varies them). */
export function makeTrainer(batch: number, seed = 0, hidden: [number, number] = [512, 256]): Trainer {
  manualSeed(seed);
  const [h1, h2] = hidden;
  const model = new nn.Sequential(new nn.Linear(784, h1), new nn.ReLU(), new nn.Linear(h1, h2), new nn.ReLU(), new nn.Linear(h2, 10));
  nn.flattenParameters(model); // one flat buffer for parameters, one for gradients
  const opt = new optim.Adam(model.parameters(), { lr: 1e-3 });
  const x = rand([batch, 784]); // (B, 784)
  const y = new Int32Array(batch);
  for (let i = 0; i < batch; i++) y[i] = (i * 7919) % 10;
  const arena = new BufferArena(); // activations reused from step to step, as the CLI's trainer and the workers do
  return {
    params: model.numParameters?.() ?? 0,
    step() {
      opt.zeroGrad();
      const loss = arena.run(() => {
        const loss = F.crossEntropy(model.forward(x) as Tensor, y); // (B, 10) → ()
        loss.backward();
        return loss.item();
      });
      opt.step();
      return loss;
    },
  };
}

/** Kernel timer callbacks: GEMM calls count as "gemm", all others as "kernels"; also per kernel name. */
function gemmVsRest(acc: { gemm: number; kernels: number; byName: Record<string, number> }): (key: string) => (ms: number) => void {
  return (key) => {
    const isGemm = key === "gemm" || key === "gemmStridedBatched";
    return (dt) => {
      if (isGemm) acc.gemm += dt;
      else acc.kernels += dt;
      acc.byName[key] = (acc.byName[key] ?? 0) + dt;
    };
  };
}

/** Share of step time per category, from an instrumented run of `steps` steps (after warm-up). */
interface Profile { msPerStep: number; gemm: number; elementwise: number; optimizer: number; gc: number; other: number; kernelMs: Record<string, number> }

async function profile(batch: number, steps: number): Promise<Profile> {
  const base = kernels();
  const acc = { gemm: 0, kernels: 0, byName: {} as Record<string, number> };
  setKernels(timedKernels(base, gemmVsRest(acc)));
  let gcMs = 0;
  const obs = new PerformanceObserver((list) => { for (const e of list.getEntries()) gcMs += e.duration; });
  try {
    manualSeed(0);
    const model = new nn.Sequential(new nn.Linear(784, 512), new nn.ReLU(), new nn.Linear(512, 256), new nn.ReLU(), new nn.Linear(256, 10));
    nn.flattenParameters(model);
    const opt = new optim.Adam(model.parameters(), { lr: 1e-3 });
    const x = rand([batch, 784]);
    const y = new Int32Array(batch).map((_, i) => (i * 7919) % 10);
    let optMs = 0;
    const arena = new BufferArena();
    const step = () => {
      let t = performance.now();
      opt.zeroGrad();
      optMs += performance.now() - t;
      arena.run(() => F.crossEntropy(model.forward(x) as Tensor, y).backward());
      t = performance.now();
      opt.step();
      optMs += performance.now() - t;
    };
    for (let i = 0; i < 10; i++) step();
    acc.gemm = acc.kernels = 0; acc.byName = {}; optMs = 0;
    obs.observe({ entryTypes: ["gc"] });
    const t0 = performance.now();
    for (let i = 0; i < steps; i++) step();
    const total = performance.now() - t0;
    // GC entries are delivered asynchronously, after the synchronous loop: let them arrive.
    await new Promise((r) => setTimeout(r, 50));
    const share = (ms: number) => ms / total;
    const other = total - acc.gemm - acc.kernels - optMs - gcMs;
    return {
      msPerStep: total / steps,
      gemm: share(acc.gemm),
      elementwise: share(acc.kernels),
      optimizer: share(optMs),
      gc: share(gcMs),
      other: share(Math.max(0, other)),
      kernelMs: Object.fromEntries(Object.entries({ ...acc.byName, optimizer: optMs }).map(([k, v]) => [k, v / steps])),
    };
  } finally {
    obs.disconnect();
    setKernels(base);
  }
}

function runTorch(py: string, script: string, batch: number, steps: number): number {
  return runAnchor(py, script, ["1", String(batch), String(steps)], /([\d.]+) samples\/s/);
}

/** TensorFlow.js (cpu backend) samples/s from its copy of the anchor script, run from `dir`. */
function runTfjs(dir: string, batch: number, steps: number): number {
  const local = join(dir, "tfjs_mlp.cjs");
  const script = existsSync(local) ? local : anchorPath("tfjs_mlp.cjs");
  const r = spawnSync(process.execPath, [script, "cpu", String(batch), String(steps)], {
    cwd: dir, env: { ...process.env, NODE_PATH: join(dir, "node_modules") }, encoding: "utf8",
  });
  const m = /([\d.]+) samples\/s/.exec(r.stdout ?? "");
  if (!m) throw new Error(`tfjs_mlp.cjs failed: ${r.stderr || r.stdout}`);
  return Number(m[1]);
}

export async function main(args: string[]): Promise<Record<string, unknown>> {
  const quick = hasFlag(args, "quick");
  const batches = numList(args, "batches", quick ? [128] : [32, 128, 512]);
  const backends = (flag(args, "backends") ?? "blas,js").split(",") as ("blas" | "js")[];
  const rounds = Number(flag(args, "rounds", quick ? "1" : "3"));
  const anchor = hasFlag(args, "anchor");
  const tfjsArg = flag(args, "tfjs");
  const tfjsDir = hasFlag(args, "tfjs") ? (tfjsArg !== undefined && !tfjsArg.startsWith("--") ? tfjsArg : process.env.CHAINRULE_TFJS ?? "/tmp/tfjs") : null;
  const anchorScript = anchorPath("torch_mlp.py");
  const py = anchor ? findPython() : null;
  if (anchor && (py === null || !existsSync(anchorScript))) console.log(`--anchor: PyTorch or ${anchorScript} not found; skipping the anchor`);

  const rows: Record<string, string | number>[] = [];
  const results: Record<string, unknown>[] = [];
  for (const backend of backends) {
    if (trySelectBackend(backend) === undefined) continue;
    for (const batch of batches) {
      // Steps sized so one measurement takes ~1-2 s on this kind of machine (~20k samples on blas, ~1k on js).
      const samples = (backend === "js" ? 5000 : 25_000) * (quick ? 0.5 : 1);
      const steps = Number(flag(args, "steps") ?? Math.max(5, Math.round(samples / batch)));
      const t = makeTrainer(batch);
      timeSteps(t, Math.min(20, steps)); // warm-up (JIT, buffers)
      const sps: number[] = [], cpuSps: number[] = [], torch: number[] = [], tfjs: number[] = [];
      for (let r = 0; r < rounds; r++) {
        const m = timeSteps(t, steps);
        sps.push((steps * batch) / (m.wallMs / 1000));
        cpuSps.push((steps * batch) / (m.cpuUs / 1e6));
        if (anchor && py && existsSync(anchorScript) && backend === "blas") torch.push(runTorch(py, anchorScript, batch, Math.max(50, steps)));
        if (tfjsDir !== null && backend === "js") tfjs.push(runTfjs(tfjsDir, batch, Math.max(5, Math.round(3000 / batch))));
      }
      const prof = await profile(batch, Math.max(5, Math.round(steps / 2)));
      const row: Record<string, string | number> = {
        backend, batch, "samples/s": Math.round(median(sps)), "per CPU-s": Math.round(median(cpuSps)), "ms/step": prof.msPerStep,
        "gemm%": 100 * prof.gemm, "elem%": 100 * prof.elementwise, "optim%": 100 * prof.optimizer, "gc%": 100 * prof.gc, "other%": 100 * prof.other,
      };
      const res: Record<string, unknown> = { backend, batch, steps, samplesPerSec: median(sps), rounds: sps, cpuRounds: cpuSps, profile: prof };
      if (torch.length > 0) {
        const ratio = median(sps.map((s, i) => s / torch[i]));
        row["torch s/s"] = Math.round(median(torch));
        row["x torch"] = ratio;
        Object.assign(res, { torchSamplesPerSec: torch, ratioVsTorch: ratio });
      }
      if (tfjs.length > 0) {
        const ratio = median(sps.map((s, i) => s / tfjs[i]));
        row["tfjs s/s"] = Math.round(median(tfjs));
        row["x tfjs"] = ratio;
        Object.assign(res, { tfjsSamplesPerSec: tfjs, ratioVsTfjs: ratio });
      }
      rows.push(row);
      results.push(res);
      if (hasFlag(args, "verbose")) console.log(`  ${backend} batch ${batch} ms/step by kernel:`, Object.entries(prof.kernelMs).map(([k, v]) => `${k} ${v.toFixed(3)}`).join(", "));
    }
  }
  useBackend("auto");
  console.log(`MLP 784-512-256-10 training, one thread (median of ${rounds} rounds; shares from a separate instrumented pass):`);
  table(rows);
  return { model: "784-512-256-10 ReLU, cross-entropy, Adam", runs: results };
}

runIfMain(import.meta.url, "mlp", main);
