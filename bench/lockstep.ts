/**
 * Data parallelism against its real limit: for the MLP at global batch 512, the anchor CNN at 128
 * and the GPT at 24, DataParallel with 2 workers against 1 worker at half the batch (the same work
 * per worker), beside the lockstep ceiling measured in the same rounds (parallel-ceiling-worker.mjs:
 * two plain trainings of the same model at the same per-thread batch, a barrier after every step,
 * nothing exchanged), and where the 2-worker step's wall time goes (DataParallel's step statistics).
 *
 *   tsx bench/lockstep.ts [--models mlp,cnn,gpt] [--rounds 5] [--quick]
 *
 * Each round runs the 1-worker pool, the 2-worker pool and a ceiling round, the order rotating from
 * round to round; ratios are medians of per-round ratios. Steps are posted one ahead, as fit() posts
 * them, with shuffled row indices (the gather fit() does). "% of ceiling" = (2w/1w) / ceiling.
 */
import { loadavg } from "node:os";
import { resolve } from "node:path";
import { Generator, makeDataset, toShared, type Dataset } from "../packages/core/src/index.js";
import { DataParallel, MODELS, type StepStats } from "../packages/parallel/src/index.js";
import { CATALOGUE_MODULE } from "../packages/cli/src/models.js";
import { CFG } from "./gpt.js";
import { startCeiling, type CeilingKind } from "./parallel.js";
import { flag, hasFlag, median, postAhead, repoRoot, runIfMain, table } from "./_util.js";

interface Case {
  name: "mlp" | "cnn" | "gpt";
  title: string;
  /** Rows per worker per step (the global batch with 2 workers is twice this). */
  batch: number;
  /** Samples per row: tokens per window for the GPT. */
  perRow: number;
  model: { module: string; export: string; options: unknown };
  optimizer: { type: "adam" | "adamw"; lr: number };
  ceiling: CeilingKind;
  /** Untimed steps per pool first (V8 keeps optimising per-step code for the first few hundred), timed steps per round. */
  warmup: number;
  steps: number;
  data: (rows: number, g: Generator) => Dataset;
}

const T = CFG.blockSize;
const CASES: Case[] = [
  {
    name: "mlp", title: "MLP 784-512-256-10, Adam, global batch 512", batch: 256, perRow: 1, ceiling: "lockstep", warmup: 300, steps: 30,
    model: { module: MODELS, export: "mlp", options: { sizes: [784, 512, 256, 10] } }, optimizer: { type: "adam", lr: 1e-3 },
    data: (n, g) => makeDataset({ inputs: new Float32Array(n * 784).map(() => g.random()), targets: new Int32Array(n).map(() => g.randint(10)), inputShape: [784] }),
  },
  {
    name: "cnn", title: "anchor CNN, Adam, global batch 128", batch: 64, perRow: 1, ceiling: "cnnLockstep", warmup: 150, steps: 12,
    model: { module: resolve(repoRoot, "packages/core/src/models/cnn.ts"), export: "createMnistCnn", options: {} }, optimizer: { type: "adam", lr: 1e-3 },
    data: (n, g) => makeDataset({ inputs: new Float32Array(n * 784).map(() => g.random()), targets: new Int32Array(n).map(() => g.randint(10)), inputShape: [1, 28, 28] }),
  },
  {
    name: "gpt", title: "GPT L4 H4 C128 T64, AdamW, global batch 24", batch: 12, perRow: T, ceiling: "gptLockstep", warmup: 100, steps: 15,
    model: { module: CATALOGUE_MODULE, export: "buildJobModel", options: { model: { type: "gpt", ...CFG, vocabSize: undefined }, ctx: { inputShape: [T], outputSize: CFG.vocabSize } } },
    optimizer: { type: "adamw", lr: 1e-3 },
    data: (n, g) => makeDataset({ inputs: new Float32Array(n * T).map(() => g.randint(CFG.vocabSize)), targets: new Int32Array(n * T).map(() => g.randint(CFG.vocabSize)), inputShape: [T], targetShape: [T] }),
  },
];

/** The step statistics broken out per step (medians over the timed steps). */
const PARTS = ["wallMs", "computeMs", "waitMs", "reduceMs", "optMs", "gatherMs", "dispatchMs"] as const;

