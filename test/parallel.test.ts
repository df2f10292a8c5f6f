/** DataParallel with real worker threads: parity with one worker and with a plain core loop, determinism, resume. */
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { describe, expect, test } from "vitest";
import { F, Tensor, noGrad } from "@chainrule/core";
import { DataParallel, type OptimizerSpec } from "@chainrule/parallel";
import { MODELS, batches, makeData, maxElemRel, referenceRun, relDiff } from "./fixtures/parallel-data.ts";

const D = 6, H = 12, C = 4, N = 70, BS = 24; // 70 rows at 24: batches 24, 24, 22 — shards uneven for 3 and 4 workers
const SIZES = [D, H, C];
const SEED = 11;

async function train(workers: number, optimizer: OptimizerSpec, idx: Int32Array[], extra: Partial<ConstructorParameters<typeof DataParallel>[0]> = {}, ds = makeData(N, D, C)) {
  const dp = new DataParallel({ model: { module: MODELS, export: "mlp", options: { sizes: SIZES } }, loss: "crossEntropy", optimizer, workers, seed: SEED, ...extra });
  try {
    await dp.init();
    const losses: number[] = [], gradNorms: (number | undefined)[] = [];
    for (const b of idx) {
      losses.push(await dp.step({ dataset: ds, indices: b }));
      gradNorms.push(dp.lastStats!.gradNorm);
    }
    return { params: dp.params.slice(), losses, gradNorms, state: dp.getState() };
  } finally {
    await dp.close();
  }
}

const sgd: OptimizerSpec = { type: "sgd", lr: 0.1, momentum: 0.9 };
const adam: OptimizerSpec = { type: "adam", lr: 1e-2 };

describe.each([["sgd", sgd], ["adam", adam]] as const)("10 %s steps", (name, opt) => {
  const ds = makeData(N, D, C);
  const idx = batches(N, BS, 10);
  // A last batch of 5 rows: 4 workers get shards 2, 1, 1, 1.
  idx[9] = idx[9].slice(0, 5);
  const ref = referenceRun(ds, SIZES, SEED, { type: opt.type as "sgd" | "adam", lr: opt.lr!, momentum: (opt as { momentum?: number }).momentum }, idx, "crossEntropy");

  let one: Float32Array | null = null;
  test("1 worker equals the plain single-thread core loop", async () => {
    one = (await train(1, opt, idx, {}, ds)).params;
    expect(relDiff(one, ref)).toBeLessThan(1e-6);
  });

  test.each([2, 3, 4])("%i workers equal 1 worker and the core loop within 1e-5 relative", async (w) => {
    const many = await train(w, opt, idx, {}, ds);
    expect(relDiff(many.params, ref)).toBeLessThan(1e-5);
    if (one) expect(relDiff(many.params, one)).toBeLessThan(1e-5);
    expect(maxElemRel(many.params, ref)).toBeLessThan(1e-4);
    expect(many.state.step).toBe(10);
    expect(name).toBeTruthy();
  });
});

test("two runs with the same seed and 3 workers are bit-identical (Adam, clipping, micro-batches)", async () => {
  const idx = batches(N, BS, 10);
  const extra = { clipGradNorm: 0.5, microBatchSize: 5 };
  const a = await train(3, adam, idx, extra);
  const b = await train(3, adam, idx, extra);
  expect(Buffer.from(a.params.buffer).equals(Buffer.from(b.params.buffer))).toBe(true);
  expect(a.losses).toEqual(b.losses);
  for (const k of Object.keys(a.state.optimizer.buffers)) {
    expect(Buffer.from(a.state.optimizer.buffers[k].buffer).equals(Buffer.from(b.state.optimizer.buffers[k].buffer))).toBe(true);
  }
});

test("global-norm clipping and micro-batch accumulation match the core loop", async () => {
  const ds = makeData(N, D, C);
  const idx = batches(N, BS, 10);
  const ref = referenceRun(ds, SIZES, SEED, { type: "adam", lr: 1e-2 }, idx, "crossEntropy", 0.5);
  const dp = await train(2, adam, idx, { clipGradNorm: 0.5, microBatchSize: 7 }, ds);
  expect(relDiff(dp.params, ref)).toBeLessThan(1e-5);
});

