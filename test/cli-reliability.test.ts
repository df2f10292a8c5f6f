/**
 * Failures an operator meets, through the real command in child processes: the launcher killed
 * under a running trainer, two writers on one run, corrupt and incomplete checkpoints, stale
 * temporaries, a checkpoint that names code, a diverging run, and malformed inputs.
 */
import { describe, expect, it, beforeAll } from "vitest";
import { spawn } from "node:child_process";
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { encodeIdx, writeChecksums } from "@chainrule/core";
import { DivergenceMonitor } from "../packages/cli/src/divergence.js";
import { MAIN, REPO, type Result, cli, expectOneLineError, latestCheckpoint, tempDir, writeJobIn } from "./cli-helpers.ts";

const TMP = tempDir("chainrule-reliability-");
const FIX = join(REPO, "test/fixtures");

const SMALL = {
  model: { type: "mlp", hidden: [32] },
  data: { type: "mnist", limitTrain: 600, limitHeldOut: 200 },
  epochs: 1, batchSize: 50, workers: 1,
};

/** Polls `cond` every 50 ms; rejects naming `what` after `ms`. */
function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    const timer = setInterval(() => {
      if (cond()) {
        clearInterval(timer);
        resolve();
      } else if (Date.now() - t0 > ms) {
        clearInterval(timer);
        reject(new Error(`timed out after ${ms} ms waiting for ${what}`));
      }
    }, 50);
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** A run's metrics.jsonl records. */
function metrics(run: string): { kind: string; [k: string]: unknown }[] {
  const p = join(run, "metrics.jsonl");
  return existsSync(p) ? readFileSync(p, "utf8").trim().split("\n").filter(Boolean).map((l) => JSON.parse(l)) : [];
}

/**
 * Starts `command args` (a launcher that starts the trainer as its descendant), waits until the
 * run has logged a step, and returns the trainer's pid (from the run's lock), the launcher, and
 * a promise of everything printed once every process holding the pipes has exited.
 */
