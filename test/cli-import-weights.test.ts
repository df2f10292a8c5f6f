/**
 * chainrule import-weights through the real command: a small GPT-2-shaped model that PyTorch
 * built with its own code (fixtures/gpt2/make_gpt2.py: random weights, Hugging Face's names and
 * Conv1D layout) imports with a byte-level BPE tokenizer this test writes (vocab.json,
 * merges.txt); the imported model's logits equal PyTorch's within 1e-4; `chainrule generate`
 * samples BPE text from it; a LoRA job with `init` fine-tunes it; bad input is one line.
 */
import { describe, expect, it, beforeAll } from "vitest";
import { spawn } from "node:child_process";
import { copyFileSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { GPT, noGrad, readCheckpoint } from "@chainrule/core";
import { MAIN, REPO, type Result, checkpointTensors, cli, expectOneLineError, latestCheckpoint, tempDir, writeJobIn } from "./cli-helpers.ts";

const TMP = tempDir("chainrule-import-");
const FIXTURE = join(REPO, "test/fixtures/gpt2");
const WEIGHTS = join(FIXTURE, "model.safetensors");
const IMPORTED = join(TMP, "gpt2");

/** GPT-2's tokenizer files for the fixture's 262-token vocabulary: 256 byte tokens, 5 merges, <|endoftext|>. */
function writeTokenizer(dir: string): string[] {
  const printable = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  let next = 256;
  const vocab: Record<string, number> = {};
  for (let b = 0; b < 256; b++) vocab[String.fromCodePoint(printable(b) ? b : next++)] = b;
  const merges = ["h e", "l l", "he ll", "Ġ w", "o r"];
  for (const m of merges) vocab[m.replace(" ", "")] = Object.keys(vocab).length;
  vocab["<|endoftext|>"] = Object.keys(vocab).length;
  writeFileSync(join(dir, "vocab.json"), JSON.stringify(vocab));
  writeFileSync(join(dir, "merges.txt"), ["#version: 0.2", ...merges].join("\n") + "\n");
  return ["--vocab", join(dir, "vocab.json"), "--merges", join(dir, "merges.txt")];
}

const TOKENIZER = writeTokenizer(TMP);
let imported: Result;

beforeAll(async () => {
  imported = await cli(["import-weights", WEIGHTS, "--arch", "gpt2", "--out", IMPORTED, ...TOKENIZER]);
}, 60_000);

describe("chainrule import-weights --arch gpt2", () => {
  it("imports Hugging Face GPT-2 weights: the logits equal PyTorch's within 1e-4", () => {
    expect(imported.code, imported.stdout + imported.stderr).toBe(0);
    expect(imported.stdout).toMatch(/imported GPT-2 \(2 layers × 4 heads × 32 wide, context 32, vocab 262; [\d,]+ parameters\)/);
    expect(imported.stdout).toMatch(/byte-level BPE, 5 merges/);
    const { tensors, state } = readCheckpoint(IMPORTED);
    const { type: _type, ...cfg } = (state.config as { model: Record<string, unknown> }).model;
    expect(cfg).toMatchObject({ arch: "gpt2", tieWeights: true, geluApproximate: "tanh", nHead: 4 });
    const model = new GPT({ ...cfg, vocabSize: 262 });
    model.loadStateDict(tensors);
    model.eval();
    const expected = JSON.parse(readFileSync(join(FIXTURE, "expected.json"), "utf8")) as { ids: number[][]; logits: number[] };
    const ids = Int32Array.from(expected.ids.flat());
    const logits = noGrad(() => model.forward(ids, [expected.ids.length, expected.ids[0].length])).data;
    expect(logits.length).toBe(expected.logits.length);
    let worst = 0;
    for (let i = 0; i < logits.length; i++) worst = Math.max(worst, Math.abs(logits[i] - expected.logits[i]));
    expect(worst).toBeLessThan(1e-4);
    expect(Math.max(...expected.logits.map(Math.abs))).toBeGreaterThan(1); // not a vacuous comparison
  });

  it("generate samples BPE tokens as text, the same for the same seed", async () => {
    const args = ["generate", IMPORTED, "--prompt", "hello world", "--tokens", "30", "--seed", "4", "--temperature", "1"];
    const [a, b] = await Promise.all([cli(args), cli(args)]);
    expect(a.code, a.stderr).toBe(0);
    expect(a.stdout.startsWith("hello world")).toBe(true);
    expect(a.stdout.length).toBeGreaterThan("hello world".length + 10);
    expect(b.stdout).toBe(a.stdout);
  });

  it("serve generates the same BPE text as chainrule generate, streamed or not", async () => {
    const g = await cli(["generate", IMPORTED, "--prompt", "hello world", "--tokens", "30", "--seed", "4", "--temperature", "1", "--top-k", "50"]);
    expect(g.code, g.stderr).toBe(0);
    const child = spawn(process.execPath, ["--import", "tsx", MAIN, "serve", IMPORTED, "--port", "0", "--workers", "1"], { cwd: REPO, stdio: ["ignore", "pipe", "pipe"] });
    try {
      let out = "";
      const url = await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`serve did not start: ${out}`)), 30_000);
        child.stdout.on("data", (d) => {
          out += d;
          const m = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(out);
          if (m) { clearTimeout(timer); resolve(m[1]); }
        });
        child.on("close", (code) => reject(new Error(`serve exited with ${code}: ${out}`)));
      });
      const info = await (await fetch(`${url}/v1/model`)).json();
      expect(info).toMatchObject({ tokenizer: "bpe", vocabSize: 262 });
      const body = { prompt: "hello world", maxTokens: 30, seed: 4, temperature: 1, topK: 50 };
      const r = (await (await fetch(`${url}/v1/generate`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) })).json()) as { text: string; tokens: number };
      expect("hello world" + r.text).toBe(g.stdout.replace(/\n$/, ""));
      expect(r.tokens).toBe(30);
      const sse = await (await fetch(`${url}/v1/generate`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ ...body, stream: true }) })).text();
      const streamed = sse.split("\n").filter((l) => l.startsWith("data: ")).map((l) => JSON.parse(l.slice(6))).filter((e) => typeof e.token === "string").map((e) => e.token).join("");
      expect(streamed).toBe(r.text);
    } finally {
      child.kill("SIGKILL");
    }
  }, 60_000);

  it("fine-tunes with LoRA from the imported checkpoint (init), base weights untouched, then generates", async () => {
    const text = join(TMP, "text.txt");
    writeFileSync(text, "hello world, hello there. ".repeat(40));
    const run = join(TMP, "lora");
    const job = { init: { checkpoint: IMPORTED }, data: { type: "text", file: text, blockSize: 16 }, lora: { rank: 2 }, epochs: 2, batchSize: 8, workers: 1, optimizer: { type: "adamw", lr: 0.01 } };
    const r = await cli(["train", writeJobIn(TMP, "lora", job), "--out", run]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const first = Number(/validation loss before training: ([\d.]+)/.exec(r.stdout)![1]);
    const last = Number(/validation loss: ([\d.]+)/.exec(r.stdout)![1]);
    expect(last).toBeLessThan(first);
    const base = checkpointTensors(IMPORTED), tuned = checkpointTensors(latestCheckpoint(run));
    expect(Object.keys(tuned)).toContain("transformer.h.0.attn.c_attn.lora_A");
    expect(Array.from(tuned["transformer.h.1.mlp.c_fc.weight"].data)).toEqual(Array.from(base["transformer.h.1.mlp.c_fc.weight"].data));
    const g = await cli(["generate", run, "--prompt", "hello", "--tokens", "10"]);
    expect(g.code, g.stderr).toBe(0);
    expect(g.stdout.startsWith("hello")).toBe(true);
  });

  it("bad input is one line naming the flag or file", async () => {
    expectOneLineError(await cli(["import-weights", WEIGHTS, "--arch", "llama", "--out", join(TMP, "x")]), /--arch: expected gpt2, got "llama"/, 2);
    expectOneLineError(await cli(["import-weights", WEIGHTS, "--out", join(TMP, "x")]), /needs --arch gpt2/, 2);
    expectOneLineError(await cli(["import-weights", WEIGHTS, "--arch", "gpt2", "--out", IMPORTED, ...TOKENIZER]), /--out .*gpt2: already exists/, 1);
    const alone = join(TMP, "alone.safetensors");
    copyFileSync(WEIGHTS, alone); // no config.json beside it
    expectOneLineError(await cli(["import-weights", alone, "--arch", "gpt2", "--out", join(TMP, "y"), ...TOKENIZER]), /--n-head: the number of attention heads is not in the weights/, 2);
    expectOneLineError(await cli(["import-weights", alone, "--arch", "gpt2", "--n-head", "5", "--out", join(TMP, "y"), ...TOKENIZER]), /nHead 5 does not divide the width 32/, 1);
    expectOneLineError(await cli(["import-weights", WEIGHTS, "--arch", "gpt2", "--out", join(TMP, "z")]), /--vocab .*vocab\.json: no such file/, 1);
  });
});
