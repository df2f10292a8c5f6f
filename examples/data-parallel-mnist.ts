/**
 * Data-parallel training with the library API (what `chainrule train` does for you):
 * an MLP on the embedded MNIST digits, the batch sharded over worker threads.
 * Run: npx -y pnpm@10 exec tsx examples/data-parallel-mnist.ts [workers] [epochs]
 */
import { availableParallelism } from "node:os";
import { embeddedMnistSplit, makeDataset, toShared } from "@chainrule/core";
import { DataParallel, MODELS } from "@chainrule/parallel";

const workers = Number(process.argv[2] ?? availableParallelism());
const epochs = Number(process.argv[3] ?? 3);

const { train, heldOut } = embeddedMnistSplit({ heldOut: 1000 });
const shared = (d: typeof train) => toShared(makeDataset({ inputs: d.inputs, targets: d.targets, inputShape: [784] })); // copied into shared memory once

const dp = new DataParallel({
  model: { module: MODELS, export: "mlp", options: { sizes: [784, 256, 10] } }, // every worker builds the same model
  loss: "crossEntropy",
  optimizer: { type: "adam", lr: 1e-3 },
  workers,
  seed: 0,
});
await dp.init();
const validation = shared(heldOut);
await dp.fit(shared(train), {
  epochs,
  batchSize: 128,
  validation,
  onEpoch: (e) => console.log(`epoch ${e.epoch + 1}: loss ${e.loss.toFixed(4)} · ${Math.round(e.samplesPerSec)} samples/s`),
});
const { loss, accuracy } = await dp.evaluate(validation);
console.log(`${workers} workers: held-out loss ${loss.toFixed(4)}, accuracy ${((accuracy ?? 0) * 100).toFixed(2)}%`);
const state = dp.getState(); // params + optimizer state (for checkpoints / resume)
console.log(`parameters: ${state.params.length}, step ${state.step}`);
await dp.close();
