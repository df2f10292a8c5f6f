/**
 * What a training run shows: the progress bar fitted to the terminal's width (drawn through
 * cli-progress into a fake 80-column terminal), the running-mean loss, a GPT's tokens/s and
 * perplexity, and a regression's MSE, MAE and R² (against hand-computed values, and through
 * the real command in the epoch line and metrics.jsonl).
 */
import { describe, expect, it } from "vitest";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { makeDataset, nn } from "@chainrule/core";
import { Progress, renderBar, type BarFields } from "../packages/cli/src/progress.js";
import { regressionMetrics } from "../packages/cli/src/regression-metrics.js";
import { cli, tempDir, writeJobIn } from "./cli-helpers.ts";

const TMP = tempDir("chainrule-progress-");
const FIELDS: BarFields = { label: "epoch 12/15", done: 190, total: 422, meanLoss: 0.25671, loss: 0.23452, samplesPerSec: 5432.1, eta: "1m12s" };

describe("the progress bar", () => {
  it("fits the terminal's width, keeping the mean loss and the ETA; a wide one shows every field", () => {
    for (const width of [60, 80, 100, 120, 200]) {
      const line = renderBar(FIELDS, width);
      expect(line.length, `${width}: ${line}`).toBeLessThan(width);
      expect(line).toContain("epoch 12/15");
      expect(line).toContain("45%");
      expect(line).toContain("mean loss 0.2567");
      expect(line).toContain("ETA 1m12s");
    }
    expect(renderBar(FIELDS, 80)).toContain("5,432 samples/s");
    const wide = renderBar(FIELDS, 200);
    for (const field of ["190/422", "step loss 0.2345", "5,432 samples/s", "█"]) expect(wide).toContain(field);
  });

  it("shows a GPT's tokens/s and perplexity at 80 columns", () => {
    const line = renderBar({ ...FIELDS, tokensPerRow: 64, meanLoss: 1.6789 }, 80);
    expect(line.length).toBeLessThan(80);
    expect(line).toContain(`ppl ${Math.exp(1.6789).toPrecision(3)}`);
    expect(line).toContain("347,654 tokens/s");
    expect(line).toContain("ETA 1m12s");
  });

  it("an overdue step's wait replaces the ETA", () => {
    const line = renderBar({ ...FIELDS, waiting: "waiting for worker 1 (grad): 30 s" }, 80);
    expect(line).toContain("waiting for worker 1 (grad): 30 s");
    expect(line.length).toBeLessThan(80);
  });

  it("draws lines no wider than an 80-column terminal, with the epoch's running-mean loss", () => {
    const writes: string[] = [];
    const terminal = Object.assign(Object.create(process.stdout), { isTTY: true, columns: 80, write: (s: string) => (writes.push(String(s)), true) }) as NodeJS.WriteStream;
    const progress = new Progress(terminal, { tty: true });
    progress.startEpoch(2, 15, 422);
    const losses = [0.9, 0.7, 0.5];
    losses.forEach((loss, i) => progress.update(i + 1, { step: i + 1, loss, meanLoss: losses.slice(0, i + 1).reduce((a, b) => a + b) / (i + 1), samplesPerSec: 123_456 }));
    progress.stopBar(); // draws once more with the last values
    const drawn = writes.map((w) => w.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, "")).filter((w) => w.includes("epoch 3/15"));
    expect(drawn.length).toBeGreaterThan(0);
    for (const line of drawn) expect(line.length, line).toBeLessThan(80);
    const last = drawn[drawn.length - 1];
    expect(last).toContain("mean loss 0.7000");
    expect(last).toContain("123,456 samples/s");
    expect(last).toMatch(/ETA \S+/);
  });
});

describe("plain progress lines (CI logs, pipes)", () => {
  it("carry every field: the mean and step loss, a GPT's perplexity and tokens/s, the ETA", () => {
    const writes: string[] = [];
    const pipe = { isTTY: false, write: (s: string) => (writes.push(s), true) } as unknown as NodeJS.WriteStream;
    const progress = new Progress(pipe, { plainEverySec: 0, tokensPerRow: 16, tty: false });
    progress.startEpoch(0, 2, 10);
    progress.update(4, { step: 4, loss: 2, meanLoss: 2.5, samplesPerSec: 100 });
    expect(writes).toHaveLength(1);
    expect(writes[0]).toMatch(/^epoch 1\/2 step 4\/10 · mean loss 2\.5000 · step loss 2\.0000 · ppl 12\.2 · 1,600 tokens\/s · ETA \S+\n$/);
  });
});

