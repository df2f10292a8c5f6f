/**
 * The chainrule CLI through the real command, in child processes:
 * `node --import tsx packages/cli/src/main.ts ...` with small, fast jobs.
 */
import { describe, expect, it, beforeAll } from "vitest";
import { createHash } from "node:crypto";
import { cpSync, existsSync, readFileSync, readdirSync, statSync, truncateSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import { REPO, type Result, checkpointTensors, cli, expectOneLineError, latestCheckpoint, tempDir, writeJobIn } from "./cli-helpers.ts";

const FIX = join(REPO, "test/fixtures");
const TMP = tempDir("chainrule-cli-");

/** Path → sha256 of every file under dir (to prove nothing was overwritten). */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const n of readdirSync(d)) {
      const p = join(d, n);
      if (statSync(p).isDirectory()) walk(p);
      else out[relative(dir, p)] = createHash("sha256").update(readFileSync(p)).digest("hex");
    }
  };
  walk(dir);
  return out;
}

function writeJob(name: string, job: unknown): string {
  return writeJobIn(TMP, name, job);
}

function weightsOf(ckpt: string): Record<string, Buffer> {
  const tensors = checkpointTensors(ckpt);
  return Object.fromEntries(Object.entries(tensors).map(([k, t]) => [k, Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength)]));
}

const SMALL = {
  model: { type: "mlp", hidden: [32] },
  data: { type: "mnist", limitTrain: 600, limitHeldOut: 200 },
  epochs: 1, batchSize: 50, workers: 1,
};

describe("chainrule train: the default job", () => {
  const run = join(TMP, "default");
  let r: Result;
  beforeAll(async () => {
    // The default job (MLP on embedded MNIST, DataParallel on all cores), made quick by flags.
    r = await cli(["train", "--epochs", "1", "--set", "data.limitTrain=1500", "--set", "data.limitHeldOut=300", "--out", run]);
  }, 120_000);

  it("trains, prints held-out accuracy and writes the run directory", () => {
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/MLP 784-512-256-10/);
    const acc = /held-out accuracy: ([\d.]+)%/.exec(r.stdout);
    expect(acc, r.stdout).not.toBeNull();
    expect(Number(acc![1])).toBeGreaterThan(70);
    for (const f of ["job.json", "metrics.jsonl", "summary.json"]) expect(existsSync(join(run, f)), f).toBe(true);
    const ck = latestCheckpoint(run);
    expect(readdirSync(ck).sort()).toEqual(["SHA256SUMS", "model.safetensors", "state.json"]);
    const job = JSON.parse(readFileSync(join(run, "job.json"), "utf8"));
    expect(job.model).toEqual({ type: "mlp", hidden: [512, 256], activation: "relu", dropout: 0 });
    const kinds = readFileSync(join(run, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l).kind);
    expect(kinds).toContain("epoch");
    expect(kinds).toContain("end");
  });

  it("eval, predict, plot and info work on the run", async () => {
    const ev = await cli(["eval", run]);
    expect(ev.code, ev.stderr).toBe(0);
    expect(ev.stdout).toMatch(/accuracy: [\d.]+% \(\d+\/300\)/);
    const pr = await cli(["predict", run, "mnist:0-4"]);
    expect(pr.code, pr.stderr).toBe(0);
    expect(pr.stdout).toMatch(/^mnist:0: \d · label \d [✓✗]/m);
    expect(pr.stdout.trim().split("\n")).toHaveLength(6);
    const pl = await cli(["plot", run]);
    expect(pl.code, pl.stderr).toBe(0);
    for (const f of ["plots/loss.svg", "plots/accuracy.svg", "plots/throughput.svg", "report.html"]) expect(existsSync(join(run, f)), f).toBe(true);
    expect(readFileSync(join(run, "plots/loss.svg"), "utf8")).toMatch(/^<svg[^>]*xmlns/);
    expect(readFileSync(join(run, "report.html"), "utf8")).toContain("<svg");
    const info = await cli(["info"]);
    expect(info.code).toBe(0);
    expect(info.stdout).toMatch(/cores: \d+/);
    expect(info.stdout).toMatch(/backend: (js|blas)/);
  }, 120_000);

  it("never overwrites an existing run directory", async () => {
    const before = snapshot(run);
    const again = await cli(["train", "--epochs", "1", "--out", run]);
    expectOneLineError(again, /already exists; pass --resume/);
    expect(snapshot(run)).toEqual(before);
  }, 60_000);
});

