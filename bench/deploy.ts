/**
 * Deployment figures for the default MLP job, the cnn job and the gpt job: size, held-out accuracy
 * (GPT: held-out loss) and inference throughput of each model as trained (float32) and quantized
 * (int8 weights, one scale per output channel), in chainrule and in onnxruntime-node.
 *
 *   tsx bench/deploy.ts [--mnist RUN] [--cnn RUN] [--gpt RUN] [--jobs mnist,cnn,gpt] [--rounds 5] [--batch 256]
 *
 * A job without a RUN (a run or checkpoint directory) is trained first with `chainrule train JOB`
 * into .bench/deploy/JOB (kept: a second bench run reuses it). Each model is then quantized
 * (`chainrule quantize`) and exported (`chainrule export`, float32 and `--quantize int8`).
 *   size       model.safetensors float32 vs quantized; the .onnx files float32 vs int8
 *   accuracy   `chainrule eval`'s figures (evaluateModel) for both checkpoints, and the same from
 *              onnxruntime's outputs for both ONNX files on the same held-out rows
 *   throughput rows/s (GPT: tokens/s) of a forward pass over `--batch` held-out rows (GPT: windows),
 *              chainrule (one thread, as eval runs) and onnxruntime with 1 thread and with its
 *              default threads, float32 and int8, alternating in `--rounds` rounds (the order
 *              rotated each round); medians
 * onnxruntime runs the int8 files with its default optimizations, which fuse DequantizeLinear into
 * its int8 kernels (the accuracy column shows what that costs).
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, rmSync, statSync } from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { Tensor, noGrad, type Dataset } from "../packages/core/src/index.js";
import { modelFromCheckpoint, type CheckpointModel } from "../packages/cli/src/checkpoint-model.js";
import { evalData, evaluateModel } from "../packages/cli/src/commands/eval.js";
import { resolveCheckpoint } from "../packages/cli/src/rundir.js";
import { flag, median, repoRoot, runIfMain, table } from "./_util.js";

const MAIN = join(repoRoot, "packages/cli/src/main.ts");

function chainrule(args: string[]): string {
  const r = spawnSync(process.execPath, ["--import", "tsx", MAIN, ...args], { cwd: repoRoot, encoding: "utf8", env: { ...process.env, CHAINRULE_PLAIN: "1" } });
  if (r.status !== 0) throw new Error(`chainrule ${args.join(" ")} failed (${r.status}): ${r.stderr.trim()}`);
  return r.stdout;
}

/** A classifier's accuracy and mean cross-entropy from logits (rows, classes) against targets (rows). */
function scoreLogits(logits: Float32Array, targets: Int32Array): { loss: number; correct: number } {
  const C = logits.length / targets.length;
  let loss = 0, correct = 0;
  for (let r = 0; r < targets.length; r++) {
    const row = logits.subarray(r * C, (r + 1) * C);
    let best = 0, max = -Infinity;
    for (let c = 0; c < C; c++) if (row[c] > max) [max, best] = [row[c], c];
    let sum = 0;
    for (let c = 0; c < C; c++) sum += Math.exp(row[c] - max);
    loss += Math.log(sum) + max - row[targets[r]];
    if (best === targets[r]) correct++;
  }
  return { loss: loss / targets.length, correct };
}

/** The feed for rows [start, start + n) of a held-out set: float rows, or token ids for a GPT. */
function feed(cm: CheckpointModel, ds: Dataset, start: number, n: number): Record<string, ort.Tensor> {
  const per = ds.inputs.length / ds.length;
  const x = ds.inputs.subarray(start * per, (start + n) * per);
  if (cm.job.model.type === "gpt") return { idx: new ort.Tensor("int64", BigInt64Array.from(x, (v) => BigInt(v)), [n, per]) };
  return { input: new ort.Tensor("float32", Float32Array.from(x), [n, ...cm.ctx.inputShape]) };
}

/** Held-out loss and accuracy (per target: a GPT's per character) from onnxruntime. */
async function onnxScore(session: ort.InferenceSession, cm: CheckpointModel, ds: Dataset): Promise<{ loss: number; accuracy: number }> {
  let loss = 0, correct = 0, count = 0;
  const rout = ds.targetShape.reduce((a, b) => a * b, 1);
  for (let s = 0; s < ds.length; s += 500) {
    const n = Math.min(500, ds.length - s);
    const out = await session.run(feed(cm, ds, s, n));
    const r = scoreLogits(out[session.outputNames[0]].data as Float32Array, (ds.targets as Int32Array).subarray(s * rout, (s + n) * rout));
    loss += r.loss * n * rout;
    correct += r.correct;
    count += n * rout;
  }
  return { loss: loss / count, accuracy: correct / count };
}

interface Timed {
  name: string;
  run: () => Promise<void> | void;
}

