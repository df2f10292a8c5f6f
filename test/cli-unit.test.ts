/** In-process tests of the CLI's pieces: job schema messages, flag overrides, run directories (charts: plot.test.ts). */
import { describe, expect, it } from "vitest";
import { existsSync, mkdtempSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DEFAULT_JOB } from "../packages/cli/src/job/builtin.js";
import { parseJob } from "../packages/cli/src/job/parse.js";
import { autoWorkers, resolveWorkers } from "../packages/cli/src/workers.js";
import { rawJob } from "../packages/cli/src/job/load.js";
import { jobParseError as err } from "./cli-helpers.ts";
import { maxWorkersFor } from "@chainrule/parallel";
import { commitCheckpoint, createRunDir, defaultRunDir, listCheckpoints, resolveCheckpoint } from "../packages/cli/src/rundir.js";

describe("job schema", () => {
  it("fills defaults and accepts the default job", () => {
    const j = parseJob(DEFAULT_JOB, "default job");
    expect(j.model).toEqual({ type: "mlp", hidden: [512, 256], activation: "relu", dropout: 0 });
    expect(j.optimizer).toMatchObject({ type: "adam", lr: 1e-3, betas: [0.9, 0.999] });
    expect(j.checkpoint).toEqual({ everySteps: 0, everyEpochs: 1, keep: 2 });
  });
  it("names the key path and what was expected", () => {
    expect(err({ foo: 1 })).toBe("job.json: foo: unknown key");
    expect(err({ optimizer: { type: "adam", lr: -1 } })).toBe("job.json: optimizer.lr: expected a number > 0, got -1");
    expect(err({ model: { type: "mlp", hidden: [8, 0] } })).toBe("job.json: model.hidden[1]: expected a number > 0, got 0");
    expect(err({ epochs: "ten" })).toBe('job.json: epochs: expected number, got "ten"');
    expect(err({ data: { type: "mnist", heldOut: 2.5 } })).toMatch(/data\.heldOut: expected a fraction in \(0, 1\) or a whole number of rows/);
    expect(err({ workers: 3, batchSize: 2 })).toMatch(/workers: 3 workers but batchSize is 2/);
    expect(err({ workers: "all" })).toBe('job.json: workers: expected a whole number ≥ 1 or "auto" (got "all")');
    expect(err({ schedule: { type: "cosine", minLr: 1 } })).toMatch(/schedule\.minLr: minLr 1 is above optimizer\.lr 0\.001/);
    expect(err({ a: 1, b: 2, c: 3, d: 4 })).toMatch(/a: unknown key; b: unknown key; c: unknown key; d: unknown key/);
  });
  // Every section, and every variant of the sections with a `type`, rejects a key it does not know
  // (a misspelt option must not be dropped silently): one line naming the key's path.
  const unknownKeys: [string, Record<string, unknown>, string][] = [
    ["model (linear)", { model: { type: "linear", hidden: [8] } }, "model.hidden"],
    ["model (logistic)", { model: { type: "logistic", bias: false } }, "model.bias"],
    ["model (mlp)", { model: { type: "mlp", layers: [8] } }, "model.layers"],
    ["model (cnn)", { model: { type: "cnn", kernelSize: 5 } }, "model.kernelSize"],
    ["model (gpt)", { model: { type: "gpt", n_layer: 2 }, data: { type: "text" } }, "model.n_layer"],
    ["model (module)", { model: { type: "module", module: "m.ts", opts: {} } }, "model.opts"],
    ["data (mnist)", { data: { type: "mnist", heldout: 100 } }, "data.heldout"],
    ["data (idx)", { data: { type: "idx", dir: "d", normalize: true } }, "data.normalize"],
    ["data (csv)", { data: { type: "csv", path: "a.csv", sep: ";" } }, "data.sep"],
    ["data (text)", { model: { type: "gpt" }, data: { type: "text", lowercase: true } }, "data.lowercase"],
    ["optimizer (sgd)", { optimizer: { type: "sgd", dampening: 0.1 } }, "optimizer.dampening"],
    ["optimizer (adam)", { optimizer: { type: "adam", weight_decay: 0.1 } }, "optimizer.weight_decay"],
    ["optimizer (adamw)", { optimizer: { type: "adamw", amsgrad: true } }, "optimizer.amsgrad"],
    ["schedule (constant)", { schedule: { type: "constant", lr: 0.1 } }, "schedule.lr"],
    ["schedule (cosine)", { schedule: { type: "cosine", warmup: 10 } }, "schedule.warmup"],
    ["schedule (step)", { schedule: { type: "step", stepSize: 10, decay: 0.5 } }, "schedule.decay"],
    ["augment", { augment: { crop: 2, rotate: 10 } }, "augment.rotate"],
    ["checkpoint", { checkpoint: { every: 100 } }, "checkpoint.every"],
    ["init", { init: { checkpoint: "ck", strict: true, map: {} } }, "init.map"],
    ["lora", { model: { type: "gpt" }, data: { type: "text" }, lora: { rank: 4, scale: 2 } }, "lora.scale"],
    ["paramGroups[i]", { paramGroups: [{ match: "w", lr: 0.1 }, { match: "b", lr: 0.1, weightDecay: 0 }] }, "paramGroups[1].weightDecay"],
    ["sample", { sample: { tokens: 10, top_k: 5 } }, "sample.top_k"],
    ["log", { log: { everySteps: 10, everyEpochs: 1 } }, "log.everyEpochs"],
  ];
  it.each(unknownKeys)("rejects an unknown key in %s, naming its path in one line", (_section, job, path) => {
    const escaped = path.replace(/[.[\]]/g, "\\$&");
    expect(err(job)).toMatch(new RegExp(`^job\\.json: ${escaped}: unknown key( \\(did you mean [\\w.\\[\\]]+\\?\\))?$`));
  });
  it("flags and --set override the job, keeping a section's type", async () => {
    const { raw, source } = await rawJob(undefined, { lr: "0.01", "batch-size": "32", workers: "auto" }, ["data.limitTrain=100", "model.hidden=[64]"]);
    const j = parseJob(raw, source);
    expect(j.optimizer.lr).toBe(0.01);
    expect(j.batchSize).toBe(32);
    expect(j.data).toMatchObject({ type: "mnist", limitTrain: 100 });
    expect(j.model).toMatchObject({ type: "mlp", hidden: [64] });
    expect(source).toBe("default job (with --workers, --batch-size, --lr, --set data.limitTrain, --set model.hidden)");
  });
});