describe.each([["sgd with momentum", sgd], ["adam", adam]] as const)("clipping that acts on every step (%s)", (_name, opt) => {
  // This data's global gradient norms are 0.2-0.41: clipGradNorm 0.5 above never clips, 0.05 scales
  // every step's gradient by 1/4 to 1/8. Clipping each rank's chunk by its own norm would scale each
  // chunk by a different, larger factor.
  const CLIP = 0.05;
  const ds = makeData(N, D, C);
  const idx = batches(N, BS, 6);
  const ref = referenceRun(ds, SIZES, SEED, { type: opt.type as "sgd" | "adam", lr: opt.lr!, momentum: (opt as { momentum?: number }).momentum }, idx, "crossEntropy", CLIP);

  test.each([1, 2, 3])("%i workers match core's clipGradNorm over the whole batch", async (w) => {
    const got = await train(w, opt, idx, { clipGradNorm: CLIP }, ds);
    expect(relDiff(got.params, ref)).toBeLessThan(1e-5);
    expect(got.gradNorms).toHaveLength(idx.length);
    for (const n of got.gradNorms) expect(n).toBeGreaterThan(2 * CLIP); // every step clipped
  });
});

test("reuseActivations: false keeps a cache the model builds in its first forward; the default activation reuse overwrites it", async () => {
  const ds = makeData(N, D, C);
  const idx = batches(N, BS, 4);
  const ref = referenceRun(ds, SIZES, SEED, { type: "adam", lr: 1e-2 }, idx, "crossEntropy");
  const lazy = { model: { module: MODELS, export: "LazyCache", options: { sizes: SIZES } } };
  const kept = await train(2, adam, idx, { ...lazy, reuseActivations: false }, ds);
  expect(relDiff(kept.params, ref)).toBeLessThan(1e-5); // the cache's mean stays 1
  const reused = await train(2, adam, idx, lazy, ds);
  expect(relDiff(reused.params, ref)).toBeGreaterThan(1e-3); // the cache became the next step's 0.5s
});

test("float targets (mseLoss) with 3 workers match the core loop", async () => {
  const ds = makeData(N, D, 0);
  const idx = batches(N, BS, 10);
  const sizes = [D, H, 1];
  const ref = referenceRun(ds, sizes, SEED, { type: "sgd", lr: 0.05 }, idx, "mseLoss");
  const dp = new DataParallel({ model: { module: MODELS, export: "mlp", options: { sizes } }, loss: "mseLoss", optimizer: { type: "sgd", lr: 0.05 }, workers: 3, seed: SEED });
  await dp.init();
  for (const b of idx) await dp.step({ dataset: ds, indices: b });
  expect(relDiff(dp.params, ref)).toBeLessThan(1e-5);
  await dp.close();
});

