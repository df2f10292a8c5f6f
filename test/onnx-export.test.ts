/**
 * ONNX export checked with the real runtime: each model type the CLI trains (MLP, logistic and
 * linear regression, CNN with batch norm and dropout, GPT, a LoRA-merged GPT) is exported and run
 * by onnxruntime-node on held-out inputs; its outputs equal chainrule's within 1e-5 (max abs).
 * int8 exports equal chainrule running the same dequantized weights. Models are built through the
 * CLI's catalogue and trained a few steps, so batch-norm statistics and weights are not at init.
 */
import { describe, expect, it } from "vitest";
import * as ort from "onnxruntime-node";
import { F, GPT, Tensor, embeddedMnistSplit, manualSeed, nn, noGrad, optim, randint, randn } from "@chainrule/core";
import { adaptationOf, buildJobModel } from "../packages/cli/src/models.js";
import { parseJob } from "../packages/cli/src/job/parse.js";
import { exportOnnx } from "@chainrule/cli";
import { describeOnnx } from "../packages/cli/src/onnx/graph.js";

type Dims = readonly number[];


const { heldOut, train } = embeddedMnistSplit({ heldOut: 1000 });
/** 16 held-out digits, (16, 1, 28, 28). */
const DIGITS = heldOut.inputs.slice(0, 16 * 784);

/**
 * onnxruntime's default optimizations fuse DequantizeLinear → MatMul/Conv into its quantized
 * kernels, which also quantize the activations; `disable_quant_qdq` keeps the graph's own
 * arithmetic (dequantize, then float32), the function a quantized checkpoint computes.
 */
const PLAIN_QDQ = { extra: { session: { disable_quant_qdq: "1" } } };

async function runOnnx(bytes: Uint8Array, feeds: Record<string, ort.Tensor>, options: ort.InferenceSession.SessionOptions = {}): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(bytes, { intraOpNumThreads: 1, interOpNumThreads: 1, ...options });
  const out = await session.run(feeds);
  return out[session.outputNames[0]].data as Float32Array;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** A model of the CLI's catalogue for `modelConfig` (a job's `model`). */
async function catalogueModel(modelConfig: object, inputShape: number[], outputSize: number): Promise<nn.Module> {
  const job = parseJob({ model: modelConfig }, "test job");
  return buildJobModel({ model: job.model, ctx: { inputShape, outputSize } });
}

/** A few Adam steps on digits (classification), so weights and batch-norm statistics move away from init. */
function trainOnDigits(model: nn.Module, steps = 4): void {
  const opt = new optim.Adam(model.parameters(), { lr: 3e-3 });
  model.train();
  for (let s = 0; s < steps; s++) {
    const x = new Tensor(train.inputs.slice(s * 32 * 784, (s + 1) * 32 * 784), [32, 1, 28, 28]);
    opt.zeroGrad();
    F.crossEntropy(model.forward(x), train.targets.slice(s * 32, (s + 1) * 32)).backward();
    opt.step();
  }
  model.eval();
}

/** chainrule's output for float input `x` of `dims`, in evaluation mode. */
function forward(model: nn.Module, x: Float32Array, dims: Dims): Float32Array {
  model.eval();
  return noGrad(() => model.forward(new Tensor(x.slice(), [...dims])).data.slice());
}

/** Exports `model` and checks onnxruntime's output on `x` against chainrule's; returns the ONNX bytes. */
async function expectSameAsOnnx(model: nn.Module, inputShape: number[], x: Float32Array, opts: { opset?: number; int8?: boolean; reference?: nn.Module; outputName?: string } = {}): Promise<Uint8Array> {
  const n = x.length / inputShape.reduce((a, b) => a * b, 1);
  const ours = forward(opts.reference ?? model, x, [n, ...inputShape]);
  const { bytes, output } = exportOnnx(model, { inputShape, opset: opts.opset, int8: opts.int8, outputName: opts.outputName });
  if (opts.outputName) expect(output.name).toBe(opts.outputName);
  const feeds = { input: new ort.Tensor("float32", x, [n, ...inputShape]) };
  const theirs = await runOnnx(bytes, feeds, opts.int8 ? PLAIN_QDQ : {});
  expect(maxAbsDiff(theirs, ours), `${opts.int8 ? "int8" : "float32"} export, input (${n}, ${inputShape.join(", ")})`).toBeLessThanOrEqual(1e-5);
  if (opts.int8) {
    // With its default optimizations (int8 kernels), within 1% of the outputs' range.
    const fused = await runOnnx(bytes, feeds);
    expect(maxAbsDiff(fused, ours)).toBeLessThanOrEqual(0.01 * Math.max(...ours.map(Math.abs)));
  }
  return bytes;
}