describe("workers: auto", () => {
  const probe = (macsPerRow: number, maxWorkers = 1000) => ({ macsPerRow, maxWorkers });
  it("takes one worker per core, at most one per row, and shards of at least 4M forward multiply-adds", () => {
    const mlp = 784 * 512 + 512 * 256 + 256 * 10; // the default job's model
    expect(autoWorkers(16, 64, probe(mlp))).toBe(8); // 16 workers of 4 rows ran slower than 8 on a 16-core VM
    expect(autoWorkers(2, 64, probe(mlp))).toBe(2);
    expect(autoWorkers(16, 64, probe(4.72e6))).toBe(16); // the cnn job
    expect(autoWorkers(16, 64, probe(784 * 32 + 32 * 10))).toBe(1); // a tiny model trains faster in the main thread
    expect(autoWorkers(16, 3, null)).toBe(3); // not probed: cores and rows only
    expect(autoWorkers(1, 64, probe(mlp))).toBe(1);
  });
  it("takes no more workers than WebAssembly's 4 GiB holds", () => {
    expect(autoWorkers(64, 1024, probe(1e9, 3))).toBe(3);
  });
  it("counts the most workers whose shared memory fits in 4 GiB, keeping 16 MiB for model buffers and control rows", () => {
    // The shared memory: parameters, mean gradient, one gradient slot per worker and the optimizer's
    // state buffers, P float32s each, every region starting on a 64-byte boundary.
    const fits = (P: number, workers: number, optimizerBuffers: number) =>
      (2 + workers + optimizerBuffers) * Math.ceil((4 * P) / 64) * 64 + 16 * 2 ** 20 <= 2 ** 32;
    for (const [P, buffers] of [[10_506_762, 2], [134_316_042, 2], [134_316_042, 1], [134_316_042, 0], [1_000_003, 2], [300_000_000, 2], [250_000_000, 0]]) {
      const n = maxWorkersFor(P, buffers);
      if (n > 0) expect(fits(P, n, buffers), `${P} parameters, ${buffers} buffers, ${n} workers`).toBe(true);
      expect(fits(P, n + 1, buffers), `${P} parameters, ${buffers} buffers, ${n + 1} workers`).toBe(false);
    }
    // 134M parameters with Adam: 3 workers fit, and a 4th would take the memory above 4 GiB even without the reserve.
    expect(maxWorkersFor(134_316_042, 2)).toBe(3);
    expect((2 + 4 + 2) * 4 * 134_316_042).toBeGreaterThan(2 ** 32);
    // 300M parameters: not even parameters, gradient, one slot and Adam's two moments fit.
    expect(maxWorkersFor(300_000_000, 2)).toBe(0);
  });
  it("leaves an explicit count alone", async () => {
    const { raw, source } = await rawJob(undefined, { workers: "3" }, []);
    expect(resolveWorkers(parseJob(raw, source), probe(10), 16)).toBe(3);
    const auto = await rawJob(undefined, { workers: "auto" }, []);
    expect(resolveWorkers(parseJob(auto.raw, auto.source), probe(784 * 512 + 512 * 256 + 256 * 10), 16)).toBe(8);
  });
});

describe("run directories", () => {
  it("a job run again gets the next free name, as Lightning's version_N: runs/cnn, runs/cnn-2, runs/cnn-3", () => {
    const root = mkdtempSync(join(tmpdir(), "rd-"));
    const names: string[] = [];
    for (let i = 0; i < 3; i++) {
      const dir = defaultRunDir("cnn", root);
      createRunDir(dir);
      names.push(dir.split("/").pop()!);
    }
    expect(names).toEqual(["cnn", "cnn-2", "cnn-3"]);
  });

  it("checkpoints are renamed into place, pruned to `keep`, and the latest is found", () => {
    const run = join(mkdtempSync(join(tmpdir(), "rd-")), "run");
    createRunDir(run);
    expect(() => createRunDir(run)).toThrow(/already exists; pass --resume/);
    for (const s of [5, 10, 15]) commitCheckpoint(run, s, 2, (d) => expect(existsSync(d)).toBe(true));
    expect(listCheckpoints(run).map((p) => p.split("/").pop())).toEqual(["step-00000010", "step-00000015"]);
    expect(readdirSync(join(run, "checkpoints")).some((n) => n.startsWith(".tmp"))).toBe(false);
    expect(() => commitCheckpoint(run, 20, 2, () => { throw new Error("disk full"); })).toThrow("disk full");
    expect(readdirSync(join(run, "checkpoints"))).toEqual(["step-00000010", "step-00000015"]); // failed write left nothing
    expect(resolveCheckpoint(run)).toBe(join(run, "checkpoints", "step-00000015"));
  });
});
