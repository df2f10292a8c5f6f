import { describe, expect, it } from "vitest";
import { F, type Tensor, manualSeed, nn, optim, rand } from "../index.js";
import { assertClose } from "../testing/index.js";

/** The anchor CNN as PyTorch code writes it: Conv2d, ReLU, MaxPool2d (ReLU before pooling). */
function plainCnn(batchNorm: boolean): nn.Sequential {
  manualSeed(5);
  const block = (i: number, o: number) => batchNorm
    ? [new nn.Conv2d(i, o, 3, { padding: 1, bias: false }), new nn.BatchNorm2d(o), new nn.ReLU(), new nn.MaxPool2d(2)]
    : [new nn.Conv2d(i, o, 3, { padding: 1 }), new nn.ReLU(), new nn.MaxPool2d(2)];
  return new nn.Sequential(...block(1, 8), ...block(8, 12), new nn.Flatten(), new nn.Linear(12 * 3 * 3, 16), new nn.ReLU(), new nn.Linear(16, 4));
}

/** Layer by layer, each module's own forward: no fused op. */
const unfused = (m: nn.Sequential) => (x: Tensor) => m.layers.reduce((h, l) => l.forward(h), x);

function train(m: nn.Sequential, forward: (x: Tensor) => Tensor, steps: number): { losses: number[]; params: number[][]; grads: number[][] } {
  const opt = new optim.Adam(m.parameters(), { lr: 1e-2 });
  manualSeed(6);
  const x = rand([6, 1, 12, 12]).sub(0.5); // (N, 1, H, W)
  const y = new Int32Array([0, 1, 2, 3, 0, 1]);
  const losses: number[] = [];
  for (let s = 0; s < steps; s++) {
    opt.zeroGrad();
    const loss = F.crossEntropy(forward(x), y);
    loss.backward();
    opt.step();
    losses.push(loss.item());
  }
  return { losses, params: m.parameters().map((p) => Array.from(p.data)), grads: m.parameters().map((p) => Array.from(p.grad!.data)) };
}

describe("Sequential fuses conv/batch-norm, ReLU and 2×2 max-pooling", () => {
  for (const bn of [false, true]) {
    const name = bn ? "Conv2d, BatchNorm2d" : "Conv2d";
    it(`${name}, ReLU, MaxPool2d trains to the bits of the pooling-first order (createCnn's), both fused`, () => {
      const a = plainCnn(bn), b = plainCnn(bn);
      // b: the same layers with each ReLU, MaxPool2d pair swapped.
      const ls = b.layers.slice();
      for (let i = 0; i + 1 < ls.length; i++) if (ls[i] instanceof nn.ReLU && ls[i + 1] instanceof nn.MaxPool2d) [ls[i], ls[i + 1]] = [ls[i + 1], ls[i]];
      const swapped = new nn.Sequential(...ls);
      const ra = train(a, (x) => a.forward(x), 4), rb = train(swapped, (x) => swapped.forward(x), 4);
      expect(ra).toEqual(rb);
    });

    it(`${name}, ReLU, MaxPool2d: the fused step trains like the unfused layers (within float32 rounding)`, () => {
      const a = plainCnn(bn), b = plainCnn(bn);
      const fused = train(a, (x) => a.forward(x), 4), ref = train(b, unfused(b), 4);
      assertClose(fused.losses, ref.losses, { atol: 1e-6, rtol: 1e-5 });
      fused.params.forEach((p, i) => assertClose(p, ref.params[i], { atol: 1e-6, rtol: 1e-4 }));
      fused.grads.forEach((g, i) => assertClose(g, ref.grads[i], { atol: 1e-5, rtol: 1e-3 }));
    });
  }

  it("fuses only layers running their class's own forward", () => {
    let calls = 0;
    class CountingReLU extends nn.ReLU {
      override forward(x: Tensor): Tensor {
        calls++;
        return super.forward(x);
      }
    }
    manualSeed(5);
    const m = new nn.Sequential(new nn.Conv2d(1, 4, 3, { padding: 1 }), new CountingReLU(), new nn.MaxPool2d(2));
    m.forward(rand([1, 1, 8, 8]));
    expect(calls).toBe(1);
  });
});
