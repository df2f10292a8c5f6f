// Thread body for bench/parallel.ts --ceiling: fixed, independent work with no shared state
// (the MLP's forward GEMMs on a 256-row shard, a scalar JS loop, or whole training steps of the
// MLP on 256 rows: forward, backward, Adam, each thread its own model), timed. "lockstep" is
// "train" with a barrier after every step among the threads of the run: what synchronous data
// parallelism costs on this machine with nothing exchanged (each step waits for the slower thread);
// "cnnLockstep" the same with the anchor CNN at 64 images a thread (bench/cnn.ts --parallel), "gptLockstep"
// with the GPT of bench/gpt.ts at 12 windows a thread (bench/lockstep.ts).
import { parentPort, workerData } from "node:worker_threads";
import { register } from "tsx/esm/api";

register();
const { kernels } = await import("../packages/core/src/index.ts");
const k = kernels();
const { kind, reps } = workerData;
const LOCKSTEP = new Set(["lockstep", "cnnLockstep", "gptLockstep"]);
const rows = 256, a = new Float32Array(rows * 784).fill(0.5), w1 = new Float32Array(512 * 784).fill(0.01), o1 = new Float32Array(rows * 512);
const w2 = new Float32Array(256 * 512).fill(0.01), o2 = new Float32Array(rows * 256);
const buf = new Float64Array(1 << 16).fill(1.0001);
const trainer = kind === "train" || kind === "lockstep" ? (await import("./mlp.ts")).makeTrainer(256)
  : kind === "cnnLockstep" ? (await import("./cnn.ts")).makeCnnTrainer(64)
  : kind === "gptLockstep" ? (await import("./gpt.ts")).makeTrainer({ batch: 12 }) : null;
function once() {
  if (trainer) {
    trainer.step();
  } else if (kind === "gemm") {
    k.gemm(false, true, rows, 512, 784, 1, a, 0, 784, w1, 0, 784, 0, o1, 0, 512);
    k.gemm(false, true, rows, 256, 512, 1, o1, 0, 512, w2, 0, 512, 0, o2, 0, 256);
  } else {
    let s = 0;
    for (let r = 0; r < 40; r++) for (let i = 0; i < buf.length; i++) s += Math.sqrt(buf[i] * s + 1);
    buf[0] = s > 0 ? 1 : 2;
  }
}
/** Waits until the `n` threads of this run have arrived (bounded: a thread that never comes fails the run). */
const bar = new Int32Array(workerData.barrier); // [arrived, generation]
function barrier(n) {
  if (n <= 1) return;
  const gen = Atomics.load(bar, 1);
  if (Atomics.add(bar, 0, 1) + 1 === n) {
    Atomics.store(bar, 0, 0);
    Atomics.add(bar, 1, 1);
    Atomics.notify(bar, 1);
    return;
  }
  const deadline = performance.now() + 60_000;
  while (Atomics.load(bar, 1) === gen) {
    if (performance.now() > deadline) throw new Error("ceiling lockstep: the other thread did not reach the barrier within 60 s");
    Atomics.wait(bar, 1, gen, 1000);
  }
}

once();
parentPort.on("message", (threads) => {
  const t0 = performance.now();
  for (let i = 0; i < reps; i++) {
    once();
    if (LOCKSTEP.has(kind)) barrier(threads);
  }
  parentPort.postMessage(performance.now() - t0);
});