/** `twin` (a fresh model of the same kind) with `model`'s weights, its Linear and Conv2d weights through int8 and back, as a quantized checkpoint loads them. */
function dequantizedTwin(model: nn.Module, twin: nn.Module): nn.Module {
  twin.loadStateDict(model.stateDict());
  for (const [p, name] of nn.int8WeightNames(twin)) p.data.set(nn.dequantizeInt8(nn.quantizeInt8(p.data, p.shape, name)));
  return twin.eval();
}

describe("export to ONNX: onnxruntime gives chainrule's outputs (max abs ≤ 1e-5)", () => {
  it("MLP (ReLU, dropout) on held-out digits, and its int8 export against the dequantized weights", async () => {
    manualSeed(1);
    const cfg = { type: "mlp", hidden: [64, 32], dropout: 0.2 };
    const model = await catalogueModel(cfg, [1, 28, 28], 10);
    trainOnDigits(model);
    const float = await expectSameAsOnnx(model, [1, 28, 28], DIGITS);
    const reference = dequantizedTwin(model, await catalogueModel(cfg, [1, 28, 28], 10));
    const int8 = await expectSameAsOnnx(model, [1, 28, 28], DIGITS, { int8: true, reference });
    expect(int8.length / float.length).toBeLessThan(0.27);
  });

  it.each([["gelu", 17], ["gelu", 20], ["tanh", 17], ["sigmoid", 17]] as const)("MLP with %s, opset %i", async (activation, opset) => {
    manualSeed(2);
    const model = await catalogueModel({ type: "mlp", hidden: [24], activation }, [7], 3);
    await expectSameAsOnnx(model, [7], randn([9, 7]).mul(3).data, { opset });
  });

  it("GELU's tanh approximation, Softmax, LayerNorm, AvgPool2d and global AdaptiveAvgPool2d (opsets 17 and 20)", async () => {
    manualSeed(9);
    const model = new nn.Sequential(
      new nn.Conv2d(1, 3, 3, { padding: "same" }), new nn.AvgPool2d(2, { padding: 1, countIncludePad: false }), new nn.GELU("tanh"),
      new nn.AdaptiveAvgPool2d(1), new nn.Flatten(), new nn.LayerNorm(3), new nn.Linear(3, 4), new nn.Softmax(-1),
    );
    for (const opset of [17, 20]) await expectSameAsOnnx(model, [1, 28, 28], DIGITS, { opset });
  });

  it("pooling with ceilMode (max with dilation, average without counting padding); average ceilMode counting padding is refused", async () => {
    manualSeed(12);
    const x = randn([3, 2, 7, 9]).data;
    const maxCeil = new nn.Sequential(new nn.MaxPool2d(3, { stride: 2, padding: 1, dilation: [1, 2], ceilMode: true }), new nn.Flatten());
    await expectSameAsOnnx(maxCeil, [2, 7, 9], x);
    const avgCeil = new nn.Sequential(new nn.AvgPool2d([2, 3], { stride: 2, padding: 1, ceilMode: true, countIncludePad: false }), new nn.Flatten());
    await expectSameAsOnnx(avgCeil, [2, 7, 9], x);
    await expectSameAsOnnx(new nn.Sequential(new nn.AvgPool2d(2, { ceilMode: true }), new nn.Flatten()), [2, 7, 9], x);
    const refused = new nn.Sequential(new nn.AvgPool2d(2, { padding: 1, ceilMode: true }));
    expect(() => exportOnnx(refused, { inputShape: [2, 7, 9] })).toThrow(/cannot express module '0' \(AvgPool2d\) in ONNX: ceilMode with padding counted/);
  });

  it("BatchNorm1d on (N, C) and (N, C, L), LeakyReLU, ELU, SELU, SiLU, Hardtanh, Dropout2d", async () => {
    manualSeed(10);
    const bn = new nn.BatchNorm1d(6);
    const model = new nn.Sequential(
      new nn.Linear(5, 6), bn, new nn.LeakyReLU(0.2), new nn.ELU(0.7), new nn.Linear(6, 6), new nn.SELU(), new nn.SiLU(), new nn.Hardtanh(-0.5, 2),
    );
    model.train();
    noGrad(() => model.forward(randn([16, 5]).mul(2))); // running statistics away from 0 and 1
    await expectSameAsOnnx(model, [5], randn([9, 5]).mul(2).data);
    const seq = new nn.Sequential(new nn.Conv2d(2, 4, 1), new nn.Dropout2d(0.5), new nn.Flatten(), new nn.Linear(12, 3));
    await expectSameAsOnnx(seq, [2, 1, 3], randn([4, 2, 1, 3]).data);
    const bn1d = new nn.BatchNorm1d(3);
    bn1d.train();
    noGrad(() => bn1d.forward(randn([8, 3, 4]).add(1)));
    await expectSameAsOnnx(new nn.Sequential(bn1d), [3, 4], randn([5, 3, 4]).data);
  });

  it("logistic regression on digits, linear regression with its output named 'output'", async () => {
    manualSeed(3);
    const logistic = await catalogueModel({ type: "logistic" }, [1, 28, 28], 10);
    trainOnDigits(logistic);
    await expectSameAsOnnx(logistic, [1, 28, 28], DIGITS);
    const linear = await catalogueModel({ type: "linear" }, [5], 2);
    await expectSameAsOnnx(linear, [5], randn([6, 5]).data, { outputName: "output" });
  });

  it.each([true, false])("CNN (batch norm %s, dropout) on images and flat rows, float and int8", async (batchNorm) => {
    manualSeed(4);
    const cfg = { type: "cnn", channels: [4, 8], hidden: 64, batchNorm, dropout: 0.3 };
    const model = await catalogueModel(cfg, [1, 28, 28], 10);
    trainOnDigits(model, 3);
    if (batchNorm) {
      const bn = model.namedModules().find(([, m]) => m instanceof nn.BatchNorm2d)![1] as nn.BatchNorm2d;
      expect(Array.from(bn.runningMean!.data).some((v) => v !== 0)).toBe(true); // evaluation uses trained statistics
    }
    const float = await expectSameAsOnnx(model, [1, 28, 28], DIGITS);
    await expectSameAsOnnx(model, [784], DIGITS); // flat rows, as CSV data gives them
    const reference = dequantizedTwin(model, await catalogueModel(cfg, [1, 28, 28], 10));
    const int8 = await expectSameAsOnnx(model, [1, 28, 28], DIGITS, { int8: true, reference });
    expect(int8.length / float.length).toBeLessThan(0.3);
  });
});

