/**
 * One measurement of bench/multihost.ts: `warmup` + `steps` training steps of a job's model with
 * DataParallel (hosts: "mpi" under mpirun); host 0 prints one JSON line: samples/s, ms per step,
 * ms of forward/backward, of the exchange with the other hosts, and the gradient size.
 *   tsx bench/_multihost-run.ts mlp|gpt WORKERS STEPS WARMUP
 */
import { Generator, makeDataset, toShared } from "../packages/core/src/index.js";
import { DataParallel } from "../packages/parallel/src/index.js";
import { CATALOGUE_MODULE } from "../packages/cli/src/models.js";

const [kind, workersArg, stepsArg, warmupArg] = process.argv.slice(2);
const workers = Number(workersArg), steps = Number(stepsArg), warmup = Number(warmupArg);
// The default job's MLP (batch 64, Adam) and the gpt job's model (batch 32, AdamW, clipping off).
const gpt = kind === "gpt";
const T = 32, V = 52, batch = gpt ? 32 : 64, rows = batch * 16;
const g = new Generator(1);
const ds = gpt
  ? toShared(makeDataset({ inputs: new Float32Array(rows * T).map(() => g.randint(V)), targets: new Int32Array(rows * T).map(() => g.randint(V)), inputShape: [T], targetShape: [T] }))
  : toShared(makeDataset({ inputs: new Float32Array(rows * 784).map(() => g.random()), targets: new Int32Array(rows).map(() => g.randint(10)), inputShape: [784] }));
const model = gpt
  ? { model: { type: "gpt", blockSize: T, nLayer: 4, nHead: 4, nEmbd: 64, dropout: 0, bias: true, tieWeights: true }, ctx: { inputShape: [T], outputSize: V } }
  : { model: { type: "mlp", hidden: [512, 256], activation: "relu", dropout: 0 }, ctx: { inputShape: [784], outputSize: 10 } };
const dp = new DataParallel({
  model: { module: CATALOGUE_MODULE, export: "buildJobModel", options: model },
  loss: "crossEntropy",
  optimizer: gpt ? { type: "adamw", lr: 3e-3, weightDecay: 0.01 } : { type: "adam", lr: 1e-3 },
  workers, seed: 0, hosts: process.env.OMPI_COMM_WORLD_SIZE ? "mpi" : undefined,
});
await dp.init();
const perm = new Generator(2).permutation(rows);
const batchAt = (i: number) => ({ dataset: ds, indices: perm.subarray((i % 16) * batch, (i % 16 + 1) * batch) });
for (let i = 0; i < warmup; i++) await dp.step(batchAt(i));
let compute = 0, hosts = 0;
const t0 = performance.now();
for (let i = 0; i < steps; i++) {
  const { stats } = await dp.trainStep(batchAt(i));
  compute += stats.computeMs;
  hosts += stats.hostsMs ?? 0;
}
const ms = (performance.now() - t0) / steps;
if (dp.hostRank === 0) {
  console.log(JSON.stringify({ kind, hosts: dp.hosts, workers, samplesPerSec: (batch * 1000) / ms, stepMs: ms, computeMs: compute / steps, hostsMs: hosts / steps, gradientMB: (dp.numParameters * 4) / 2 ** 20 }));
}
await dp.close();
