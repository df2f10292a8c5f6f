/**
 * GPT text jobs through the real command (child processes): train a tiny GPT →
 * checkpoint → `chainrule generate` (deterministic per seed); pretrain on
 * female-names then LoRA-fine-tune on male-names (validation loss falls, base
 * weights bit-identical, adapters alone reproduce the merged model); bad input;
 * a safetensors file built byte by byte from the spec loading by name into a GPT.
 */
import { describe, expect, it, beforeAll } from "vitest";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { GPT, decodeSafetensors, loadSafetensors, manualSeed } from "@chainrule/core";
import { REPO, type Result, checkpointTensors, cli, expectOneLineError, latestCheckpoint, tempDir, writeJobIn } from "./cli-helpers.ts";

const TMP = tempDir("chainrule-gpt-");

function writeJob(name: string, job: unknown): string {
  return writeJobIn(TMP, name, job);
}

/** A GPT small enough that a 2-core machine trains an epoch in a second or two. */
const TINY_MODEL = { type: "gpt", blockSize: 16, nLayer: 1, nHead: 2, nEmbd: 16 };
const PRETRAIN = {
  model: TINY_MODEL,
  data: { type: "text", corpus: "female-names", stride: 16 },
  optimizer: { type: "adamw", lr: 0.01, weightDecay: 0.01 },
  epochs: 2,
  batchSize: 32,
  workers: 1,
  sample: { tokens: 30, prompt: "\n" },
};

const PRE = join(TMP, "pre");
let pre: Result;

beforeAll(async () => {
  pre = await cli(["train", writeJob("pre", PRETRAIN), "--out", PRE]);
}, 60_000);

