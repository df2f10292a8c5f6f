/** CNN data-parallel training: synchronised batch norm parity, per-worker statistics, augmentation in the workers, exact resume. */
import { describe, expect, test } from "vitest";
import { augmentRows, F, manualSeed, optim, Tensor } from "@chainrule/core";
import { DataParallel, type DataParallelOptions } from "@chainrule/parallel";
import { CNN_MODELS, batchIndices, imageData, relDiff, smallCnn } from "./fixtures/cnn-models.ts";

const SEED = 5;
const ds = imageData(96);
const idx = batchIndices(96, 16, 6);

async function run(workers: number, extra: Partial<DataParallelOptions> = {}, opts: { bn?: boolean; steps?: Int32Array[]; state?: ReturnType<DataParallel["getState"]>; ahead?: boolean } = {}) {
  const dp = new DataParallel({
    model: { module: CNN_MODELS, export: "smallCnn", options: { batchNorm: opts.bn ?? true } },
    loss: "crossEntropy", optimizer: { type: "adam", lr: 1e-2 }, workers, seed: SEED, ...extra,
  });
  try {
    await dp.init();
    if (opts.state) dp.setState(opts.state);
    const losses: number[] = [];
    if (opts.ahead) {
      // Every step posted at once: two run at a time, each rung while the one before still runs.
      const posted = (opts.steps ?? idx).map((b) => dp.step({ dataset: ds, indices: b }));
      for (const p of posted) losses.push(await p);
    } else {
      for (const b of opts.steps ?? idx) losses.push(await dp.step({ dataset: ds, indices: b }));
    }
    const ev = await dp.evaluate(ds);
    return { params: dp.params.slice(), state: dp.getState(), losses, ev, sd: dp.model.stateDict() };
  } finally {
    await dp.close();
  }
}

/** The same steps in the main thread with core alone (whole batch, plain batch norm). */
function coreRun(): { params: Float32Array; buffers: Float32Array } {
  manualSeed(SEED);
  const m = smallCnn({ batchNorm: true });
  const opt = new optim.Adam(m.parameters(), { lr: 1e-2 });
  for (const b of idx) {
    const x = new Float32Array(b.length * 64), y = new Int32Array(b.length);
    b.forEach((r, i) => { x.set(ds.inputs.subarray(r * 64, (r + 1) * 64), i * 64); y[i] = ds.targets[r]; });
    opt.zeroGrad();
    F.crossEntropy(m.forward(new Tensor(x, [b.length, 1, 8, 8])), y).backward();
    opt.step();
  }
  const cat = (ts: Tensor[]) => { const out = new Float32Array(ts.reduce((n, t) => n + t.size, 0)); let at = 0; for (const t of ts) { out.set(t.data, at); at += t.size; } return out; };
  return { params: cat(m.parameters()), buffers: cat(m.namedBuffers().map(([, t]) => t)) };
}

describe("batch norm across workers", () => {
  test("1 worker equals core's loop, buffers (running statistics) included", async () => {
    const ref = coreRun();
    const one = await run(1);
    expect(relDiff(one.params, ref.params)).toBeLessThan(1e-5);
    expect(relDiff(one.state.buffers!, ref.buffers)).toBeLessThan(1e-5);
    // The main thread's model sees the running statistics (checkpoints save them).
    expect(one.sd["1.running_mean"].data.some((v) => v !== 0)).toBe(true);
  });

  test("syncBatchNorm: 2 workers match 1 worker (params, running stats, eval); per-worker BN does not", async () => {
    const one = await run(1);
    const sync = await run(2, { syncBatchNorm: true });
    const local = await run(2);
    const dSync = relDiff(sync.params, one.params), dLocal = relDiff(local.params, one.params);
    if (process.env.CNN_TEST_VERBOSE) console.log(`sync BN 2 vs 1 worker: rel diff ${dSync.toExponential(2)}; per-worker BN: ${dLocal.toExponential(2)}`);
    expect(dSync).toBeLessThan(1e-4);
    expect(relDiff(sync.state.buffers!, one.state.buffers!)).toBeLessThan(1e-4);
    for (let i = 0; i < idx.length; i++) expect(sync.losses[i]).toBeCloseTo(one.losses[i], 4);
    expect(sync.ev.loss).toBeCloseTo(one.ev.loss, 4);
    expect(dLocal).toBeGreaterThan(10 * dSync); // per-worker statistics are a different computation
    // Per-worker: the running statistics are the mean of the workers' and stay close to the global ones.
    expect(relDiff(local.state.buffers!, one.state.buffers!)).toBeLessThan(0.05);
  });

  test("syncBatchNorm with 3 workers and an uneven last batch (shards 2, 1, 0... rows) matches 1 worker", async () => {
    const steps = [...idx.slice(0, 3), idx[3].slice(0, 2)]; // 2 rows: the third worker has none
    const one = await run(1, {}, { steps });
    const sync = await run(3, { syncBatchNorm: true }, { steps });
    expect(relDiff(sync.params, one.params)).toBeLessThan(1e-4);
    expect(relDiff(sync.state.buffers!, one.state.buffers!)).toBeLessThan(1e-4);
  });

  test("syncBatchNorm refuses micro-batches", () => {
    expect(() => new DataParallel({ model: { module: CNN_MODELS, export: "smallCnn" }, loss: "crossEntropy", optimizer: { type: "adam" }, workers: 2, syncBatchNorm: true, microBatchSize: 4 }))
      .toThrow(/syncBatchNorm does not work with microBatchSize/);
  });
});

