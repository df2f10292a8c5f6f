/**
 * The live dashboard: its file follower (appends, half-written lines, a file replaced by a
 * resume), and in headless Chromium: `train --dashboard` during a short run (the chart's data
 * grows, the step counter advances, the end arrives), `chainrule dashboard` overlaying two runs,
 * and a directory of runs followed for runs created later (through its events, and in Chromium).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ChildProcess, spawn } from "node:child_process";
import { appendFileSync, cpSync, mkdirSync, renameSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { join } from "node:path";
import type { Browser, Page } from "puppeteer-core";
import { RunWatcher } from "../packages/cli/src/dashboard/watch.js";
import { takeDashboardFlag } from "../packages/cli/src/dashboard/flag.js";
import { MAIN, REPO, cli, expectOneLineError, tempDir, writeJobIn } from "./cli-helpers.js";
import { chartLayouts, launchChromium, legibilityProblems } from "./browser.js";

const TMP = tempDir("chainrule-dashboard-");
const SHOTS = tempDir("chainrule-dashboard-screenshots-");

describe("following metrics.jsonl", () => {
  const step = (n: number) => JSON.stringify({ kind: "step", step: n, epoch: n / 10, loss: 1 / n, lr: 0.01, samplesPerSec: 100, wallTime: n / 10 }) + "\n";

  it("reads what is appended, waits for a half-written line, starts again when the file is replaced", () => {
    const dir = join(TMP, "follow");
    mkdirSync(dir);
    writeFileSync(join(dir, "job.json"), JSON.stringify({ data: { type: "mnist" }, epochs: 1 }));
    const w = new RunWatcher("follow", dir, 0.6, (line) => { throw new Error(line); });
    expect(w.poll()?.rows ?? []).toEqual([]); // no metrics yet
    const metrics = join(dir, "metrics.jsonl");
    writeFileSync(metrics, step(1) + step(2));
    const first = w.poll()!;
    expect(first.reset).toBe(false);
    expect(first.rows.filter((r) => r.series === "train (raw)").map((r) => r.x)).toEqual([1, 2]);
    const third = step(3);
    appendFileSync(metrics, third.slice(0, 20));
    expect(w.poll()).toBeNull(); // half a record: nothing yet
    appendFileSync(metrics, third.slice(20));
    expect(w.poll()!.rows.filter((r) => r.series === "train (raw)").map((r) => r.x)).toEqual([3]);
    expect(w.poll()).toBeNull();
    // A resume rewrites the file (temp + rename) without the records after its checkpoint.
    writeFileSync(metrics + ".tmp", step(1));
    renameSync(metrics + ".tmp", metrics);
    const again = w.poll()!;
    expect(again.reset).toBe(true);
    expect(again.rows.filter((r) => r.series === "train (raw)").map((r) => r.x)).toEqual([1]);
    expect(w.snapshot().rows).toEqual(again.rows);
  });

  it("a line that is not a JSON record is skipped and reported with its line number", () => {
    const dir = join(TMP, "bad-line");
    mkdirSync(dir);
    writeFileSync(join(dir, "metrics.jsonl"), step(1) + "{oops\n" + step(2));
    const warnings: string[] = [];
    const w = new RunWatcher("bad", dir, 0.6, (line) => warnings.push(line));
    expect(w.poll()!.rows.filter((r) => r.series === "train (raw)")).toHaveLength(2);
    expect(warnings).toEqual([`${join(dir, "metrics.jsonl")}:2: not a JSON record (skipped)`]);
  });

  it("--dashboard takes an optional port", () => {
    expect(takeDashboardFlag(["job.json", "--dashboard"])).toEqual({ argv: ["job.json"], port: 6060 });
    expect(takeDashboardFlag(["--dashboard", "8123", "job.json"])).toEqual({ argv: ["job.json"], port: 8123 });
    expect(takeDashboardFlag(["--dashboard", "job.json", "--epochs", "2"])).toEqual({ argv: ["job.json", "--epochs", "2"], port: 6060 });
    expect(takeDashboardFlag(["--dashboard=0"])).toEqual({ argv: [], port: 0 });
    expect(() => takeDashboardFlag(["--dashboard=99999"])).toThrow(/--dashboard: expected a port 0\.\.65535/);
  });
});

/** The server-sent events of `url`, parsed as they arrive; `next(event)` waits (bounded) for the next one of that name. */
function eventStream(url: string): { next: (event: string, ms?: number) => Promise<any>; close: () => void } {
  const seen: { event: string; data: any }[] = [];
  let buffer = "", wake: () => void = () => {};
  const req = request(url, (res) => {
    res.setEncoding("utf8");
    res.on("data", (chunk: string) => {
      buffer += chunk;
      for (let end = buffer.indexOf("\n\n"); end !== -1; end = buffer.indexOf("\n\n")) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const event = /^event: (.*)$/m.exec(block)?.[1], data = /^data: (.*)$/m.exec(block)?.[1];
        if (event && data) seen.push({ event, data: JSON.parse(data) });
      }
      wake();
    });
  });
  req.end();
  const next = async (event: string, ms = 10_000) => {
    const deadline = Date.now() + ms;
    for (;;) {
      const i = seen.findIndex((e) => e.event === event);
      if (i !== -1) return seen.splice(0, i + 1)[i].data;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no "${event}" event within ${ms} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        wake = () => { clearTimeout(t); resolve(); };
      });
    }
  };
  return { next, close: () => req.destroy() };
}

