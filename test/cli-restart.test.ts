/**
 * `chainrule train --max-restarts N`: a worker that fails once (in its forward: parameters
 * untouched; or as it updates: from the last checkpoint) costs a restart, and the run ends with
 * the parameters of a run that never failed, bit for bit: batch-norm running statistics and the
 * divergence monitor's loss history included.
 */
import { describe, expect, it } from "vitest";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { REPO, checkpointTensors, cli, expectOneLineError, latestCheckpoint, tempDir, writeJobIn } from "./cli-helpers.ts";

const TMP = tempDir("chainrule-restart-");
const FIX = join(REPO, "test/fixtures");

/** 10 steps of 2 workers, a checkpoint every 2; the model throws once at a worker's `failAtCall`-th forward unless `marker` exists. */
function job(name: string, marker: string, failAtCall = 5): string {
  return writeJobIn(TMP, name, {
    model: { type: "module", module: join(FIX, "cli-model.ts"), export: "failsOnceAt", options: { failAtCall, marker } },
    data: { type: "mnist", limitTrain: 400, limitHeldOut: 50 }, epochs: 1, batchSize: 40, workers: 2, seed: 3,
    optimizer: { type: "adam", lr: 0.003 }, checkpoint: { everySteps: 2 },
  });
}

function finalTensors(run: string): Record<string, Float32Array> {
  return Object.fromEntries(Object.entries(checkpointTensors(latestCheckpoint(run))).map(([k, v]) => [k, v.data as Float32Array]));
}

/** The divergence monitor's loss history saved with the run's last checkpoint. */
function finalLossHistory(run: string): unknown {
  return JSON.parse(readFileSync(join(latestCheckpoint(run), "state.json"), "utf8")).extra.divergence;
}

describe("--max-restarts", () => {
  const never = join(TMP, "never-fails");
  writeFileSync(never, ""); // the marker exists: no failure
  let reference: Record<string, Float32Array>;
  let referenceHistory: unknown;

  it("a run whose worker never fails (the reference)", async () => {
    const r = await cli(["train", job("reference", never), "--out", join(TMP, "reference")]);
    expect(r.code, r.stderr).toBe(0);
    reference = finalTensors(join(TMP, "reference"));
    referenceHistory = finalLossHistory(join(TMP, "reference"));
    expect((referenceHistory as { recent: number[] }).recent).toHaveLength(10);
  }, 60_000);

  it("a worker that throws in its forward: the step is retried on fresh workers, the result is bit-identical", async () => {
    const run = join(TMP, "forward");
    const r = await cli(["train", job("forward", join(TMP, "marker-forward")), "--out", run, "--max-restarts", "2"]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/restart 1\/2 after: step 5: worker [01] failed in grad: injected failure at forward 5 \(parameters unchanged\)\ncontinuing with fresh workers from step 5 \(parameters untouched\)/);
    expect(finalTensors(run)).toEqual(reference);
    expect(finalLossHistory(run)).toEqual(referenceHistory);
    const restarts = readFileSync(join(run, "metrics.jsonl"), "utf8").split("\n").filter((l) => l.includes('"kind":"restart"'));
    expect(restarts).toHaveLength(1);
    expect(JSON.parse(restarts[0])).toMatchObject({ step: 4, restart: 1, of: 2, from: "step" });
  }, 60_000);

  it("a worker that fails while updating: the run goes back to the last checkpoint, the result is bit-identical", async () => {
    const run = join(TMP, "update");
    // Step 6: step 5, after the checkpoint of step 4, is rolled back and trained again.
    const r = await cli(["train", job("update", never), "--out", run, "--max-restarts", "1"], {
      env: { CHAINRULE_PARALLEL_INJECT_FAILURE: "update:1:6", CHAINRULE_PARALLEL_INJECT_ONCE: join(TMP, "marker-update") },
    });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/restart 1\/1 after: step 6: worker 1 failed in update: .*parameters may be partially updated\)\ncontinuing with fresh workers from the last checkpoint \(.*step-0*4\), step 4/);
    expect(finalTensors(run)).toEqual(reference);
    expect(finalLossHistory(run)).toEqual(referenceHistory); // step 5's loss counted once, as in the reference
  }, 60_000);

  describe("with batch norm", () => {
    /** A CNN with batch norm; clipping puts a barrier between the reduce and the first update, so a failure there leaves the parameters untouched. */
    const bnJob = (name: string) => writeJobIn(TMP, name, {
      model: { type: "cnn", channels: [4, 8], hidden: 16, batchNorm: true },
      data: { type: "mnist", limitTrain: 400, limitHeldOut: 50 }, epochs: 1, batchSize: 40, workers: 2, seed: 3,
      optimizer: { type: "adam", lr: 0.003 }, clipGradNorm: 1, checkpoint: { everySteps: 2 },
    });
    let bnReference: Record<string, Float32Array>;

    it("a run that never fails (the reference)", async () => {
      const r = await cli(["train", bnJob("bn-reference"), "--out", join(TMP, "bn-reference")]);
      expect(r.code, r.stderr).toBe(0);
      bnReference = finalTensors(join(TMP, "bn-reference"));
      expect(Object.keys(bnReference)).toContain("1.running_mean");
    }, 60_000);

    it("a failure after rank 0 averaged the running statistics, before any update: the retried step restores them, every tensor is bit-identical", async () => {
      const run = join(TMP, "bn-reduce");
      const r = await cli(["train", bnJob("bn-reduce"), "--out", run, "--max-restarts", "1"], {
        env: { CHAINRULE_PARALLEL_INJECT_FAILURE: "reduce:0:5", CHAINRULE_PARALLEL_INJECT_ONCE: join(TMP, "marker-bn-reduce") },
      });
      expect(r.code, r.stdout + r.stderr).toBe(0);
      expect(r.stdout).toMatch(/restart 1\/1 after: step 5: worker 0 failed in reduce: .*\(parameters unchanged\)\ncontinuing with fresh workers from step 5 \(parameters untouched\)/);
      expect(finalTensors(run)).toEqual(bnReference); // running_mean, running_var and num_batches_tracked too
    }, 60_000);
  });

  it("without restarts left the failure stops the run", async () => {
    const r = await cli(["train", job("none", join(TMP, "marker-none")), "--out", join(TMP, "none")]);
    expectOneLineError(r, /step 5: worker [01] failed in grad: injected failure at forward 5/, 1);
  }, 60_000);
});
