/**
 * chainrule plot: the rows behind the charts (smoothing, units, ETA), and a run of each kind
 * (MLP, CNN, GPT, regression) through the real command → report.html whose panels match the
 * data, looked at in headless Chromium: offline, legible, a screenshot of each.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { existsSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import type { Browser } from "puppeteer-core";
import { Ema, RunRows, SERIES, rowsOfRun, runMeta } from "../packages/cli/src/metric-rows.js";
import { lossSpansDecade, panelSpecs, panelsWithData, renderSvg } from "../packages/cli/src/plot.js";
import { REPO, cli, expectOneLineError, tempDir, writeJobIn } from "./cli-helpers.js";
import { chartLayouts, launchChromium, legibilityProblems } from "./browser.js";

describe("chart rows", () => {
  it("smooths the step loss as TensorBoard does: a debiased exponential moving average", () => {
    const ema = new Ema(0.6);
    // By hand: last = 0.6 last + 0.4 v; value = last / (1 - 0.6^n).
    expect(ema.next(2)).toBeCloseTo(2, 12); // 0.8 / 0.4
    expect(ema.next(1)).toBeCloseTo((0.6 * 0.8 + 0.4) / (1 - 0.36), 12); // 0.88 / 0.64 = 1.375
    expect(ema.next(NaN)).toBeNaN(); // a non-finite point passes through and does not poison the average
    expect(ema.next(1)).toBeCloseTo((0.6 * 0.88 + 0.4) / (1 - 0.216), 12);
    expect(new Ema(0).next(5)).toBe(5);
  });

  it("a GPT run's throughput is in tokens/s (samples × context), its held-out loss is 'validation'", () => {
    const meta = runMeta("g", { model: { type: "gpt", blockSize: 32 }, data: { type: "text" }, epochs: 2 });
    expect(meta).toEqual({ name: "g", epochs: 2, tokensPerSample: 32, loss: "crossEntropy" });
    const { rows } = rowsOfRun("g", meta, [
      { kind: "eval", step: 0, heldOutLoss: 4 },
      { kind: "step", step: 10, epoch: 0.5, loss: 3, lr: 1e-3, samplesPerSec: 100, wallTime: 1 },
    ], 0.6);
    expect(rows.find((r) => r.panel === "throughput")?.y).toBe(3200);
    expect(rows.find((r) => r.panel === "loss" && r.x === 0)?.series).toBe(SERIES.validationLoss);
  });

  it("accuracy only where epochs carry it; the learning rate only when it changes; the loss unit from the job", () => {
    const reg = runMeta("r", { data: { type: "csv", task: "regression" }, epochs: 3 });
    expect(reg.loss).toBe("mseLoss");
    const { rows, runRows } = rowsOfRun("r", reg, [
      { kind: "step", step: 5, epoch: 0.5, loss: 1, lr: 0.01, samplesPerSec: 10, wallTime: 1 },
      { kind: "epoch", step: 10, epoch: 1, trainLoss: 0.9, heldOutLoss: 0.8, lr: 0.01, samplesPerSec: 10, wallTime: 2 },
      { kind: "step", step: 15, epoch: 1.5, loss: 0.7, lr: 0.01, samplesPerSec: 10, wallTime: 3 },
    ], 0.6);
    expect(panelsWithData(rows, [runRows])).toEqual(["loss", "throughput"]);
    const withAcc = rowsOfRun("c", runMeta("c", { data: { type: "mnist" } }), [
      { kind: "step", step: 5, epoch: 0.5, loss: 1, lr: 0.01, samplesPerSec: 10 },
      { kind: "step", step: 10, epoch: 1, loss: 1, lr: 0.005, samplesPerSec: 10 },
      { kind: "epoch", step: 10, epoch: 1, heldOutLoss: 0.5, heldOutAccuracy: 0.875 },
    ], 0.6);
    expect(panelsWithData(withAcc.rows, [withAcc.runRows])).toEqual(["loss", "accuracy", "throughput", "lr"]);
    expect(withAcc.rows.find((r) => r.panel === "accuracy")).toMatchObject({ x: 1, y: 87.5 });
    expect(runMeta("x", { data: { type: "csv", task: "auto" }, loss: "l1Loss" }).loss).toBe("l1Loss");
  });

  it("the position: steps per epoch from the records, the total from the job, ETA at the recent pace", () => {
    const r = new RunRows("m", runMeta("m", { data: { type: "mnist" }, epochs: 4 }), 0.6);
    r.add({ kind: "start", step: 0 });
    expect(r.status).toMatchObject({ state: "running", etaSeconds: null });
    r.add({ kind: "step", step: 20, epoch: 0.2, loss: 1, lr: 1e-3, samplesPerSec: 100, wallTime: 2 });
    r.add({ kind: "step", step: 40, epoch: 0.4, loss: 1, lr: 1e-3, samplesPerSec: 100, wallTime: 4 });
    // 100 steps per epoch × 4 epochs; 360 steps left at 10 steps/s.
    expect(r.status).toMatchObject({ step: 40, epoch: 0.4, totalSteps: 400, etaSeconds: 36 });
    r.add({ kind: "end", step: 400, wallTime: 40 });
    expect(r.status).toMatchObject({ state: "finished", etaSeconds: 0 });
    const early = new RunRows("e", runMeta("e", { data: { type: "mnist" }, epochs: 4 }), 0.6);
    for (const rec of [{ kind: "start", step: 0 }, { kind: "epoch", step: 100, epoch: 1, heldOutLoss: 1 }, { kind: "earlyStop", step: 100, epoch: 1 }, { kind: "end", step: 100 }]) early.add(rec);
    expect(early.status).toMatchObject({ state: "stopped early", step: 100, totalSteps: 400, etaSeconds: 0 });
  });

  it("a log loss axis only for a loss that falls more than a decade", () => {
    const loss = (ys: number[]) => ys.map((y, x) => ({ run: "a", panel: "loss" as const, series: SERIES.smoothLoss, x, y }));
    expect(lossSpansDecade(loss([2.3, 1.2, 0.9]))).toBe(false);
    expect(lossSpansDecade(loss([2.3, 0.5, 0.05]))).toBe(true);
  });

  it("renders a chart to SVG with its titles and units; several runs overlaid, named in the legend (escaped)", async () => {
    const meta = runMeta("x", { data: { type: "mnist" } });
    const rows = ["a<b", "c"].flatMap((run) => [10, 20, 30].map((x, i) => ({ run, panel: "loss" as const, series: SERIES.smoothLoss, x, y: 1 / (i + 1) })));
    const one = await renderSvg(panelSpecs([{ id: "a<b", meta }], { smoothing: 0.6, logLoss: false }).loss, rows.filter((r) => r.run === "a<b"));
    expect(one).toMatch(/^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
    expect(one).toContain("cross-entropy (nats)");
    expect(one).toContain("step (optimizer updates)");
    expect(one).toContain("train (smoothed)");
    const two = await renderSvg(panelSpecs([{ id: "a<b", meta }, { id: "c", meta }], { smoothing: 0.6, logLoss: false }).loss, rows);
    expect(two).toContain("a&lt;b");
    expect(two).not.toContain("a<b");
    expect((two.match(/class="mark-line role-mark/g) ?? []).length).toBeGreaterThan(0);
  });
});

// ---- a run of each kind through the real command ----

const TMP = tempDir("chainrule-plot-");
const SHOTS = tempDir("chainrule-plot-screenshots-");

interface Kind {
  name: string;
  job: Record<string, unknown>;
  panels: string[];
  lossTitle: string;
  throughputTitle: string;
}

function regressionCsv(): string {
  const lines = ["x1,x2,x3,y"];
  let s = 7;
  const rnd = () => ((s = (s * 16807) % 2147483647) / 2147483647) * 2 - 1;
  for (let i = 0; i < 240; i++) {
    const [a, b, c] = [rnd(), rnd(), rnd()];
    lines.push([a, b, c, Math.sin(2 * a) - b * c + 0.5 * c].map((v) => v.toFixed(5)).join(","));
  }
  const path = join(TMP, "regression.csv");
  writeFileSync(path, lines.join("\n") + "\n");
  return path;
}

const KINDS: Kind[] = [
  {
    name: "mlp",
    job: { model: { type: "mlp", hidden: [32] }, data: { type: "mnist", limitTrain: 512, limitHeldOut: 200 }, schedule: { type: "cosine" }, epochs: 3, batchSize: 32, workers: 1, log: { everySteps: 2 } },
    panels: ["loss", "accuracy", "throughput", "lr"], lossTitle: "cross-entropy (nats)", throughputTitle: "samples/s",
  },
  {
    name: "cnn",
    job: { model: { type: "cnn", channels: [4, 8], hidden: 16 }, data: { type: "mnist", limitTrain: 256, limitHeldOut: 100 }, epochs: 2, batchSize: 32, workers: 1, log: { everySteps: 1 } },
    panels: ["loss", "accuracy", "throughput"], lossTitle: "cross-entropy (nats)", throughputTitle: "samples/s",
  },
  {
    name: "gpt",
    job: {
      model: { type: "gpt", blockSize: 16, nLayer: 1, nHead: 2, nEmbd: 16 }, data: { type: "text", file: join(REPO, "test/fixtures/gpt-tiny.txt") },
      schedule: { type: "cosine", warmupSteps: 4 }, optimizer: { type: "adamw", lr: 0.01 }, epochs: 6, batchSize: 16, workers: 1, sample: { tokens: 0 }, log: { everySteps: 2 },
    },
    panels: ["loss", "throughput", "lr"], lossTitle: "cross-entropy (nats/token)", throughputTitle: "tokens/s",
  },
  {
    name: "regression",
    job: { model: { type: "mlp", hidden: [16], activation: "tanh" }, data: { type: "csv", path: "", label: "y", task: "regression" }, optimizer: { type: "adam", lr: 0.01 }, epochs: 6, batchSize: 16, workers: 1, log: { everySteps: 2 } },
    panels: ["loss", "throughput"], lossTitle: "mean squared error", throughputTitle: "samples/s",
  },
];

describe("chainrule plot: a run of each kind", () => {
  let browser: Browser;
  beforeAll(async () => {
    (KINDS[3].job.data as { path: string }).path = regressionCsv();
    for (const k of KINDS) {
      const r = await cli(["train", writeJobIn(TMP, k.name, k.job), "--out", join(TMP, k.name)]);
      expect(r.code, r.stdout + r.stderr).toBe(0);
      const p = await cli(["plot", join(TMP, k.name)]);
      expect(p.code, p.stdout + p.stderr).toBe(0);
    }
    browser = await launchChromium();
  }, 120_000);
  afterAll(async () => {
    await browser?.close();
  });

  it.each(KINDS.map((k) => [k.name, k] as const))("%s: one SVG per panel with data, the same panels in report.html, with the run's units", (_, k) => {
    const run = join(TMP, k.name);
    expect(readdirSync(join(run, "plots")).sort()).toEqual(k.panels.map((p) => `${p}.svg`).sort());
    const html = readFileSync(join(run, "report.html"), "utf8");
    expect([...html.matchAll(/<figure id="(\w+)">/g)].map((m) => m[1])).toEqual(k.panels);
    const loss = readFileSync(join(run, "plots/loss.svg"), "utf8");
    expect(loss).toContain(k.lossTitle);
    expect(readFileSync(join(run, "plots/throughput.svg"), "utf8")).toContain(k.throughputTitle);
    expect(html).not.toMatch(/no data/i);
    expect(html.includes("<th>accuracy</th>")).toBe(k.panels.includes("accuracy"));
  });

  it.each(KINDS.map((k) => [k.name] as const))("%s: report.html opens offline in Chromium, every chart legible (labels apart, legend off the lines)", async (name) => {
    const page = await browser.newPage();
    const requests: string[] = [];
    page.on("request", (r) => requests.push(r.url()));
    await page.setViewport({ width: 1280, height: 900 });
    const url = pathToFileURL(join(TMP, name, "report.html")).href;
    await page.goto(url, { waitUntil: "load", timeout: 30_000 });
    expect(requests).toEqual([url]); // nothing fetched: the charts are inline
    const charts = await chartLayouts(page);
    expect(charts.map((c) => c.id)).toEqual(KINDS.find((k) => k.name === name)!.panels);
    for (const c of charts) {
      expect(legibilityProblems(c)).toEqual([]);
      const x = c.axes.find((a) => /^(step|epoch)/.test(a.titleText))!, y = c.axes.find((a) => a !== x)!;
      expect(x.labelTexts.filter(Boolean).length, `${c.id}: x tick labels`).toBeGreaterThanOrEqual(2);
      expect(y.labelTexts.filter(Boolean).length, `${c.id}: y tick labels`).toBeGreaterThanOrEqual(3);
    }
    const shot = join(SHOTS, `report-${name}.png`);
    await page.screenshot({ path: shot, fullPage: true });
    console.log(`report.html of the ${name} run: ${shot}`);
    await page.close();
  });

  it("bad usage is one line naming the flag or directory", async () => {
    expectOneLineError(await cli(["plot", join(TMP, "mlp"), "--smoothing", "1"]), /--smoothing: expected a number from 0 to below 1, got "1"/, 2);
    expectOneLineError(await cli(["plot", TMP]), /no metrics\.jsonl \(is it a run directory\?\)/, 1);
    expect(existsSync(join(TMP, "plots"))).toBe(false);
  });
});
