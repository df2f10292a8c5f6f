/**
 * Data-parallel throughput: the reference MLP (784-512-256-10, ReLU, cross-entropy,
 * Adam lr 1e-3) at global batch 512, trained by DataParallel with 1, 2 and 4 workers,
 * plus a plain single-thread core loop in the main thread (flat parameters, BufferArena) for reference.
 * Runs are alternated (round-robin over worker counts) and medians reported; the time
 * outside forward/backward is broken down per step; resident memory is measured in a
 * fresh child process per worker count.
 *
 *   npx tsx bench/parallel.ts [--workers 1,2,4] [--batch 512] [--steps 6] [--rounds 3] [--warmup 300] [--quick] [--no-rss] [--ceiling] [--one-by-one]
 * (steps are posted one ahead, as fit() and the CLI post them; --one-by-one awaits each before posting the next)
 * (--warmup: untimed steps each pool takes first, default 300. Every worker thread JIT-compiles core on
 * its own, and V8 keeps compiling the once-per-step functions with TurboFan for the first ~350 steps
 * (20-100 ms each, 2.3 s of CPU for the CNN's 2 workers; `node --trace-opt`). The compiles run on V8's
 * helper threads: with 1 worker they take the idle core, with 2 workers on 2 cores they take CPU from
 * a rank, so a short warm-up measures 2 workers low.)
 * (speed-up: the median over rounds of each round's ratio to the first worker count's run in the
 * same round; the order of the pools is reversed every other round, so slow drifts of a shared
 * machine fall on both sides.)
 * (--ceiling: also in every non-quick run; measures how far 2 threads scale on this machine at all, and what a
 *  barrier per step costs by itself: two trainings in lockstep, nothing exchanged)
 */
import { spawnSync } from "node:child_process";
import os from "node:os";
import { fileURLToPath } from "node:url";
import { BufferArena, F, Generator, Tensor, backendReport, manualSeed, nn, optim, makeDataset, toShared, type Dataset } from "../packages/core/src/index.js";
import { DataParallel, MODELS, mlp, simdAvailable, type StepStats } from "../packages/parallel/src/index.js";
import { flag, hasFlag, median, numList, postAhead, runIfMain, table } from "./_util.js";

const SIZES = [784, 512, 256, 10];

function dataset(rows: number): Dataset {
  const g = new Generator(0);
  return toShared(makeDataset({ inputs: new Float32Array(rows * 784).map(() => g.random()), targets: new Int32Array(rows).map(() => g.randint(10)), inputShape: [784] }));
}

function makeDp(workers: number): DataParallel {
  return new DataParallel({ model: { module: MODELS, export: "mlp", options: { sizes: SIZES } }, loss: "crossEntropy", optimizer: { type: "adam", lr: 1e-3 }, workers, seed: 0 });
}

/** Batches of shuffled indices, as fit() makes them. */
function indexBatches(rows: number, batch: number, n: number): Int32Array[] {
  const out: Int32Array[] = [];
  for (let e = 0; out.length < n; e++) {
    const p = new Generator(e).permutation(rows);
    for (let a = 0; a + batch <= rows && out.length < n; a += batch) out.push(p.slice(a, a + batch));
  }
  return out;
}

/**
 * A plain core training loop in the main thread (no DataParallel), samples/s: the same gather per
 * step, one flat parameter buffer, activations reused by BufferArena.
 */
function singleThread(ds: Dataset, idx: Int32Array[]): number {
  manualSeed(0);
  const model = mlp({ sizes: SIZES });
  nn.flattenParameters(model);
  const opt = new optim.Adam(model.parameters(), { lr: 1e-3 });
  const arena = new BufferArena();
  const step = (b: Int32Array) => {
    const x = new Float32Array(b.length * 784), y = new Int32Array(b.length);
    b.forEach((r, i) => { x.set(ds.inputs.subarray(r * 784, (r + 1) * 784), i * 784); y[i] = ds.targets[r]; });
    opt.zeroGrad();
    arena.run(() => F.crossEntropy(model.forward(new Tensor(x, [b.length, 784])), y).backward());
    opt.step();
  };
  for (let i = 0; i < 5; i++) step(idx[i % idx.length]); // JIT warm-up
  const t0 = performance.now();
  let rows = 0;
  for (const b of idx) { step(b); rows += b.length; }
  return rows / ((performance.now() - t0) / 1000);
}

