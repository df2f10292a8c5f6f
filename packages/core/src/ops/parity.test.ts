/**
 * Every op, layer, loss and optimizer added for PyTorch parity against values PyTorch computed
 * (fixtures/parity.py → fixtures/parity.json): forward, the gradient of Σ cos(i)·out[i] for each
 * input, and a central-difference gradcheck; optimizers step by step against torch.optim.
 * Runs under each kernel backend the core projects cover.
 */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import * as C from "../index.js";
import { F, Tensor, nn, optim } from "../index.js";
import { assertClose, gradcheck } from "../testing/index.js";

interface FixtureTensor { shape: number[]; data: number[]; grad: boolean }
interface OpCase { name: string; inputs: FixtureTensor[]; output: { shape: number[]; data: number[] }; grads: (number[] | null)[]; gradcheck: boolean }
interface OptimCase { name: string; params: number[]; grads: number[][]; trajectory: number[][] }
const fixtures = JSON.parse(readFileSync(new URL("../fixtures/parity.json", import.meta.url), "utf8")) as { cases: OpCase[]; optimizers: OptimCase[] };

type Op = (...xs: Tensor[]) => Tensor;
const u8 = (m: Tensor) => Uint8Array.from(m.data);

/** The chainrule form of each fixture's PyTorch expression (same name as in parity.py). */
const ops: Record<string, Op> = {
  leakyRelu: (x) => x.leakyRelu(0.2),
  elu: (x) => F.elu(x, 0.7),
  selu: (x) => x.selu(),
  silu: (x) => F.silu(x),
  softplus: (x) => F.softplus(x, { beta: 2, threshold: 3 }),
  mish: (x) => x.mish(),
  hardtanh: (x) => x.hardtanh(-0.5, 1),
  logSigmoid: (x) => F.logSigmoid(x),
  sin: (x) => x.sin(),
  cos: (x) => C.cos(x),
  log1p: (x) => x.log1p(),
  expm1: (x) => x.expm1(),
  rsqrt: (x) => x.rsqrt(),
  reciprocal: (x) => x.reciprocal(),
  sign: (x) => x.sign(),
  floor: (x) => x.floor(),
  ceil: (x) => C.ceil(x),
  round: (x) => x.round(),
  maximum: (a, b) => a.maximum(b),
  minimum: (a, b) => C.minimum(a, b),
  powTensor: (a, b) => a.pow(b),
  "min.axis": (x) => x.min(1),
  argmin: (x) => x.argmin(1),
  "prod.axis": (x) => x.prod(1),
  "prod.all": (x) => C.prod(x),
  "var.axis": (x) => x.var(1),
  "var.correction0": (x) => C.variance(x, [0, 2], { correction: 0, keepDims: true }),
  "std.all": (x) => x.std(),
  logsumexp: (x) => x.logsumexp(1),
  "norm.2": (x) => x.norm(2, 1),
  "norm.1": (x) => C.norm(x, 1),
  "norm.inf": (x) => x.norm(Infinity, 0),
  cumsum: (x) => x.cumsum(1),
  "topk.values": (x) => x.topk(3, 1).values,
  "topk.indices": (x) => C.topk(x, 3, 1).indices,
  "sort.values": (x) => x.sort(0, { descending: true }).values,
  "sort.indices": (x) => C.sort(x, 0, { descending: true }).indices,
  gather: (x, i) => x.gather(1, i),
  scatter: (x, i, s) => x.scatter(1, i, s),
  scatterAdd: (x, i, s) => C.scatterAdd(x, 0, i, s),
  indexSelect: (x, i) => x.indexSelect(1, i),
  expand: (x) => x.expand([2, 3, 4]),
  repeat: (x) => x.repeat([2, 1, 3]),
  flip: (x) => x.flip([0, 2]),
  "pad.constant": (x) => F.pad(x, [1, 2, 0, 1], { value: 0.5 }),
  "pad.reflect": (x) => C.pad(x, [2, 1], { mode: "reflect" }),
  tril: (x) => x.tril(-1),
  triu: (x) => C.triu(x, 1),
  oneHot: (i) => F.oneHot(i, 5),
  "einsum.ij,jk->ik": (a, b) => C.einsum("ij,jk->ik", a, b),
  "einsum.bij,bjk->bik": (a, b) => C.einsum("bij,bjk->bik", a, b),
  "einsum.bhqd,bhkd->bhqk": (a, b) => C.einsum("bhqd,bhkd->bhqk", a, b),
  "einsum.i,j->ij": (a, b) => C.einsum("i,j", a, b),
  "einsum.ij->ji": (a) => C.einsum("ij->ji", a),
  "einsum.ij->i": (a) => C.einsum("ij->i", a),
  "einsum.bi,bi->b": (a, b) => C.einsum("bi,bi->b", a, b),
  "crossEntropy.labelSmoothing": (x, y) => F.crossEntropy(x, y, { labelSmoothing: 0.2 }),
  "crossEntropy.weight": (x, y, w) => F.crossEntropy(x, y, { weight: w }),
  "crossEntropy.weightSmoothing": (x, y, w) => F.crossEntropy(x, y, { weight: w, labelSmoothing: 0.1 }),
  "crossEntropy.none": (x, y) => F.crossEntropy(x, y, { reduction: "none" }),
  "crossEntropy.ignoreWeight": (x, y, w) => F.crossEntropy(x, y, { weight: w, ignoreIndex: 1 }),
  "crossEntropy.probabilities": (x, p) => F.crossEntropy(x, p),
  "crossEntropy.probabilitiesSum": (x, p) => F.crossEntropy(x, p, { reduction: "sum", labelSmoothing: 0.3 }),
  "nllLoss.ignoreIndex": (x, y) => F.nllLoss(x, y, { ignoreIndex: 3 }),
  "nllLoss.weightNone": (x, y, w) => F.nllLoss(x, y, { weight: w, reduction: "none" }),
  "bce.posWeight": (x, y, p) => F.binaryCrossEntropyWithLogits(x, y, { posWeight: p }),
  "bce.weight": (x, y, w) => F.binaryCrossEntropyWithLogits(x, y, { weight: w, reduction: "sum" }),
  huberLoss: (a, b) => F.huberLoss(a, b, { delta: 0.7 }),
  smoothL1Loss: (a, b) => F.smoothL1Loss(a, b, { beta: 0.5, reduction: "sum" }),
  "klDiv.batchmean": (x, y) => F.klDiv(x, y, { reduction: "batchmean" }),
  "klDiv.logTarget": (x, y) => F.klDiv(x, y, { reduction: "sum", logTarget: true }),
  conv1d: (x, w, b) => F.conv1d(x, w, b, { stride: 2, padding: 1 }),
  "conv1d.groupsDilation": (x, w) => F.conv1d(x, w, null, { dilation: 2, groups: 2 }),
  convTranspose2d: (x, w, b) => F.convTranspose2d(x, w, b, { stride: 2, padding: 1, outputPadding: 1 }),
  "convTranspose2d.groups": (x, w) => F.convTranspose2d(x, w, null, { stride: [1, 2], groups: 2, dilation: [2, 1] }),
  "batchNorm1d.NC": (x, w, b) => F.batchNorm1d(x, C.zeros([3]), C.ones([3]), w, b, { training: true }),
  "batchNorm1d.NCL": (x) => F.batchNorm1d(x, null, null, null, null, { training: true }),
  groupNorm: (x, w, b) => F.groupNorm(x, 2, w, b),
  rmsNorm: (x, w) => F.rmsNorm(x, 6, w, 1e-6),
  "embedding.paddingIdx": (i, w) => F.embedding(i, w, { paddingIdx: 2 }),
  "maxPool2d.ceilMode": (x) => F.maxPool2d(x, 2, { ceilMode: true }),
  "maxPool2d.ceilModeStride": (x) => F.maxPool2d(x, 3, { stride: 2, padding: 1, ceilMode: true }),
  "avgPool2d.ceilMode": (x) => F.avgPool2d(x, 2, { ceilMode: true }),
  "avgPool2d.ceilModeNoPad": (x) => F.avgPool2d(x, 3, { stride: 2, padding: 1, ceilMode: true, countIncludePad: false }),
  "sdpa.plain": (q, k, v) => F.scaledDotProductAttention(q, k, v),
  "sdpa.causal": (q, k, v) => F.scaledDotProductAttention(q, k, v, { isCausal: true }),
  "sdpa.mask": (q, k, v, m) => F.scaledDotProductAttention(q, k, v, { mask: u8(m) }),
  "sdpa.bias": (q, k, v, b) => F.scaledDotProductAttention(q, k, v, { attnBias: b }),
};

