/** A worker that throws, dies or hangs during a step: the step rejects in bounded time, names worker, step and cause; no thread survives. */
import { afterEach, expect, test } from "vitest";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Dataset, makeDataset, toShared } from "@chainrule/core";
import { DataParallel, LayoutMismatchError, ParallelStepError } from "@chainrule/parallel";
import { MODELS, makeData } from "./fixtures/parallel-data.ts";
import { CNN_MODELS, batchIndices, imageData } from "./fixtures/cnn-models.ts";

const D = 4, C = 3, N = 12, W = 3; // whole-dataset batches: rank 1 gets rows 4..7

/** The clean rows, then a copy of them with a sentinel in row 5 (rank 1's shard): steps on rows [0, N) and [N, 2N) of one dataset can be posted back to back. */
function cleanThenPoisoned(clean: Dataset, sentinel: number): Dataset {
  const p = poisoned(clean, sentinel);
  const x = new Float32Array(2 * N * D), y = new Int32Array(2 * N);
  x.set(clean.inputs); x.set(p.inputs, N * D);
  y.set(clean.targets as Int32Array); y.set(p.targets as Int32Array, N);
  return toShared(makeDataset({ inputs: x, targets: y, inputShape: [D] }));
}

/** The clean data with one value of row 5 (rank 1's shard) replaced by a sentinel. */
function poisoned(clean: Dataset, sentinel: number): Dataset {
  const x = clean.inputs.slice();
  x[5 * D + 2] = sentinel;
  return toShared(makeDataset({ inputs: x, targets: clean.targets.slice(), inputShape: [D] }));
}

let dp: DataParallel | null = null;
afterEach(async () => { await dp?.close(); dp = null; });

function make(timeoutMs = 60_000): DataParallel {
  dp = new DataParallel({
    model: { module: MODELS, export: "Faulty", options: { sizes: [D, 8, C], throwOn: 1234.5, exitOn: -777, hangOn: 4242 } },
    loss: "crossEntropy", optimizer: { type: "adam", lr: 1e-2 }, workers: W, seed: 3, timeoutMs,
  });
  return dp;
}

async function expectFailure(d: DataParallel, data: Dataset, pattern: RegExp, within: number): Promise<ParallelStepError> {
  const before = d.params.slice();
  const t0 = performance.now();
  const err = await d.step(data).then(() => null, (e) => e);
  const ms = performance.now() - t0;
  expect(err).toBeInstanceOf(ParallelStepError);
  expect(err.message).toMatch(pattern);
  expect(err.rank).toBe(1);
  expect(err.step).toBe(2);
  expect(err.phase).toBe("grad");
  expect(err.paramsModified).toBe(false);
  expect(err.message).toMatch(/parameters unchanged/);
  expect(ms).toBeLessThan(within);
  expect(d.threads).toBe(0); // pool destroyed: every thread terminated
  expect(Buffer.from(d.params.buffer, d.params.byteOffset, d.params.byteLength).equals(Buffer.from(before.buffer))).toBe(true);
  expect(d.stepCount).toBe(1);
  return err;
}

test("a worker that throws: the step rejects naming worker, step and cause; the next step recovers", async () => {
  const d = make();
  await d.init();
  const clean = makeData(N, D, C);
  await d.step(clean);
  await expectFailure(d, poisoned(clean, 1234.5), /^step 2: worker 1 failed in grad: sentinel 1234\.5 in the input/, 10_000);
  // Recovery: a fresh pool is started; the step after the failure is step 2 again.
  const loss = await d.step(clean);
  expect(Number.isFinite(loss)).toBe(true);
  expect(d.stepCount).toBe(2);
  expect(d.threads).toBe(W);
});

test("a worker whose thread dies (process.exit in the worker)", async () => {
  const d = make();
  await d.init();
  const clean = makeData(N, D, C);
  await d.step(clean);
  await expectFailure(d, poisoned(clean, -777), /^step 2: worker 1 failed in grad: .*exited with code: 7/, 10_000);
});

test("a worker that hangs: the step times out, names the worker, and the threads are terminated", async () => {
  const d = make(1500);
  await d.init();
  const clean = makeData(N, D, C);
  await d.step(clean);
  const err = await expectFailure(d, poisoned(clean, 4242), /^step 2: worker 1 timed out in grad after 1500 ms/, 6_000);
  expect(err.ranks).toEqual([1]);
});