async function measure(c: Case, rounds: number, warmup: number, steps: number): Promise<Record<string, unknown>> {
  const rows = 8 * c.batch;
  const ds = toShared(c.data(rows, new Generator(0)));
  const g = new Generator(1);
  const pools = [1, 2].map((workers) => ({
    workers, batch: workers * c.batch, stats: [] as StepStats[], sps: [] as number[],
    dp: new DataParallel({ model: c.model, loss: "crossEntropy", optimizer: c.optimizer, workers, seed: 0 }),
  }));
  const run = async (p: (typeof pools)[number], n: number, record: boolean) => {
    const batches = Array.from({ length: n }, () => g.permutation(rows).slice(0, p.batch));
    const t0 = performance.now();
    await postAhead(n, (i) => p.dp.trainStep({ dataset: ds, indices: batches[i] }), (r) => { if (record) p.stats.push(r.stats); });
    if (record) p.sps.push((n * p.batch * c.perRow * 1000) / (performance.now() - t0));
  };
  const ceil = await startCeiling(c.ceiling);
  const ceilings: number[] = [];
  const load = [loadavg()[0]];
  try {
    for (const p of pools) {
      await p.dp.init();
      await run(p, warmup, false);
    }
    const order: (() => Promise<void>)[] = [() => run(pools[0], steps, true), () => run(pools[1], steps, true), async () => { ceilings.push(await ceil.round()); }];
    for (let r = 0; r < rounds; r++) {
      for (let k = 0; k < order.length; k++) await order[(r + k) % order.length]();
      load.push(loadavg()[0]);
    }
  } finally {
    await ceil.close();
    for (const p of pools) await p.dp.close();
  }
  const ratios = pools[1].sps.map((v, i) => v / pools[0].sps[i]);
  const ratio = median(ratios), ceiling = median(ceilings);
  const parts = pools.map((p) => Object.fromEntries(PARTS.map((k) => [k, median(p.stats.map((s) => s[k]))])));
  return { name: c.name, title: c.title, rounds, steps, warmup, load, samplesPerSec: { oneWorker: pools[0].sps, twoWorkers: pools[1].sps }, ratios, ratio, ceilings, ceiling, ofCeiling: ratio / ceiling, stepParts: { oneWorker: parts[0], twoWorkers: parts[1] } };
}

export async function main(args: string[]): Promise<Record<string, unknown>> {
  const quick = hasFlag(args, "quick");
  const rounds = Number(flag(args, "rounds", quick ? "1" : "5"));
  const names = (flag(args, "models") ?? "mlp,cnn,gpt").split(",");
  for (const n of names) if (!CASES.some((c) => c.name === n)) throw new Error(`bench lockstep: unknown model '${n}' (models: ${CASES.map((c) => c.name).join(", ")})`);
  const results: Record<string, unknown>[] = [];
  for (const c of CASES.filter((x) => names.includes(x.name))) {
    const r = await measure(c, rounds, quick ? 5 : c.warmup, quick ? 3 : c.steps);
    console.log(`${c.title}: 2w/1w ${(r.ratio as number).toFixed(2)}x, ceiling ${(r.ceiling as number).toFixed(2)}x [${(r.ratios as number[]).map((x) => x.toFixed(2)).join(" ")} | ${(r.ceilings as number[]).map((x) => x.toFixed(2)).join(" ")}], load ${(r.load as number[]).map((x) => x.toFixed(1)).join(" ")}`);
    results.push(r);
  }
  const rowsOut = results.map((r) => {
    const one = (r.stepParts as Record<string, Record<string, number>>).oneWorker, two = (r.stepParts as Record<string, Record<string, number>>).twoWorkers;
    return {
      model: r.name as string, "2w/1w": r.ratio as number, ceiling: r.ceiling as number, "% of ceiling": 100 * (r.ofCeiling as number),
      "1w ms": one.wallMs, "1w fwd+bwd": one.computeMs, "1w opt": one.optMs,
      "2w ms": two.wallMs, "2w fwd+bwd": two.computeMs, wait: two.waitMs, reduce: two.reduceMs, opt: two.optMs, gather: two.gatherMs, dispatch: two.dispatchMs,
    };
  });
  console.log(`\n2 workers at 2B vs 1 worker at B against the lockstep ceiling, ${rounds} rotating rounds (medians; ms per step, medians over steps; 2w parts are the max over ranks):`);
  table(rowsOut);
  return { models: results };
}

runIfMain(import.meta.url, "lockstep", main);