describe("runs created while the dashboard runs", () => {
  const step = (n: number) => JSON.stringify({ kind: "step", step: n, epoch: n / 10, loss: 1 / n, lr: 0.01, samplesPerSec: 100, wallTime: n / 10 }) + "\n";
  const makeRun = (dir: string, steps: number[]) => {
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "job.json"), JSON.stringify({ data: { type: "mnist" }, epochs: 1 }));
    writeFileSync(join(dir, "metrics.jsonl"), steps.map(step).join(""));
  };

  it("a directory of runs is looked at again: a run that appears is announced, then its rows", async () => {
    const root = join(TMP, "later-runs"), other = join(TMP, "later-elsewhere");
    makeRun(join(root, "first"), [1, 2]);
    mkdirSync(join(root, "not-a-run"), { recursive: true }); // no job.json or metrics.jsonl: never shown
    mkdirSync(other);
    const d = start(["dashboard", root, other, "--port", "0"]);
    const [, url] = await d.line(/dashboard of \S*first, and the runs created in .*: (http:\/\/127\.0\.0\.1:\d+\/)/, 30_000);
    const events = eventStream(`${url}events`);
    try {
      const snapshot = await events.next("snapshot");
      expect(snapshot.config.runs.map((r: { id: string }) => r.id)).toEqual(["first"]);
      makeRun(join(root, "second"), [1, 2, 3]);
      const runs = await events.next("runs");
      expect(runs.runs.map((r: { id: string; index: number }) => [r.id, r.index])).toEqual([["first", 0], ["second", 1]]);
      expect(runs.title).toBe("2 runs");
      expect(runs.specs.loss).toBeTruthy();
      const added = await events.next("update");
      expect(added).toMatchObject({ run: "second", reset: true });
      expect(added.rows.filter((r: { series: string }) => r.series === "train (raw)").map((r: { x: number }) => r.x)).toEqual([1, 2, 3]);
      // The new run is followed like the others; a run of the same name elsewhere is told apart by its path.
      appendFileSync(join(root, "second", "metrics.jsonl"), step(4));
      const grown = await events.next("update");
      expect(grown).toMatchObject({ run: "second", reset: false });
      makeRun(join(other, "second"), [1]);
      expect((await events.next("runs")).runs.map((r: { id: string }) => r.id)).toEqual(["first", "second", join(other, "second")]);
      // A page that connects now gets every run, the later ones included.
      const fresh = eventStream(`${url}events`);
      const again = await fresh.next("snapshot");
      fresh.close();
      expect(again.config.runs).toHaveLength(3);
      expect(again.runs.map((u: { run: string }) => u.run)).toEqual(["first", "second", join(other, "second")]);
      d.child.kill("SIGINT");
      expect(await d.exited).toBe(0);
      expect(d.output()).not.toMatch(/not-a-run/);
    } finally {
      events.close();
      d.child.kill("SIGKILL");
    }
  }, 60_000);
});