test("a hung step shows in pendingStep and ends on abort: the threads are terminated, the error names the worker, a fresh pool trains on", async () => {
  const d = make(60_000);
  await d.init();
  const clean = makeData(N, D, C);
  await d.step(clean);
  const before = d.params.slice();
  const t0 = performance.now();
  const hung = d.step(poisoned(clean, 4242)).then(() => null, (e) => e);
  let pending = d.pendingStep();
  while (performance.now() - t0 < 5_000 && !(pending && pending.elapsedMs > 300 && pending.waitingFor.length === 1)) {
    await new Promise((r) => setTimeout(r, 50));
    pending = d.pendingStep();
  }
  expect(pending).toMatchObject({ step: 2, waitingFor: [{ rank: 1, stage: "grad" }] });
  d.abort("interrupted");
  const err = await hung;
  expect(performance.now() - t0).toBeLessThan(10_000);
  expect(err).toBeInstanceOf(ParallelStepError);
  expect(err.message).toMatch(/^step 2: aborted \(interrupted\) while waiting for worker 1 in grad; threads terminated \(parameters unchanged\)/);
  expect(d.threads).toBe(0);
  expect(d.pendingStep()).toBeNull();
  expect(Buffer.from(d.params.buffer, d.params.byteOffset, d.params.byteLength).equals(Buffer.from(before.buffer))).toBe(true);
  expect(Number.isFinite(await d.step(clean))).toBe(true);
});

test("the automatic step timeout: 600 s for the first 10 steps, then max(60 s, 20 × the median step)", async () => {
  const d = new DataParallel({ model: { module: MODELS, export: "mlp", options: { sizes: [D, 8, C] } }, loss: "crossEntropy", optimizer: { type: "sgd", lr: 0.1 }, workers: 2 });
  try {
    await d.init();
    const clean = makeData(N, D, C);
    expect(d.stepTimeoutMs).toBe(600_000);
    for (let i = 0; i < 9; i++) await d.step(clean);
    expect(d.stepTimeoutMs).toBe(600_000);
    await d.step(clean);
    expect(d.stepTimeoutMs).toBe(60_000); // these steps take milliseconds
    expect(() => new DataParallel({ model: { module: MODELS, export: "mlp", options: { sizes: [D, 8, C] } }, loss: "crossEntropy", optimizer: { type: "sgd", lr: 0.1 }, timeoutMs: 0 })).toThrow(/timeoutMs must be > 0 or "auto", got 0/);
  } finally {
    await d.close();
  }
});

test("a worker that throws while the next step is already posted: both steps reject with the same error, nothing is updated", async () => {
  const d = make();
  await d.init();
  const clean = makeData(N, D, C);
  await d.step(clean);
  const before = d.params.slice();
  const both = cleanThenPoisoned(clean, 1234.5); // one dataset: a new one would wait for the step in flight
  const failing = d.step({ dataset: both, start: N, end: 2 * N }).then(() => null, (e) => e);
  const behind = d.step({ dataset: both, start: 0, end: N }).then(() => null, (e) => e);
  const [e1, e2] = await Promise.all([failing, behind]);
  expect(e1).toBeInstanceOf(ParallelStepError);
  expect(e1.message).toMatch(/^step 2: worker 1 failed in grad: sentinel 1234\.5 in the input.*parameters unchanged/);
  expect(e2).toBe(e1); // the step behind never started
  expect(d.threads).toBe(0);
  expect(d.stepCount).toBe(1);
  expect(Buffer.from(d.params.buffer, d.params.byteOffset, d.params.byteLength).equals(Buffer.from(before.buffer))).toBe(true);
  expect(Number.isFinite(await d.step(clean))).toBe(true); // a fresh pool goes on from step 2
  expect(d.stepCount).toBe(2);
});

test("a step that fails behind one that completes: the first stands, the second reports its own step", async () => {
  const d = make();
  await d.init();
  const clean = makeData(N, D, C);
  const both = cleanThenPoisoned(clean, 1234.5);
  const first = d.step({ dataset: both, start: 0, end: N });
  const second = d.step({ dataset: both, start: N, end: 2 * N }).then(() => null, (e) => e);
  expect(Number.isFinite(await first)).toBe(true);
  const afterFirst = d.params.slice();
  const err = await second;
  expect(err).toBeInstanceOf(ParallelStepError);
  expect(err.message).toMatch(/^step 2: worker 1 failed in grad: sentinel 1234\.5/);
  expect(err.paramsModified).toBe(false);
  expect(d.stepCount).toBe(1);
  expect(Buffer.from(d.params.buffer, d.params.byteOffset, d.params.byteLength).equals(Buffer.from(afterFirst.buffer))).toBe(true);
});