describe("augmentation in the workers", () => {
  test("augmentRows: a row's augmentation depends on (seed, step, position), not on how the batch is split", () => {
    const src = ds.inputs.slice(0, 10 * 64), whole = new Float32Array(10 * 64), parts = new Float32Array(10 * 64);
    augmentRows(src, whole, 10, [1, 8, 8], { crop: 2, flip: true }, 3, 7, 0);
    augmentRows(src.subarray(0, 4 * 64), parts.subarray(0, 4 * 64), 4, [1, 8, 8], { crop: 2, flip: true }, 3, 7, 0);
    augmentRows(src.subarray(4 * 64), parts.subarray(4 * 64), 6, [1, 8, 8], { crop: 2, flip: true }, 3, 7, 4);
    expect(parts).toEqual(whole);
    expect(whole).not.toEqual(src);
    const other = new Float32Array(10 * 64);
    augmentRows(src, other, 10, [1, 8, 8], { crop: 2, flip: true }, 3, 8, 0); // another step
    expect(other).not.toEqual(whole);
  });

  test("the same augmentation with 1 and 2 workers; runs repeat bit for bit; it changes training", async () => {
    const aug = { augment: { crop: 2, flip: true } };
    const one = await run(1, aug, { bn: false });
    const two = await run(2, aug, { bn: false });
    const again = await run(2, aug, { bn: false });
    const plain = await run(2, {}, { bn: false });
    expect(relDiff(two.params, one.params)).toBeLessThan(1e-5);
    expect(Buffer.from(again.params.buffer).equals(Buffer.from(two.params.buffer))).toBe(true);
    expect(relDiff(plain.params, two.params)).toBeGreaterThan(1e-3);
  });

  test("steps posted while the last runs equal steps awaited, bit for bit: synchronised and per-worker batch norm, augmentation", async () => {
    for (const extra of [{ syncBatchNorm: true, augment: { crop: 1, flip: true } }, { augment: { crop: 2, flip: true } }]) {
      const one = await run(3, extra);
      const ahead = await run(3, extra, { ahead: true });
      expect(ahead.losses).toEqual(one.losses);
      expect(Buffer.from(ahead.params.buffer).equals(Buffer.from(one.params.buffer))).toBe(true);
      expect(Buffer.from(ahead.state.buffers!.buffer).equals(Buffer.from(one.state.buffers!.buffer))).toBe(true);
      expect(ahead.ev).toEqual(one.ev);
    }
  });

  test("resume is bit-exact with augmentation and batch-norm running statistics", async () => {
    const extra = { augment: { crop: 1, flip: true } };
    const full = await run(2, extra, { steps: idx });
    const first = await run(2, extra, { steps: idx.slice(0, 3) });
    const rest = await run(2, extra, { steps: idx.slice(3), state: first.state });
    expect(Buffer.from(rest.params.buffer).equals(Buffer.from(full.params.buffer))).toBe(true);
    expect(Buffer.from(rest.state.buffers!.buffer).equals(Buffer.from(full.state.buffers!.buffer))).toBe(true);
  });
});