test("fit: per-epoch reshuffle, callbacks, evaluate; resume from getState is bit-identical to an uninterrupted run", async () => {
  const ds = makeData(N, D, C);
  const mk = () => new DataParallel({ model: { module: MODELS, export: "mlp", options: { sizes: SIZES } }, loss: "crossEntropy", optimizer: { type: "adamw", lr: 1e-2 }, workers: 2, seed: SEED });
  const lr = (s: number) => 1e-2 * (1 - s / 20); // a schedule: resumed runs must get the same lr per step
  // Uninterrupted: 3 epochs x 3 batches.
  const full = mk();
  await full.init();
  const seen: number[] = [];
  const epochs: number[] = [];
  const before = await full.evaluate(ds);
  const res = await full.fit(ds, { epochs: 3, batchSize: BS, lr, onStep: (i) => { seen.push(i.step); }, onEpoch: (e) => { epochs.push(e.loss); } });
  const after = await full.evaluate(ds);
  expect(res.steps).toBe(9);
  expect(seen).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9]);
  expect(epochs.length).toBe(3);
  expect(after.loss).toBeLessThan(before.loss);
  // evaluate scores the trained parameters: the main thread's replica (same shared parameters) over all rows agrees.
  const all = noGrad(() => full.model.forward(new Tensor(ds.inputs.slice(), [N, D])));
  const labels = ds.targets as Int32Array;
  let correct = 0;
  for (let i = 0; i < N; i++) {
    const row = Array.from(all.data.subarray(i * C, (i + 1) * C));
    if (row.indexOf(Math.max(...row)) === labels[i]) correct++;
  }
  expect(after.accuracy).toBe(correct / N);
  expect(after.loss).toBeCloseTo(F.crossEntropy(all, labels).item(), 5);
  const want = full.getState();
  await full.close();

  // Interrupted mid-epoch, state saved, new instance resumes. fit keeps the next step posted, so
  // aborting in step 4's onStep lets step 5 (already posted) complete, and it gets its onStep too.
  const a = mk();
  await a.init();
  const ac = new AbortController();
  const seenA: number[] = [];
  const resA = await a.fit(ds, { epochs: 3, batchSize: BS, lr, signal: ac.signal, onStep: (i) => { seenA.push(i.step); if (i.step === 4) ac.abort(); } });
  expect(resA.stopped).toBe(true);
  expect(seenA).toEqual([1, 2, 3, 4, 5]);
  const saved = structuredClone(a.getState());
  await a.close();
  const b = mk();
  await b.init();
  b.setState(saved);
  expect(b.stepCount).toBe(5);
  await b.fit(ds, { epochs: 3, batchSize: BS, lr, startStep: saved.step });
  const got = b.getState();
  await b.close();
  expect(got.step).toBe(9);
  expect(Buffer.from(got.params.buffer).equals(Buffer.from(want.params.buffer))).toBe(true);
  for (const k of ["expAvg", "expAvgSq"]) expect(Buffer.from(got.optimizer.buffers[k].buffer).equals(Buffer.from(want.optimizer.buffers[k].buffer))).toBe(true);
});

test("steps run through the ranks' step loops: after the loops idled out, after evaluate, with a new dataset and a new lr, they equal steps back to back", async () => {
  const ds = makeData(N, D, C), ds2 = makeData(N, D, C, 5);
  const idx = batches(N, BS, 6);
  const run = async (pause: boolean) => {
    const dp = new DataParallel({ model: { module: MODELS, export: "mlp", options: { sizes: SIZES } }, loss: "crossEntropy", optimizer: adam, workers: 2, seed: SEED });
    try {
      await dp.init();
      for (let i = 0; i < idx.length; i++) {
        if (pause && i === 2) await new Promise((r) => setTimeout(r, 1300)); // longer than the loops idle (1 s): they exit and restart
        if (pause && i === 3) await dp.evaluate(ds); // evaluate stops the loops, the next step restarts them
        const data = i === 4 ? ds2 : ds; // a new dataset restarts them too
        await dp.step({ dataset: data, indices: idx[i] }, { lr: i === 5 ? 3e-3 : undefined });
      }
      return { params: dp.params.slice(), threads: dp.threads };
    } finally {
      await dp.close();
    }
  };
  const a = await run(false), b = await run(true);
  expect(a.threads).toBe(2);
  expect(Buffer.from(a.params.buffer).equals(Buffer.from(b.params.buffer))).toBe(true);
});

