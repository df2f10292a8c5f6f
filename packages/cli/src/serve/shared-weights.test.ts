import { describe, expect, it } from "vitest";
import { GPT, Tensor, manualSeed, nn, noGrad } from "@chainrule/core";
import { bindSharedWeights, shareWeights } from "./shared-weights.js";

function cnn(seed: number): nn.Module {
  manualSeed(seed);
  return new nn.Sequential(new nn.Conv2d(1, 2, 3), new nn.BatchNorm2d(2), new nn.ReLU(), new nn.Flatten(), new nn.Linear(2 * 4 * 4, 3)).eval();
}

describe("shared weights", () => {
  it("a model bound to another's shared weights computes the same outputs over the same bytes", () => {
    const loaded = cnn(1);
    const bn = loaded.namedBuffers()[0][1];
    bn.data.fill(0.25); // a running statistic that differs from a fresh model's
    const x = new Tensor(Float32Array.from({ length: 2 * 36 }, (_, i) => Math.sin(i)), [2, 1, 6, 6]);
    const expected = noGrad(() => loaded.forward(x)).data.slice();
    const shared = shareWeights(loaded);
    const attached = cnn(2); // other initial values, replaced by the binding
    bindSharedWeights(attached, shared);
    for (const t of [...loaded.parameters(), ...attached.parameters(), ...attached.namedBuffers().map(([, b]) => b)]) expect(t.data.buffer).toBe(shared.buffer);
    expect(Array.from(noGrad(() => loaded.forward(x)).data)).toEqual(Array.from(expected));
    expect(Array.from(noGrad(() => attached.forward(x)).data)).toEqual(Array.from(expected));
    expect(shared.buffer.byteLength).toBe(4 * Object.values(loaded.stateDict()).reduce((n, t) => n + t.size, 0));
  });

  it("a tied weight is held once", () => {
    manualSeed(0);
    const gpt = new GPT({ vocabSize: 11, blockSize: 8, nLayer: 1, nHead: 2, nEmbd: 8, tieWeights: true });
    const shared = shareWeights(gpt);
    expect(shared.buffer.byteLength).toBe(4 * (gpt.numParameters() + gpt.namedBuffers().reduce((n, [, b]) => n + b.size, 0)));
    const other = new GPT({ vocabSize: 11, blockSize: 8, nLayer: 1, nHead: 2, nEmbd: 8, tieWeights: true });
    bindSharedWeights(other, shared);
    const idx = Int32Array.from([1, 2, 3]);
    expect(Array.from(noGrad(() => other.forward(idx, [1, 3])).data)).toEqual(Array.from(noGrad(() => gpt.forward(idx, [1, 3])).data));
  });

  it("refuses a model of another shape, naming the tensor", () => {
    const shared = shareWeights(new nn.Linear(4, 3));
    expect(() => bindSharedWeights(new nn.Linear(4, 2), shared)).toThrow(/^shared weights: weight has shape \[2, 4\] in the model, \[3, 4\] shared$/);
    expect(() => bindSharedWeights(new nn.Sequential(new nn.Linear(4, 3)), shared)).toThrow(/^shared weights: the model has no tensor weight$/);
  });
});
