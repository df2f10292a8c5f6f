/**
 * Generation speed: tokens/s of `chainrule generate` (200 tokens after a short prompt) with the
 * key/value cache, without it, and PyTorch generating from the same weights with a key/value cache
 * (bench/torch_generate.py, one thread), alternating in rounds; medians. Each side also reports
 * tokens per CPU-second of its own process (Node: process.cpuUsage, all threads; Python:
 * time.process_time), which a machine busy with other work disturbs less than the wall clock.
 *
 *   tsx bench/generate.ts [--sizes 128,384] [--tokens 200] [--rounds 5] [--reps 3] [--no-anchor] [--no-uncached]
 *
 * Models (gpt2 arch, blockSize 256 so that prompt + 200 tokens fit the cache): nEmbd 128 with 4
 * layers and 4 heads (the gpt job's shape), nEmbd 384 with 6 layers and 6 heads (nanoGPT's
 * Shakespeare-char shape), each trained for one short epoch on the bundled names by `chainrule
 * train` into .bench/generate/ (kept and reused). The chainrule side runs what the command runs
 * (modelFromCheckpoint, then generateText) in this process and times the sampling alone, as the
 * anchor times its own; a round is `--reps` generations on each side (one without the cache). The greedy tokens of both
 * sides are compared first, so both run the same model.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";
import { CharTokenizer, GPT, generate, loadCorpus, type CharTokenizerJSON } from "../packages/core/src/index.js";
import { modelFromCheckpoint } from "../packages/cli/src/checkpoint-model.js";
import { generateText } from "../packages/cli/src/commands/generate.js";
import { resolveCheckpoint } from "../packages/cli/src/rundir.js";
import { flag, hasFlag, median, numList, repoRoot, runIfMain, table } from "./_util.js";

const MAIN = join(repoRoot, "packages/cli/src/main.ts");
const SHAPES: Record<number, { nLayer: number; nHead: number }> = { 128: { nLayer: 4, nHead: 4 }, 384: { nLayer: 6, nHead: 6 } };
const PROMPT = "Ma";

function chainrule(args: string[]): void {
  const r = spawnSync(process.execPath, ["--import", "tsx", MAIN, ...args], { cwd: repoRoot, encoding: "utf8", env: { ...process.env, CHAINRULE_PLAIN: "1" } });
  if (r.status !== 0) throw new Error(`chainrule ${args.join(" ")} failed (${r.status}): ${r.stderr.trim()}`);
}

/** A run directory with a GPT of width C trained briefly (made once). */
function trainedRun(C: number): string {
  const dir = join(repoRoot, ".bench", "generate");
  const run = join(dir, `gpt-${C}`);
  if (existsSync(run)) return run;
  mkdirSync(dir, { recursive: true });
  const text = join(dir, "names.txt");
  writeFileSync(text, loadCorpus("female-names").slice(0, 6000));
  const { nLayer, nHead } = SHAPES[C];
  chainrule(["train", "gpt", "--out", run, "--epochs", "1", "--batch-size", "8", "--workers", "1",
    "--set", `data.file=${text}`, "--set", "model.blockSize=256", "--set", `model.nEmbd=${C}`, "--set", `model.nLayer=${nLayer}`, "--set", `model.nHead=${nHead}`]);
  return run;
}

function anchor(ckpt: string, nHead: number, prompt: number[], tokens: number, reps: number): { tokensPerSecond: number[]; tokensPerCpuSecond: number[]; greedy: number[] } {
  const r = spawnSync("/usr/bin/python3", [join(repoRoot, "bench/torch_generate.py"), ckpt, "--n-head", String(nHead), "--prompt", prompt.join(","), "--tokens", String(tokens), "--reps", String(reps)],
    { encoding: "utf8", env: { ...process.env, OMP_NUM_THREADS: "1" } });
  if (r.status !== 0) throw new Error(`torch_generate.py failed (${r.status}): ${r.stderr.trim()}`);
  return JSON.parse(r.stdout.trim().split("\n").pop()!);
}