const build = (c: OpCase) => c.inputs.map((t) => new Tensor(Float32Array.from(t.data), t.shape, t.grad));

describe("PyTorch parity: ops, layers and losses against torch's values", () => {
  it("every fixture has a chainrule form and every form a fixture", () => {
    expect(fixtures.cases.map((c) => c.name).sort()).toEqual(Object.keys(ops).sort());
  });

  for (const c of fixtures.cases) {
    it(`${c.name}: forward and gradients match PyTorch${c.gradcheck ? ", and gradcheck" : ""}`, () => {
      const fn = ops[c.name];
      const xs = build(c);
      const out = fn(...xs);
      expect(out.shape).toEqual(c.output.shape);
      assertClose(out, c.output.data, { atol: 1e-5, rtol: 1e-4 });
      if (xs.some((x) => x.requiresGrad)) {
        out.backward(Float32Array.from({ length: out.size }, (_, i) => Math.cos(i)));
        xs.forEach((x, i) => {
          if (!x.requiresGrad) return;
          assertClose(x.grad ?? new Float32Array(x.size), c.grads[i]!, { atol: 1e-5, rtol: 1e-4 });
        });
        if (c.gradcheck) gradcheck(fn, build(c), { eps: 1e-3, atol: 2e-3, rtol: 2e-2 });
      }
    });
  }
});

