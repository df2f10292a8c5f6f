/**
 * RMSprop and Adagrad in the data-parallel engine: each worker updates its chunk of the flat
 * parameters (ZeRO-1) with core's update rules. Checked against core's optim.RMSprop / optim.Adagrad
 * applied to the engine's own mean gradient (bit for bit), against a plain core loop, 2 workers
 * against 1, and a resumed run against an uninterrupted one.
 */
import { describe, expect, test } from "vitest";
import { F, Tensor, manualSeed, nn, optim } from "@chainrule/core";
import { DataParallel, type OptimizerSpec, optimizerStateBuffers } from "@chainrule/parallel";
import { MODELS, batches, makeData, referenceLoop, relDiff } from "./fixtures/parallel-data.ts";
import { mlp } from "./fixtures/parallel-models.ts";

const D = 6, H = 12, C = 4, N = 70, BS = 24;
const SIZES = [D, H, C];
const SEED = 11;
const STEPS = 6;

const engine = (optimizer: OptimizerSpec, workers: number) =>
  new DataParallel({ model: { module: MODELS, export: "mlp", options: { sizes: SIZES } }, loss: "crossEntropy", optimizer, workers, seed: SEED });

/** Core's optimizer over one parameter holding all of them (the rules are elementwise). */
function coreOptimizer(spec: OptimizerSpec, p: nn.Parameter): { step(): void } {
  const { type: _type, ...opts } = spec as { type: string };
  if (spec.type === "rmsprop") return new optim.RMSprop([p], opts);
  if (spec.type === "adagrad") return new optim.Adagrad([p], opts);
  throw new Error(`no core optimizer for ${spec.type}`);
}

const cases: [string, OptimizerSpec][] = [
  ["rmsprop", { type: "rmsprop", lr: 1e-2 }],
  ["rmsprop centered, momentum, weight decay", { type: "rmsprop", lr: 5e-3, alpha: 0.9, momentum: 0.8, centered: true, weightDecay: 0.01, eps: 1e-6 }],
  ["adagrad", { type: "adagrad" }],
  ["adagrad lrDecay, initialAccumulatorValue, weight decay", { type: "adagrad", lr: 0.05, lrDecay: 0.1, initialAccumulatorValue: 0.2, weightDecay: 0.01 }],
];

describe.each(cases)("%s", (_name, spec) => {
  const ds = makeData(N, D, C);
  const idx = batches(N, BS, STEPS);
  idx[STEPS - 1] = idx[STEPS - 1].slice(0, 5); // shards 3 and 2 for 2 workers

  /** The engine's parameters after each step, and core's optimizer applied to the engine's mean gradient of each step. */
  async function run(workers: number): Promise<{ params: Float32Array; mirror: Float32Array[]; engine: Float32Array[] }> {
    const dp = engine(spec, workers);
    try {
      await dp.init();
      const p = new nn.Parameter(new Tensor(dp.params.slice(), [dp.params.length]));
      const o = coreOptimizer(spec, p);
      const mirror: Float32Array[] = [], seen: Float32Array[] = [];
      for (const b of idx) {
        await dp.step({ dataset: ds, indices: b });
        p.grad = new Tensor(dp.grad.slice(), [dp.params.length]);
        o.step();
        mirror.push(p.data.slice());
        seen.push(dp.params.slice());
      }
      return { params: dp.params.slice(), mirror, engine: seen };
    } finally {
      await dp.close();
    }
  }

  let one: Float32Array | null = null;
  test("1 worker: each step equals core's optimizer on the same gradient, bit for bit, and the plain core loop", async () => {
    const r = await run(1);
    r.engine.forEach((e, i) => expect(Buffer.from(e.buffer).equals(Buffer.from(r.mirror[i].buffer)), `step ${i + 1}`).toBe(true));
    const ref = referenceLoop(() => { manualSeed(SEED); return mlp({ sizes: SIZES }); }, (ps) => coreOptimizerFor(spec, ps), ds, idx, (out, y) => F.crossEntropy(out, y));
    expect(relDiff(r.params, ref)).toBeLessThan(1e-6);
    one = r.params;
  });

  test("2 workers: each step equals core's optimizer on the same gradient, and 1 worker within 1e-5", async () => {
    const r = await run(2);
    r.engine.forEach((e, i) => expect(Buffer.from(e.buffer).equals(Buffer.from(r.mirror[i].buffer)), `step ${i + 1}`).toBe(true));
    expect(one).not.toBeNull();
    expect(relDiff(r.params, one!)).toBeLessThan(1e-5);
  });

  test("a run resumed from its state after 3 steps ends bit-identical to an uninterrupted one", async () => {
    const whole = engine(spec, 2), first = engine(spec, 2), second = engine(spec, 2);
    try {
      await Promise.all([whole.init(), first.init(), second.init()]);
      for (const b of idx) await whole.step({ dataset: ds, indices: b });
      for (const b of idx.slice(0, 3)) await first.step({ dataset: ds, indices: b });
      const saved = first.getState();
      expect(Object.keys(saved.optimizer.buffers)).toEqual(optimizerStateBuffers(spec as { type: "rmsprop" }));
      // As a checkpoint carries it: plain arrays, rebuilt.
      const restored = JSON.parse(JSON.stringify({ ...saved, params: Array.from(saved.params), optimizer: { ...saved.optimizer, buffers: Object.fromEntries(Object.entries(saved.optimizer.buffers).map(([k, v]) => [k, Array.from(v)])) } }));
      second.setState({ ...restored, params: Float32Array.from(restored.params), buffers: saved.buffers, optimizer: { ...restored.optimizer, buffers: Object.fromEntries(Object.entries(restored.optimizer.buffers).map(([k, v]) => [k, Float32Array.from(v as number[])])) } });
      for (const b of idx.slice(3)) await second.step({ dataset: ds, indices: b });
      expect(Buffer.from(second.params.slice().buffer).equals(Buffer.from(whole.params.slice().buffer))).toBe(true);
    } finally {
      await Promise.all([whole.close(), first.close(), second.close()]);
    }
  });
});

function coreOptimizerFor(spec: OptimizerSpec, ps: nn.Parameter[]): { zeroGrad(): void; step(): void } {
  const { type: _type, ...opts } = spec as { type: string };
  return spec.type === "rmsprop" ? new optim.RMSprop(ps, opts) : new optim.Adagrad(ps, opts);
}

test("state buffers by options, and bad options named", () => {
  expect(optimizerStateBuffers({ type: "rmsprop" })).toEqual(["squareAvg"]);
  expect(optimizerStateBuffers({ type: "rmsprop", centered: true, momentum: 0.9 })).toEqual(["squareAvg", "gradAvg", "momentumBuffer"]);
  expect(optimizerStateBuffers({ type: "adagrad" })).toEqual(["sum"]);
  expect(() => engine({ type: "rmsprop", alpha: 1.5 }, 1)).toThrow(/^DataParallel: rmsprop alpha must be in \[0, 1\], got 1\.5$/);
  expect(() => engine({ type: "adagrad", lrDecay: -1 }, 1)).toThrow(/^DataParallel: adagrad lrDecay must be a finite number ≥ 0, got -1$/);
});
