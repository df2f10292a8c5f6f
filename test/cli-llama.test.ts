/**
 * The llama configuration of the GPT through the real command: a job with `arch: "llama"`
 * (grouped-query attention, no biases) trains with 1 and 2 workers, generates with the key/value
 * cache, and takes LoRA adapters on its q/k/v/o and SwiGLU projections; bad llama keys are one line.
 */
import { describe, expect, it, beforeAll } from "vitest";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { type Result, checkpointTensors, cli, expectOneLineError, latestCheckpoint, tempDir, writeJobIn } from "./cli-helpers.ts";

const TMP = tempDir("chainrule-llama-");
const LLAMA = { type: "gpt", arch: "llama", blockSize: 16, nLayer: 1, nHead: 4, nKvHead: 2, nEmbd: 16 };
const JOB = {
  model: LLAMA,
  data: { type: "text", corpus: "female-names", stride: 16 },
  optimizer: { type: "adamw", lr: 0.01, weightDecay: 0.01 },
  epochs: 1,
  batchSize: 32,
  sample: { tokens: 20, prompt: "\n" },
};
const ONE = join(TMP, "one"), TWO = join(TMP, "two"), LORA = join(TMP, "lora");
let one: Result, two: Result;

beforeAll(async () => {
  [one, two] = await Promise.all([
    cli(["train", writeJobIn(TMP, "one", { ...JOB, workers: 1 }), "--out", ONE]),
    cli(["train", writeJobIn(TMP, "two", { ...JOB, workers: 2 }), "--out", TWO]),
  ]);
}, 120_000);

describe("chainrule train with arch llama", () => {
  it("trains with 1 and with 2 workers to the same weights (float rounding apart), loss falling", () => {
    for (const r of [one, two]) {
      expect(r.code, r.stdout + r.stderr).toBe(0);
      expect(r.stdout).toMatch(/GPT \(llama\) 1 layers × 4 heads \(2 key\/value\) × 16 wide, context 16/);
      const first = Number(/validation loss before training: ([\d.]+)/.exec(r.stdout)![1]);
      const last = Number(/validation loss: ([\d.]+)/.exec(r.stdout)![1]);
      expect(last).toBeLessThan(first - 0.3);
    }
    const a = checkpointTensors(latestCheckpoint(ONE)), b = checkpointTensors(latestCheckpoint(TWO));
    expect(Object.keys(a).sort()).toEqual(Object.keys(b).sort());
    expect(Object.keys(a)).toContain("transformer.h.0.attn.k_proj.weight");
    expect(Object.keys(a).some((k) => k.endsWith(".bias") || k.includes("wpe"))).toBe(false);
    expect(a["transformer.h.0.attn.k_proj.weight"].shape).toEqual([8, 16]); // 2 key/value heads of 4
    for (const k of Object.keys(a)) {
      const x = a[k].data as Float32Array, y = b[k].data as Float32Array;
      for (let i = 0; i < x.length; i++) expect(Math.abs(x[i] - y[i])).toBeLessThan(1e-4 + 1e-3 * Math.abs(x[i]));
    }
    const job = JSON.parse(readFileSync(join(ONE, "job.json"), "utf8"));
    expect(job.model).toMatchObject({ arch: "llama", bias: false, nKvHead: 2 });
  });

  it("generates the same text for the same seed", async () => {
    const args = ["generate", ONE, "--prompt", "Ma", "--tokens", "40", "--seed", "3"];
    const [a, b] = await Promise.all([cli(args), cli(args)]);
    expect(a.code, a.stderr).toBe(0);
    expect(a.stdout.startsWith("Ma")).toBe(true);
    expect(a.stdout.length).toBe(2 + 40 + 1);
    expect(b.stdout).toBe(a.stdout);
  });

  it("fine-tunes with LoRA on the llama projections (the default targets), base weights untouched", async () => {
    const r = await cli(["train", writeJobIn(TMP, "lora", { init: { checkpoint: ONE }, data: { type: "text", corpus: "male-names", stride: 16 }, lora: { rank: 2 }, epochs: 1, batchSize: 32, workers: 2 }), "--out", LORA]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const base = checkpointTensors(latestCheckpoint(ONE)), tuned = checkpointTensors(latestCheckpoint(LORA));
    for (const p of ["attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]) {
      expect(Object.keys(tuned)).toContain(`transformer.h.0.${p}.lora_A`);
    }
    expect(Array.from(tuned["transformer.h.0.attn.q_proj.weight"].data)).toEqual(Array.from(base["transformer.h.0.attn.q_proj.weight"].data));
    const g = await cli(["generate", LORA, "--prompt", "Jo", "--tokens", "20"]);
    expect(g.code, g.stderr).toBe(0);
    expect(g.stderr).toMatch(/merged LoRA adapters into 7 layers/);
  });

  it("bad llama keys are one-line errors naming the key", async () => {
    const r = await cli(["train", writeJobIn(TMP, "bad", { ...JOB, model: { ...LLAMA, nKvHead: 3 } })]);
    expectOneLineError(r, /model\.nKvHead: nKvHead 3 does not divide nHead 4/, 2);
    const g = await cli(["train", writeJobIn(TMP, "bad2", { ...JOB, model: { ...LLAMA, arch: "gpt2" } })]);
    expectOneLineError(g, /model\.nKvHead: grouped-query attention \(nKvHead 2 < nHead 4\) needs arch "llama"/, 2);
  });
});