/** The CLI as a child process whose output can be watched while it runs. */
function start(args: string[]): { child: ChildProcess; output: () => string; exited: Promise<number | null>; line: (re: RegExp, ms: number) => Promise<RegExpMatchArray> } {
  const child = spawn(process.execPath, ["--import", "tsx", MAIN, ...args], { cwd: REPO, env: { ...process.env, CHAINRULE_PLAIN: "1" }, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout!.on("data", (d) => (out += d));
  child.stderr!.on("data", (d) => (out += d));
  const exited = new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)));
  const line = (re: RegExp, ms: number) => new Promise<RegExpMatchArray>((resolve, reject) => {
    const t0 = Date.now();
    const check = setInterval(() => {
      const m = re.exec(out);
      if (m) {
        clearInterval(check);
        resolve(m);
      } else if (Date.now() - t0 > ms || child.exitCode !== null) {
        clearInterval(check);
        reject(new Error(`no ${re} within ${ms} ms; output:\n${out}`));
      }
    }, 50);
  });
  return { child, output: () => out, exited, line };
}

// Evaluated in the page (strings: the project's TypeScript has no DOM types).
const text = async (page: Page, selector: string) => (await page.evaluate(`document.querySelector(${JSON.stringify(selector)}).textContent`)) as string;
/** The number of rows a panel's chart holds. */
const chartRows = (panel: string) => `window.dashboard.chartRows(${JSON.stringify(panel)})`;
/** The step the first run's status row shows ("1,234 / 2,000" → 1234). */
const STEP_SHOWN = `Number(document.querySelector("#run-0 td.step").textContent.split("/")[0].replace(/[^0-9]/g, ""))`;
const stepShown = async (page: Page, row: number) => Number((await text(page, `#run-${row} td.step`)).split("/")[0].replace(/[^\d]/g, ""));

