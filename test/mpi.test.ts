/**
 * Several hosts through Open MPI, as processes started by `mpirun -np 2` on this machine over TCP:
 * hosts × workers ranks train what one worker trains (within float rounding), a run is
 * bit-identical to itself, a run of 2 hosts resumes on 1, and a lost host ends the job.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { MAIN, REPO, type Result, checkpointTensors, cli, expectOneLineError, latestCheckpoint, tempDir, writeJobIn } from "./cli-helpers.ts";
import { type SimulatedHosts, removeHosts, simulateHosts } from "./fixtures/simulated-hosts.ts";

const TMP = tempDir("chainrule-mpi-");
const TRAIN = join(REPO, "test/fixtures/mpi-train.ts");

/**
 * `mpirun -np <hosts> node --import tsx <args>` on this machine over TCP, or — with `net` — on the
 * two network namespaces of simulated hosts (mpirun runs in the first; see "two simulated hosts").
 */
function mpirun(hosts: number, args: string[], onSpawn?: (p: ChildProcess) => void, net?: SimulatedHosts, env: Record<string, string> = {}): Promise<Result> {
  const mpi = ["--allow-run-as-root", "-np", String(hosts), ...(net ? net.mpirunArgs : ["--oversubscribe", "--mca", "btl", "tcp,self"])];
  const [cmd, ...pre] = net ? ["ip", "netns", "exec", net.names[0], "mpirun"] : ["mpirun"];
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, [...pre, ...mpi, process.execPath, "--import", "tsx", ...args], {
      cwd: REPO, env: { ...process.env, CHAINRULE_PLAIN: "1", ...env }, stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "", stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("error", reject);
    child.on("close", (code, signal) => resolve({ code, signal, stdout, stderr }));
    onSpawn?.(child);
  });
}

/**
 * Runs the library fixture (10 Adam steps) on `hosts` processes × `workers` threads; returns host 0's
 * parameters and buffers (host h's: `${out}.h`, see trainAll).
 */
async function train(hosts: number, workers: number, kind: "mlp" | "cnn" | "lora", net?: SimulatedHosts, batch = 12, bucketMiB = 1, compression?: string): Promise<Float32Array> {
  return (await trainAll(hosts, workers, kind, net, batch, bucketMiB, compression))[0];
}