describe("PyTorch parity: optimizers step by step against torch.optim", () => {
  const make: Record<string, (ps: nn.Parameter[]) => optim.Optimizer<any>> = {
    RMSprop: (ps) => new optim.RMSprop(ps, { lr: 0.01 }),
    "RMSprop.centeredMomentum": (ps) => new optim.RMSprop(ps, { lr: 0.01, alpha: 0.9, momentum: 0.5, centered: true, weightDecay: 0.1 }),
    Adagrad: (ps) => new optim.Adagrad(ps, { lr: 0.1 }),
    "Adagrad.decay": (ps) => new optim.Adagrad(ps, { lr: 0.1, lrDecay: 0.5, weightDecay: 0.2, initialAccumulatorValue: 0.3 }),
    "Adam.amsgrad": (ps) => new optim.Adam(ps, { lr: 0.05, amsgrad: true }),
    "AdamW.amsgrad": (ps) => new optim.AdamW(ps, { lr: 0.05, amsgrad: true, weightDecay: 0.1 }),
  };
  it("every optimizer fixture has a chainrule form", () => {
    expect(fixtures.optimizers.map((c) => c.name).sort()).toEqual(Object.keys(make).sort());
  });
  for (const c of fixtures.optimizers) {
    it(`${c.name}: ${c.grads.length} steps match`, () => {
      const p = new nn.Parameter(Float32Array.from(c.params), [c.params.length]);
      const opt = make[c.name]([p]);
      c.grads.forEach((g, s) => {
        p.grad = new Tensor(Float32Array.from(g), [g.length]);
        opt.step();
        assertClose(p, c.trajectory[s], { atol: 1e-6, rtol: 1e-5 });
      });
    });
  }
});
