import { describe, expect, it } from "vitest";
import { Generator, Tensor, ShapeError, ArgumentError, manualSeed, nn, optim, F, conv2d, noGrad } from "../index.js";
import { createMnistCnn, createCnn } from "../models/cnn.js";
import { randomCrop, randomHorizontalFlip, augmentBatch } from "../data/augment.js";
import { assertClose, gradcheck } from "../testing/index.js";

const gen = new Generator(11);
function randT(shape: number[], requiresGrad = false, scale = 1): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const d = new Float32Array(n);
  for (let i = 0; i < n; i++) d[i] = (gen.random() * 2 - 1) * scale;
  return new Tensor(d, shape, requiresGrad);
}

describe("nn.Conv2d", () => {
  it("has PyTorch's shapes and default init bounds (±1/√fan_in for weight and bias)", () => {
    manualSeed(0);
    const m = new nn.Conv2d(6, 8, [3, 2], { groups: 2, stride: 2, padding: 1 });
    expect(m.weight.shape).toEqual([8, 3, 3, 2]);
    expect(m.bias!.shape).toEqual([8]);
    const bound = 1 / Math.sqrt(3 * 3 * 2);
    for (const p of [m.weight, m.bias!]) {
      const maxAbs = p.data.reduce((a, v) => Math.max(a, Math.abs(v)), 0);
      expect(maxAbs).toBeLessThanOrEqual(bound);
      expect(maxAbs).toBeGreaterThan(0.8 * bound); // spread over the whole interval
    }
    expect(m.namedParameters().map(([k]) => k)).toEqual(["weight", "bias"]);
    expect(new nn.Conv2d(1, 2, 3, { bias: false }).bias).toBeNull();
  });

  it("forward equals the functional conv2d with its options, and is seeded", () => {
    manualSeed(3);
    const m = new nn.Conv2d(2, 4, 3, { padding: 1, stride: 2, dilation: 1 });
    manualSeed(3);
    const m2 = new nn.Conv2d(2, 4, 3, { padding: 1, stride: 2 });
    expect(Array.from(m2.weight.data)).toEqual(Array.from(m.weight.data));
    const x = randT([2, 2, 7, 7]);
    const y = m.forward(x);
    expect(y.shape).toEqual([2, 4, 4, 4]);
    assertClose(y, conv2d(x, m.weight, m.bias, { padding: 1, stride: 2 }));
  });

  it("rejects bad arguments naming the layer", () => {
    expect(() => new nn.Conv2d(3, 4, 3, { groups: 2 })).toThrow("Conv2d: inChannels 3 and outChannels 4 must be divisible by groups 2");
    expect(() => new nn.Conv2d(0, 4, 3)).toThrow(ArgumentError);
    expect(() => new nn.Conv2d(1, 4, 0)).toThrow("Conv2d: kernelSize must be a positive integer, got 0");
  });
});

describe("pooling layers", () => {
  it("MaxPool2d, AvgPool2d and AdaptiveAvgPool2d shapes and values", () => {
    const x = new Tensor(Float32Array.from({ length: 16 }, (_, i) => i), [1, 1, 4, 4]);
    expect(Array.from(new nn.MaxPool2d(2).forward(x).data)).toEqual([5, 7, 13, 15]);
    expect(Array.from(new nn.AvgPool2d(2).forward(x).data)).toEqual([2.5, 4.5, 10.5, 12.5]);
    expect(new nn.MaxPool2d(3, { stride: 1, padding: 1 }).forward(x).shape).toEqual([1, 1, 4, 4]);
    expect(Array.from(new nn.AdaptiveAvgPool2d(1).forward(x).data)).toEqual([7.5]);
    expect(new nn.AdaptiveAvgPool2d([2, 3]).forward(x).shape).toEqual([1, 1, 2, 3]);
  });
});