/** Child-process mode: init W workers, take 3 steps, print resident memory. */
async function rssChild(workers: number, batch: number): Promise<void> {
  const ds = dataset(batch * 2);
  const before = process.memoryUsage().rss;
  let rss: number;
  if (workers === 0) {
    singleThread(ds, indexBatches(batch * 2, batch, 3));
    rss = process.memoryUsage().rss;
  } else {
    const dp = makeDp(workers);
    await dp.init();
    for (const b of indexBatches(batch * 2, batch, 3)) await dp.step({ dataset: ds, indices: b });
    rss = process.memoryUsage().rss;
    await dp.close();
  }
  console.log(JSON.stringify({ rssMiB: rss / 2 ** 20, baseMiB: before / 2 ** 20 }));
}

function rssOf(workers: number, batch: number): { rssMiB: number; baseMiB: number } | { error: string } {
  const r = spawnSync(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), "--rss-child", String(workers), "--batch", String(batch)], { encoding: "utf8", timeout: 300_000 });
  const line = r.stdout.trim().split("\n").pop() ?? "";
  try { return JSON.parse(line); } catch { return { error: (r.stderr || line).slice(-300) }; }
}

/** What a ceiling thread runs (parallel-ceiling-worker.mjs): fixed work, or training steps of a plain trainer. */
export type CeilingKind = "gemm" | "scalar" | "train" | "lockstep" | "cnnLockstep" | "gptLockstep";

/**
 * Two ceiling threads, kept warm, measuring one round at a time: 1 thread alone, then 2 at once.
 * `round()` returns 2 threads' aggregate throughput / 1 thread's, so callers can alternate
 * ceiling rounds with their own.
 */
export async function startCeiling(kind: CeilingKind): Promise<{ round(): Promise<number>; close(): Promise<void> }> {
  const { Worker } = await import("node:worker_threads");
  const steps = kind !== "gemm" && kind !== "scalar";
  const reps = kind === "gemm" ? 20 : kind === "cnnLockstep" || kind === "gptLockstep" ? 12 : steps ? 10 : 6;
  const barrier = new SharedArrayBuffer(8);
  const mk = () => new Worker(new URL("./parallel-ceiling-worker.mjs", import.meta.url), { workerData: { kind, reps, barrier } });
  const ws = [mk(), mk()];
  let threads = 1; // threads in the current run (the lockstep barrier's count)
  const run = (w: InstanceType<typeof Worker>) => new Promise<number>((res, rej) => {
    w.once("error", rej);
    w.once("message", (ms: number) => { w.off("error", rej); res(ms); });
    w.postMessage(threads);
  });
  const close = async () => { await Promise.all(ws.map((w) => w.terminate())); };
  try {
    threads = 2;
    for (let i = 0; i < (steps ? 4 : 1); i++) await Promise.all(ws.map(run)); // warm-up (JIT: training steps need ~30)
  } catch (e) {
    await close();
    throw e;
  }
  return {
    async round() {
      threads = 1;
      const one = await run(ws[0]);
      threads = 2;
      const t0 = performance.now();
      await Promise.all(ws.map(run));
      return (2 * one) / (performance.now() - t0);
    },
    close,
  };
}

/**
 * The machine's own scaling ceiling: the same fixed work (the MLP's forward GEMMs on a
 * 256-row shard; a scalar JS loop; training steps) in 1 thread, then in 2 threads at once, alternating.
 * Returns the median of (2 threads' aggregate throughput / 1 thread's): what 2 workers
 * could reach at best with zero synchronisation, on this machine at this load.
 */
