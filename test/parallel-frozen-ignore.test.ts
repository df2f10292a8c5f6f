/** Frozen parameters (LoRA) are never updated; cross-entropy with ignored targets weights shards by counted targets. */
import { describe, expect, test } from "vitest";
import { F, manualSeed, nn, optim } from "@chainrule/core";
import { DataParallel, LayoutMismatchError, type LossSpec } from "@chainrule/parallel";
import { loraMlp, partlyFrozen } from "./fixtures/parallel-models.ts";
import { MODELS, batches, makeData, referenceLoop, relDiff, withIgnored } from "./fixtures/parallel-data.ts";

const D = 6, H = 12, C = 4, N = 70, BS = 24;
const SIZES = [D, H, C];
const SEED = 11;

function bits(a: Float32Array): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

describe.each([["loraMlp", loraMlp], ["partlyFrozen", partlyFrozen]] as const)("frozen parameters under AdamW with weight decay (%s)", (name, build) => {
  const ds = makeData(N, D, C);
  const idx = batches(N, BS, 5);
  const adamw = { type: "adamw" as const, lr: 1e-2, weightDecay: 0.1 };
  const ref = referenceLoop(() => { manualSeed(SEED); return build({ sizes: SIZES }); }, (ps) => new optim.AdamW(ps, { lr: 1e-2, weightDecay: 0.1 }), ds, idx, (o, y) => F.crossEntropy(o, y));

  test.each([1, 2, 3])("%i workers: frozen parameters bit-identical after 5 steps, trainable ones match the core loop", async (w) => {
    const dp = new DataParallel({ model: { module: MODELS, export: name, options: { sizes: SIZES } }, loss: "crossEntropy", optimizer: adamw, workers: w, seed: SEED });
    try {
      await dp.init();
      const before = dp.params.slice();
      const frozen = dp.model.namedParameters().map(([, p], i) => ({ e: dp.layout[i], trainable: p.requiresGrad }));
      expect(frozen.some((f) => !f.trainable)).toBe(true);
      expect(frozen.some((f) => f.trainable)).toBe(true);
      for (const b of idx) await dp.step({ dataset: ds, indices: b });
      const after = dp.params;
      for (const { e, trainable } of frozen) {
        const a = after.subarray(e.offset, e.offset + e.size), b = before.subarray(e.offset, e.offset + e.size);
        if (trainable) expect(bits(a).equals(bits(b)), `${e.name} should have moved`).toBe(false);
        else expect(bits(a).equals(bits(b)), `${e.name} is frozen`).toBe(true);
      }
      expect(relDiff(after, ref)).toBeLessThan(w === 1 ? 1e-6 : 1e-5);
      // Frozen parameters have no optimizer state.
      const st = dp.getState().optimizer.buffers;
      for (const { e, trainable } of frozen) if (!trainable) expect(st.expAvg.subarray(e.offset, e.offset + e.size).every((v) => v === 0)).toBe(true);
    } finally {
      await dp.close();
    }
  });
});

test("a replica whose requiresGrad differs from the main thread's fails init", async () => {
  const dp = new DataParallel({ model: { module: MODELS, export: "frozenInMainOnly", options: { sizes: SIZES } }, loss: "crossEntropy", optimizer: { type: "sgd", lr: 0.1 }, workers: 2 });
  try {
    await expect(dp.init()).rejects.toThrow(LayoutMismatchError);
    await expect(dp.init()).rejects.toThrow(/requiresGrad true here but false in the main thread/);
  } finally {
    await dp.close();
  }
});

describe.each([
  ["default ignoreIndex (-100)", "crossEntropy" as LossSpec, -100],
  ["ignoreIndex 3 (a real class)", { name: "crossEntropy", ignoreIndex: 3 } as LossSpec, 3],
] as const)("crossEntropy with %s", (_label, loss, ignore) => {
  const ds = withIgnored(makeData(N, D, C), ignore);
  const idx = batches(N, BS, 10);
  idx[9] = idx[9].slice(0, 5);
  const ref = referenceLoop(() => { manualSeed(SEED); return buildMlp(); }, (ps) => new optim.Adam(ps, { lr: 1e-2 }), ds, idx, (o, y) => F.crossEntropy(o, y, { ignoreIndex: ignore }));

  test.each([1, 2, 3])("%i workers: parameters, losses and evaluate match the core loop", async (w) => {
    const dp = new DataParallel({ model: { module: MODELS, export: "mlp", options: { sizes: SIZES } }, loss, optimizer: { type: "adam", lr: 1e-2 }, workers: w, seed: SEED, microBatchSize: w === 3 ? 5 : undefined });
    try {
      await dp.init();
      for (const b of idx) await dp.step({ dataset: ds, indices: b });
      expect(relDiff(dp.params, ref)).toBeLessThan(w === 1 ? 1e-6 : 1e-5);
      // evaluate: mean over counted targets, accuracy over them too
      const ev = await dp.evaluate(ds, { batchSize: 16 });
      const out = dp.model.forward(new (await import("@chainrule/core")).Tensor(ds.inputs.slice(), [N, D]));
      const want = F.crossEntropy(out, ds.targets as Int32Array, { ignoreIndex: ignore }).item();
      expect(ev.loss).toBeCloseTo(want, 5);
      let hit = 0, cnt = 0;
      for (let i = 0; i < N; i++) {
        if (ds.targets[i] === ignore) continue;
        cnt++;
        let best = 0;
        for (let c = 1; c < C; c++) if (out.data[i * C + c] > out.data[i * C + best]) best = c;
        if (best === ds.targets[i]) hit++;
      }
      expect(ev.accuracy).toBeCloseTo(hit / cnt, 10);
    } finally {
      await dp.close();
    }
  });
});

function buildMlp(): nn.Module {
  const layers: nn.Module[] = [new nn.Linear(D, H), new nn.ReLU(), new nn.Linear(H, C)];
  return new nn.Sequential(...layers);
}
