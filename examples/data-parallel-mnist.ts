/**
 * Data-parallel training with the library API (what `chainrule train` does for you): an MLP on
 * the embedded MNIST digits, the batch sharded over worker threads. The README shows this file
 * (test/examples.test.ts checks it and runs it).
 * Run: npx -y pnpm@10 exec tsx examples/data-parallel-mnist.ts [workers] [epochs]
 */
import { availableParallelism } from "node:os";
import { embeddedMnistSplit, toShared } from "@chainrule/core";
import { DataParallel, MODELS } from "@chainrule/parallel";

const workers = Number(process.argv[2] ?? availableParallelism()); // 1 runs the same engine in this thread
const epochs = Number(process.argv[3] ?? 3);

const { train, heldOut } = embeddedMnistSplit({ heldOut: 1000 });
// Core's Dataset on shared memory (copied once): worker threads read its rows in place. Rows as
// 784 values, the input of the MLP below.
const ds = toShared({ ...train, inputShape: [784] });
const validation = toShared({ ...heldOut, inputShape: [784] });

const dp = new DataParallel({
  model: { module: MODELS, export: "mlp", options: { sizes: [784, 256, 10] } }, // a factory every worker imports
  loss: "crossEntropy",
  optimizer: { type: "adam", lr: 1e-3 },
  workers,
  seed: 0,
});
await dp.init(); // builds the model once per worker; parameter layouts are checked
await dp.fit(ds, {
  epochs,
  batchSize: 128,
  validation,
  onEpoch: (e) => console.log(`epoch ${e.epoch + 1}: loss ${e.loss.toFixed(4)} · ${Math.round(e.samplesPerSec)} samples/s`),
});
// Or step by step: post the next step before awaiting the last, and the workers never wait for this thread.
const first = dp.step({ dataset: ds, start: 0, end: 128 });
const next = dp.step({ dataset: ds, start: 128, end: 256 }); // runs as soon as the first is done
console.log(`two more steps: loss ${(await first).toFixed(4)}, ${(await next).toFixed(4)}`);
const { loss, accuracy } = await dp.evaluate(validation);
console.log(`${workers} workers: held-out loss ${loss.toFixed(4)}, accuracy ${((accuracy ?? 0) * 100).toFixed(2)}%`);
const state = dp.getState(); // parameters, optimizer state and step, for checkpoints and exact resume
console.log(`parameters: ${state.params.length}, step ${state.step}`);
await dp.close();
