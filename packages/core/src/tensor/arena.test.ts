import { describe, expect, it } from "vitest";
import { BufferArena, F, GPT, Tensor, createMnistCnn, manualSeed, nn, optim, rand, relu, sum, tensor } from "../index.js";
import { isArenaArray, outputBuffer } from "../internal.js";
import { gradBuffer } from "../autograd/engine.js";
import { setArenaPoison } from "./arena.js";
import { setConv2dLayout } from "../ops/conv.js";

/** Runs `steps` Adam steps of `model` on fixed data, each in `arena.run` when an arena is given; returns the flat parameters. */
function train(make: () => nn.Module, loss: (m: nn.Module) => Tensor, steps: number, arena: BufferArena | null): Float32Array {
  manualSeed(0);
  const model = make();
  const fp = nn.flattenParameters(model);
  const opt = new optim.Adam(model.parameters(), { lr: 1e-2 });
  const body = () => {
    opt.zeroGrad();
    const l = loss(model);
    l.backward();
    opt.step();
    return l.item();
  };
  for (let i = 0; i < steps; i++) {
    const l = arena ? arena.run(body) : body();
    expect(Number.isFinite(l)).toBe(true);
  }
  return fp.data.slice();
}

describe("BufferArena", () => {
  it("hands an output array out again in the next run, never twice in one run, and not outside a run", () => {
    const arena = new BufferArena();
    const first = arena.run(() => [outputBuffer(4096), outputBuffer(4096)]);
    expect(first[0]).not.toBe(first[1]);
    expect(isArenaArray(first[0])).toBe(true);
    const second = arena.run(() => [outputBuffer(4096), outputBuffer(4096)]);
    expect(new Set([...first, ...second]).size).toBe(2); // both reused
    const outside = outputBuffer(4096);
    expect(isArenaArray(outside)).toBe(false);
    expect(second).not.toContain(outside);
    expect(isArenaArray(arena.run(() => outputBuffer(100)))).toBe(false); // small arrays are not worth recycling
  });

  it("does not reset inside a nested run of the same arena, and drops arrays a run did not reuse", () => {
    const arena = new BufferArena();
    arena.run(() => {
      const a = outputBuffer(2048);
      const b = arena.run(() => outputBuffer(2048));
      expect(b).not.toBe(a);
    });
    expect(arena.heldBytes).toBe(2 * 2048 * 4);
    arena.run(() => outputBuffer(8192)); // a different shape: the two 2048s are free but not reused...
    arena.run(() => undefined); // ...and dropped here
    expect(arena.heldBytes).toBe(8192 * 4);
    arena.clear();
    expect(arena.heldBytes).toBe(0);
  });

  it("never makes arena memory a leaf's .grad nor pools it for later", () => {
    const arena = new BufferArena();
    const x = tensor(Array.from({ length: 4096 }, (_, i) => i - 2048), { requiresGrad: true });
    arena.run(() => sum(relu(x)).backward());
    expect(x.grad).not.toBeNull();
    expect(isArenaArray(x.grad!.data)).toBe(false);
    const kept = x.grad!.data.slice();
    // Runs that reuse every array of the first one must leave x.grad alone.
    for (let i = 0; i < 3; i++) arena.run(() => { outputBuffer(4096).fill(7); gradBuffer(4096).fill(7); sum(relu(x)); });
    expect(x.grad!.data).toEqual(kept);
    for (let i = 0; i < 4; i++) expect(isArenaArray(gradBuffer(4096))).toBe(false); // outside a run: no arena array from the pool
  });

  it("trains an MLP, a CNN and a GPT to bit-identical parameters with and without an arena (recycled arrays filled with NaN first)", () => {
    setArenaPoison(true);
    try {
      trainAll();
    } finally {
      setArenaPoison(false);
    }
  });
});

/** MLP (linear, ReLU, GELU), CNN (fused conv-pool-ReLU in both layouts, batch norm), unfused conv/pool layers in every layout, and GPT (dropout, tied weights): with and without an arena. */
function trainAll(): void {
  const xm = rand([64, 20]), ym = new Int32Array(64).map((_, i) => i % 5);
  const mlp = () => new nn.Sequential(new nn.Linear(20, 64), new nn.ReLU(), new nn.Linear(64, 32), new nn.GELU(), new nn.Linear(32, 5));
  const mlpLoss = (m: nn.Module) => F.crossEntropy(m.forward(xm) as Tensor, ym);
  expect(train(mlp, mlpLoss, 4, new BufferArena())).toEqual(train(mlp, mlpLoss, 4, null));

  const xc = rand([6, 1, 12, 12]), yc = new Int32Array(6).map((_, i) => i % 3);
  for (const batchNorm of [false, true]) {
    const cnn = () => createMnistCnn({ height: 12, width: 12, channels: [8, 8], hidden: 16, numClasses: 3, batchNorm });
    const cnnLoss = (m: nn.Module) => F.crossEntropy(m.forward(xc) as Tensor, yc);
    expect(train(cnn, cnnLoss, 3, new BufferArena())).toEqual(train(cnn, cnnLoss, 3, null));
  }

  // The unfused layers (conv2d in every layout, max, average and adaptive pooling), recycled arrays included.
  const xl = rand([8, 2, 16, 16]), yl = new Int32Array(8).map((_, i) => i % 3);
  const layered = () => new nn.Sequential(
    new nn.Conv2d(2, 8, 3, { padding: 1 }), new nn.ReLU(), new nn.MaxPool2d(2),
    new nn.Conv2d(8, 8, 3, { padding: 1 }), new nn.BatchNorm2d(8), new nn.AvgPool2d(2),
    new nn.Conv2d(8, 8, 1), new nn.AdaptiveAvgPool2d(2), new nn.Flatten(), new nn.Linear(32, 3),
  );
  const layeredLoss = (m: nn.Module) => F.crossEntropy(m.forward(xl) as Tensor, yl);
  try {
    for (const layout of ["perImage", "batched", "shifted"] as const) {
      setConv2dLayout(layout);
      expect(train(layered, layeredLoss, 3, new BufferArena())).toEqual(train(layered, layeredLoss, 3, null));
    }
  } finally {
    setConv2dLayout("auto");
  }

  const cfg = { vocabSize: 11, blockSize: 16, nLayer: 2, nHead: 2, nEmbd: 32, dropout: 0.1, bias: true, tieWeights: true };
  const ids = new Int32Array(4 * 16).map((_, i) => (i * 7) % 11), tgt = new Int32Array(4 * 16).map((_, i) => (i * 5 + 1) % 11);
  const gpt = () => new GPT(cfg);
  const gptLoss = (m: nn.Module) => { manualSeed(1); return (m as GPT).loss(ids, tgt, [4, 16]); };
  expect(train(gpt, gptLoss, 3, new BufferArena())).toEqual(train(gpt, gptLoss, 3, null));
}