test("a worker that hangs with the next step posted: both reject on the first step's deadline, naming it", async () => {
  const d = make(1500);
  await d.init();
  const clean = makeData(N, D, C);
  await d.step(clean);
  const t0 = performance.now();
  const both = cleanThenPoisoned(clean, 4242);
  const [e1, e2] = await Promise.all([
    d.step({ dataset: both, start: N, end: 2 * N }).then(() => null, (e) => e),
    d.step({ dataset: both, start: 0, end: N }).then(() => null, (e) => e),
  ]);
  expect(performance.now() - t0).toBeLessThan(6_000);
  expect(e1.message).toMatch(/^step 2: worker 1 timed out in grad after 1500 ms/);
  expect(e2).toBe(e1);
  expect(d.threads).toBe(0);
  expect(d.stepCount).toBe(1);
});

test("a step posted behind a slow one gets its own full timeout: its deadline starts when the step before completes", async () => {
  // Each step takes ~900 ms (rank 1 sleeps), the timeout is 1500 ms: two posted together take ~1800 ms.
  dp = new DataParallel({
    model: { module: MODELS, export: "Faulty", options: { sizes: [D, 8, C], slowOn: 555, slowMs: 900 } },
    loss: "crossEntropy", optimizer: { type: "adam", lr: 1e-2 }, workers: W, seed: 3, timeoutMs: 1500,
  });
  await dp.init();
  const slow = poisoned(makeData(N, D, C), 555);
  const t0 = performance.now();
  const losses = await Promise.all([dp.step(slow), dp.step(slow)]);
  expect(performance.now() - t0).toBeGreaterThan(1500);
  expect(losses.every(Number.isFinite)).toBe(true);
  expect(dp.stepCount).toBe(2);
});

test("workers whose model layout differs from the main thread's fail init with LayoutMismatchError", async () => {
  dp = new DataParallel({ model: { module: MODELS, export: "mismatched" }, loss: "mseLoss", optimizer: { type: "sgd", lr: 0.1 }, workers: 2 });
  await expect(dp.init()).rejects.toThrow(LayoutMismatchError);
  await expect(dp.init()).rejects.toThrow(/worker \d \(thread \d+\) built a model whose layout differs.*\[3,4\].*\[2,4\]/);
});

test("bad configuration fails before any thread starts", () => {
  const model = { module: MODELS, export: "mlp", options: { sizes: [2, 2] } };
  expect(() => new DataParallel({ model, loss: "nope" as "mseLoss", optimizer: { type: "sgd", lr: 0.1 } })).toThrow(/unknown loss 'nope'/);
  expect(() => new DataParallel({ model, loss: "mseLoss", optimizer: { type: "sgd", lr: 0.1 }, workers: 0 })).toThrow(/workers must be an integer ≥ 1/);
  expect(() => new DataParallel({ model, loss: "mseLoss", optimizer: { type: "sgd", lr: NaN } })).toThrow(/learning rate/);
});

test("a failure while parameters are being updated is reported as such", async () => {
  const { workerFailed } = await import("../packages/parallel/src/errors.ts");
  const e = workerFailed(2, 7, "update", true, new Error("worker exited with code: 1"));
  expect(e.message).toBe("step 7: worker 2 failed in update: worker exited with code: 1 (parameters may be partially updated)");
  expect(e.paramsModified).toBe(true);
});

test("a worker that fails after the barrier, while updating: reported as parameters maybe partially updated", async () => {
  process.env.CHAINRULE_PARALLEL_INJECT_FAILURE = "update:1:2"; // read by the workers when they build their state
  try {
    dp = new DataParallel({ model: { module: MODELS, export: "mlp", options: { sizes: [D, 8, C] } }, loss: "crossEntropy", optimizer: { type: "adam", lr: 1e-2 }, workers: 2, seed: 3 });
    await dp.init();
    const clean = makeData(N, D, C);
    await dp.step(clean);
    const err = await dp.step(clean).then(() => null, (e) => e);
    expect(err).toBeInstanceOf(ParallelStepError);
    expect(err.message).toMatch(/^step 2: worker 1 failed in update: injected failure .* \(parameters may be partially updated\)$/);
    expect(err.phase).toBe("update");
    expect(err.paramsModified).toBe(true);
    expect(dp.threads).toBe(0);
    expect(dp.stepCount).toBe(1);
  } finally {
    delete process.env.CHAINRULE_PARALLEL_INJECT_FAILURE;
  }
  // A fresh pool (built without the hook) trains on; the slots left dirty by the failed step are cleared.
  const loss = await dp!.step(makeData(N, D, C));
  expect(Number.isFinite(loss)).toBe(true);
  expect(dp!.stepCount).toBe(2);
});