describe("nn.BatchNorm2d", () => {
  it("init: weight 1, bias 0, running mean 0 / var 1, buffers in the state dict", () => {
    const bn = new nn.BatchNorm2d(3);
    expect(Array.from(bn.weight!.data)).toEqual([1, 1, 1]);
    expect(Array.from(bn.bias!.data)).toEqual([0, 0, 0]);
    expect(Array.from(bn.runningMean!.data)).toEqual([0, 0, 0]);
    expect(Array.from(bn.runningVar!.data)).toEqual([1, 1, 1]);
    expect(Object.keys(bn.stateDict())).toEqual(["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]);
    expect(bn.parameters().length).toBe(2); // buffers are not trained
    const model = new nn.Sequential(new nn.Conv2d(1, 3, 3), new nn.BatchNorm2d(3));
    expect(Object.keys(model.stateDict())).toEqual(["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked"]);
  });

  it("train mode: batch statistics, running stats updated with momentum 0.1 and the unbiased variance", () => {
    const bn = new nn.BatchNorm2d(2);
    // channel 0: 0, 2, 4, 6 (mean 3, biased var 5, unbiased 20/3); channel 1: 1, 1, 1, 1.
    const x = new Tensor(new Float32Array([0, 2, 1, 1, 4, 6, 1, 1]), [2, 2, 1, 2]);
    const y = bn.forward(x);
    const r = 1 / Math.sqrt(5 + 1e-5);
    assertClose(y, [-3 * r, -1 * r, 0, 0, 1 * r, 3 * r, 0, 0], { atol: 1e-5 });
    assertClose(bn.runningMean!, [0.3, 0.1]);
    assertClose(bn.runningVar!, [0.9 + 0.1 * (20 / 3), 0.9]);
    expect(bn.numBatchesTracked!.item()).toBe(1);
    bn.forward(x);
    assertClose(bn.runningMean!, [0.9 * 0.3 + 0.3, 0.9 * 0.1 + 0.1]);
    expect(bn.numBatchesTracked!.item()).toBe(2);
  });

  it("eval mode: running statistics, no updates, the same output for a sample alone or in a batch", () => {
    const bn = new nn.BatchNorm2d(2);
    bn.runningMean!.data.set([1, 2]);
    bn.runningVar!.data.set([4, 9]);
    bn.weight!.data.set([2, 1]);
    bn.bias!.data.set([0, 1]);
    bn.eval();
    const x = new Tensor(new Float32Array([3, 5, 5, 8]), [1, 2, 1, 2]);
    const y = bn.forward(x);
    const s0 = 2 / Math.sqrt(4 + 1e-5), s1 = 1 / Math.sqrt(9 + 1e-5);
    assertClose(y, [2 * s0, 4 * s0, 3 * s1 + 1, 6 * s1 + 1]);
    assertClose(bn.runningMean!, [1, 2]);
    expect(bn.numBatchesTracked!.item()).toBe(0);
  });

  it("momentum null keeps a cumulative average", () => {
    const bn = new nn.BatchNorm2d(1, { momentum: null });
    for (const v of [2, 4, 9]) bn.forward(new Tensor(new Float32Array([v - 1, v + 1]), [2, 1, 1, 1]));
    assertClose(bn.runningMean!, [5]); // (2 + 4 + 9) / 3
    assertClose(bn.runningVar!, [2]); // each batch: unbiased var of {v-1, v+1} = 2
  });

  it("trackRunningStats false: no buffers, batch statistics in eval too; affine false: no parameters", () => {
    const bn = new nn.BatchNorm2d(1, { trackRunningStats: false, affine: false }).eval();
    expect(Object.keys(bn.stateDict())).toEqual([]);
    assertClose(bn.forward(new Tensor(new Float32Array([1, 3]), [1, 1, 1, 2])), [-1, 1], { atol: 1e-4 });
  });

  it("gradients through the layer in train mode match central differences", () => {
    const bn = new nn.BatchNorm2d(2);
    bn.weight!.data.set([1.5, -0.5]);
    bn.bias!.data.set([0.2, 0.1]);
    const x = randT([3, 2, 2, 2], true, 2);
    gradcheck((t) => bn.forward(t), [x, bn.weight!, bn.bias!], { eps: 1e-3, atol: 2e-3 });
  });

  it("state dict round trip restores running statistics", () => {
    const a = new nn.BatchNorm2d(2);
    a.forward(randT([4, 2, 3, 3], false, 3));
    const b = new nn.BatchNorm2d(2);
    b.loadStateDict(a.stateDict());
    expect(Array.from(b.runningVar!.data)).toEqual(Array.from(a.runningVar!.data));
    expect(b.numBatchesTracked!.item()).toBe(1);
  });

  it("bad input names the op and shapes", () => {
    expect(() => new nn.BatchNorm2d(3).forward(randT([2, 4, 2, 2]))).toThrow("batchNorm2d: runningMean [3] must be [4] for input [2,4,2,2]");
    expect(() => new nn.BatchNorm2d(3, { momentum: 1.5 })).toThrow(ArgumentError);
  });
});

describe("augmentation", () => {
  const shape = [2, 1, 3, 4] as const;
  const base = Float32Array.from({ length: 24 }, (_, i) => i + 1);

  it("randomCrop: same seed same crops; every crop is a shifted window with zero fill", () => {
    const a = randomCrop(base, shape, 2, new Generator(5));
    const b = randomCrop(base, shape, 2, new Generator(5));
    expect(Array.from(a)).toEqual(Array.from(b));
    // Each image is the original shifted by some (dy, dx) in [-2, 2]² with zeros where it falls outside.
    for (let n = 0; n < 2; n++) {
      const img = a.subarray(n * 12, n * 12 + 12), src = base.subarray(n * 12, n * 12 + 12);
      let found = false;
      for (let dy = -2; dy <= 2 && !found; dy++) for (let dx = -2; dx <= 2 && !found; dx++) {
        let ok = true;
        for (let y = 0; y < 3; y++) for (let x = 0; x < 4; x++) {
          const sy = y + dy, sx = x + dx;
          const want = sy >= 0 && sy < 3 && sx >= 0 && sx < 4 ? src[sy * 4 + sx] : 0;
          if (img[y * 4 + x] !== want) ok = false;
        }
        found = ok;
      }
      expect(found).toBe(true);
    }
    expect(Array.from(randomCrop(base, shape, 0, new Generator(1)))).toEqual(Array.from(base));
  });

  it("randomCrop: offsets cover the whole range over many draws, padding larger than the image", () => {
    const g = new Generator(9);
    const seen = new Set<string>();
    for (let t = 0; t < 400; t++) seen.add(Array.from(randomCrop(base.subarray(0, 12), [1, 1, 3, 4], 1, g)).join(","));
    expect(seen.size).toBe(9);
    const far = randomCrop(base.subarray(0, 12), [1, 1, 3, 4], 8, new Generator(2), { fill: -1 });
    expect(far.length).toBe(12);
  });

  it("randomHorizontalFlip mirrors rows of the chosen images, in place, seeded", () => {
    const x = base.slice();
    const flipped = randomHorizontalFlip(x, shape, new Generator(4), 1);
    expect(flipped).toEqual([0, 1]);
    expect(Array.from(x.subarray(0, 4))).toEqual([4, 3, 2, 1]);
    const y = base.slice();
    expect(randomHorizontalFlip(y, shape, new Generator(4), 0)).toEqual([]);
    expect(Array.from(y)).toEqual(Array.from(base));
    const z1 = base.slice(), z2 = base.slice();
    expect(randomHorizontalFlip(z1, shape, new Generator(8))).toEqual(randomHorizontalFlip(z2, shape, new Generator(8)));
  });

  it("augmentBatch and bad input", () => {
    const out = augmentBatch(base, shape, { cropPadding: 1, flipProbability: 0.5 }, new Generator(3));
    expect(out).not.toBe(base);
    expect(Array.from(base.subarray(0, 4))).toEqual([1, 2, 3, 4]); // input untouched when cropping
    expect(() => randomCrop(base, [2, 1, 3, 3], 1, new Generator(1))).toThrow("randomCrop: batch of 24 floats does not fit shape [2,1,3,3] (18 floats)");
    expect(() => randomCrop(base, shape, -1, new Generator(1))).toThrow(ArgumentError);
    expect(() => randomHorizontalFlip(base, shape, new Generator(1), 2)).toThrow("randomHorizontalFlip: probability must be in [0, 1], got 2");
  });
});

describe("models/cnn", () => {
  it("the anchor's architecture with PyTorch's Sequential names and parameter count", () => {
    const m = createMnistCnn();
    expect(m.namedParameters().map(([k, p]) => `${k}:${p.shape.join("x")}`)).toEqual([
      "0.weight:32x1x3x3", "0.bias:32", "3.weight:64x32x3x3", "3.bias:64",
      "7.weight:128x3136", "7.bias:128", "9.weight:10x128", "9.bias:10",
    ]);
    expect(m.numParameters()).toBe(32 * 9 + 32 + 64 * 288 + 64 + 3136 * 128 + 128 + 1290);
  });

  it("pooling before ReLU (fused with the conv) gives the anchor's order's outputs and gradients", () => {
    manualSeed(2);
    const m = createMnistCnn();
    const [c1, , , c2, , , , l1, , l2] = m.children() as any[];
    const anchorOrder = new nn.Sequential(c1, new nn.ReLU(), new nn.MaxPool2d(2), c2, new nn.ReLU(), new nn.MaxPool2d(2), new nn.Flatten(), l1, new nn.ReLU(), l2);
    const x = randT([3, 1, 28, 28]);
    const y = new Int32Array([1, 5, 9]);
    const grads = (model: nn.Module) => {
      for (const p of m.parameters()) p.grad = null;
      const out = model.forward(x);
      F.crossEntropy(out, y).backward();
      return [out.data, ...m.parameters().map((p) => p.grad!.data)];
    };
    const a = grads(m), b = grads(anchorOrder);
    // Equal up to float rounding: the fused op sums the conv's GEMMs and the bias gradient in another order.
    for (let i = 0; i < a.length; i++) assertClose(a[i], b[i], { atol: 1e-6, rtol: 1e-5 });
  });

  it("takes flat (N, 784) rows or (N, 1, 28, 28) images; batch norm variant has buffers and no conv bias", () => {
    const m = createMnistCnn();
    const x = randT([2, 784]);
    const a = noGrad(() => m.forward(x));
    const b = noGrad(() => m.forward(new Tensor(x.data, [2, 1, 28, 28])));
    expect(a.shape).toEqual([2, 10]);
    expect(Array.from(a.data)).toEqual(Array.from(b.data));
    expect(() => m.forward(randT([2, 783]))).toThrow(ShapeError);
    const bn = createMnistCnn({ batchNorm: true, dropout: 0.1 });
    expect(Object.keys(bn.stateDict()).filter((k) => k.includes("running"))).toEqual(["1.running_mean", "1.running_var", "5.running_mean", "5.running_var"]);
    expect(bn.forward(randT([3, 784])).shape).toEqual([3, 10]);
    const small = createCnn({ inChannels: 3, height: 9, width: 9, channels: [4, 4, 4], hidden: 8, numClasses: 3 });
    expect(small.forward(randT([2, 3, 9, 9])).shape).toEqual([2, 3]);
    expect(() => createCnn({ height: 4, width: 4, channels: [2, 2, 2] })).toThrow(/below 1x1/);
  });

  it("learns: a few Adam steps fit a small batch (loss falls by half)", () => {
    manualSeed(1);
    const m = createCnn({ height: 8, width: 8, channels: [4, 8], hidden: 16, numClasses: 3, batchNorm: true });
    const x = randT([12, 64]);
    const y = new Int32Array(12).map((_, i) => i % 3);
    const opt = new optim.Adam(m.parameters(), { lr: 1e-2 });
    let first = 0, last = 0;
    for (let s = 0; s < 30; s++) {
      opt.zeroGrad();
      const loss = F.crossEntropy(m.forward(x), y);
      loss.backward();
      opt.step();
      if (s === 0) first = loss.item();
      last = loss.item();
    }
    expect(last).toBeLessThan(first / 2);
  });
});
