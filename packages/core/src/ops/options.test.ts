import { describe, expect, it } from "vitest";
import { ArgumentError, F, ShapeError, Tensor, einsum, gather, manualSeed, maximum, nn, optim, pad, randn, sum, tensor, topk } from "../index.js";
import { assertClose } from "../testing/index.js";

describe("options are checked: a misspelled key throws instead of training with a default", () => {
  it("names the op, the key and the closest valid key", () => {
    const x = randn([2, 3]);
    expect(() => F.crossEntropy(x, [0, 1], { labelSmothing: 0.1 } as any)).toThrow("crossEntropy: unknown option 'labelSmothing' (did you mean 'labelSmoothing'?); expected one of reduction, ignoreIndex, labelSmoothing, weight");
    expect(() => F.nllLoss(x, [0, 1], { ignore_index: 1 } as any)).toThrow(/^nllLoss: unknown option 'ignore_index'/);
    expect(() => F.binaryCrossEntropyWithLogits(x, x, { pos_weight: x } as any)).toThrow(ArgumentError);
    expect(() => sum(x, 0, { keepdim: true } as any)).toThrow("sum: unknown option 'keepdim' (did you mean 'keepDims'?); expected one of keepDims");
    expect(() => F.embedding([0], randn([3, 2]), { padding_idx: 0 } as any)).toThrow(/^embedding: unknown option/);
    expect(() => F.maxPool2d(randn([1, 1, 4, 4]), 2, { ceil_mode: true } as any)).toThrow(/^maxPool2d: unknown option 'ceil_mode'/);
    expect(() => F.conv2d(randn([1, 1, 4, 4]), randn([1, 1, 3, 3]), null, { strides: 2 } as any)).toThrow(/^conv2d: unknown option 'strides' \(did you mean 'stride'\?\)/);
    expect(() => new nn.Linear(2, 3, { bais: false } as any)).toThrow(/^Linear: unknown option 'bais'/);
    const p = [new nn.Parameter(new Float32Array(2))];
    expect(() => new optim.Adam(p, { amsGrad: true } as any)).toThrow(/^Adam: unknown option 'amsGrad' \(did you mean 'amsgrad'\?\)/);
    expect(() => new optim.SGD(p, { weight_decay: 0.1 } as any)).toThrow(/^SGD: unknown option 'weight_decay'/);
    expect(() => new optim.SGD([{ params: p, learningRate: 0.1 } as any])).toThrow(/^SGD parameter group: unknown option 'learningRate'/);
  });

  it("sum/mean/max accept PyTorch's positional keepdim", () => {
    const x = tensor([[1, 2, 3], [4, 5, 6]]);
    expect(sum(x, 1, true).shape).toEqual([2, 1]);
    expect(x.mean(0, true).shape).toEqual([1, 3]);
    expect(x.max(1, true).shape).toEqual([2, 1]);
    expect(x.sum(1, false).shape).toEqual([2]);
  });
});

describe("crossEntropy options that used to be ignored", () => {
  it("every target ignored: loss NaN and gradient 0 everywhere (as PyTorch), on the fused and the general path", () => {
    for (const opts of [{}, { labelSmoothing: 0.1 }, { weight: tensor([1, 2, 3]) }]) {
      const x = randn([3, 3], { requiresGrad: true });
      const loss = F.crossEntropy(x, [-100, -100, -100], opts);
      expect(Number.isNaN(loss.item())).toBe(true);
      loss.backward();
      expect(Array.from(x.grad!.data)).toEqual(new Array(9).fill(0));
    }
    const lp = randn([2, 3], { requiresGrad: true });
    const nll = F.nllLoss(lp, [1, 1], { ignoreIndex: 1 });
    expect(Number.isNaN(nll.item())).toBe(true);
    nll.backward();
    expect(Array.from(lp.grad!.data)).toEqual(new Array(6).fill(0));
  });

  it("reduction none keeps the row shape of (B, T, C) logits; sum and mean relate as PyTorch's", () => {
    manualSeed(3);
    const x = randn([2, 3, 5]);
    const t = tensor([[0, 4, 2], [1, -100, 3]]);
    const none = F.crossEntropy(x, t, { reduction: "none" });
    expect(none.shape).toEqual([2, 3]);
    expect(none.data[4]).toBe(0);
    expect(F.crossEntropy(x, t, { reduction: "sum" }).item()).toBeCloseTo(none.sum().item(), 4);
    expect(F.crossEntropy(x, t).item()).toBeCloseTo(none.sum().item() / 5, 5);
  });

  it("rejects bad options naming the op", () => {
    const x = randn([2, 3]);
    expect(() => F.crossEntropy(x, [0, 1], { labelSmoothing: 1.5 })).toThrow("crossEntropy: labelSmoothing must be in [0, 1], got 1.5");
    expect(() => F.crossEntropy(x, [0, 1], { weight: tensor([1, 2]) })).toThrow("crossEntropy: weight [2] must be [3] (one per class)");
    expect(() => F.crossEntropy(x, randn([2, 3]), { ignoreIndex: 0 })).toThrow(/ignoreIndex applies to class-index targets/);
    expect(() => F.binaryCrossEntropyWithLogits(x, x, { posWeight: tensor([1, 2]) })).toThrow("binaryCrossEntropyWithLogits: posWeight [2] does not broadcast to input [2,3]");
  });
});

