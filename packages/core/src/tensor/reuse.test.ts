import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { F, GPT, Tensor, createMnistCnn, manualSeed, nn, noGrad, optim, rand } from "../index.js";
import { pooledBufferBytes, setArenaPoison } from "./arena.js";

// Every recycled array is filled with NaN before it is handed out: a read of a recycled tensor shows.
beforeEach(() => setArenaPoison(true));
afterEach(() => setArenaPoison(false));

function mlp(): nn.Sequential {
  manualSeed(1);
  return new nn.Sequential(new nn.Linear(64, 128), new nn.ReLU(), new nn.Linear(128, 96), new nn.ReLU(), new nn.Linear(96, 16));
}

/** An own function on every module: none is known to be chainrule's own, so nothing is recycled without a scope. */
function untrusted<M extends nn.Module>(m: M): M {
  m.apply((mod) => ((mod as any).hook = () => undefined));
  return m;
}

function trainer(model: nn.Module, loss: (m: nn.Module) => Tensor) {
  const opt = new optim.Adam(model.parameters(), { lr: 1e-2 });
  return () => {
    opt.zeroGrad();
    const l = loss(model);
    l.backward();
    opt.step();
    return l.item();
  };
}

const mlpLoss = (x: Tensor, y: Int32Array) => (m: nn.Module) => F.crossEntropy(m.forward(x), y);
const params = (m: nn.Module) => m.parameters().map((p) => Array.from(p.data));

describe("intermediate activations of chainrule's modules are recycled without a BufferArena", () => {
  it("the hidden layers of later steps reuse the arrays of earlier ones", () => {
    const m = mlp();
    const x = rand([32, 64]), y = new Int32Array(32).map((_, i) => i % 16);
    const opt = new optim.SGD(m.parameters(), { lr: 0.1 });
    const hidden = new Set<Float32Array>();
    const steps = 8;
    for (let s = 0; s < steps; s++) {
      opt.zeroGrad();
      const logits = m.forward(x);
      hidden.add(logits.gradFn!.inputs[0].data); // the second ReLU's output (32, 96)
      F.crossEntropy(logits, y).backward();
      opt.step();
    }
    expect(hidden.size).toBeLessThanOrEqual(3); // a fresh array each step without recycling
    expect(pooledBufferBytes()).toBeGreaterThan(0);
  });

  it("never recycles the output a forward returns: last steps' logits keep their values", () => {
    const m = mlp();
    const x = rand([32, 64]), y = new Int32Array(32).map((_, i) => i % 16);
    const opt = new optim.Adam(m.parameters(), { lr: 1e-2 });
    const kept: [Tensor, number[]][] = [];
    for (let s = 0; s < 4; s++) {
      opt.zeroGrad();
      const logits = m.forward(x);
      F.crossEntropy(logits, y).backward();
      opt.step();
      kept.push([logits, Array.from(logits.data)]);
    }
    for (const [t, v] of kept) expect(Array.from(t.data)).toEqual(v);
  });

  it("trains an MLP, the anchor CNN written with nn layers, and a GPT to the bits of training without recycling", () => {
    const x = rand([32, 64]), y = new Int32Array(32).map((_, i) => i % 16);
    const cases: [string, () => nn.Module, (m: nn.Module) => Tensor][] = [
      ["MLP", mlp, mlpLoss(x, y)],
      ["CNN", () => {
        manualSeed(2);
        return new nn.Sequential(new nn.Conv2d(1, 8, 3, { padding: 1 }), new nn.ReLU(), new nn.MaxPool2d(2),
          new nn.Conv2d(8, 16, 3, { padding: 1 }), new nn.ReLU(), new nn.MaxPool2d(2), new nn.Flatten(), new nn.Linear(16 * 7 * 7, 10));
      }, (() => { const xi = rand([8, 1, 28, 28]); return (m: nn.Module) => F.crossEntropy(m.forward(xi), new Int32Array(8).map((_, i) => i % 10)); })()],
      ["createMnistCnn", () => { manualSeed(2); return createMnistCnn({ batchNorm: true }); },
        (() => { const xi = rand([8, 784]); return (m: nn.Module) => F.crossEntropy(m.forward(xi), new Int32Array(8).map((_, i) => i % 10)); })()],
      ["GPT", () => { manualSeed(3); return new GPT({ vocabSize: 11, blockSize: 8, nLayer: 2, nHead: 2, nEmbd: 32 }); },
        (() => {
          const ids = new Int32Array(4 * 8).map((_, i) => (i * 7) % 11), tg = new Int32Array(4 * 8).map((_, i) => (i * 3 + 1) % 11);
          return (m: nn.Module) => (m as GPT).loss(ids, tg, [4, 8]);
        })()],
    ];
    for (const [name, make, loss] of cases) {
      const a = make(), b = untrusted(make());
      const sa = trainer(a, loss), sb = trainer(b, loss);
      const la: number[] = [], lb: number[] = [];
      for (let s = 0; s < 4; s++) { la.push(sa()); lb.push(sb()); }
      expect(la, name).toEqual(lb);
      expect(params(a), name).toEqual(params(b));
    }
  });

  it("recycles nothing a user's Module can see: its own forward's tensors and what it stashes stay intact", () => {
    class Stash extends nn.Module {
      seen: Tensor | null = null;
      forward(x: Tensor): Tensor {
        this.seen = x;
        return x.relu();
      }
    }
    manualSeed(4);
    const stash = new Stash();
    const m = new nn.Sequential(new nn.Linear(64, 128), stash, new nn.Linear(128, 16));
    const x = rand([32, 64]), y = new Int32Array(32).map((_, i) => i % 16);
    const step = trainer(m, mlpLoss(x, y));
    step();
    const seen = stash.seen!, values = Array.from(seen.data);
    step();
    step();
    expect(Array.from(seen.data)).toEqual(values);
  });

  it("without a graph (noGrad) the intermediates are recycled at once; the output stays", () => {
    const m = mlp();
    const x = rand([32, 64]);
    const a = noGrad(() => m.forward(x));
    const copy = Array.from(a.data);
    const b = noGrad(() => m.forward(x));
    expect(Array.from(a.data)).toEqual(copy);
    expect(Array.from(b.data)).toEqual(copy);
    expect(b.data).not.toBe(a.data);
  });

  it("a backward that keeps the graph recycles nothing: a second backward gives the same gradients", () => {
    const m = mlp();
    const x = rand([32, 64]), y = new Int32Array(32).map((_, i) => i % 16);
    const loss = F.crossEntropy(m.forward(x), y);
    loss.backward(undefined, { retainGraph: true });
    const g1 = m.parameters().map((p) => Array.from(p.grad!.data));
    for (const p of m.parameters()) p.grad!.data.fill(0);
    m.forward(rand([32, 64])); // a forward in between takes whatever the pool has
    loss.backward();
    expect(m.parameters().map((p) => Array.from(p.grad!.data))).toEqual(g1);
  });
});