describe("kill and resume", () => {
  for (const [workers, signal] of [[1, "SIGTERM"], [2, "SIGINT"]] as const) {
    it(`a run interrupted by ${signal} and resumed ends with the same tensor bytes as an uninterrupted one (workers ${workers})`, async () => {
      const job = writeJob(`resume-${workers}`, {
        model: { type: "mlp", hidden: [128, 64], dropout: workers === 1 ? 0.1 : 0 },
        data: { type: "mnist", limitTrain: 1500, limitHeldOut: 100 },
        optimizer: { type: "adam", lr: 0.002 },
        schedule: { type: "cosine", warmupSteps: 10 },
        epochs: 3, batchSize: 40, workers, seed: 7,
        checkpoint: { everySteps: 17, keep: 2 },
        log: { everySteps: 1 },
      });
      const a = join(TMP, `full-${workers}`), b = join(TMP, `killed-${workers}`);
      const full = await cli(["train", job, "--out", a]);
      expect(full.code, full.stderr).toBe(0);

      // Interrupt b once it has taken some steps, mid-epoch.
      const killed = await cli(["train", job, "--out", b], {
        onSpawn: (kill) => {
          const timer = setInterval(() => {
            const m = join(b, "metrics.jsonl");
            if (!existsSync(m)) return;
            const steps = readFileSync(m, "utf8").split("\n").filter((l) => l.includes('"kind":"step"')).length;
            if (steps >= 50) {
              clearInterval(timer);
              kill(signal);
            }
          }, 10);
        },
      });
      expect(killed.code, killed.stdout + killed.stderr).toBe(signal === "SIGINT" ? 130 : 143);
      expect(killed.stdout).toMatch(new RegExp(`interrupted \\(${signal}\\) at epoch \\d, step \\d+: checkpoint written to`));
      expect(killed.stdout).toContain(`resume with: npx -y pnpm@10 chainrule train --resume --out ${b}`);
      const interruptedAt = JSON.parse(readFileSync(join(latestCheckpoint(b), "state.json"), "utf8")).step;
      expect(interruptedAt).toBeGreaterThanOrEqual(50);
      expect(interruptedAt).toBeLessThan(114); // 38 steps × 3 epochs

      const resumed = await cli(["train", "--resume", "--out", b]);
      expect(resumed.code, resumed.stderr).toBe(0);
      expect(resumed.stdout).toMatch(/resuming from .*step-0+\d+: epoch \d, step \d+/);
      // The tensors' bytes, not the files': each file's metadata holds its own checkpoint id.
      const wa = weightsOf(latestCheckpoint(a)), wb = weightsOf(latestCheckpoint(b));
      expect(Object.keys(wb)).toEqual(Object.keys(wa));
      for (const k of Object.keys(wa)) expect(wb[k].equals(wa[k]), `${k} differs`).toBe(true);
      const sa = JSON.parse(readFileSync(join(latestCheckpoint(a), "state.json"), "utf8"));
      const sb = JSON.parse(readFileSync(join(latestCheckpoint(b), "state.json"), "utf8"));
      expect(sb.step).toBe(sa.step);
      expect(sb.optimizer).toEqual(sa.optimizer);
      expect(sb.rng).toEqual(sa.rng);
    }, 150_000);
  }

  it("a run trained with 2 workers resumes with 1, 2 or 4: bit-identical with 2, within 1e-5 otherwise", async () => {
    const job = writeJob("any-workers", {
      model: { type: "mlp", hidden: [32] },
      data: { type: "mnist", limitTrain: 400, limitHeldOut: 100 },
      optimizer: { type: "adam", lr: 0.002 },
      epochs: 2, batchSize: 40, workers: 2, seed: 3,
    });
    const full = join(TMP, "any-workers-full"), half = join(TMP, "any-workers-half");
    expect((await cli(["train", job, "--out", full])).code).toBe(0);
    const first = await cli(["train", job, "--out", half, "--epochs", "1"]);
    expect(first.code, first.stderr).toBe(0);
    const want = checkpointTensors(latestCheckpoint(full));
    const wantState = JSON.parse(readFileSync(join(latestCheckpoint(full), "state.json"), "utf8"));
    for (const workers of [1, 2, 4]) {
      const run = join(TMP, `any-workers-${workers}`);
      cpSync(half, run, { recursive: true });
      const r = await cli(["train", "--resume", "--out", run, "--epochs", "2", "--workers", String(workers)]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toContain(workers === 1 ? "DataParallel, 1 worker (this thread)" : `DataParallel, ${workers} worker threads`);
      const got = checkpointTensors(latestCheckpoint(run));
      const state = JSON.parse(readFileSync(join(latestCheckpoint(run), "state.json"), "utf8"));
      expect(state.step).toBe(wantState.step);
      for (const [k, t] of Object.entries(want)) {
        let diff = 0;
        for (let i = 0; i < t.data.length; i++) diff = Math.max(diff, Math.abs(got[k].data[i] - t.data[i]));
        if (workers === 2) expect(diff, `${k} with 2 workers`).toBe(0);
        else expect(diff, `${k} with ${workers} workers`).toBeLessThan(1e-5);
      }
    }
  }, 150_000);
});

describe("Ctrl-C", () => {
  it("SIGINT writes a checkpoint and exits 130; a second one exits at once, leaving the last checkpoint intact", async () => {
    const job = writeJob("sigint", { ...SMALL, model: { type: "mlp", hidden: [256] }, data: { type: "mnist", limitTrain: 3000, limitHeldOut: 100 }, epochs: 5, batchSize: 20, checkpoint: { everySteps: 10 }, log: { everySteps: 1 } });
    const run = join(TMP, "sigint");
    let sawFirst = false;
    const r = await cli(["train", job, "--out", run], {
      onSpawn: (kill) => {
        const timer = setInterval(() => {
          const m = join(run, "metrics.jsonl");
          if (existsSync(m) && readFileSync(m, "utf8").includes('"kind":"checkpoint"')) {
            clearInterval(timer);
            kill("SIGINT");
            // The second Ctrl-C, as soon as the first is acknowledged (signals sent together coalesce).
            const t2 = setInterval(() => {
              if (sawFirst) {
                clearInterval(t2);
                kill("SIGINT");
              }
            }, 1);
          }
        }, 10);
      },
      onStderr: (text) => (sawFirst ||= text.includes("SIGINT: finishing the steps in flight")),
    });
    expect(r.code, r.stdout + r.stderr).toBe(130);
    expect(r.stderr).toContain("SIGINT: finishing the steps in flight, then writing a checkpoint (Ctrl-C again to exit at once)");
    // Either the second Ctrl-C won the race (exit at once) or the step and checkpoint finished first.
    if (r.stderr.includes("SIGINT again:")) expect(r.stderr).toMatch(/SIGINT again: exiting now; the last checkpoint \(.*step-\d+\) is intact/);
    else expect(r.stdout).toContain("resume with:");
    expect(readdirSync(join(run, "checkpoints")).filter((n) => !n.startsWith("step-"))).toEqual([]);
    const ev = await cli(["eval", run]);
    expect(ev.code, ev.stderr).toBe(0);
  }, 60_000);
});

describe("bad input: exit ≠ 0, one line, nothing written", () => {
  const fresh = () => join(TMP, `out-${Math.random().toString(36).slice(2)}`);
  const cases: [string, () => string[], RegExp, number?][] = [
    ["unknown key", () => [writeJob("unknown", { ...SMALL, bogus: 1 })], /bogus: unknown key/, 2],
    ["unknown nested key", () => [writeJob("nested", { ...SMALL, model: { type: "mlp", hiden: [3] } })], /model\.hiden: unknown key/, 2],
    ["wrong type", () => [writeJob("type", { ...SMALL, batchSize: "big" })], /batchSize: expected number, got "big"/, 2],
    ["negative batch size (flag)", () => [writeJob("neg", SMALL), "--batch-size=-5"], /batchSize: expected a number > 0, got -5/, 2],
    ["more workers than batch rows", () => [writeJob("workers", { ...SMALL, workers: 8, batchSize: 4 })], /workers: 8 workers but batchSize is 4/, 2],
    ["unknown model type", () => [writeJob("model", { ...SMALL, model: { type: "rnn" } })], /model\.type: expected one of "linear", .*got "rnn"/, 2],
    ["missing job file", () => [join(TMP, "nope.json")], /nope\.json: no such job file/, 2],
    ["missing data file", () => [writeJob("nodata", { ...SMALL, data: { type: "csv", path: "missing.csv" } })], /missing\.csv: cannot read \(no such file\)/],
    ["malformed CSV", () => [writeJob("badcsv", { ...SMALL, data: { type: "csv", path: join(FIX, "cli-bad.csv"), label: "label" } })], /cli-bad\.csv:3: column 2 \('b'\): "x7" is not a number/],
    ["missing IDX files", () => [writeJob("noidx", { ...SMALL, data: { type: "idx", dir: TMP } })], /train-images-idx3-ubyte\[\.gz\]: no such file/],
    ["a misspelled flag", () => [writeJob("flag", SMALL), "--epoch", "2"], /^chainrule: error: train: --epoch: unknown option \(did you mean --epochs\?\)/, 2],
    ["a flag without its value", () => [writeJob("flagv", SMALL), "--lr"], /train: --lr: needs a value/, 2],
    // Fails after the run directory is made (the warm-up is checked against the run's steps): it is removed again.
    ["warm-up longer than the run", () => [writeJob("warm", { ...SMALL, schedule: { type: "cosine", warmupSteps: 500 } })], /schedule\.warmupSteps: 500 is more than the run's 12 steps/, 2],
  ];
  for (const [name, args, re, code] of cases) {
    it(name, async () => {
      const out = fresh();
      const r = await cli(["train", ...args(), "--out", out]);
      expectOneLineError(r, re, code);
      expect(existsSync(out)).toBe(false);
    }, 60_000);
  }

  it("help and version do no work: info --help, bench --help, --version", async () => {
    const t0 = performance.now();
    for (const [args, re] of [[["info", "--help"], /^usage: chainrule info/], [["bench", "--help"], /^usage: chainrule bench/], [["--version"], /^chainrule \d+\.\d+\.\d+\n$/]] as const) {
      const r = await cli([...args]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(re);
    }
    expect(performance.now() - t0).toBeLessThan(30_000); // the benchmark alone takes minutes
  }, 60_000);

  describe("with a finished run", () => {
    const run = join(TMP, "small");
    beforeAll(async () => {
      const r = await cli(["train", writeJob("small", SMALL), "--out", run]);
      expect(r.code, r.stderr).toBe(0);
    }, 60_000);

    it("a checkpoint that does not match the model", async () => {
      const copy = join(TMP, "mismatch");
      cpSync(run, copy, { recursive: true });
      const job = JSON.parse(readFileSync(join(copy, "job.json"), "utf8"));
      job.model.hidden = [48];
      writeFileSync(join(copy, "job.json"), JSON.stringify(job));
      const before = snapshot(copy);
      const r = await cli(["train", "--resume", "--out", copy, "--epochs", "2"]);
      expectOneLineError(r, /does not match the model: shape mismatch: 1\.weight \[32,784\] in checkpoint vs \[48,784\] in model/);
      expect(snapshot(copy)).toEqual(before);
    }, 60_000);

    it("a truncated checkpoint", async () => {
      const copy = join(TMP, "truncated");
      cpSync(run, copy, { recursive: true });
      const m = join(latestCheckpoint(copy), "model.safetensors");
      truncateSync(m, statSync(m).size - 100);
      const before = snapshot(copy);
      const ev = await cli(["eval", copy]);
      expectOneLineError(ev, /corrupted checkpoint: .*model\.safetensors: truncated/);
      const r = await cli(["train", "--resume", "--out", copy, "--epochs", "2"]);
      expectOneLineError(r, /corrupted checkpoint: .*model\.safetensors: truncated/);
      expect(snapshot(copy)).toEqual(before);
    }, 60_000);

    it("a corrupted state.json", async () => {
      const copy = join(TMP, "corrupt");
      cpSync(run, copy, { recursive: true });
      writeFileSync(join(latestCheckpoint(copy), "state.json"), '{"format": "chainrule-checkpoint", "step": ');
      const r = await cli(["eval", copy]);
      expectOneLineError(r, /corrupted checkpoint: .*state\.json: invalid JSON/);
    }, 60_000);

    it("resume with a changed job is refused", async () => {
      const before = snapshot(run);
      const r = await cli(["train", "--resume", "--out", run, "--batch-size", "10"]);
      expectOneLineError(r, /--resume: the job differs .* at batchSize \(50 vs 10\)/);
      expect(snapshot(run)).toEqual(before);
    }, 60_000);
  });
});

describe("other data and models", () => {
  it("trains a .ts job whose model comes from its own module, on 2 workers", async () => {
    const run = join(TMP, "tsjob");
    const r = await cli(["train", join(FIX, "cli-job.ts"), "--out", run]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/cli-model\.ts#tiny \(19,090 parameters\)/);
    expect(r.stdout).toContain("DataParallel, 2 worker threads");
    expect(Number(/held-out accuracy: ([\d.]+)%/.exec(r.stdout)![1])).toBeGreaterThan(60);
    const job = JSON.parse(readFileSync(join(run, "job.json"), "utf8"));
    expect(job.model.module).toBe(join(FIX, "cli-model.ts")); // made absolute: job.json stands alone
  }, 60_000);

  it("trains logistic regression on a CSV file and predicts a row", async () => {
    const run = join(TMP, "csv");
    const job = writeJob("csv", { model: { type: "logistic" }, data: { type: "csv", path: join(FIX, "cli-blobs.csv"), label: "label" }, epochs: 30, batchSize: 32, workers: 1, optimizer: { type: "sgd", lr: 0.5 } });
    const r = await cli(["train", job, "--out", run]);
    expect(r.code, r.stderr).toBe(0);
    const acc = Number(/held-out accuracy: ([\d.]+)%/.exec(r.stdout)![1]);
    expect(acc).toBeGreaterThan(85);
    const p = await cli(["predict", run, "0.9,0.9,-0.5"]);
    expect(p.code, p.stderr).toBe(0);
    expect(p.stdout).toMatch(/^input: 1 · p\(1: /m);
  }, 60_000);
});