describe("chainrule train (GPT) and generate", () => {
  it("trains, prints validation loss and a sample, saves the tokenizer with the checkpoint", () => {
    expect(pre.code, pre.stdout + pre.stderr).toBe(0);
    expect(pre.stdout).toMatch(/GPT 1 layers × 2 heads × 16 wide, context 16, vocab 54/);
    expect(pre.stdout).toMatch(/validation loss before training: \d/);
    expect(pre.stdout).toMatch(/epoch 2\/2: train loss [\d.]+ · validation loss [\d.]+/);
    expect(pre.stdout).toMatch(/sample \(seed 0, temperature 0\.8\):/);
    const state = JSON.parse(readFileSync(join(latestCheckpoint(PRE), "state.json"), "utf8"));
    expect(state.extra.tokenizer.type).toBe("char");
    expect(state.extra.tokenizer.vocab).toHaveLength(54);
    const first = Number(/validation loss before training: ([\d.]+)/.exec(pre.stdout)![1]);
    const last = Number(/validation loss: ([\d.]+)/.exec(pre.stdout)![1]);
    expect(last).toBeLessThan(first - 0.5);
  });

  it("generate: the same seed gives the same text, another seed another text", async () => {
    const args = ["generate", PRE, "--prompt", "Ma", "--tokens", "60", "--temperature", "1"];
    const [a, b, c] = await Promise.all([cli([...args, "--seed", "7"]), cli([...args, "--seed", "7"]), cli([...args, "--seed", "8"])]);
    for (const r of [a, b, c]) expect(r.code, r.stderr).toBe(0);
    expect(a.stdout.startsWith("Ma")).toBe(true);
    expect(a.stdout.length).toBe(2 + 60 + 1);
    expect(b.stdout).toBe(a.stdout);
    expect(c.stdout).not.toBe(a.stdout);
    const vocab = new Set(JSON.parse(readFileSync(join(latestCheckpoint(PRE), "state.json"), "utf8")).extra.tokenizer.vocab);
    for (const ch of a.stdout.slice(0, -1)) expect(vocab.has(ch)).toBe(true);
  });

  it("bad input: a prompt character outside the vocabulary, an unknown gpt key, nHead not dividing nEmbd", async () => {
    const [prompt, unknownKey, heads, noCkpt] = await Promise.all([
      cli(["generate", PRE, "--prompt", "Zoë#"]),
      cli(["train", writeJob("bad-key", { ...PRETRAIN, model: { ...TINY_MODEL, nHeads: 2 } }), "--out", join(TMP, "bad1")]),
      cli(["train", writeJob("bad-heads", { ...PRETRAIN, model: { ...TINY_MODEL, nHead: 3 } }), "--out", join(TMP, "bad2")]),
      cli(["generate", join(TMP, "nope")]),
    ]);
    expectOneLineError(prompt, /--prompt: characters "ë", "#" are not in the checkpoint's vocabulary \(54 characters/);
    expectOneLineError(unknownKey, /model\.nHeads: unknown key/);
    expectOneLineError(heads, /model\.nHead: nHead 3 does not divide nEmbd 16/);
    expectOneLineError(noCkpt, /no such checkpoint/);
    for (const d of ["bad1", "bad2"]) expect(existsSync(join(TMP, d))).toBe(false);
  });
});

function weights(run: string): Record<string, Float32Array> {
  const tensors = checkpointTensors(latestCheckpoint(run));
  return Object.fromEntries(Object.entries(tensors).map(([k, t]) => [k, t.data as Float32Array]));
}

describe("the built-in job and text files", () => {
  it("`train gpt` with --set overrides trains on a UTF-8 file; a non-UTF-8 file is a one-line error", async () => {
    const tiny = ["--set", "model.nLayer=1", "--set", "model.nEmbd=16", "--set", "model.nHead=2", "--set", "model.blockSize=16", "--set", "sample.tokens=10", "--set", "schedule.warmupSteps=0", "--epochs", "1", "--workers", "1"];
    const bin = join(TMP, "latin1.txt");
    writeFileSync(bin, Buffer.from([0x63, 0x61, 0x66, 0xe9, 0x0a, 0xff, 0xfe]));
    const [r, bad] = await Promise.all([
      cli(["train", "gpt", "--set", `data.file=${join(REPO, "test/fixtures/gpt-tiny.txt")}`, ...tiny, "--out", join(TMP, "builtin")]),
      cli(["train", "gpt", "--set", `data.file=${bin}`, ...tiny, "--out", join(TMP, "builtin-bad")]),
    ]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/GPT 1 layers × 2 heads × 16 wide, context 16, vocab \d+ .* on .*gpt-tiny\.txt \(\d+ characters/);
    expect(JSON.parse(readFileSync(join(TMP, "builtin", "job.json"), "utf8")).data.file).toMatch(/gpt-tiny\.txt$/);
    expectOneLineError(bad, /latin1\.txt: not UTF-8 text/);
    expect(existsSync(join(TMP, "builtin-bad"))).toBe(false);
  }, 60_000);
});

describe("LoRA fine-tuning on a second corpus", () => {
  const FT = join(TMP, "ft");
  let ft: Result, ftJob: string;
  beforeAll(async () => {
    const job = {
      init: { checkpoint: PRE },
      lora: { rank: 4, alpha: 8 },
      data: { type: "text", corpus: "male-names", stride: 16 },
      optimizer: { type: "adamw", lr: 0.01, weightDecay: 0.01 },
      epochs: 2,
      batchSize: 32,
      workers: 2,
      sample: { tokens: 20 },
    };
    ftJob = writeJob("ft", job);
    ft = await cli(["train", ftJob, "--out", FT]);
  }, 90_000);

  it("reports the keys it loaded, trains only the adapters, and the validation loss on male-names falls", () => {
    expect(ft.code, ft.stdout + ft.stderr).toBe(0);
    expect(ft.stdout).toMatch(/init: loaded \d+ tensors from .* · missing keys none · unexpected keys none · 8 LoRA adapter tensors start fresh/);
    expect(ft.stdout).toMatch(/LoRA: rank 4, alpha 8 on 4 layers/);
    expect(ft.stdout).toMatch(/DataParallel, 2 worker threads/);
    const before = Number(/validation loss before training: ([\d.]+)/.exec(ft.stdout)![1]);
    const epochs = [...ft.stdout.matchAll(/validation loss ([\d.]+) ·/g)].map((m) => Number(m[1]));
    expect(epochs).toHaveLength(2);
    expect(epochs[0]).toBeLessThan(before);
    expect(epochs[1]).toBeLessThan(epochs[0]);
  });

  it("keeps every base weight bit-identical and saves the adapters alone", () => {
    const base = loadSafetensors(join(latestCheckpoint(PRE), "model.safetensors")).tensors;
    const tuned = loadSafetensors(join(latestCheckpoint(FT), "model.safetensors")).tensors;
    expect(Object.keys(base).length).toBeGreaterThan(10);
    for (const [k, t] of Object.entries(base)) {
      expect(tuned[k], k).toBeDefined();
      expect(Buffer.from(tuned[k].data.buffer, tuned[k].data.byteOffset, tuned[k].data.byteLength).equals(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength)), k).toBe(true);
    }
    const extra = Object.keys(tuned).filter((k) => !(k in base));
    expect(extra.length).toBe(8);
    expect(extra.every((k) => /\.lora_[AB]$/.test(k))).toBe(true);
    const adapters = loadSafetensors(join(latestCheckpoint(FT), "adapters.safetensors"));
    expect(Object.keys(adapters.tensors).sort()).toEqual(extra.sort());
    expect(JSON.parse(adapters.metadata.chainrule_lora).rank).toBe(4);
    // B moved away from 0: the adapters learned something.
    const b = Object.entries(adapters.tensors).find(([k]) => k.endsWith("lora_B"))![1];
    expect(Array.from(b.data).some((v) => v !== 0)).toBe(true);
  });

  it("generate merges the adapters; base + adapters alone gives the same text; a merged export generates it too", async () => {
    const merged = join(TMP, "merged");
    const args = ["--prompt", "Jo", "--tokens", "40", "--seed", "3"];
    const [a, b] = await Promise.all([
      cli(["generate", FT, ...args, "--save-merged", merged]),
      cli(["generate", PRE, "--adapters", join(latestCheckpoint(FT), "adapters.safetensors"), ...args]),
    ]);
    expect(a.code, a.stderr).toBe(0);
    expect(b.code, b.stderr).toBe(0);
    expect(a.stderr).toMatch(/merged LoRA adapters into 4 layers/);
    expect(b.stdout).toBe(a.stdout);
    const c = await cli(["generate", merged, ...args]);
    expect(c.code, c.stderr).toBe(0);
    expect(c.stdout).toBe(a.stdout);
    expect(Object.keys(loadSafetensors(join(merged, "model.safetensors")).tensors).some((k) => k.includes("lora"))).toBe(false);
  });
});

describe("GPT runs: resume and worker count", () => {
  it("a fine-tuning run stopped after epoch 1 and resumed ends bit-identical to the uninterrupted one", async () => {
    const FT = join(TMP, "ft"), FT1 = join(TMP, "ft-resumed");
    const job = join(TMP, "ft.json");
    const a = await cli(["train", job, "--epochs", "1", "--out", FT1]);
    expect(a.code, a.stderr).toBe(0);
    const b = await cli(["train", "--resume", "--out", FT1, "--epochs", "2"]);
    expect(b.code, b.stdout + b.stderr).toBe(0);
    expect(b.stdout).toMatch(/resuming from .*step-00000047: epoch 2, step 47/);
    const x = weights(FT1), y = weights(FT);
    expect(Object.keys(x).sort()).toEqual(Object.keys(y).sort());
    for (const k of Object.keys(x)) expect(Buffer.from(x[k].buffer, x[k].byteOffset, x[k].byteLength).equals(Buffer.from(y[k].buffer, y[k].byteOffset, y[k].byteLength)), k).toBe(true);
  }, 60_000);

  it("1 worker and 2 workers train the same GPT (up to float rounding)", async () => {
    const job = writeJob("w", { ...PRETRAIN, epochs: 1, sample: { tokens: 0 } });
    const [one, two] = await Promise.all([
      cli(["train", job, "--workers", "1", "--out", join(TMP, "w1")]),
      cli(["train", job, "--workers", "2", "--out", join(TMP, "w2")]),
    ]);
    expect(one.code, one.stderr).toBe(0);
    expect(two.code, two.stderr).toBe(0);
    const x = weights(join(TMP, "w1")), y = weights(join(TMP, "w2"));
    let maxDiff = 0;
    for (const k of Object.keys(x)) for (let i = 0; i < x[k].length; i++) maxDiff = Math.max(maxDiff, Math.abs(x[k][i] - y[k][i]));
    // Same mean gradient up to float rounding; Adam (lr 0.01, ~47 steps: weights move up to ~0.5)
    // amplifies rounding on near-zero gradients, so allow 1% of that drift. A sharding or
    // weighting error moves weights by a large fraction of it.
    expect(maxDiff).toBeLessThan(5e-3);
    const loss = (r: Result) => Number(/validation loss: ([\d.]+)/.exec(r.stdout)![1]);
    expect(Math.abs(loss(one) - loss(two))).toBeLessThan(1e-3);
  }, 60_000);
});

describe("freeze patterns and per-group learning rates", () => {
  it("frozen parameters stay bit-identical, the rest train at their group's lr, with 1 worker and with 2 workers alike", async () => {
    const job = {
      init: { checkpoint: PRE, strict: true },
      freeze: ["^transformer\\.(wte|wpe)", "\\.attn\\."],
      paramGroups: [{ match: "^lm_head", lr: 0.001 }],
      data: { type: "text", corpus: "male-names", stride: 32 },
      optimizer: { type: "adam", lr: 0.01 },
      epochs: 1, batchSize: 32, workers: 1, sample: { tokens: 0 },
    };
    const out = join(TMP, "frozen"), out2 = join(TMP, "frozen2"), outFlat = join(TMP, "frozen-one-lr");
    const [r, r2, rFlat] = await Promise.all([
      cli(["train", writeJob("frozen", job), "--out", out]),
      cli(["train", writeJob("frozen2", { ...job, workers: 2 }), "--out", out2]),
      cli(["train", writeJob("frozen-one-lr", { ...job, paramGroups: undefined }), "--out", outFlat]),
    ]);
    for (const x of [r, r2, rFlat]) expect(x.code, x.stdout + x.stderr).toBe(0);
    expect(r.stdout).toMatch(/init: loaded \d+ tensors .* missing keys none · unexpected keys none\n/);
    const base = weights(PRE), tuned = weights(out), tuned2 = weights(out2), flat = weights(outFlat);
    const same = (a: Float32Array, b: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
    const maxDiff = (a: Float32Array, b: Float32Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);
    for (const k of Object.keys(base)) {
      const frozen = /^transformer\.(wte|wpe)|\.attn\./.test(k);
      expect(same(base[k], tuned[k]), k).toBe(frozen);
      expect(same(base[k], tuned2[k]), k).toBe(frozen);
      // 2 workers follow the 1-worker run (same mean gradients up to rounding; Adam's drift as above)
      expect(maxDiff(tuned2[k], tuned[k]), k).toBeLessThan(5e-3);
    }
    // the group's lr is used: lm_head moved ~10x less than with the one lr of 0.01
    const moved = (w: Record<string, Float32Array>) => maxDiff(w["lm_head.weight"], base["lm_head.weight"]);
    expect(moved(tuned)).toBeLessThan(moved(flat) / 4);
    expect(moved(tuned2)).toBeLessThan(moved(flat) / 4);
  }, 90_000);
});

describe("safetensors interop: a file built byte by byte from the spec loads by name into a GPT", () => {
  it("F32 / F16 / BF16 tensors under nanoGPT names land in the right parameters", () => {
    manualSeed(0);
    const model = new GPT({ vocabSize: 5, blockSize: 4, nLayer: 1, nHead: 1, nEmbd: 4 });
    const sd = model.stateDict();
    // Every tensor gets the values 0.5, -1, 2, ... (exact in F16/BF16); dtype cycles F32, F16, BF16.
    const dtypes = ["F32", "F16", "BF16"] as const;
    const names = Object.keys(sd).sort();
    const header: Record<string, unknown> = { __metadata__: { format: "pt" } };
    const chunks: number[] = [];
    const valueAt = (i: number) => [0.5, -1, 2, -0.25][i % 4];
    names.forEach((k, j) => {
      const dtype = dtypes[j % 3];
      const start = chunks.length;
      for (let i = 0; i < sd[k].size; i++) {
        const v = valueAt(i + j);
        if (dtype === "F32") {
          const b = new Uint8Array(new Float32Array([v]).buffer); // little-endian on every supported platform
          chunks.push(...b);
        } else if (dtype === "BF16") {
          const bits = new Uint32Array(new Float32Array([v]).buffer)[0] >>> 16; // exact: these values have ≤ 7 mantissa bits
          chunks.push(bits & 0xff, bits >>> 8);
        } else {
          // F16 by hand: sign, 5-bit exponent (bias 15), 10-bit mantissa; the values are powers of two.
          const e = Math.log2(Math.abs(v));
          const h = (v < 0 ? 0x8000 : 0) | ((e + 15) << 10);
          chunks.push(h & 0xff, h >>> 8);
        }
      }
      header[k] = { dtype, shape: sd[k].shape, data_offsets: [start, chunks.length] };
    });
    let json = JSON.stringify(header);
    while ((8 + json.length) % 8 !== 0) json += " ";
    const len = json.length;
    const bytes = Uint8Array.from([len & 0xff, (len >>> 8) & 0xff, (len >>> 16) & 0xff, len >>> 24, 0, 0, 0, 0, ...new TextEncoder().encode(json), ...chunks]);
    const { tensors } = decodeSafetensors(bytes, "fixture");
    const report = model.loadStateDict(tensors);
    expect(report.missingKeys).toEqual([]);
    const after = model.stateDict();
    names.forEach((k, j) => {
      expect(Array.from(after[k].data.slice(0, 4)), k).toEqual(Array.from({ length: Math.min(4, after[k].size) }, (_, i) => valueAt(i + j)));
    });
    expect(after["transformer.wte.weight"].shape).toEqual([5, 4]);
  });
});