test("a model whose parameters and gradient alone exceed the WebAssembly memory fails at init, naming the size, before any thread starts", async () => {
  // CHAINRULE_SHARED_MEMORY_BYTES lowers the 4 GiB limit: 1 MiB cannot hold 2 × 4.3 MB.
  process.env.CHAINRULE_SHARED_MEMORY_BYTES = String(2 ** 20);
  const dp = new DataParallel({ model: { module: MODELS, export: "mlp", options: { sizes: [1024, 1024, 10] } }, loss: "crossEntropy", optimizer: { type: "adam", lr: 1e-3 }, workers: 3 });
  try {
    await expect(dp.init()).rejects.toThrow(/DataParallel: 1,059,850 parameters need 8\.1 MiB of shared WebAssembly memory for the parameters and the mean gradient alone, above its 1\.0 MiB: use a smaller model/);
    expect(dp.threads).toBe(0);
  } finally {
    delete process.env.CHAINRULE_SHARED_MEMORY_BYTES;
    await dp.close();
  }
});

test("with hosts, a failed step ends training: the next step is refused, naming the step that failed", async () => {
  // Two hosts in one process: a communicator whose other host sends what this one sends.
  const mirror = {
    rank: 0, size: 2,
    allgather(send: Float32Array | Float64Array, recv: Float32Array | Float64Array) {
      recv.set(send, 0);
      recv.set(send, send.length);
    },
  };
  const d = new DataParallel({
    model: { module: MODELS, export: "Faulty", options: { sizes: [D, 8, C], throwOn: 1234.5, exitOn: -777, hangOn: 4242 } },
    loss: "crossEntropy", optimizer: { type: "adam", lr: 1e-2 }, workers: 1, seed: 3, hosts: mirror,
  });
  try {
    await d.init();
    const clean = makeData(N, D, C);
    expect(Number.isFinite(await d.step(clean))).toBe(true);
    await expect(d.step(poisoned(clean, 1234.5))).rejects.toThrow(/^step 2: worker 0 failed in grad: sentinel 1234\.5/);
    await expect(d.step(clean)).rejects.toThrow(/^DataParallel: step 2 failed with 2 hosts \(step 2: worker 0 failed in grad.*\); the hosts' exchange cannot go on .*resume it from a checkpoint$/);
  } finally {
    await d.close();
  }
});

test.each([1, 2])("a step that fails after rank 0 averaged the batch-norm buffers, before any update, gets them back: retried, it ends bit-identical to a run never failed (workers %i)", async (workers) => {
  const data = imageData(32), batches = batchIndices(32, 16, 3);
  // Clipping: a barrier between the reduce and the first update, so rank 0's failure leaves every parameter untouched.
  const engine = () => new DataParallel({ model: { module: CNN_MODELS, export: "smallCnn" }, loss: "crossEntropy", optimizer: { type: "adam", lr: 1e-2 }, workers, seed: 3, clipGradNorm: 1 });
  const bytes = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
  const reference = engine();
  let want: { params: Buffer; buffers: Buffer };
  try {
    await reference.init();
    for (const indices of batches) await reference.step({ dataset: data, indices });
    want = { params: bytes(reference.params.slice()), buffers: bytes(reference.buffers.slice()) };
  } finally {
    await reference.close();
  }
  process.env.CHAINRULE_PARALLEL_INJECT_FAILURE = "reduce:0:2";
  process.env.CHAINRULE_PARALLEL_INJECT_ONCE = join(mkdtempSync(join(tmpdir(), "chainrule-inject-")), "thrown");
  const d = engine();
  try {
    await d.init();
    await d.step({ dataset: data, indices: batches[0] });
    const afterStep1 = d.buffers.slice();
    const err = await d.step({ dataset: data, indices: batches[1] }).then(() => null, (e) => e);
    expect(err).toBeInstanceOf(ParallelStepError);
    expect(err.message).toMatch(/^step 2: worker 0 failed in reduce: injected failure/);
    expect(err.paramsModified).toBe(false);
    expect(bytes(d.buffers).equals(bytes(afterStep1))).toBe(true); // as step 2 found them, not rank 0's average
    for (const indices of batches.slice(1)) await d.step({ dataset: data, indices });
    expect(bytes(d.params).equals(want.params)).toBe(true);
    expect(bytes(d.buffers).equals(want.buffers)).toBe(true);
  } finally {
    delete process.env.CHAINRULE_PARALLEL_INJECT_FAILURE;
    delete process.env.CHAINRULE_PARALLEL_INJECT_ONCE;
    await d.close();
  }
});