describe.each([
  ["adam, 2 workers", 2, adam, {}],
  ["sgd with momentum, 3 workers", 3, sgd, {}],
  ["adam, clipping and micro-batches, 3 workers", 3, adam, { clipGradNorm: 0.5, microBatchSize: 5 }],
  ["adam, 4 workers (a last batch of 5 rows: shards 2, 1, 1, 1)", 4, adam, {}],
] as const)("steps posted while the last one runs (%s)", (_name, workers, opt, extra) => {
  test("equal steps awaited one by one, bit for bit, across a contiguous batch, a new dataset and an lr change", async () => {
    const ds = makeData(N, D, C), ds2 = makeData(N, D, C, 5);
    const idx = batches(N, BS, 10);
    type Step = { data: Parameters<DataParallel["step"]>[0]; lr?: number };
    const plan: Step[] = idx.map((b, i) => ({ data: { dataset: i >= 6 && i < 8 ? ds2 : ds, indices: b }, lr: i >= 4 ? 4e-3 : undefined }));
    plan.splice(3, 0, { data: { dataset: ds, start: 10, end: 34 } }); // contiguous rows: views, no gather
    const run = async (ahead: boolean) => {
      const dp = new DataParallel({ model: { module: MODELS, export: "mlp", options: { sizes: SIZES } }, loss: "crossEntropy", optimizer: opt, workers, seed: SEED, ...extra });
      try {
        await dp.init();
        const losses: number[] = [], steps: number[] = [];
        if (ahead) {
          // Keep two posted: the workers take the next step without waiting for the main thread.
          const posted = plan.map((p) => dp.trainStep(p.data, { lr: p.lr }));
          for (const o of posted) { const r = await o; losses.push(r.loss); steps.push(r.step); }
        } else {
          for (const p of plan) { const r = await dp.trainStep(p.data, { lr: p.lr }); losses.push(r.loss); steps.push(r.step); }
        }
        return { params: dp.params.slice(), losses, steps, state: dp.getState() };
      } finally {
        await dp.close();
      }
    };
    const one = await run(false), ahead = await run(true);
    expect(ahead.steps).toEqual(plan.map((_, i) => i + 1));
    expect(ahead.losses).toEqual(one.losses);
    expect(Buffer.from(ahead.params.buffer).equals(Buffer.from(one.params.buffer))).toBe(true);
    for (const [k, v] of Object.entries(one.state.optimizer.buffers)) expect(Buffer.from(ahead.state.optimizer.buffers[k].buffer).equals(Buffer.from(v.buffer))).toBe(true);
    expect(ahead.state.step).toBe(plan.length);
  });
});

test("getState and setState refuse while a posted step is in flight; evaluate waits for it", async () => {
  const ds = makeData(N, D, C);
  const dp = new DataParallel({ model: { module: MODELS, export: "mlp", options: { sizes: SIZES } }, loss: "crossEntropy", optimizer: adam, workers: 2, seed: SEED });
  try {
    await dp.init();
    const a = dp.step(ds), b = dp.step(ds);
    const ev = dp.evaluate(ds); // runs after both steps
    await a;
    expect(() => dp.getState()).toThrow(/a step is running/);
    await b;
    await ev;
    expect(dp.stepCount).toBe(2);
    expect(dp.getState().step).toBe(2);
  } finally {
    await dp.close();
  }
});

test("the main-thread replica and the workers share one copy of the parameters", async () => {
  const dp = new DataParallel({ model: { module: MODELS, export: "mlp", options: { sizes: SIZES } }, loss: "crossEntropy", optimizer: sgd, workers: 2, seed: SEED });
  await dp.init();
  expect(dp.params.buffer).toBeInstanceOf(SharedArrayBuffer);
  const w = dp.model.stateDict()["0.weight"];
  expect(w.data.buffer).toBe(dp.params.buffer);
  const w0 = w.data[0];
  await dp.step(makeData(N, D, C));
  expect(w.data[0]).not.toBe(w0); // updated in place by a worker
  expect(dp.threads).toBe(2);
  await dp.close();
  expect(dp.threads).toBe(0);
});

test("step statistics split the wall time: a rank slowed by 200 ms shows in its own compute time, in the other rank's barrier wait and in the wall time, not in dispatch", async () => {
  const SLOW = 200, SENTINEL = 12345.5;
  const ds = makeData(N, D, C);
  ds.inputs[20 * D] = SENTINEL; // row 20: 2 workers split rows 0..23 into 0..11 (rank 0) and 12..23 (rank 1)
  const model = { module: MODELS, export: "Faulty", options: { sizes: SIZES, slowOn: SENTINEL, slowMs: SLOW } };
  const dp = new DataParallel({ model, loss: "crossEntropy", optimizer: adam, workers: 2, seed: SEED });
  try {
    await dp.init();
    await dp.step({ dataset: ds, start: 24, end: 48 }); // no sentinel: both ranks quick
    await dp.step({ dataset: ds, start: 0, end: 24 });
    const s = dp.lastStats!;
    expect(s.step).toBe(2);
    expect(s.rows).toBe(24);
    expect(s.rankComputeMs).toHaveLength(2);
    expect(s.rankComputeMs[1]).toBeGreaterThanOrEqual(SLOW * 0.95); // in rank order: the slow rank is rank 1
    expect(s.rankComputeMs[0]).toBeLessThan(SLOW / 2);
    expect(s.computeMs).toBeGreaterThanOrEqual(SLOW * 0.95); // the step's compute is its slowest rank's
    expect(s.waitMs).toBeGreaterThan(SLOW / 2); // rank 0 waited at the gradient barrier for rank 1
    expect(s.wallMs).toBeGreaterThanOrEqual(s.computeMs); // the main thread waited for the slowest rank
    expect(s.dispatchMs).toBeLessThan(s.wallMs - SLOW * 0.95); // the slow rank's time is a rank's step time, not dispatch
    expect(s.overheadMs).toBeLessThan(s.wallMs - SLOW * 0.95);
  } finally {
    await dp.close();
  }
});