describe("layers and helpers", () => {
  it("Embedding paddingIdx: the row starts at zero and gets no gradient", () => {
    manualSeed(1);
    const emb = new nn.Embedding(4, 3, { paddingIdx: -1 });
    expect(emb.paddingIdx).toBe(3);
    expect(Array.from(emb.weight.data.subarray(9, 12))).toEqual([0, 0, 0]);
    emb.forward(new Int32Array([3, 1, 3])).sum().backward();
    expect(Array.from(emb.weight.grad!.data.subarray(9, 12))).toEqual([0, 0, 0]);
    expect(Array.from(emb.weight.grad!.data.subarray(3, 6))).toEqual([1, 1, 1]);
    expect(() => new nn.Embedding(4, 3, { paddingIdx: 4 })).toThrow("Embedding: paddingIdx 4 is out of range [-4, 4)");
  });

  it("Dropout2d zeroes whole channels and scales the rest; identity in eval", () => {
    manualSeed(2);
    const d = new nn.Dropout2d(0.5);
    const y = d.forward(tensor(new Float32Array(8 * 4).fill(1), { shape: [2, 4, 2, 2] }));
    for (let c = 0; c < 8; c++) {
      const plane = Array.from(y.data.subarray(c * 4, c * 4 + 4));
      expect(plane.every((v) => v === plane[0]) && (plane[0] === 0 || plane[0] === 2)).toBe(true);
    }
    d.eval();
    const x = randn([2, 3, 2, 2]);
    expect(d.forward(x)).toBe(x);
  });

  it("clipGradValue clamps each gradient element", () => {
    const p = new nn.Parameter(new Float32Array(4));
    p.grad = tensor([-3, 0.5, 2, -0.1]);
    optim.clipGradValue([p], 1);
    expect(Array.from(p.grad.data)).toEqual([-1, 0.5, 1, Math.fround(-0.1)]);
  });

  it("maximum propagates NaN; new ops reject bad input naming the op", () => {
    assertClose(maximum(tensor([NaN, 1]), tensor([0, 2])), [NaN, 2]);
    expect(() => gather(randn([2, 3]), 1, tensor([0, 1]))).toThrow("gather: index [2] must have as many dimensions as input [2,3]");
    expect(() => gather(randn([2, 3]), 1, tensor([[0], [3]]))).toThrow("gather: index 3 at position 1 is out of range [0, 3)");
    expect(() => topk(randn([2, 3]), 4)).toThrow("topk: k must be an integer in [0, 3] (the axis size), got 4");
    expect(() => pad(randn([2, 3]), [3, 0], { mode: "reflect" })).toThrow(/^pad: reflect padding \[3,0\] must be smaller than dimension 1/);
    expect(() => einsum("ij,jk->ik", randn([2, 3]), randn([4, 2]))).toThrow("einsum: 'j' is 3 in one operand and 4 in another");
    expect(() => einsum("ii->i", randn([2, 2]))).toThrow(/diagonals are not supported/);
    expect(() => F.scaledDotProductAttention(randn([2, 4]), randn([3, 4]), randn([3, 2]), { mask: new Uint8Array(5) })).toThrow(/^scaledDotProductAttention: a Uint8Array mask must have Tq·Tk = 6/);
    expect(() => F.convTranspose2d(randn([1, 2, 3, 3]), randn([3, 1, 2, 2]))).toThrow(ShapeError);
  });

  it("new layers build with PyTorch's shapes", () => {
    expect(new nn.Conv1d(4, 6, 3, { groups: 2 }).weight.shape).toEqual([6, 2, 3]);
    expect(new nn.ConvTranspose2d(4, 6, 3, { groups: 2, stride: 2 }).weight.shape).toEqual([4, 3, 3, 3]);
    expect(new nn.ConvTranspose2d(2, 3, 3, { stride: 2, padding: 1, outputPadding: 1 }).forward(randn([1, 2, 4, 4])).shape).toEqual([1, 3, 8, 8]);
    expect(new nn.GroupNorm(2, 4).forward(randn([2, 4, 3])).shape).toEqual([2, 4, 3]);
    expect(new nn.RMSNorm(5).forward(randn([2, 5])).shape).toEqual([2, 5]);
    expect(new nn.Sequential(new nn.LeakyReLU(0.1), new nn.SiLU(), new nn.Mish()).forward(tensor([-1, 2])).shape).toEqual([2]);
    expect(new nn.MaxPool2d(2, { ceilMode: true }).forward(randn([1, 1, 5, 5])).shape).toEqual([1, 1, 3, 3]);
    const t = new Tensor(new Float32Array(6), [2, 3]);
    expect(t.expand([4, 2, 3]).shape).toEqual([4, 2, 3]);
  });
});