describe("regression figures", () => {
  it("MSE, MAE and R² of a known model equal the hand-computed values (R² averaged over outputs)", () => {
    const model = new nn.Linear(1, 2);
    model.weight.data.set([2, 1]);
    model.bias!.data.set([0, 1]);
    // Predictions: output 0 = [0, 2, 4, 6], output 1 = [1, 2, 3, 4].
    const ds = makeDataset({ inputs: Float32Array.from([0, 1, 2, 3]), inputShape: [1], targets: Float32Array.from([0, 1, 2, 2, 5, 3, 5, 6]), targetShape: [2] });
    const m = regressionMetrics(model, ds);
    // Errors: output 0 [0, 0, -1, 1], output 1 [0, 0, 0, -2].
    expect(m.mse).toBeCloseTo(6 / 8, 12);
    expect(m.mae).toBeCloseTo(4 / 8, 12);
    // Output 0: mean 3, SST 9 + 1 + 4 + 4 = 18, SSE 2; output 1: mean 3, SST 4 + 1 + 0 + 9 = 14, SSE 4.
    expect(m.r2).toBeCloseTo(((1 - 2 / 18) + (1 - 4 / 14)) / 2, 6);
  });
});

describe("epoch lines and metrics.jsonl", () => {
  it("a regression run reports MSE, MAE and R² beside its loss", async () => {
    const rows = ["x1,x2,y", ...Array.from({ length: 200 }, (_, i) => {
      const a = ((i * 37) % 100) / 50 - 1, b = ((i * 61) % 100) / 50 - 1;
      return `${a},${b},${2 * a - b + 0.5}`;
    })];
    writeFileSync(join(TMP, "linear.csv"), rows.join("\n") + "\n");
    const run = join(TMP, "linear");
    const job = writeJobIn(TMP, "linear", { model: { type: "linear" }, data: { type: "csv", path: "linear.csv" }, epochs: 3, batchSize: 20, workers: 1, optimizer: { type: "adam", lr: 0.05 } });
    const r = await cli(["train", job, "--out", run]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^epoch 3\/3: train loss [\d.]+ · held-out loss [\d.]+ · MSE [\d.]+ · MAE [\d.]+ · R² [\d.-]+ · [\d,]+ samples\/s/m);
    const epoch = readFileSync(join(run, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l)).filter((e) => e.kind === "epoch").pop();
    // The trainer's MSE and the engine's held-out loss (mseLoss) are the same quantity, computed apart.
    expect(Math.abs(epoch.heldOutMse - epoch.heldOutLoss)).toBeLessThan(1e-5 * epoch.heldOutLoss);
    expect(epoch.heldOutMae).toBeGreaterThan(0);
    expect(epoch.heldOutMae ** 2).toBeLessThanOrEqual(epoch.heldOutMse * (1 + 1e-6)); // MAE² ≤ MSE
    expect(epoch.heldOutR2).toBeGreaterThan(0.5);
    expect(epoch.heldOutR2).toBeLessThan(1);
    const summary = JSON.parse(readFileSync(join(run, "summary.json"), "utf8"));
    expect(summary.heldOutR2).toBe(epoch.heldOutR2);
  }, 60_000);

  it("a GPT run reports tokens/s and perplexity", async () => {
    const run = join(TMP, "gpt");
    const job = writeJobIn(TMP, "gpt", { model: { type: "gpt", blockSize: 16, nLayer: 1, nHead: 2, nEmbd: 16 }, data: { type: "text" }, epochs: 1, batchSize: 32, workers: 1, sample: { tokens: 5 } });
    const r = await cli(["train", job, "--out", run]);
    expect(r.code, r.stderr).toBe(0);
    const m = /^epoch 1\/1: train loss [\d.]+ · validation loss ([\d.]+) · validation perplexity ([\d.]+) · [\d,]+ tokens\/s/m.exec(r.stdout);
    expect(m, r.stdout).not.toBeNull();
    expect(Number(m![2])).toBeCloseTo(Math.exp(Number(m![1])), 1);
    expect(r.stdout).toMatch(/trained 1 epoch .* [\d,]+ tokens\/s/);
    const epoch = readFileSync(join(run, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l)).find((e) => e.kind === "epoch");
    expect(epoch.tokensPerSec).toBeCloseTo(epoch.samplesPerSec * 16, 6);
  }, 60_000);
});
