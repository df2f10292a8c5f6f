/**
 * The built-in CNN job through the real command (child processes): a small subset of the
 * embedded digits learns; an IDX image dataset (generated) trains with synchronised batch norm,
 * flips and crops, its checkpoint evaluates to the same accuracy (running statistics saved),
 * and 1 worker (the replica inline, augmenting in the main thread) matches 2 workers.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { cpSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { loadSafetensors } from "@chainrule/core";
import { parseJob } from "../packages/cli/src/job/parse.ts";
import { writeBandsIdx } from "./fixtures/cnn-idx.ts";
import { REPO, checkpointTensors, cli, latestCheckpoint, tempDir } from "./cli-helpers.ts";

const TMP = tempDir("chainrule-cnn-");

function accuracy(out: string): number {
  const m = /held-out accuracy: ([\d.]+)%/.exec(out);
  if (!m) throw new Error(`no held-out accuracy in:\n${out}`);
  return Number(m[1]);
}

function relDiffWeights(a: string, b: string): number {
  const ta = checkpointTensors(a), tb = checkpointTensors(b);
  let num = 0, den = 0;
  for (const k of Object.keys(ta)) {
    const x = ta[k].data, y = tb[k].data;
    for (let i = 0; i < x.length; i++) { num += (x[i] - y[i]) ** 2; den += y[i] ** 2; }
  }
  return Math.sqrt(num / den);
}

it("chainrule train cnn on 640 digits (40 steps of 32): 2 workers, batch norm, random crops in the workers; it learns", async () => {
  const out = join(TMP, "digits");
  const r = await cli(["train", "cnn", "--out", out, "--epochs", "2", "--workers", "2", "--batch-size", "32", "--set", "data.limitTrain=640", "--set", "data.limitHeldOut=300"]);
  expect(r.code, r.stdout + r.stderr).toBe(0);
  expect(r.stdout).toMatch(/CNN 1×28×28 → conv 32, 64 \(batch norm\) → 128 → 10/);
  expect(r.stdout).toMatch(/DataParallel, 2 worker threads · augment crop 2 · per-worker batch norm/);
  expect(accuracy(r.stdout)).toBeGreaterThan(60); // chance is 10%; 83% measured (eval uses running statistics only 40 steps old)
  const job = JSON.parse(readFileSync(join(out, "job.json"), "utf8"));
  expect(job.augment).toEqual({ crop: 2, flip: false });
  expect(job.model).toMatchObject({ type: "cnn", batchNorm: true });
}, 90_000);

describe("the cnn job on an IDX image dataset", () => {
  let dir = "";
  beforeAll(() => {
    dir = writeBandsIdx(join(TMP, "bands"));
  });
  const args = (out: string, workers: number) => [
    "train", "cnn", "--out", out, "--epochs", "3", "--workers", String(workers), "--batch-size", "32",
    "--set", "data.type=idx", "--set", `data.dir=${dir}`, "--set", "model.channels=[4,8]", "--set", "model.hidden=16",
    "--set", "augment.crop=1", "--set", "augment.flip=true", "--set", "syncBatchNorm=true", "--set", "optimizer.lr=0.01",
  ];

  it("trains with sync batch norm, flips and crops; eval of the checkpoint agrees; 1 worker matches 2", async () => {
    const two = join(TMP, "idx2"), one = join(TMP, "idx1");
    const r2 = await cli(args(two, 2));
    expect(r2.code, r2.stdout + r2.stderr).toBe(0);
    expect(r2.stdout).toMatch(/CNN 1×12×12 → conv 4, 8 \(batch norm\) → 16 → 4 .* on IDX .*bands: 480 train \/ 200 held-out rows/);
    expect(r2.stdout).toMatch(/augment crop 1 \+ flip · synchronised batch norm/);
    const acc = accuracy(r2.stdout);
    expect(acc).toBeGreaterThan(90);
    // The checkpoint holds the running statistics the workers kept: eval (in eval mode) gives the same accuracy.
    const ev = await cli(["eval", latestCheckpoint(two)]);
    expect(ev.code, ev.stdout + ev.stderr).toBe(0);
    expect(Number(/accuracy: ([\d.]+)%/.exec(ev.stdout)![1])).toBeCloseTo(acc, 1);
    // One worker (inline) augments in the main thread with the workers' seeds, and sync BN = whole-batch BN.
    const r1 = await cli(args(one, 1));
    expect(r1.code, r1.stdout + r1.stderr).toBe(0);
    expect(r1.stdout).toMatch(/DataParallel, 1 worker \(this thread\) · augment crop 1 \+ flip/);
    expect(relDiffWeights(latestCheckpoint(two), latestCheckpoint(one))).toBeLessThan(1e-3);
  }, 90_000);

  it("--resume is bit-exact: weights and running statistics (2 workers, per-worker BN, crops + flips)", async () => {
    const straight = join(TMP, "straight"), resumed = join(TMP, "resumed");
    const base = (out: string, epochs: number) => [
      "train", "cnn", "--out", out, "--epochs", String(epochs), "--workers", "2", "--batch-size", "32",
      "--set", "data.type=idx", "--set", `data.dir=${dir}`, "--set", "data.limitTrain=200", "--set", "model.channels=[4,8]", "--set", "model.hidden=16",
      "--set", "augment.crop=1", "--set", "augment.flip=true", "--set", "optimizer.lr=0.01",
    ];
    const a = await cli(base(straight, 2));
    expect(a.code, a.stdout + a.stderr).toBe(0);
    // The same run cut after epoch 1: its directory without the final checkpoint, then --resume.
    cpSync(straight, resumed, { recursive: true });
    rmSync(latestCheckpoint(resumed), { recursive: true });
    const b = await cli(["train", "--resume", "--out", resumed]);
    expect(b.code, b.stdout + b.stderr).toBe(0);
    expect(b.stdout).toMatch(/resuming from .*: epoch 2/);
    const wa = loadSafetensors(join(latestCheckpoint(straight), "model.safetensors")).tensors;
    const wb = loadSafetensors(join(latestCheckpoint(resumed), "model.safetensors")).tensors;
    expect(Object.keys(wb).sort()).toEqual(Object.keys(wa).sort());
    expect(Object.keys(wa)).toContain("1.running_var");
    for (const k of Object.keys(wa)) expect(Buffer.from(wb[k].data.buffer, wb[k].data.byteOffset, wb[k].data.byteLength).equals(Buffer.from(wa[k].data.buffer, wa[k].data.byteOffset, wa[k].data.byteLength)), k).toBe(true);
  }, 90_000);
});

it("the example CNN jobs validate", () => {
  for (const f of ["cnn-fashion-mnist", "cnn-mnist-syncbn"]) {
    const job = parseJob(JSON.parse(readFileSync(join(REPO, "examples/jobs", `${f}.json`), "utf8")), f);
    expect(job.model.type).toBe("cnn");
    expect(job.augment?.crop).toBe(2);
  }
});