describe("the dashboard in Chromium", () => {
  let browser: Browser;
  const live = join(TMP, "live");
  beforeAll(async () => {
    browser = await launchChromium();
  }, 60_000);
  afterAll(async () => {
    await browser?.close();
  });

  it("train --dashboard: during a short run the chart's data grows and the step counter advances; the end reaches the page", async () => {
    // A CNN over 1,024 digits, a record every step: a few seconds of steps to watch.
    const job = writeJobIn(TMP, "live", {
      model: { type: "cnn", channels: [32, 64], hidden: 64 }, data: { type: "mnist", limitTrain: 1024, limitHeldOut: 200 },
      epochs: 3, batchSize: 32, workers: 1, log: { everySteps: 1 },
    });
    const run = start(["train", job, "--out", live, "--dashboard", "0"]);
    try {
      const [, url] = await run.line(/dashboard: (http:\/\/127\.0\.0\.1:\d+\/)/, 30_000);
      const page = await browser.newPage();
      await page.setViewport({ width: 1280, height: 1000 });
      await page.goto(url, { timeout: 30_000 });
      await page.waitForFunction(`${chartRows("loss")} > 0`, { timeout: 30_000 });
      const rows1 = (await page.evaluate(chartRows("loss"))) as number;
      const step1 = await stepShown(page, 0);
      await page.waitForFunction(`${chartRows("loss")} > ${rows1}`, { timeout: 30_000 });
      await page.waitForFunction(`${STEP_SHOWN} > ${step1}`, { timeout: 30_000 });
      expect(await text(page, "#run-0 td.state")).toBe("running");
      expect(await text(page, "#run-0 td.step")).toMatch(/^\d+ \/ 96$/); // 32 steps an epoch × 3
      const shot = join(SHOTS, "dashboard-mid-run.png");
      await page.screenshot({ path: shot, fullPage: true });
      console.log(`dashboard mid-run: ${shot}`);

      expect(await run.exited, run.output()).toBe(0);
      // The server read the run one last time before it stopped: the page shows the end.
      await page.waitForFunction(`/server stopped/.test(document.getElementById("connection").textContent)`, { timeout: 10_000 });
      expect(await text(page, "#run-0 td.state")).toBe("finished");
      expect(await stepShown(page, 0)).toBe(96);
      expect(await text(page, "#run-0 td.accuracy")).toMatch(/^\d+\.\d\d%$/);
      expect(await page.evaluate(chartRows("accuracy"))).toBe(3);
      for (const c of await chartLayouts(page)) expect(legibilityProblems(c)).toEqual([]);
      await page.close();
    } finally {
      run.child.kill("SIGKILL");
    }
  }, 90_000);

  it("chainrule dashboard RUN_DIR RUN_DIR: both runs overlaid, each in the status table; only localhost may ask", async () => {
    const other = join(TMP, "other");
    const t = await cli(["train", writeJobIn(TMP, "other", { model: { type: "mlp", hidden: [32] }, data: { type: "mnist", limitTrain: 512, limitHeldOut: 200 }, epochs: 2, batchSize: 32, workers: 1, log: { everySteps: 2 } }), "--out", other]);
    expect(t.code, t.stdout + t.stderr).toBe(0);
    const d = start(["dashboard", live, other, "--port", "0"]);
    try {
      const [, url] = await d.line(/: (http:\/\/127\.0\.0\.1:\d+\/)/, 30_000);
      const page = await browser.newPage();
      await page.setViewport({ width: 1280, height: 1000 });
      await page.goto(url, { timeout: 30_000 });
      await page.waitForFunction(`${chartRows("accuracy")} === 5`, { timeout: 30_000 }); // 3 epochs + 2
      expect([await text(page, "#run-0 td.run"), await text(page, "#run-1 td.run")]).toEqual(["live", "other"]);
      expect([await text(page, "#run-0 td.state"), await text(page, "#run-1 td.state")]).toEqual(["finished", "finished"]);
      const legend = await page.evaluate(`[...document.querySelectorAll("#chart-loss .role-legend-label text")].map((t) => t.textContent)`);
      expect(legend).toEqual(["live", "other"]);
      // The log-scale toggle redraws the loss chart (the scale chosen at first: log when the loss falls more than a decade).
      const yLabels = `[...document.querySelectorAll("#chart-loss g.role-axis")].filter((g) => /cross-entropy/.test(g.textContent)).map((g) => [...g.querySelectorAll(".role-axis-label text")].map((t) => t.textContent).join(" ")).join("")`;
      const logLabels = (await page.evaluate(yLabels)) as string;
      await page.click("#log-loss");
      await page.waitForFunction(`${yLabels} !== ${JSON.stringify(logLabels)}`, { timeout: 10_000 });
      expect(await page.evaluate(chartRows("loss"))).toBeGreaterThan(0);
      await page.click("#log-loss");
      await page.waitForFunction(`${yLabels} === ${JSON.stringify(logLabels)}`, { timeout: 10_000 });
      const shot = join(SHOTS, "dashboard-two-runs.png");
      await page.screenshot({ path: shot, fullPage: true });
      console.log(`dashboard of two runs: ${shot}`);
      await page.close();

      const status = await new Promise<number | undefined>((resolve, reject) => {
        const req = request(url, { headers: { host: "attacker.example" } }, (res) => {
          res.resume();
          resolve(res.statusCode);
        });
        req.on("error", reject);
        req.end();
      });
      expect(status).toBe(403);
      d.child.kill("SIGINT");
      expect(await d.exited).toBe(0);
    } finally {
      d.child.kill("SIGKILL");
    }
  }, 90_000);

  it("chainrule dashboard runs/: a page open on a directory with no runs yet draws a run that appears in it", async () => {
    const root = join(TMP, "runs-later");
    mkdirSync(root);
    const d = start(["dashboard", root, "--port", "0"]);
    try {
      const [, url] = await d.line(/dashboard of no runs yet, and the runs created in \S+: (http:\/\/127\.0\.0\.1:\d+\/)/, 30_000);
      const page = await browser.newPage();
      await page.goto(url, { timeout: 30_000 });
      await page.waitForFunction(`document.getElementById("connection").textContent === "live"`, { timeout: 10_000 });
      expect(await page.evaluate("window.dashboard.runs()")).toEqual([]);
      cpSync(live, join(root, "copied"), { recursive: true });
      await page.waitForFunction(`${chartRows("accuracy")} === 3`, { timeout: 20_000 });
      expect(await page.evaluate("window.dashboard.runs()")).toEqual(["copied"]);
      expect(await text(page, "#run-0 td.run")).toBe("copied");
      expect(await text(page, "#run-0 td.state")).toBe("finished");
      expect(await text(page, "#title")).toBe("chainrule dashboard: copied");
      await page.close();
      d.child.kill("SIGINT");
      expect(await d.exited).toBe(0);
    } finally {
      d.child.kill("SIGKILL");
    }
  }, 60_000);

  it("bad usage is one line naming the directory or flag", async () => {
    expectOneLineError(await cli(["dashboard", join(TMP, "nowhere")]), /dashboard: .*nowhere: no such directory/, 2);
    expectOneLineError(await cli(["dashboard", live, "--port", "http"]), /--port: expected a port 0\.\.65535/, 2);
  });
});