const GPT_MODEL = { type: "gpt", blockSize: 8, nLayer: 2, nHead: 2, nEmbd: 16 };
const VOCAB = 11;

/** A tiny GPT of the catalogue (optionally with LoRA adapters), trained a few AdamW steps on random tokens. */
async function tinyGpt(model: object, lora?: object): Promise<GPT> {
  const job = parseJob({ model, data: { type: "text" }, ...(lora ? { lora } : {}) }, "test job");
  const gpt = (await buildJobModel({ model: job.model, ctx: { inputShape: [8], outputSize: VOCAB }, adapt: adaptationOf(job) })) as GPT;
  const opt = new optim.AdamW(gpt.parameters().filter((p) => p.requiresGrad), { lr: 1e-2 });
  for (let s = 0; s < 4; s++) {
    const ids = randint(0, VOCAB, [4, 8]);
    opt.zeroGrad();
    gpt.loss(ids, randint(0, VOCAB, [4, 8])).backward();
    opt.step();
  }
  return gpt.eval();
}

/** onnxruntime's logits against chainrule's for token ids (B, T). */
async function expectGptSameAsOnnx(bytes: Uint8Array, reference: GPT, B: number, T: number, options: ort.InferenceSession.SessionOptions = {}): Promise<void> {
  const ids = randint(0, VOCAB, [B, T]).data;
  const ours = noGrad(() => reference.forward(Int32Array.from(ids), [B, T]).data.slice());
  const theirs = await runOnnx(bytes, { idx: new ort.Tensor("int64", BigInt64Array.from(ids, (v) => BigInt(v)), [B, T]) }, options);
  expect(maxAbsDiff(theirs, ours), `GPT logits, (B, T) = (${B}, ${T})`).toBeLessThanOrEqual(1e-5);
}