/** As train, every host's parameters and buffers; `simd` true or false runs every process with core's SIMD kernels on or off (CHAINRULE_SIMD). */
async function trainAll(hosts: number, workers: number, kind: "mlp" | "cnn" | "lora", net?: SimulatedHosts, batch = 12, bucketMiB = 1, compression?: string, simd?: boolean): Promise<Float32Array[]> {
  const env: Record<string, string> = simd === undefined ? {} : { CHAINRULE_SIMD: simd ? "1" : "0" };
  const out = join(TMP, `${kind}-${hosts}x${workers}-${Math.random().toString(36).slice(2)}.bin`);
  const args = [TRAIN, String(workers), out, kind, String(batch), String(bucketMiB), ...(compression ? [compression] : [])];
  const r = hosts === 1
    ? await new Promise<Result>((resolve) => {
      const c = spawn(process.execPath, ["--import", "tsx", ...args], { cwd: REPO, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
      let stdout = "", stderr = "";
      c.stdout.on("data", (d) => (stdout += d));
      c.stderr.on("data", (d) => (stderr += d));
      c.on("close", (code, signal) => resolve({ code, signal, stdout, stderr }));
    })
    : await mpirun(hosts, args, undefined, net, env);
  expect(r.code, r.stdout + r.stderr).toBe(0);
  expect(r.stdout).toContain(`hosts ${hosts} workers ${workers}`);
  if (simd !== undefined) expect(r.stdout).toContain(`simd ${simd ? "on" : "off"}`);
  return Array.from({ length: hosts }, (_, h) => {
    const b = readFileSync(h === 0 ? out : `${out}.${h}`);
    return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
  });
}

function maxDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}

describe("DataParallel across hosts (hosts: \"mpi\")", () => {
  it("2 hosts × 1 worker and 2 hosts × 2 workers train what 1 worker trains (1e-5); a run repeats bit for bit", async () => {
    const one = await train(1, 1, "mlp");
    const twoByOne = await train(2, 1, "mlp");
    expect(maxDiff(twoByOne, one)).toBeLessThan(1e-5);
    expect(maxDiff(await train(2, 2, "mlp"), one)).toBeLessThan(1e-5);
    expect(maxDiff(await train(2, 1, "mlp"), twoByOne)).toBe(0);
  }, 120_000);

  it("buckets change nothing: one parameter per bucket equals one bucket, bit for bit (LoRA: frozen parameters between trainable ones)", async () => {
    const tiny = 1e-5; // 10 floats: every parameter is a bucket of its own
    expect(maxDiff(await train(2, 2, "mlp", undefined, 12, tiny), await train(2, 2, "mlp"))).toBe(0);
    const lora = await train(2, 1, "lora", undefined, 12, 1);
    expect(maxDiff(lora, await train(1, 1, "lora"))).toBeLessThan(1e-5);
    expect(maxDiff(await train(2, 1, "lora", undefined, 12, tiny), lora)).toBe(0);
  }, 120_000);

  it("3 hosts reduce-scatter each bucket: 3 hosts × 1 worker equal 1 host × 3 workers bit for bit", async () => {
    expect(maxDiff(await train(3, 1, "mlp", undefined, 12, 1e-5), await train(1, 3, "mlp"))).toBe(0);
  }, 120_000);

  it("gradientCompression: bf16 and fp16 on 2 hosts (all-gather), bf16 on 3 (reduce-scatter): every host ends with the same bits, near float32 training; \"none\" is float32, bit for bit", async () => {
    const float32 = await train(2, 1, "mlp");
    expect(maxDiff(await train(2, 1, "mlp", undefined, 12, 1, "none"), float32)).toBe(0);
    const runs = [[2, "bf16", 1], [2, "fp16", 1], [3, "bf16", 1e-5]] as const;
    for (const [hosts, format, bucketMiB] of runs) {
      const all = await trainAll(hosts, 1, "mlp", undefined, 12, bucketMiB, format);
      for (let h = 1; h < hosts; h++) expect(maxDiff(all[h], all[0]), `${format}, ${hosts} hosts: host ${h}`).toBe(0);
      // 10 Adam steps of lr 0.01 move a parameter by at most about 0.1; with the gradient rounded
      // to 8 (bf16) or 11 (fp16) significant bits the run stays within 16 times that precision of it.
      const d = maxDiff(all[0], hosts === 2 ? float32 : await train(1, 3, "mlp"));
      expect(d, `${format}, ${hosts} hosts`).toBeGreaterThan(0);
      expect(d, `${format}, ${hosts} hosts`).toBeLessThan(0.1 * 16 * (format === "bf16" ? 2 ** -8 : 2 ** -11));
    }
  }, 180_000);

  it("per-worker batch norm: 2 hosts × 1 worker equals 1 host × 2 workers bit for bit, running statistics included", async () => {
    expect(maxDiff(await train(2, 1, "cnn"), await train(1, 2, "cnn"))).toBe(0);
  }, 120_000);

  it("the host's reduce in WebAssembly SIMD: 2 hosts × 2 and × 3 workers equal the loops (CHAINRULE_SIMD=0) bit for bit, every host", async () => {
    // Batch 7: the ranks' shards differ in size (2 and 1 rows), so their weights within a host differ.
    for (const [workers, kind] of [[2, "mlp"], [3, "cnn"]] as const) {
      const simd = await trainAll(2, workers, kind, undefined, 7, 1, undefined, true), loops = await trainAll(2, workers, kind, undefined, 7, 1, undefined, false);
      for (let h = 0; h < 2; h++) expect(maxDiff(simd[h], loops[h]), `2 × ${workers} ${kind}: host ${h}`).toBe(0);
      expect(maxDiff(simd[1], simd[0])).toBe(0);
    }
  }, 180_000);

  it("a host without rows in a batch: 2 × 2 at batch 2 equals 1 × 4, and 2 × 1 at batch 1 equals 1 × 2, bit for bit", async () => {
    const twoByTwo = await train(2, 2, "cnn", undefined, 2);
    expect(twoByTwo.every(Number.isFinite)).toBe(true);
    expect(maxDiff(twoByTwo, await train(1, 4, "cnn", undefined, 2))).toBe(0);
    expect(maxDiff(await train(2, 1, "cnn", undefined, 1), await train(1, 2, "cnn", undefined, 1))).toBe(0);
  }, 180_000);
});

/** A long job of one worker per host, stopped or killed mid-run by the tests below. */
const LONG = {
  model: { type: "mlp", hidden: [64] },
  data: { type: "mnist", limitTrain: 2000, limitHeldOut: 100 },
  epochs: 50, batchSize: 20, workers: 1, seed: 1,
};

/**
 * Runs `chainrule train job --out run` on 2 hosts and, once `ready()`, sends `signal` to host 1's
 * process alone (mpirun's last child); resolves to the result and when the signal was sent.
 */
async function signalHostWhen(job: string, run: string, ready: () => boolean, signal: NodeJS.Signals): Promise<{ r: Result; sentAt: number }> {
  let sentAt = 0;
  const r = await mpirun(2, [MAIN, "train", job, "--out", run], (mpi) => {
    const timer = setInterval(() => {
      if (!ready()) return;
      clearInterval(timer);
      const ps = spawn("pgrep", ["-P", String(mpi.pid)]);
      let out = "";
      ps.stdout.on("data", (d) => (out += d));
      ps.on("close", () => {
        const pids = out.trim().split("\n").map(Number).filter(Boolean);
        sentAt = performance.now();
        process.kill(pids[pids.length - 1], signal);
      });
    }, 20);
  });
  return { r, sentAt };
}

describe("chainrule train under mpirun", () => {
  const job = writeJobIn(TMP, "mlp", {
    model: { type: "mlp", hidden: [32] },
    data: { type: "mnist", limitTrain: 400, limitHeldOut: 100 },
    optimizer: { type: "adam", lr: 0.002 },
    epochs: 2, batchSize: 40, workers: 1, seed: 3,
  });

  it("host 0 alone writes the run; 2 hosts match 1 host; a 2-host run resumes on 1 host", async () => {
    const one = join(TMP, "one"), two = join(TMP, "two"), half = join(TMP, "half");
    expect((await cli(["train", job, "--out", one])).code).toBe(0);
    const r = await mpirun(2, [MAIN, "train", job, "--out", two]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain("DataParallel, 2 hosts (MPI) · 1 worker (this thread)");
    expect(r.stdout.match(/held-out accuracy: /g)).toHaveLength(1); // one process speaks
    const want = checkpointTensors(latestCheckpoint(one));
    const close = (run: string) => {
      const got = checkpointTensors(latestCheckpoint(run));
      for (const [k, t] of Object.entries(want)) expect(maxDiff(got[k].data, t.data), k).toBeLessThan(1e-5);
    };
    close(two);
    // Half the run on 2 hosts, the rest on this process alone.
    expect((await mpirun(2, [MAIN, "train", job, "--out", half, "--epochs", "1"])).code).toBe(0);
    const resumed = await cli(["train", "--resume", "--out", half, "--epochs", "2"]);
    expect(resumed.code, resumed.stderr).toBe(0);
    close(half);
  }, 180_000);

  it("gradientCompression bf16 from the job: the engine line says so, the run stays near float32 training; a bad value is refused naming the key", async () => {
    const one = join(TMP, "one-f32"), bf16 = join(TMP, "two-bf16");
    expect((await cli(["train", job, "--out", one])).code).toBe(0);
    const r = await mpirun(2, [MAIN, "train", job, "--out", bf16, "--set", "gradientCompression=bf16"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain("DataParallel, 2 hosts (MPI, gradient sent as bf16) · 1 worker (this thread)");
    // The figures of the last epoch: held-out loss within 1% of float32's (measured 0.07%). Single
    // parameters may move further apart: Adam rescales a coordinate whose hosts' gradients nearly
    // cancel, and there the rounding of each host's gradient decides the sign.
    const last = (run: string) => readFileSync(join(run, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l)).filter((m) => m.kind === "epoch").pop();
    const [want, got] = [last(one), last(bf16)];
    expect(got.step).toBe(want.step);
    expect(Math.abs(got.heldOutLoss - want.heldOutLoss)).toBeLessThan(0.01 * want.heldOutLoss);
    expectOneLineError(await cli(["train", job, "--set", "gradientCompression=fp8"]), /gradientCompression: expected one of "none", "bf16", "fp16", got "fp8"/, 2);
  }, 180_000);

  it("a run that diverges with fp16 across hosts says that fp16's range is the likely cause and names bf16", async () => {
    const r = await mpirun(2, [MAIN, "train", job, "--out", join(TMP, "fp16-diverged"), "--lr", "1e9", "--set", "gradientCompression=fp16"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/diverged: .*the gradient crosses hosts as fp16, which overflows beyond ±65504 before clipGradNorm applies: set gradientCompression to bf16/);
  }, 180_000);

  it("SIGTERM to one host: every host stops after the same step, host 0 writes that step's checkpoint", async () => {
    const long = writeJobIn(TMP, "stop", { ...LONG, checkpoint: { everySteps: 1000, keep: 2 }, log: { everySteps: 1 } });
    const run = join(TMP, "stopped");
    const steps = () => {
      const m = join(run, "metrics.jsonl");
      return existsSync(m) ? readFileSync(m, "utf8").split("\n").filter((l) => l.includes('"kind":"step"')).length : 0;
    };
    const { r, sentAt: signalledAt } = await signalHostWhen(long, run, () => steps() >= 30, "SIGTERM");
    expect(signalledAt).toBeGreaterThan(0);
    expect(performance.now() - signalledAt).toBeLessThan(30_000);
    const m = /interrupted \(SIGTERM\) at epoch \d+, step (\d+): checkpoint written to (\S+)/.exec(r.stdout);
    expect(m, r.stdout + r.stderr).not.toBeNull();
    const ck = latestCheckpoint(run);
    expect(JSON.parse(readFileSync(join(ck, "state.json"), "utf8")).step).toBe(Number(m![1]));
    // It resumes on one host from there.
    const resumed = await cli(["train", "--resume", "--out", run, "--epochs", "2"]);
    expect(resumed.code, resumed.stderr).toBe(0);
  }, 180_000);

  it("a host that dies ends the job in bounded time; the last checkpoint stays intact", async () => {
    const long = writeJobIn(TMP, "long", { ...LONG, checkpoint: { everySteps: 20, keep: 2 } });
    const run = join(TMP, "killed");
    const cks = join(run, "checkpoints");
    const { r, sentAt: killedAt } = await signalHostWhen(long, run, () => existsSync(cks) && readdirSync(cks).some((n) => n.startsWith("step-")), "SIGKILL");
    expect(killedAt).toBeGreaterThan(0);
    expect(r.code).not.toBe(0);
    expect(performance.now() - killedAt).toBeLessThan(30_000);
    expect(r.stdout + r.stderr).toMatch(/process rank 1 .*exited on signal 9/); // mpirun names the lost host
    const ck = latestCheckpoint(run);
    expect(Object.keys(checkpointTensors(ck)).length).toBeGreaterThan(0); // loads: intact
    expect(JSON.parse(readFileSync(join(ck, "state.json"), "utf8")).step % 20).toBe(0);
  }, 180_000);
});

describe("two simulated hosts: network namespaces joined by a veth pair", () => {
  let net: SimulatedHosts | null = null;
  beforeAll(() => {
    net = simulateHosts(TMP);
  });
  afterAll(() => removeHosts(net));

  it("2 hosts × 1 worker across the namespaces equal 1 worker (1e-5) and the same run over loopback, bit for bit", async () => {
    const across = await train(2, 1, "mlp", net!);
    expect(maxDiff(across, await train(1, 1, "mlp"))).toBeLessThan(1e-5);
    expect(maxDiff(across, await train(2, 1, "mlp"))).toBe(0);
    expect(maxDiff(await train(2, 2, "mlp", net!), across)).toBeLessThan(1e-5);
  }, 180_000);
});
