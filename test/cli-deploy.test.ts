/**
 * `chainrule export` and `chainrule quantize` through the real command (child processes): a tiny
 * MLP and a tiny LoRA-adapted GPT trained by `chainrule train`, exported, run by onnxruntime-node
 * against the checkpoint's own model; quantized checkpoints read by eval and generate, equal to
 * the int8 ONNX export; bad flags as one-line errors.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { Tensor, embeddedMnistSplit, noGrad, randint, type GPT } from "@chainrule/core";
import { modelFromCheckpoint } from "../packages/cli/src/checkpoint-model.js";
import { describeOnnx } from "../packages/cli/src/onnx/graph.js";
import { REPO, type Result, cli, expectOneLineError, latestCheckpoint, tempDir, writeJobIn } from "./cli-helpers.ts";

const TMP = tempDir("chainrule-deploy-");
const MLP_RUN = join(TMP, "mlp"), GPT_RUN = join(TMP, "gpt"), CUSTOM_RUN = join(TMP, "custom");
const MLP_JOB = {
  name: "tiny-mlp", model: { type: "mlp", hidden: [32] }, data: { type: "mnist", heldOut: 200, limitTrain: 600 },
  epochs: 1, batchSize: 50, workers: 1,
};
/** A GPT trained with LoRA adapters from scratch: its checkpoint holds adapters that export and quantize merge. */
const GPT_JOB = {
  name: "tiny-gpt", model: { type: "gpt", blockSize: 8, nLayer: 1, nHead: 2, nEmbd: 16 }, data: { type: "text", stride: 8 },
  lora: { rank: 2, alpha: 4, targets: "c_attn|c_fc" }, optimizer: { type: "adamw", lr: 0.02 }, epochs: 1, batchSize: 64, workers: 1, sample: { tokens: 5 },
};
/** A model with a layer of the user's own. */
const CUSTOM_JOB = {
  ...MLP_JOB, name: "custom", data: { type: "mnist", heldOut: 50, limitTrain: 100 },
  model: { type: "module", module: join(REPO, "test/fixtures/onnx-custom-model.ts"), export: "squareNet" },
};
/** Dequantize-then-float arithmetic in onnxruntime (its default fuses int8 kernels; see onnx-export.test.ts). */
const PLAIN_QDQ = { extra: { session: { disable_quant_qdq: "1" } } };

let trained: Result[];
beforeAll(async () => {
  trained = await Promise.all([
    cli(["train", writeJobIn(TMP, "mlp", MLP_JOB), "--out", MLP_RUN]),
    cli(["train", writeJobIn(TMP, "gpt", GPT_JOB), "--out", GPT_RUN]),
    cli(["train", writeJobIn(TMP, "custom", CUSTOM_JOB), "--out", CUSTOM_RUN]),
  ]);
}, 120_000);

async function runOnnx(file: string, feeds: Record<string, ort.Tensor>, options: ort.InferenceSession.SessionOptions = {}): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(file, { intraOpNumThreads: 1, ...options });
  return (await session.run(feeds))[session.outputNames[0]].data as Float32Array;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** The checkpoint's model (as eval and predict build it) on 32 held-out digits, and onnxruntime's output for `file`. */
async function mlpOutputs(checkpoint: string, file: string, options: ort.InferenceSession.SessionOptions = {}): Promise<[Float32Array, Float32Array]> {
  const x = embeddedMnistSplit({ heldOut: 1000 }).heldOut.inputs.slice(0, 32 * 784);
  const cm = await modelFromCheckpoint(checkpoint);
  const ours = noGrad(() => cm.model.forward(new Tensor(x.slice(), [32, 1, 28, 28])).data.slice());
  return [ours, await runOnnx(file, { input: new ort.Tensor("float32", x, [32, 1, 28, 28]) }, options)];
}