describe("export to ONNX: GPT", () => {
  it("logits equal chainrule's for any sequence length up to blockSize (a dynamic axis), every opset, int8", async () => {
    manualSeed(6);
    const gpt = await tinyGpt(GPT_MODEL);
    const { bytes, input, output } = exportOnnx(gpt, { inputShape: [8] });
    expect(input).toEqual({ name: "idx", type: "int64", dims: ["batch", "sequence"] });
    expect(output.dims).toEqual(["batch", "sequence", VOCAB]);
    for (const [B, T] of [[3, 8], [2, 5], [1, 1]]) await expectGptSameAsOnnx(bytes, gpt, B, T);
    for (const opset of [18, 19, 20, 21]) await expectGptSameAsOnnx(exportOnnx(gpt, { inputShape: [8], opset }).bytes, gpt, 2, 8);
    const int8 = exportOnnx(gpt, { inputShape: [8], int8: true }).bytes;
    const reference = dequantizedTwin(gpt, await tinyGpt(GPT_MODEL)) as GPT;
    await expectGptSameAsOnnx(int8, reference, 2, 8, PLAIN_QDQ);
  });

  it("tied embedding and head, no biases: the table is written once, float32 and int8", async () => {
    manualSeed(7);
    const gpt = await tinyGpt({ ...GPT_MODEL, tieWeights: true, bias: false });
    const { bytes } = exportOnnx(gpt, { inputShape: [8] });
    await expectGptSameAsOnnx(bytes, gpt, 2, 6);
    const { initializers } = describeOnnx(bytes);
    expect(initializers).toContain("transformer.wte.weight");
    expect(initializers.filter((n) => n.startsWith("lm_head"))).toEqual([]);
    // int8: the shared table is quantized once, per row (a token's embedding, a logit's weights).
    const int8 = exportOnnx(gpt, { inputShape: [8], int8: true }).bytes;
    const reference = dequantizedTwin(gpt, await tinyGpt({ ...GPT_MODEL, tieWeights: true, bias: false })) as GPT;
    await expectGptSameAsOnnx(int8, reference, 2, 6, PLAIN_QDQ);
  });

  it("GPT-2's tanh GELU and a wider MLP (geluApproximate, ffnHidden); the llama layout is refused naming it", async () => {
    manualSeed(11);
    const gpt = await tinyGpt({ ...GPT_MODEL, geluApproximate: "tanh", ffnHidden: 24, normEps: 1e-6 });
    await expectGptSameAsOnnx(exportOnnx(gpt, { inputShape: [8] }).bytes, gpt, 2, 7);
    const llama = await tinyGpt({ ...GPT_MODEL, arch: "llama" });
    expect(() => exportOnnx(llama, { inputShape: [8] })).toThrow(/^export: cannot express module 'transformer' \(GPTTransformer\) in ONNX: without a position-embedding table/);
  });

  it("a LoRA fine-tune, merged, gives the adapted model's logits; unmerged it is refused naming the layer", async () => {
    manualSeed(8);
    const gpt = await tinyGpt(GPT_MODEL, { rank: 2, alpha: 4, targets: "c_attn|c_fc" });
    const ids = Int32Array.from(randint(0, VOCAB, [2, 8]).data);
    const adapted = noGrad(() => gpt.forward(ids, [2, 8]).data.slice());
    expect(() => exportOnnx(gpt, { inputShape: [8] })).toThrow(/^export: cannot express module 'transformer\.h\.0\.attn\.c_attn' \(LoRALinear\) in ONNX: merge the adapters first/);
    expect(nn.mergeLora(gpt)).toHaveLength(4);
    const theirs = await runOnnx(exportOnnx(gpt, { inputShape: [8] }).bytes, { idx: new ort.Tensor("int64", BigInt64Array.from(ids, (v) => BigInt(v)), [2, 8]) });
    expect(maxAbsDiff(theirs, adapted)).toBeLessThanOrEqual(1e-5);
  });
});

describe("export to ONNX: models it cannot express", () => {
  class Square extends nn.Module {
    forward(x: Tensor): Tensor {
      return x.mul(x);
    }
  }
  class ScaledLinear extends nn.Linear {
    override forward(x: Tensor): Tensor {
      return super.forward(x).mul(2);
    }
  }

  it.each([
    ["a module of the user's own", new nn.Sequential(new nn.Flatten(), new nn.Linear(4, 4), new Square()), /^export: cannot express module '2' \(Square\) in ONNX; supported: Sequential, Linear/],
    ["a subclass that changes forward", new nn.Sequential(new nn.Flatten(), new ScaledLinear(4, 2)), /^export: cannot express module '1' \(ScaledLinear\) in ONNX/],
    ["a nested one", new nn.Sequential(new nn.Sequential(new nn.ReLU(), new Square())), /^export: cannot express module '0\.1' \(Square\)/],
    ["a Flatten other than (1, -1)", new nn.Sequential(new nn.Flatten(2)), /^export: cannot express module '0' \(Flatten\) in ONNX: only Flatten\(1, -1\)/],
    ["the root itself", new Square(), /^export: cannot express module '\(the model\)' \(Square\)/],
  ])("%s: one line naming the module", (_what, model, message) => {
    let err: Error | undefined;
    try {
      exportOnnx(model, { inputShape: [1, 2, 2] });
    } catch (e) {
      err = e as Error;
    }
    expect(err?.message).toMatch(message);
    expect(err?.message).not.toContain("\n");
  });
});