export async function ceiling(kind: CeilingKind, rounds: number): Promise<{ ratio: number; runs: number[] }> {
  const c = await startCeiling(kind);
  const ratios: number[] = [];
  try {
    for (let r = 0; r < rounds; r++) ratios.push(await c.round());
  } finally {
    await c.close();
  }
  return { ratio: median(ratios), runs: ratios };
}

export async function main(args: string[]): Promise<Record<string, unknown>> {
  const quick = hasFlag(args, "quick");
  const workersList = numList(args, "workers", [1, 2, 4]);
  const batch = Number(flag(args, "batch", "512"));
  const steps = Number(flag(args, "steps", quick ? "3" : "6"));
  const rounds = Number(flag(args, "rounds", quick ? "1" : "3"));
  const warmup = Number(flag(args, "warmup", quick ? "4" : "300"));
  const rows = batch * 4;
  const ds = dataset(rows);
  const idx = indexBatches(rows, batch, steps);
  console.log(`load average ${os.loadavg().map((x) => x.toFixed(2)).join(" ")} on ${os.cpus().length} cores`);
  console.log(`MLP ${SIZES.join("-")}, Adam, global batch ${batch}; ${warmup} warm-up steps, then ${steps} steps x ${rounds} rounds (alternating), ${hasFlag(args, "one-by-one") ? "each step awaited before the next is posted" : "each step posted while the last runs"}; backend: ${backendReport().reason}; reduce/Adam kernels: ${simdAvailable() ? "wasm simd" : "js"}`);

  // Each step is posted before the last one is awaited, as fit() and the CLI do: the workers go
  // from one step to the next without a round trip through the main thread (--one-by-one: await each).
  const oneByOne = hasFlag(args, "one-by-one");
  const run = (dp: DataParallel, batches: Int32Array[], out: StepStats[] | null) =>
    postAhead(batches.length, (i) => dp.trainStep({ dataset: ds, indices: batches[i] }), (r) => out?.push(r.stats), oneByOne);
  const dps = new Map<number, DataParallel>();
  for (const w of workersList) {
    const dp = makeDp(w);
    await dp.init();
    await run(dp, Array.from({ length: warmup }, (_, i) => idx[i % idx.length]), null); // warm-up (JIT in every thread, scratch buffers)
    dps.set(w, dp);
  }
  const sps = new Map<number | "main", number[]>([["main", []], ...workersList.map((w) => [w, []] as [number, number[]])]);
  const stats = new Map<number, StepStats[]>(workersList.map((w) => [w, []]));
  try {
    for (let r = 0; r < rounds; r++) {
      sps.get("main")!.push(singleThread(ds, idx));
      for (const w of r % 2 === 0 ? workersList : [...workersList].reverse()) {
        const dp = dps.get(w)!;
        const t0 = performance.now();
        await run(dp, idx, stats.get(w)!);
        sps.get(w)!.push((steps * batch) / ((performance.now() - t0) / 1000));
      }
    }
  } finally {
    for (const dp of dps.values()) await dp.close();
  }

  const baseRuns = sps.get(workersList[0])!;
  const ratiosToFirst = (w: number | "main") => sps.get(w)!.map((v, r) => v / baseRuns[r]); // per round, paired
  const rowsOut: Record<string, string | number>[] = [];
  const perWorkers: Record<string, unknown> = {};
  const mainSps = median(sps.get("main")!);
  for (const w of workersList) {
    const s = stats.get(w)!, m = (k: keyof StepStats) => median(s.map((x) => x[k] as number));
    const v = median(sps.get(w)!), ratios = ratiosToFirst(w);
    const wall = m("wallMs");
    const row = {
      workers: String(w), "samples/s": v, speedup: median(ratios), best: Math.max(...sps.get(w)!), "best speedup": Math.max(...sps.get(w)!) / Math.max(...sps.get(workersList[0])!), "ms/step": wall, "fwd+bwd": m("computeMs"),
      gather: m("gatherMs"), reduce: m("reduceMs"), optim: m("optMs"), wait: m("waitMs"), sync: m("syncMs"), dispatch: m("dispatchMs"),
      "overhead%": median(s.map((x) => (100 * x.overheadMs) / x.wallMs)),
    };
    rowsOut.push(row);
    perWorkers[w] = { samplesPerSec: v, bestSamplesPerSec: row.best, runs: sps.get(w), speedupVs1: row.speedup, speedupRuns: ratios, stepMs: wall, computeMs: row["fwd+bwd"], waitMs: row.wait, gatherMs: row.gather, reduceMs: row.reduce, optMs: row.optim, syncMs: row.sync, dispatchMs: row.dispatch, overheadPct: row["overhead%"] };
  }
  rowsOut.push({ ...Object.fromEntries(Object.keys(rowsOut[0]).map((k) => [k, ""])), workers: "main thread", "samples/s": mainSps, speedup: median(ratiosToFirst("main")), "ms/step": (batch / mainSps) * 1000 });
  table(rowsOut);
  console.log("(samples/s: median over rounds; speedup: median of the per-round ratios; best: the fastest round (least disturbed by other load); ms are medians per step; per-rank parts are the max over ranks; wait = at the in-worker barrier, part of sync; dispatch = wall − the longest rank's whole step (ringing, waking, noticing), part of sync; overhead% = (wall − max fwd+bwd) / wall, median over steps)");

  let ceil: Record<string, unknown> | undefined;
  if (hasFlag(args, "ceiling") || !quick) {
    const g = await ceiling("gemm", 5), sc = await ceiling("scalar", 5), tr = await ceiling("train", 5), ls = await ceiling("lockstep", 5);
    ceil = { gemm: g, scalar: sc, train: tr, lockstep: ls };
    const runs = (c: { runs: number[] }) => c.runs.map((x) => x.toFixed(2)).join(" ");
    console.log(`scaling ceiling (independent work, 2 threads vs 1, median of 5): GEMM ${g.ratio.toFixed(2)}x, scalar JS ${sc.ratio.toFixed(2)}x, ` +
      `training steps (256 rows, own model per thread) ${tr.ratio.toFixed(2)}x, the same in lockstep (a barrier per step, nothing exchanged) ${ls.ratio.toFixed(2)}x  [${runs(g)} | ${runs(sc)} | ${runs(tr)} | ${runs(ls)}]`);
    const two = perWorkers[2] as { speedupVs1: number } | undefined;
    if (two) console.log(`2 workers: ${two.speedupVs1.toFixed(2)}x of 1 worker, ${(two.speedupVs1 / tr.ratio * 100).toFixed(0)}% of what two independent trainings reach on this machine now, ${(two.speedupVs1 / ls.ratio * 100).toFixed(0)}% of two in lockstep`);
  }

  const memory: Record<string, unknown> = {};
  if (!hasFlag(args, "no-rss")) {
    for (const w of [0, ...workersList]) memory[w === 0 ? "mainThreadOnly" : `${w}workers`] = rssOf(w, batch);
    console.log("resident memory (MiB, after 3 steps, fresh process each):", JSON.stringify(memory));
  }
  return { model: SIZES, batch, steps, rounds, warmup, backend: backendReport(), simd: simdAvailable(), loadavg: os.loadavg(), mainThreadSamplesPerSec: mainSps, mainThreadRuns: sps.get("main"), workers: perWorkers, ceiling: ceil, memory };
}

if (process.argv.includes("--rss-child")) {
  await rssChild(Number(flag(process.argv, "rss-child")), Number(flag(process.argv, "batch", "512")));
} else {
  runIfMain(import.meta.url, "parallel", main);
}
