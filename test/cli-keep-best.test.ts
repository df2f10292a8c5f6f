/**
 * checkpoint.keepBest (the best held-out figure's checkpoint beside the last N, as Lightning's
 * ModelCheckpoint) and earlyStopping (as Lightning's EarlyStopping) through the real command,
 * and across --resume: their state travels in the checkpoints.
 */
import { describe, expect, it } from "vitest";
import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseJob } from "../packages/cli/src/job/parse.js";
import { checkpointTensors, cli, expectOneLineError, tempDir, writeJobIn } from "./cli-helpers.ts";

const TMP = tempDir("chainrule-best-");
const SMALL = {
  model: { type: "mlp", hidden: [32] },
  data: { type: "mnist", limitTrain: 600, limitHeldOut: 200 },
  batchSize: 50, workers: 1,
};

type Rec = Record<string, any>;
const records = (run: string): Rec[] => readFileSync(join(run, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
const checkpointDirs = (run: string) => readdirSync(join(run, "checkpoints")).sort();
const step = (n: number) => String(n).padStart(8, "0");

describe("checkpoint.keepBest", () => {
  it("keeps the checkpoint of the best held-out accuracy beside the last one", async () => {
    const run = join(TMP, "best");
    const job = writeJobIn(TMP, "best", { ...SMALL, optimizer: { type: "sgd", lr: 0.5 }, epochs: 5, checkpoint: { keep: 1, keepBest: { metric: "heldOutAccuracy" } } });
    const r = await cli(["train", job, "--out", run]);
    expect(r.code, r.stderr).toBe(0);
    const epochs = records(run).filter((e) => e.kind === "epoch");
    // The first epoch with the highest accuracy (a tie is no improvement).
    const best = epochs.reduce((a, e) => (e.heldOutAccuracy > a.heldOutAccuracy ? e : a));
    expect(checkpointDirs(run)).toEqual([`best-step-${step(best.step)}`, `step-${step(epochs[epochs.length - 1].step)}`].sort());
    expect(r.stdout).toContain(`best checkpoint: ${join(run, "checkpoints", `best-step-${step(best.step)}`)} (held-out accuracy ${(best.heldOutAccuracy * 100).toFixed(2)}%, epoch ${best.epoch})`);
    const ev = await cli(["eval", join(run, "checkpoints", `best-step-${step(best.step)}`)]);
    expect(ev.code, ev.stderr).toBe(0);
    expect(ev.stdout).toContain(`accuracy: ${(best.heldOutAccuracy * 100).toFixed(2)}%`);
    const summary = JSON.parse(readFileSync(join(run, "summary.json"), "utf8"));
    expect(summary.bestCheckpoint).toMatchObject({ metric: "heldOutAccuracy", value: best.heldOutAccuracy, epoch: best.epoch, step: best.step });
    // Each new best was recorded, and each replaced the one before.
    const bests = records(run).filter((e) => e.kind === "best");
    expect(bests[bests.length - 1]).toMatchObject({ step: best.step, metric: "heldOutAccuracy", mode: "max", value: best.heldOutAccuracy });
  }, 60_000);
});

describe("earlyStopping", () => {
  it("ends a run whose held-out loss stopped improving, saying why", async () => {
    const run = join(TMP, "early");
    // No epoch improves on the first by more than 10: the run ends after 1 + patience epochs.
    const job = writeJobIn(TMP, "early", { ...SMALL, epochs: 6, earlyStopping: { patience: 2, minDelta: 10 } });
    const r = await cli(["train", job, "--out", run]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^early stopping: held-out loss has not decreased by more than 10 for 2 epochs \(patience 2; best: held-out loss [\d.]+ at epoch 1\); stopping after epoch 3 of 6$/m);
    expect(r.stdout).toContain("trained 3 epochs of 6 (early stopping) (36 steps)");
    expect(records(run).filter((e) => e.kind === "epoch")).toHaveLength(3);
    expect(records(run).find((e) => e.kind === "earlyStop")).toMatchObject({ step: 36, epoch: 3, metric: "heldOutLoss", bestEpoch: 1, patience: 2, minDelta: 10 });
    expect(checkpointDirs(run)).toContain(`step-${step(36)}`);
    expect(JSON.parse(readFileSync(join(run, "summary.json"), "utf8")).stoppedEarly.epoch).toBe(3);
  }, 60_000);
});

describe("keepBest and earlyStopping across --resume", () => {
  it("a run stopped after 3 epochs and resumed keeps its best and its patience count: the same end as an uninterrupted run", async () => {
    // The best by the *highest* loss is epoch 1's (training lowers it), so a resume that forgot the
    // best would take a later epoch; patience 4 with minDelta 10 ends the run after epoch 5 only
    // if the two epochs without improvement before the resume are remembered.
    const job = writeJobIn(TMP, "resume", { ...SMALL, epochs: 6, checkpoint: { keepBest: { metric: "heldOutLoss", mode: "max" } }, earlyStopping: { patience: 4, minDelta: 10 } });
    const full = join(TMP, "resume-full"), split = join(TMP, "resume-split");
    const [a, b] = await Promise.all([cli(["train", job, "--out", full]), cli(["train", job, "--out", split, "--epochs", "3"])]);
    expect(a.code, a.stderr).toBe(0);
    expect(b.code, b.stderr).toBe(0);
    expect(a.stdout).toContain("stopping after epoch 5 of 6");
    const resumed = await cli(["train", "--resume", "--out", split, "--epochs", "6"]);
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(resumed.stdout).toContain("stopping after epoch 5 of 6");
    expect(checkpointDirs(split)).toEqual(checkpointDirs(full));
    expect(checkpointDirs(full)).toContain(`best-step-${step(12)}`);
    for (const [name, t] of Object.entries(checkpointTensors(join(full, "checkpoints", `best-step-${step(12)}`)))) {
      expect(Buffer.from(checkpointTensors(join(split, "checkpoints", `best-step-${step(12)}`))[name].data.buffer).equals(Buffer.from(t.data.buffer)), name).toBe(true);
    }
    const kinds = (run: string) => records(run).filter((e) => ["best", "earlyStop"].includes(e.kind)).map((e) => `${e.kind}@${e.step}`);
    expect(kinds(split)).toEqual(kinds(full));

    // Resumed again, the run has nothing left to train; with more patience it goes on.
    const again = await cli(["train", "--resume", "--out", split, "--epochs", "6"]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toMatch(/the run stopped at epoch 5 of 6; nothing to train \(raise earlyStopping\.patience/);
    const more = await cli(["train", "--resume", "--out", split, "--epochs", "8", "--set", "earlyStopping.patience=5"]);
    expect(more.code, more.stderr).toBe(0);
    expect(more.stdout).toMatch(/^epoch 6\/8: /m);
    expect(more.stdout).toContain("stopping after epoch 6 of 8");
  }, 120_000);
});

describe("on a regression's figures (MSE, MAE, R²)", () => {
  // y = 2x − 1 + noise: a linear model whose held-out errors move from epoch to epoch.
  const writeData = () => {
    let seed = 7;
    const noise = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31 - 0.5) * 0.2;
    writeFileSync(join(TMP, "line.csv"), "x,y\n" + Array.from({ length: 120 }, (_, i) => { const x = (i % 40) / 20 - 1; return `${x.toFixed(3)},${(2 * x - 1 + noise()).toFixed(4)}`; }).join("\n") + "\n");
  };
  const REGRESSION = { model: { type: "linear" }, data: { type: "csv", path: "line.csv", label: "y", task: "regression" }, optimizer: { type: "sgd", lr: 0.3 }, batchSize: 16, workers: 1 };

  it("the direction defaults to lower MSE and MAE, higher R²", () => {
    const mode = (metric: string) => parseJob({ checkpoint: { keepBest: { metric } } }, "job.json").checkpoint.keepBest!.mode;
    expect([mode("heldOutMse"), mode("heldOutMae"), mode("heldOutR2")]).toEqual(["min", "min", "max"]);
    expect(parseJob({ earlyStopping: { metric: "heldOutR2" } }, "job.json").earlyStopping!.mode).toBe("max");
    expect(() => parseJob({ model: { type: "gpt" }, data: { type: "text" }, earlyStopping: { metric: "heldOutMae" } }, "job.json"))
      .toThrow("job.json: earlyStopping.metric: a GPT has no heldOutMae, a regression's figure (watch heldOutLoss, the validation loss)");
  });

  it("keepBest keeps the epoch of the lowest held-out MAE; earlyStopping on R² stops when it no longer rises", async () => {
    writeData();
    const run = join(TMP, "best-mae"), early = join(TMP, "early-r2");
    const [r, e] = await Promise.all([
      cli(["train", writeJobIn(TMP, "best-mae", { ...REGRESSION, epochs: 5, checkpoint: { keep: 1, keepBest: { metric: "heldOutMae" } } }), "--out", run]),
      // No epoch raises R² by more than 10 over the first: the run ends after 1 + patience epochs.
      cli(["train", writeJobIn(TMP, "early-r2", { ...REGRESSION, epochs: 6, earlyStopping: { metric: "heldOutR2", patience: 2, minDelta: 10 } }), "--out", early]),
    ]);
    expect(r.code, r.stderr).toBe(0);
    const epochs = records(run).filter((x) => x.kind === "epoch");
    expect(new Set(epochs.map((x) => x.heldOutMae)).size).toBeGreaterThan(1);
    const best = epochs.reduce((a, x) => (x.heldOutMae < a.heldOutMae ? x : a));
    expect(checkpointDirs(run)).toContain(`best-step-${step(best.step)}`);
    expect(r.stdout).toContain(`best checkpoint: ${join(run, "checkpoints", `best-step-${step(best.step)}`)} (held-out MAE ${best.heldOutMae.toFixed(4)}, epoch ${best.epoch})`);
    expect(JSON.parse(readFileSync(join(run, "summary.json"), "utf8")).bestCheckpoint).toMatchObject({ metric: "heldOutMae", value: best.heldOutMae, epoch: best.epoch });

    expect(e.code, e.stderr).toBe(0);
    const first = records(early).find((x) => x.kind === "epoch")!;
    expect(e.stdout).toContain(`early stopping: held-out R² has not increased by more than 10 for 2 epochs (patience 2; best: held-out R² ${first.heldOutR2.toFixed(4)} at epoch 1); stopping after epoch 3 of 6`);
    expect(records(early).find((x) => x.kind === "earlyStop")).toMatchObject({ metric: "heldOutR2", mode: "max", bestEpoch: 1 });
  }, 60_000);

  it("a regression figure for a classifier is refused in one line naming the key", async () => {
    const out = join(TMP, "mae-classifier");
    const job = writeJobIn(TMP, "mae-classifier", { ...SMALL, epochs: 1, checkpoint: { keepBest: { metric: "heldOutMae" } } });
    expectOneLineError(await cli(["train", job, "--out", out]), /^chainrule: error: checkpoint\.keepBest\.metric: heldOutMae is measured for a regression \(numeric targets, mseLoss or l1Loss\), not for .* with crossEntropy; watch heldOutLoss, heldOutAccuracy$/, 2);
  }, 60_000);
});

describe("bad settings", () => {
  it("heldOutAccuracy for a GPT or for numeric targets is refused in one line", async () => {
    expect(() => parseJob({ model: { type: "gpt" }, data: { type: "text" }, checkpoint: { keepBest: { metric: "heldOutAccuracy" } } }, "job.json"))
      .toThrow("job.json: checkpoint.keepBest.metric: a GPT has no held-out accuracy (watch heldOutLoss, the validation loss)");
    expect(() => parseJob({ earlyStopping: { metric: "accuracy", patience: 0 } }, "job.json"))
      .toThrow(/earlyStopping\.metric: expected one of "heldOutLoss", "heldOutAccuracy", "heldOutMse", "heldOutMae", "heldOutR2", got "accuracy"; earlyStopping\.patience: expected a number > 0, got 0/);
    writeFileSync(join(TMP, "values.csv"), "x,y\n" + Array.from({ length: 40 }, (_, i) => `${i / 40},${(i / 20).toFixed(3)}`).join("\n") + "\n");
    const out = join(TMP, "values-run");
    const job = writeJobIn(TMP, "values", { model: { type: "linear" }, data: { type: "csv", path: "values.csv" }, epochs: 1, workers: 1, earlyStopping: { metric: "heldOutAccuracy" } });
    expectOneLineError(await cli(["train", job, "--out", out]), /earlyStopping\.metric: heldOutAccuracy is measured for class labels, not for CSV .*values\.csv.* with mseLoss; watch heldOutLoss, heldOutMse, heldOutMae, heldOutR2$/, 2);
    expect(() => readdirSync(out)).toThrow(); // the run directory is removed again
  }, 60_000);
});