async function launch(command: string, args: string[], run: string) {
  const launcher = spawn(command, args, { cwd: REPO, env: { ...process.env, CHAINRULE_PLAIN: "1" }, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  launcher.stdout.on("data", (d) => (out += d));
  launcher.stderr.on("data", (d) => (out += d));
  const closed = new Promise<string>((resolve) => launcher.on("close", () => resolve(out)));
  await waitFor(() => metrics(run).some((r) => r.kind === "step"), 90_000, `${run} to log a step (output so far: ${out})`);
  const trainer = JSON.parse(readFileSync(join(run, ".lock"), "utf8")).pid as number;
  expect(trainer).not.toBe(launcher.pid);
  return { launcher, trainer, closed };
}

const LONG = { ...SMALL, data: { type: "mnist", limitTrain: 1000, limitHeldOut: 100 }, epochs: 1000, log: { everySteps: 1 } };

describe("the trainer and the command that launched it", () => {
  it("kill -9 of the launching process stops the trainer as SIGTERM does (checkpoint, exit, lock released); meanwhile a second writer is refused, naming the pid", async () => {
    const run = join(TMP, "orphaned");
    const job = writeJobIn(TMP, "long", LONG);
    // A launcher that starts the trainer and waits for it, as npx and pnpm do (and, as they do, never passes a signal on).
    const script = `require("node:child_process").spawn(process.execPath, ["--import", "tsx", ${JSON.stringify(MAIN)}, "train", ${JSON.stringify(job)}, "--out", ${JSON.stringify(run)}], { stdio: "inherit" }); setInterval(() => {}, 1000);`;
    const { launcher, trainer, closed } = await launch(process.execPath, ["-e", script], run);

    const second = await cli(["train", "--resume", "--out", run]);
    expectOneLineError(second, new RegExp(`${run} is in use by another chainrule train \\(pid ${trainer}\\)`), 1);

    launcher.kill("SIGKILL");
    await waitFor(() => !alive(trainer), 30_000, "the orphaned trainer to exit");
    const out = await closed;
    expect(out).toMatch(/the command that started this trainer \(pid \d+\) has exited: stopping as on SIGTERM/);
    expect(out).toMatch(/interrupted \(SIGTERM\) at epoch \d+, step \d+: checkpoint written to/);
    expect(metrics(run).map((r) => r.kind)).toContain("interrupt");
    expect(existsSync(join(run, ".lock"))).toBe(false);
    expect((await cli(["eval", run])).code).toBe(0);
  }, 150_000);

  it("SIGTERM to the documented `npx -y pnpm@10 chainrule train` reaches the trainer: checkpoint, exit 143, no process left", async () => {
    const run = join(TMP, "npx");
    const job = writeJobIn(TMP, "long-npx", LONG);
    const { launcher, trainer, closed } = await launch("npx", ["-y", "pnpm@10", "chainrule", "train", job, "--out", run], run);
    launcher.kill("SIGTERM");
    await waitFor(() => !alive(trainer), 30_000, "the trainer under npx to exit");
    const out = await closed;
    expect(out).toMatch(/interrupted \(SIGTERM\) at epoch \d+, step \d+: checkpoint written to/);
    expect(out).toContain(`resume with: npx -y pnpm@10 chainrule train --resume --out ${run}`);
    expect(existsSync(join(run, ".lock"))).toBe(false);
  }, 150_000);
});

describe("checkpoints are verified, and --resume falls back", () => {
  const run = join(TMP, "small");
  beforeAll(async () => {
    const r = await cli(["train", writeJobIn(TMP, "small", { ...SMALL, checkpoint: { everySteps: 4, keep: 3 } }), "--out", run]);
    expect(r.code, r.stderr).toBe(0);
  }, 60_000);

  it("4 flipped bytes in a tensor are a one-line error naming the file; --resume skips corrupt and incomplete checkpoints, saying why, and removes a stale lock and temporaries", async () => {
    const copy = join(TMP, "damaged");
    cpSync(run, copy, { recursive: true });
    const [, s8, s12] = readdirSync(join(copy, "checkpoints")).sort().map((n) => join(copy, "checkpoints", n));
    // Flip 4 bytes in the middle of the newest checkpoint's tensor data (the file stays well-formed).
    const model = join(s12, "model.safetensors");
    const bytes = readFileSync(model);
    for (let i = 0; i < 4; i++) bytes[bytes.length - 4000 + i] ^= 0xff;
    writeFileSync(model, bytes);
    rmSync(join(s8, "state.json")); // killed mid-write, as far as the reader can tell
    mkdirSync(join(copy, "checkpoints", ".tmp-step-00000016-0badc0de")); // left by a kill -9
    // A lock left by a process that no longer runs.
    const dead = spawn(process.execPath, ["-e", ""]);
    await new Promise((r) => dead.on("close", r));
    writeFileSync(join(copy, ".lock"), JSON.stringify({ pid: dead.pid, host: (await import("node:os")).hostname(), started: null }));

    const ev = await cli(["eval", s12]);
    expectOneLineError(ev, new RegExp(`corrupted checkpoint: ${model}: SHA-256 [0-9a-f]{12}… differs from [0-9a-f]{12}… recorded in SHA256SUMS`), 1);

    const r = await cli(["train", "--resume", "--out", copy, "--epochs", "2"]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain(`removed a stale lock ${join(copy, ".lock")} (pid ${dead.pid} no longer runs)`);
    expect(r.stdout).toContain(`removed 1 temporary a killed run left in ${copy}`);
    expect(r.stdout).toMatch(new RegExp(`skipping checkpoint ${s12}: corrupted checkpoint: .*SHA-256`));
    expect(r.stdout).toContain(`skipping checkpoint ${s8}: ${s8}: not a checkpoint (no state.json)`);
    expect(r.stdout).toMatch(/resuming from .*step-00000004: epoch 1, step 4/);
    expect(readdirSync(join(copy, "checkpoints")).filter((n) => n.startsWith("."))).toEqual([]);
    const resume = metrics(copy).find((m) => m.kind === "resume") as unknown as { skipped: { dir: string }[] };
    expect(resume.skipped.map((s) => s.dir)).toEqual([s12, s8]);
    expect(existsSync(join(copy, ".lock"))).toBe(false);
  }, 90_000);

  it("with no intact checkpoint, --resume is one line naming each problem", async () => {
    const copy = join(TMP, "all-damaged");
    cpSync(run, copy, { recursive: true });
    for (const n of readdirSync(join(copy, "checkpoints"))) rmSync(join(copy, "checkpoints", n, "model.safetensors"));
    const r = await cli(["train", "--resume", "--out", copy, "--epochs", "2"]);
    expectOneLineError(r, /no intact checkpoint to resume from: .*step-00000012: not a checkpoint \(no model\.safetensors\); .*step-00000004: not a checkpoint/, 1);
  }, 60_000);

  describe("a checkpoint never runs code", () => {
    const marker = join(TMP, "imported.txt");
    /** A copy of the run's last checkpoint whose job names `module` as its model (checksums rewritten to match). */
    function withModule(name: string, module: string): string {
      const dir = join(TMP, name);
      cpSync(latestCheckpoint(run), dir, { recursive: true });
      const state = JSON.parse(readFileSync(join(dir, "state.json"), "utf8"));
      state.config.model = { type: "module", module, export: "tiny", options: { width: 32 } };
      writeFileSync(join(dir, "state.json"), JSON.stringify(state));
      writeChecksums(dir);
      return dir;
    }
    const env = { CHAINRULE_TEST_MARKER: marker };

    it("a user-code model is imported only from --model-module FILE or with --trust-job-module", async () => {
      const ck = withModule("user-code", join(FIX, "marker-model.mjs"));
      rmSync(marker, { force: true });
      for (const args of [["eval", ck], ["predict", ck, "mnist:0"], ["generate", ck]]) {
        const r = await cli(args, { env });
        expectOneLineError(r, /its model is your own code \(model\.module .*marker-model\.mjs, export tiny\); a checkpoint never runs code on its own: pass --model-module FILE, or --trust-job-module/, 2);
      }
      expect(existsSync(marker)).toBe(false);
      const named = await cli(["eval", ck, "--model-module", join(FIX, "cli-model.ts")], { env });
      expect(named.code, named.stderr).toBe(0);
      expect(named.stdout).toMatch(/accuracy: [\d.]+%/);
      expect(existsSync(marker)).toBe(false);
      const trusted = await cli(["eval", ck, "--trust-job-module"], { env });
      expect(trusted.code, trusted.stderr).toBe(0);
      expect(existsSync(marker)).toBe(true);
    }, 60_000);

    it("never a data: or http: URL, and a fine-tuning job does not take a user-code model from init.checkpoint", async () => {
      rmSync(marker, { force: true });
      const code = `data:text/javascript,import("node:fs").then((fs) => fs.writeFileSync(${JSON.stringify(marker)}, "x")); export const tiny = () => null;`;
      const ck = withModule("data-url", code);
      expectOneLineError(await cli(["eval", ck, "--trust-job-module"], { env }), /model\.module: expected a file path \(a module is imported from a file, never from a data:, http: or other URL\)/, 2);
      expectOneLineError(await cli(["eval", withModule("plain", join(FIX, "cli-model.ts")), "--model-module", "http://example.com/m.mjs"], { env }), /--model-module http:\/\/example\.com\/m\.mjs: not a file/, 2);
      const job = writeJobIn(TMP, "finetune", { init: { checkpoint: withModule("init", join(FIX, "marker-model.mjs")) }, data: SMALL.data, workers: 1 });
      expectOneLineError(await cli(["train", job, "--out", join(TMP, "finetune-run")], { env }), /init\.checkpoint .*: its model is your own code/, 2);
      expect(existsSync(marker)).toBe(false);
    }, 60_000);
  });
});

describe("divergence", () => {
  it("Adam at lr 1e9 on 2 workers stops with exit 1 and says it diverged; divergence: false trains on", async () => {
    const args = ["train", "--lr", "1e9", "--workers", "2", "--epochs", "1", "--set", "data.limitTrain=1500", "--set", "data.limitHeldOut=100", "--set", "model.hidden=[64]"];
    const r = await cli([...args, "--out", join(TMP, "diverged")]);
    expectOneLineError(r, /diverged: the loss was above 10 × its running median \([\d.]+\) for 10 steps, [\d.e+]+ at step \d+ \(epoch 1\); try a lower --lr/, 1);
    const on = await cli([...args, "--set", "divergence=false", "--out", join(TMP, "diverged-on")]);
    expect(on.code, on.stderr).toBe(0);
  }, 60_000);

  it("the rule: a noisy, falling loss passes; a loss that stays 10x above the level it reached stops after 10 steps", () => {
    const healthy = new DivergenceMonitor({ factor: 10, steps: 10 });
    let seed = 1;
    const noise = () => ((seed = (seed * 16807) % 2147483647) / 2147483647);
    for (let s = 1; s <= 2000; s++) healthy.check(2.3 * Math.exp(-s / 300) * (0.3 + 1.4 * noise()) + 0.01, s, 1); // never throws
    const blown = new DivergenceMonitor({ factor: 10, steps: 10 });
    blown.check(2.3, 1, 1);
    for (let s = 2; s <= 10; s++) blown.check(4e31, s, 1);
    expect(() => blown.check(4e31, 11, 1)).toThrow(/diverged: the loss was above 10 × its running median \(2\.3000\) for 10 steps, 4\.00e\+31 at step 11/);
    expect(() => new DivergenceMonitor(false).check(NaN, 3, 1)).toThrow(/diverged: the loss became NaN at step 3/);
    const off = new DivergenceMonitor(false);
    for (let s = 1; s < 50; s++) off.check(s === 1 ? 1 : 1e30, s, 1); // opted out: trains on
  });

  it("the history saved with a checkpoint restores the monitor: it stops at the step an uninterrupted one does", () => {
    const rule = { factor: 10, steps: 3 };
    // A level of 1 for 40 steps, then a climb: 8 for 20 steps (below 10 × 1), then 15.
    const losses = [...Array<number>(40).fill(1), ...Array<number>(20).fill(8), 15, 15, 15];
    const whole = new DivergenceMonitor(rule);
    const tripsAt = (m: DivergenceMonitor, from: number) => {
      for (let s = from; s <= losses.length; s++) {
        try { m.check(losses[s - 1], s, 1); } catch { return s; }
      }
      return null;
    };
    expect(new DivergenceMonitor(rule).state()).toEqual({ recent: [], best: null, streak: 0 }); // no step yet: JSON-safe
    for (let s = 1; s <= 40; s++) whole.check(losses[s - 1], s, 1);
    const saved = JSON.parse(JSON.stringify(whole.state())); // as in state.json
    expect(tripsAt(whole, 41)).toBe(63);
    expect(tripsAt(new DivergenceMonitor(rule, saved), 41)).toBe(63);
    // A fresh history would take the climb's 8 as the level reached and miss the divergence.
    expect(tripsAt(new DivergenceMonitor(rule), 41)).toBeNull();
  });
});

describe("bad data and inputs: one line naming the input", () => {
  const dir = join(TMP, "data");
  beforeAll(() => {
    mkdirSync(dir, { recursive: true });
    const images = new Float32Array(20 * 4 * 4).map((_, i) => (i % 7) / 7);
    images[5 * 16 + 2 * 4 + 3] = NaN; // image 5, row 2, column 3
    writeFileSync(join(dir, "nan-images.idx"), encodeIdx("f32", [20, 4, 4], images));
    writeFileSync(join(dir, "labels.idx"), encodeIdx("u8", [20], Array.from({ length: 20 }, (_, i) => i % 3)));
    writeFileSync(join(dir, "overflow.csv"), "a,b,label\n# a comment\n0.1,0.2,0\n0.3,1e39,1\n0.5,0.6,1\n0.2,0.1,0\n");
    writeFileSync(join(dir, "huge-label.csv"), "a,b,label\n0.1,0.2,0\n0.3,0.4,1\n0.5,0.6,2147483647\n0.2,0.1,0\n");
    writeFileSync(join(dir, "empty.txt"), "");
  });
  const job = (name: string, data: unknown, model: unknown = { type: "logistic" }) => writeJobIn(dir, name, { model, data, epochs: 1, batchSize: 2, workers: 1 });
  const cases: [string, () => string[], RegExp, number?][] = [
    ["NaN in IDX float images", () => ["train", job("idx", { type: "idx", trainImages: join(dir, "nan-images.idx"), trainLabels: join(dir, "labels.idx") }), "--out", join(dir, "r1")], /nan-images\.idx: image 5, row 2, column 3: NaN \(images must be finite numbers\)/],
    ["a CSV value beyond float32", () => ["train", job("overflow", { type: "csv", path: join(dir, "overflow.csv"), label: "label" }), "--out", join(dir, "r2")], /overflow\.csv:4: column 'b': Infinity \(beyond float32's range/],
    ["a class label of 2^31 - 1", () => ["train", job("huge", { type: "csv", path: join(dir, "huge-label.csv"), label: "label" }), "--out", join(dir, "r3")], /huge-label\.csv:4: class label 2147483647 would make 2,147,483,648 classes \(at most 65,536/],
    ["an empty text file", () => ["train", job("empty", { type: "text", file: join(dir, "empty.txt") }, { type: "gpt", nLayer: 1, nEmbd: 16, nHead: 2 }), "--out", join(dir, "r4")], /data\.file .*empty\.txt: empty \(no characters to train on\)/],
    ["--out \"\"", () => ["train", "--out", ""], /--out: empty path/, 2],
  ];
  for (const [name, args, re, code] of cases) {
    it(name, async () => {
      const a = args();
      const r: Result = await cli(a);
      expectOneLineError(r, re, code);
      const out = a[a.indexOf("--out") + 1];
      if (out) expect(existsSync(out)).toBe(false);
    }, 60_000);
  }

  it("predict with a non-number in its row names the value", async () => {
    const run = join(dir, "blobs");
    const t = await cli(["train", job("blobs", { type: "csv", path: join(FIX, "cli-blobs.csv"), label: "label" }), "--out", run]);
    expect(t.code, t.stderr).toBe(0);
    expectOneLineError(await cli(["predict", run, "0.1,NaN,0.3"]), /INPUT "0\.1,NaN,0\.3": value 2 of 3, "NaN", is not a finite number/, 2);
  }, 60_000);
});