async function main(args: string[]): Promise<Record<string, unknown>> {
  const jobs = (flag(args, "jobs") ?? "mnist,cnn,gpt").split(",");
  const rounds = Number(flag(args, "rounds") ?? 5);
  const batch = Number(flag(args, "batch") ?? 256);
  const work = join(repoRoot, ".bench", "deploy");
  mkdirSync(work, { recursive: true });
  const results: Record<string, unknown> = {};
  for (const job of jobs) {
    let run = flag(args, job);
    if (!run) {
      run = join(work, job);
      if (!existsSync(run)) {
        console.log(`training ${job} → ${run}`);
        chainrule(["train", job, "--out", run]);
      }
    }
    const ckpt = resolveCheckpoint(run);
    const qDir = join(work, `${job}-int8`), fOnnx = join(work, `${job}.onnx`), qOnnx = join(work, `${job}-int8.onnx`);
    rmSync(qDir, { recursive: true, force: true });
    chainrule(["quantize", ckpt, "--out", qDir]);
    chainrule(["export", ckpt, "--out", fOnnx]);
    chainrule(["export", ckpt, "--quantize", "int8", "--out", qOnnx]);

    const [fm, qm] = [await modelFromCheckpoint(ckpt), await modelFromCheckpoint(qDir)];
    const ds = evalData(fm, undefined, undefined, undefined);
    const isGpt = fm.job.model.type === "gpt";
    const sessions = {
      float: await ort.InferenceSession.create(fOnnx, { intraOpNumThreads: 1 }),
      int8: await ort.InferenceSession.create(qOnnx, { intraOpNumThreads: 1 }),
      floatAll: await ort.InferenceSession.create(fOnnx),
      int8All: await ort.InferenceSession.create(qOnnx),
    };
    const size = (p: string) => statSync(p).size;
    const evals = { chainrule: evaluateModel(fm, ds), chainruleInt8: evaluateModel(qm, ds) };
    const onnx = { float: await onnxScore(sessions.float, fm, ds), int8: await onnxScore(sessions.int8, fm, ds) };

    // Throughput: one forward of `batch` rows, alternating the variants each round.
    const n = Math.min(batch, ds.length);
    const per = ds.inputs.length / ds.length;
    const x = new Tensor(ds.inputs.slice(0, n * per), [n, ...fm.ctx.inputShape]);
    const feeds = feed(fm, ds, 0, n);
    const units = isGpt ? n * per : n; // tokens or rows per forward
    const forward = (cm: CheckpointModel) => () => void noGrad(() => cm.model.forward(x));
    const variants: Timed[] = [
      { name: "chainrule float32", run: forward(fm) },
      { name: "chainrule int8 (dequantized at load)", run: forward(qm) },
      { name: "onnxruntime float32, 1 thread", run: async () => void (await sessions.float.run(feeds)) },
      { name: "onnxruntime int8, 1 thread", run: async () => void (await sessions.int8.run(feeds)) },
      { name: "onnxruntime float32, default threads", run: async () => void (await sessions.floatAll.run(feeds)) },
      { name: "onnxruntime int8, default threads", run: async () => void (await sessions.int8All.run(feeds)) },
    ];
    const perSecond: Record<string, number[]> = Object.fromEntries(variants.map((v) => [v.name, []]));
    for (const v of variants) await v.run(); // warm-up
    for (let r = 0; r < rounds; r++) {
      // Rotate the order each round: onnxruntime's thread pool spins for a while after a run and
      // slows whatever comes next, so no variant should always follow it.
      for (const v of [...variants.slice(r % variants.length), ...variants.slice(0, r % variants.length)]) {
        const reps = isGpt ? 3 : 10;
        const t0 = performance.now();
        for (let i = 0; i < reps; i++) await v.run();
        perSecond[v.name].push((units * reps) / ((performance.now() - t0) / 1000));
      }
    }
    const throughput = Object.fromEntries(Object.entries(perSecond).map(([k, v]) => [k, median(v)]));
    const quality = (e: { loss: number; accuracy?: number }) => (isGpt ? `loss ${e.loss.toFixed(4)}` : `${((e.accuracy ?? 0) * 100).toFixed(2)}%`);
    console.log(`\n${job}: ${ckpt} (${ds.length} held-out ${isGpt ? "windows" : "rows"}); load average ${loadavg().map((l) => l.toFixed(1)).join(" ")}`);
    table([
      { what: "model.safetensors", float32: size(join(ckpt, "model.safetensors")), int8: size(join(qDir, "model.safetensors")), ratio: size(join(ckpt, "model.safetensors")) / size(join(qDir, "model.safetensors")) },
      { what: "ONNX file", float32: size(fOnnx), int8: size(qOnnx), ratio: size(fOnnx) / size(qOnnx) },
    ]);
    table([
      { where: "chainrule (eval)", float32: quality(evals.chainrule), int8: quality(evals.chainruleInt8) },
      { where: "onnxruntime", float32: quality(onnx.float), int8: quality(onnx.int8) },
    ]);
    table(Object.entries(throughput).map(([k, v]) => ({ variant: k, [isGpt ? "tokens/s" : "rows/s"]: Math.round(v) })));
    results[job] = {
      checkpoint: ckpt, heldOut: ds.length, loadavg: loadavg(),
      bytes: { safetensors: size(join(ckpt, "model.safetensors")), safetensorsInt8: size(join(qDir, "model.safetensors")), onnx: size(fOnnx), onnxInt8: size(qOnnx) },
      chainrule: { float32: evals.chainrule, int8: evals.chainruleInt8 }, onnxruntime: onnx,
      throughput: { unit: isGpt ? "tokens/s" : "rows/s", batch: n, rounds, medians: throughput, all: perSecond },
    };
  }
  return results;
}

export { main };
runIfMain(import.meta.url, "deploy", main);