test("a pool of more than 10 workers starts without Node's listener-leak warning", async () => {
  const warnings: string[] = [];
  const onWarning = (w: Error) => warnings.push(`${w.name}: ${w.message}`);
  process.on("warning", onWarning);
  const ds = makeData(N, D, C);
  const dp = new DataParallel({ model: { module: MODELS, export: "mlp", options: { sizes: SIZES } }, loss: "crossEntropy", optimizer: adam, workers: 12, seed: SEED });
  try {
    await dp.init();
    await dp.step({ dataset: ds, indices: batches(N, BS, 1)[0] });
    await new Promise((r) => setImmediate(r)); // warnings are emitted on the next tick
  } finally {
    await dp.close();
    process.off("warning", onWarning);
  }
  expect(warnings.filter((w) => /MaxListeners/.test(w))).toEqual([]);
}, 60_000);

test("a long run of steps keeps nothing per step on the main thread (no promise reactions piling up)", async () => {
  // Racing each step against one long-lived "a loop failed" promise left a reaction on it per step:
  // ~0.3 KB a step, 2.5 MB over these 8,000 steps, kept until the pool closed.
  setFlagsFromString("--expose-gc");
  const gc = runInNewContext("gc") as () => void;
  const ds = makeData(N, D, C);
  const dp = new DataParallel({ model: { module: MODELS, export: "mlp", options: { sizes: SIZES } }, loss: "crossEntropy", optimizer: sgd, workers: 2, seed: SEED });
  try {
    await dp.init();
    for (let i = 0; i < 200; i++) await dp.step({ dataset: ds, start: 0, end: BS });
    gc();
    const before = process.memoryUsage().heapUsed;
    for (let i = 0; i < 8000; i++) await dp.step({ dataset: ds, start: 0, end: BS });
    gc();
    expect(process.memoryUsage().heapUsed - before).toBeLessThan(1 << 20);
    // The same with each step posted while the last runs (two in flight).
    const ahead = process.memoryUsage().heapUsed;
    let last = dp.step({ dataset: ds, start: 0, end: BS });
    for (let i = 0; i < 8000; i++) {
      const next = dp.step({ dataset: ds, start: 0, end: BS });
      await last;
      last = next;
    }
    await last;
    gc();
    expect(process.memoryUsage().heapUsed - ahead).toBeLessThan(1 << 20);
  } finally {
    await dp.close();
  }
}, 120_000);

describe("gradient slots and optimizer state beyond the WebAssembly memory", () => {
  // Limits that leave room (with 1 KiB for the small regions) for params | grad | Adam state, or params | grad.
  const region = (P: number) => Math.ceil((P * 4) / 64) * 64;
  test.each([["the slots", 4], ["the slots and the optimizer state", 2]] as const)("%s in plain shared memory train what the fast layout trains (3 workers, Adam)", async (_what, regions) => {
    const idx = batches(N, 16, 6);
    const fast = await train(3, adam, idx);
    const P = fast.params.length;
    process.env.CHAINRULE_SHARED_MEMORY_BYTES = String(regions * region(P) + 1024);
    try {
      const moved = await train(3, adam, idx);
      // The reduce's JavaScript loop gives the SIMD kernel's bits; Adam's may round differently.
      if (regions === 4) expect(moved.params).toEqual(fast.params);
      else expect(maxElemRel(moved.params, fast.params)).toBeLessThan(1e-5);
    } finally {
      delete process.env.CHAINRULE_SHARED_MEMORY_BYTES;
    }
  });
});
