/**
 * One measurement of bench/multihost.ts: `warmup` + `steps` training steps of a job's model with
 * DataParallel (hosts: "mpi" under mpirun); host 0 prints one JSON line: samples/s, ms per step,
 * ms of forward/backward, of the exchange with the other hosts (its work, and the part rank 0
 * waited for after backward), and the gradient size.
 *   tsx bench/_multihost-run.ts mlp|gpt|gpt124m WORKERS STEPS WARMUP [BUCKET_MIB] [none|bf16|fp16]
 * `link` instead times MPI all-gathers of 4 KB to 4 MB per host between the hosts (the scaling
 * model's latency and bandwidth): tsx bench/_multihost-run.ts link
 */
import { Generator, makeDataset, toShared } from "../packages/core/src/index.js";
import { DataParallel, mpiWorld } from "../packages/parallel/src/index.js";
import { CATALOGUE_MODULE } from "../packages/cli/src/models.js";

const [kind, workersArg, stepsArg, warmupArg, bucketArg, compressionArg] = process.argv.slice(2);
if (kind === "link") {
  const comm = mpiWorld(), points: { mb: number; ms: number }[] = [];
  for (const floats of [1024, 16_384, 262_144, 1_048_576]) {
    const send = new Float32Array(floats).fill(1), recv = new Float32Array(floats * comm.size);
    for (let i = 0; i < 5; i++) comm.allgather(send, recv);
    const reps = Math.max(5, Math.round(2e7 / floats)), t0 = performance.now();
    for (let i = 0; i < reps; i++) comm.allgather(send, recv);
    points.push({ mb: (floats * 4) / 2 ** 20, ms: (performance.now() - t0) / reps });
  }
  if (comm.rank === 0) console.log(JSON.stringify({ points }));
  process.exit(0);
}
const workers = Number(workersArg), steps = Number(stepsArg), warmup = Number(warmupArg);
// The default job's MLP (batch 64, Adam), the gpt job's model (batch 32, AdamW, clipping off), and
// GPT-2 small's shape (124M parameters: 12 layers, 12 heads, 768 wide, context 1024, vocabulary
// 50257; random tokens, one sequence per rank).
const gpt = kind === "gpt" || kind === "gpt124m", big = kind === "gpt124m";
const T = big ? 1024 : 32, V = big ? 50257 : 52, batch = big ? 2 : gpt ? 32 : 64, rows = batch * 16;
const g = new Generator(1);
const ds = gpt
  ? toShared(makeDataset({ inputs: new Float32Array(rows * T).map(() => g.randint(V)), targets: new Int32Array(rows * T).map(() => g.randint(V)), inputShape: [T], targetShape: [T] }))
  : toShared(makeDataset({ inputs: new Float32Array(rows * 784).map(() => g.random()), targets: new Int32Array(rows).map(() => g.randint(10)), inputShape: [784] }));
const model = big
  ? { model: { type: "gpt", blockSize: T, nLayer: 12, nHead: 12, nEmbd: 768, dropout: 0, bias: true, tieWeights: true }, ctx: { inputShape: [T], outputSize: V } }
  : gpt ? { model: { type: "gpt", blockSize: T, nLayer: 4, nHead: 4, nEmbd: 64, dropout: 0, bias: true, tieWeights: true }, ctx: { inputShape: [T], outputSize: V } }
  : { model: { type: "mlp", hidden: [512, 256], activation: "relu", dropout: 0 }, ctx: { inputShape: [784], outputSize: 10 } };
const dp = new DataParallel({
  model: { module: CATALOGUE_MODULE, export: "buildJobModel", options: model },
  loss: "crossEntropy",
  optimizer: gpt ? { type: "adamw", lr: 3e-3, weightDecay: 0.01 } : { type: "adam", lr: 1e-3 },
  workers, seed: 0, hosts: process.env.OMPI_COMM_WORLD_SIZE ? "mpi" : undefined, bucketMiB: bucketArg ? Number(bucketArg) : undefined,
  gradientCompression: (compressionArg ?? "none") as "none" | "bf16" | "fp16",
});
await dp.init();
const perm = new Generator(2).permutation(rows);
const batchAt = (i: number) => ({ dataset: ds, indices: perm.subarray((i % 16) * batch, (i % 16 + 1) * batch) });
for (let i = 0; i < warmup; i++) await dp.step(batchAt(i));
let compute = 0, hosts = 0, exposed = 0;
const t0 = performance.now();
for (let i = 0; i < steps; i++) {
  const { stats } = await dp.trainStep(batchAt(i));
  compute += stats.computeMs;
  hosts += stats.hostsMs ?? 0;
  exposed += stats.hostsExposedMs ?? 0;
}
const ms = (performance.now() - t0) / steps;
if (dp.hostRank === 0) {
  const rssMB = process.memoryUsage().rss / 2 ** 20;
  console.log(JSON.stringify({
    kind, hosts: dp.hosts, workers, compression: compressionArg ?? "none", samplesPerSec: (batch * 1000) / ms, stepMs: ms, computeMs: compute / steps,
    hostsMs: hosts / steps, exposedMs: exposed / steps, gradientMB: (dp.numParameters * 4) / 2 ** 20, parameters: dp.numParameters, rssMB,
  }));
}
await dp.close();