export async function main(args: string[]): Promise<Record<string, unknown>> {
  const sizes = numList(args, "sizes", [128, 384]);
  const tokens = Number(flag(args, "tokens", "200"));
  const rounds = Number(flag(args, "rounds", "5"));
  const reps = Number(flag(args, "reps", "3"));
  const withAnchor = !hasFlag(args, "no-anchor"), withUncached = !hasFlag(args, "no-uncached");
  const results: Record<string, unknown> = {};
  const rows: Record<string, string | number>[] = [];
  for (const C of sizes) {
    const dir = resolveCheckpoint(trainedRun(C));
    const cm = await modelFromCheckpoint(dir);
    const model = cm.model as GPT;
    model.eval();
    const tok = CharTokenizer.fromJSON((cm.contents.state.extra as { tokenizer: CharTokenizerJSON }).tokenizer);
    const prompt = Array.from(tok.encode(PROMPT));
    const o = { prompt: PROMPT, tokens, temperature: 0.8, seed: 0 };
    /** tokens/s by the wall clock and per CPU-second of this process. */
    const timed = (kvCache: boolean) => {
      const t = performance.now(), c = process.cpuUsage();
      if (kvCache) generateText(model, tok, o, () => {});
      else generate(model, prompt, { maxNewTokens: tokens, temperature: 0.8, kvCache: false });
      const cpu = process.cpuUsage(c);
      return { wall: tokens / ((performance.now() - t) / 1000), cpu: tokens / ((cpu.user + cpu.system) / 1e6) };
    };
    let sameGreedy: boolean | undefined;
    if (withAnchor) {
      const ours = generate(model, prompt, { maxNewTokens: 20, temperature: 0 });
      sameGreedy = JSON.stringify(ours) === JSON.stringify(anchor(dir, SHAPES[C].nHead, prompt, 1, 1).greedy);
      console.log(`nEmbd ${C}: greedy tokens ${sameGreedy ? "equal" : "DIFFER from"} PyTorch's`);
    }
    timed(true); // warm-up
    const cached: number[] = [], cachedCpu: number[] = [], uncached: number[] = [], torch: number[] = [], torchCpu: number[] = [], ratios: number[] = [], cpuRatios: number[] = [], loads: number[] = [];
    for (let r = 0; r < rounds; r++) {
      const runs = Array.from({ length: reps }, () => timed(true));
      const ours = median(runs.map((x) => x.wall)), oursCpu = median(runs.map((x) => x.cpu));
      cached.push(ours);
      cachedCpu.push(oursCpu);
      if (withUncached) uncached.push(timed(false).wall);
      if (withAnchor) {
        const a = anchor(dir, SHAPES[C].nHead, prompt, tokens, reps);
        torch.push(median(a.tokensPerSecond));
        torchCpu.push(median(a.tokensPerCpuSecond));
        ratios.push(ours / torch[r]);
        cpuRatios.push(oursCpu / torchCpu[r]);
      }
      loads.push(loadavg()[0]);
      console.log(`  round ${r + 1}: cached ${ours.toFixed(0)} tok/s (${oursCpu.toFixed(0)} per CPU-s)${withUncached ? `, uncached ${uncached[r].toFixed(0)}` : ""}${withAnchor ? `, PyTorch ${torch[r].toFixed(0)} (${torchCpu[r].toFixed(0)} per CPU-s)` : ""}  (load ${loads[r].toFixed(2)})`);
    }
    const row = {
      nEmbd: C, layers: SHAPES[C].nLayer, "cached tok/s": median(cached), "uncached tok/s": withUncached ? median(uncached) : "-", "PyTorch tok/s": withAnchor ? median(torch) : "-",
      "× PyTorch": withAnchor ? median(ratios) : "-", "× PyTorch per CPU-s": withAnchor ? median(cpuRatios) : "-",
    };
    rows.push(row);
    results[`nEmbd${C}`] = { ...row, cached, cachedCpu, uncached, torch, torchCpu, ratios, cpuRatios, sameGreedy, loads };
  }
  table(rows);
  return results;
}

runIfMain(import.meta.url, "generate", main);