describe("chainrule export and quantize: MLP", () => {
  it("export: onnxruntime's logits equal the checkpoint's within 1e-5; the file says what it holds", async () => {
    expect(trained[0].code, trained[0].stdout + trained[0].stderr).toBe(0);
    const file = join(TMP, "mlp.onnx");
    const r = await cli(["export", MLP_RUN, "--format", "onnx", "--out", file]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/wrote .*mlp\.onnx: [\d,]+ bytes, ONNX opset 17\ninput input float32 \(batch, 1, 28, 28\) → output logits float32 \(batch, 10\)/);
    const [ours, theirs] = await mlpOutputs(latestCheckpoint(MLP_RUN), file);
    expect(maxAbsDiff(theirs, ours)).toBeLessThanOrEqual(1e-5);
    const { metadata: meta, opset } = describeOnnx(readFileSync(file));
    expect(opset).toBe(17);
    expect(meta["chainrule.task"]).toBe("classification");
    expect(JSON.parse(meta["chainrule.model"])).toMatchObject({ type: "mlp", hidden: [32] });
  });

  it("quantize: a checkpoint ~4x smaller that eval reads, equal to the int8 ONNX export", async () => {
    const q = join(TMP, "mlp-int8"), file = join(TMP, "mlp-int8.onnx");
    const [rq, rx] = await Promise.all([
      cli(["quantize", MLP_RUN, "--out", q]),
      cli(["export", MLP_RUN, "--quantize", "int8", "--out", file]),
    ]);
    expect(rq.code, rq.stderr).toBe(0);
    expect(rx.code, rx.stderr).toBe(0);
    expect(rq.stdout).toMatch(/quantized 2 weights to int8/);
    expect(readFileSync(join(q, "SHA256SUMS"), "utf8")).toMatch(/^[0-9a-f]{64}  model\.safetensors\n[0-9a-f]{64}  state\.json\n$/);
    const ratio = statSync(join(latestCheckpoint(MLP_RUN), "model.safetensors")).size / statSync(join(q, "model.safetensors")).size;
    expect(ratio).toBeGreaterThan(3.5);
    expect(rq.stdout).toContain(`${ratio.toFixed(2)}x smaller`);
    expect(statSync(file).size / statSync(join(latestCheckpoint(MLP_RUN), "model.safetensors")).size).toBeLessThan(0.3);
    const [ours, theirs] = await mlpOutputs(q, file, PLAIN_QDQ);
    expect(maxAbsDiff(theirs, ours)).toBeLessThanOrEqual(1e-5);
    const ev = await cli(["eval", q]);
    expect(ev.code, ev.stderr).toBe(0);
    expect(ev.stdout).toMatch(/accuracy: \d+\.\d+% \(\d+\/200\)/);
  });

  it("bad input: one line naming the flag or the problem", async () => {
    const [opset, scheme, format, noOut, exists, again, noRun] = await Promise.all([
      cli(["export", MLP_RUN, "--opset", "12"]),
      cli(["export", MLP_RUN, "--quantize", "int4"]),
      cli(["export", MLP_RUN, "--format", "tflite"]),
      cli(["quantize", MLP_RUN]),
      cli(["quantize", MLP_RUN, "--out", MLP_RUN]),
      cli(["quantize", join(TMP, "mlp-int8"), "--out", join(TMP, "twice")]),
      cli(["export", join(TMP, "nope")]),
    ]);
    expectOneLineError(opset, /--opset: expected one of 17, 18, 19, 20, 21, got "12"/, 2);
    expectOneLineError(scheme, /--quantize: expected int8, got "int4"/, 2);
    expectOneLineError(format, /--format: expected onnx, got "tflite"/, 2);
    expectOneLineError(noOut, /quantize needs --out DIR/, 2);
    expectOneLineError(exists, /--out .*: already exists/);
    expectOneLineError(again, /is already quantized/, 2);
    expectOneLineError(noRun, /no such checkpoint or run directory/);
    expect(existsSync(join(TMP, "twice"))).toBe(false);
  });
});

describe("chainrule export and quantize: a GPT with LoRA adapters", () => {
  it("export merges the adapters; onnxruntime's logits equal the adapted checkpoint's at two sequence lengths", async () => {
    expect(trained[1].code, trained[1].stdout + trained[1].stderr).toBe(0);
    const file = join(TMP, "gpt.onnx");
    const r = await cli(["export", GPT_RUN, "--out", file, "--opset", "18"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/merged LoRA adapters into 2 layers/);
    expect(r.stdout).toMatch(/input idx int64 \(batch, sequence\) → output logits float32 \(batch, sequence, \d+\)/);
    const cm = await modelFromCheckpoint(latestCheckpoint(GPT_RUN)); // adapters unmerged: the model as trained
    const V = cm.ctx.outputSize;
    for (const T of [8, 3]) {
      const ids = randint(0, V, [2, T]).data;
      const ours = noGrad(() => (cm.model as GPT).forward(Int32Array.from(ids), [2, T]).data.slice());
      const theirs = await runOnnx(file, { idx: new ort.Tensor("int64", BigInt64Array.from(ids, (v) => BigInt(v)), [2, T]) });
      expect(maxAbsDiff(theirs, ours)).toBeLessThanOrEqual(1e-5);
    }
    const { metadata, opset } = describeOnnx(readFileSync(file));
    expect(opset).toBe(18);
    expect(JSON.parse(metadata["chainrule.tokenizer"]).vocab).toHaveLength(V);
  });

  it("quantize merges and quantizes; generate and eval read the result", async () => {
    const q = join(TMP, "gpt-int8");
    const rq = await cli(["quantize", GPT_RUN, "--out", q]);
    expect(rq.code, rq.stderr).toBe(0);
    expect(rq.stdout).toMatch(/merged LoRA adapters into 2 layers[\s\S]*quantized 5 weights to int8/);
    const [gen, ev] = await Promise.all([cli(["generate", q, "--prompt", "A", "--tokens", "12", "--seed", "1"]), cli(["eval", q])]);
    expect(gen.code, gen.stderr).toBe(0);
    expect(gen.stdout).toHaveLength(1 + 12 + 1);
    expect(ev.code, ev.stderr).toBe(0);
    expect(ev.stdout).toMatch(/loss: \d+\.\d+ \(crossEntropy\)/);
  });
});

describe("chainrule export: a model of the user's own", () => {
  it("is refused in one line naming the layer it cannot express", async () => {
    expect(trained[2].code, trained[2].stdout + trained[2].stderr).toBe(0);
    const file = join(TMP, "custom.onnx");
    const [noConsent, refused] = await Promise.all([
      cli(["export", CUSTOM_RUN, "--out", file]),
      cli(["export", CUSTOM_RUN, "--out", file, "--trust-job-module"]),
    ]);
    expectOneLineError(noConsent, /its model is your own code .* pass --model-module FILE, or --trust-job-module/, 2);
    expectOneLineError(refused, /export: cannot express module '2' \(Square\) in ONNX; supported: Sequential, Linear/, 1);
    expect(existsSync(file)).toBe(false);
  });
});
