import { describe, it, expect } from "vitest";
import { ArgumentError, F, ShapeError, Tensor, manualSeed, nn, noGrad, optim, randn, tensor, zeros } from "../index.js";
import { assertClose, gradcheck } from "../testing/index.js";

class Block extends nn.Module {
  norm = new nn.LayerNorm(4);
  mlp = new nn.Sequential(new nn.Linear(4, 8), new nn.GELU(), new nn.Dropout(0.5), new nn.Linear(8, 4));
  forward(x: Tensor): Tensor {
    return this.mlp.forward(this.norm.forward(x)).add(x);
  }
}

class Net extends nn.Module {
  embed = new nn.Embedding(10, 4);
  blocks = new nn.ModuleList([new Block(), new Block()]);
  head = new nn.Linear(4, 3, { bias: false });
  forward(idx: Tensor): Tensor {
    let x = this.embed.forward(idx); // (N, 4)
    for (const b of this.blocks) x = b.forward(x);
    return this.head.forward(x); // (N, 3)
  }
}

describe("Module", () => {
  it("names parameters like PyTorch, in registration order", () => {
    const seq = new nn.Sequential(new nn.Linear(2, 3), new nn.ReLU(), new nn.Linear(3, 1));
    expect(seq.namedParameters().map(([n]) => n)).toEqual(["0.weight", "0.bias", "2.weight", "2.bias"]);
    const net = new Net();
    const names = net.namedParameters().map(([n]) => n);
    expect(names).toEqual([
      "embed.weight",
      "blocks.0.norm.weight", "blocks.0.norm.bias", "blocks.0.mlp.0.weight", "blocks.0.mlp.0.bias", "blocks.0.mlp.3.weight", "blocks.0.mlp.3.bias",
      "blocks.1.norm.weight", "blocks.1.norm.bias", "blocks.1.mlp.0.weight", "blocks.1.mlp.0.bias", "blocks.1.mlp.3.weight", "blocks.1.mlp.3.bias",
      "head.weight",
    ]);
    expect(net.parameters()).toHaveLength(14);
    expect(net.numParameters()).toBe(40 + 2 * (4 + 4 + 32 + 8 + 32 + 4) + 12);
    expect(seq.children()).toHaveLength(3);
  });

  it("lists a tied parameter once", () => {
    const a = new nn.Linear(3, 3);
    const b = new nn.Linear(3, 3);
    b.weight = a.weight;
    const seq = new nn.Sequential(a, b);
    expect(seq.namedParameters().map(([n]) => n)).toEqual(["0.weight", "0.bias", "1.bias"]);
  });

  it("train() / eval() reach every submodule, and Dropout obeys them", () => {
    manualSeed(1);
    const net = new Net();
    net.eval();
    for (const [, m] of net.namedModules()) expect(m.training).toBe(false);
    const idx = tensor([1, 2, 3]);
    const a = net.forward(idx), b = net.forward(idx);
    expect(Array.from(a.data)).toEqual(Array.from(b.data)); // dropout off
    net.train();
    for (const [, m] of net.namedModules()) expect(m.training).toBe(true);
    expect(Array.from(net.forward(idx).data)).not.toEqual(Array.from(a.data));
  });

  it("stateDict / loadStateDict round trip copies values into the same storage", () => {
    manualSeed(2);
    const src = new Net(), dst = new Net();
    const before = dst.head.weight.data;
    const report = dst.loadStateDict(src.stateDict());
    expect(report).toEqual({ missingKeys: [], unexpectedKeys: [] });
    expect(dst.head.weight.data).toBe(before);
    for (const [k, t] of Object.entries(src.stateDict())) expect(Array.from(dst.stateDict()[k].data)).toEqual(Array.from(t.data));
    // Plain {data, shape} objects (e.g. parsed from JSON) work too.
    const plain = Object.fromEntries(Object.entries(src.stateDict()).map(([k, t]) => [k, { data: Array.from(t.data), shape: t.shape }]));
    expect(new Net().loadStateDict(plain)).toEqual({ missingKeys: [], unexpectedKeys: [] });
  });

  it("strict loading throws naming missing and unexpected keys; non-strict reports them", () => {
    const net = new nn.Sequential(new nn.Linear(2, 2));
    const sd = { "0.weight": zeros([2, 2]), "0.extra": zeros([1]) };
    expect(() => net.loadStateDict(sd)).toThrow(ArgumentError);
    expect(() => net.loadStateDict(sd)).toThrow("loadStateDict: missing keys [0.bias], unexpected keys [0.extra]");
    const report = net.loadStateDict(sd, { strict: false });
    expect(report).toEqual({ missingKeys: ["0.bias"], unexpectedKeys: ["0.extra"] });
    expect(Array.from((net.children()[0] as nn.Linear).weight.data)).toEqual([0, 0, 0, 0]);
  });

  it("a shape mismatch throws naming the key, before anything is copied", () => {
    const net = new nn.Sequential(new nn.Linear(2, 2));
    const w = Array.from(net.parameters()[0].data);
    const f = () => net.loadStateDict({ "0.weight": zeros([2, 2]), "0.bias": zeros([3]) }, { strict: false });
    expect(f).toThrow(ShapeError);
    expect(f).toThrow("loadStateDict: key '0.bias' has shape [3] in the state dict but [2] in the model");
    expect(Array.from(net.parameters()[0].data)).toEqual(w);
  });
});

describe("layers", () => {
  it("Linear uses PyTorch's default init: weight and bias uniform in ±1/sqrt(in)", () => {
    manualSeed(3);
    const l = new nn.Linear(64, 256);
    const bound = 1 / Math.sqrt(64);
    for (const p of [l.weight, l.bias!]) {
      const max = Math.max(...p.data.map(Math.abs));
      expect(max).toBeLessThanOrEqual(bound);
      expect(max).toBeGreaterThan(0.95 * bound); // the range is used, not a narrower one
    }
    const m = l.weight.data.reduce((a, b) => a + b, 0) / l.weight.size;
    const v = l.weight.data.reduce((a, b) => a + (b - m) ** 2, 0) / l.weight.size;
    expect(Math.abs(v - bound ** 2 / 3)).toBeLessThan(0.05 * bound ** 2); // variance of U(-b, b) is b²/3
    expect(l.weight.shape).toEqual([256, 64]);
    expect(new nn.Linear(3, 2, { bias: false }).bias).toBeNull();
    expect(() => new nn.Linear(0, 2)).toThrow("Linear: inFeatures must be a positive integer, got 0");
  });

  it("Linear forward is F.linear and gradchecks through the module", () => {
    manualSeed(4);
    const l = new nn.Linear(3, 2);
    const x = randn([5, 3], { requiresGrad: true });
    assertClose(l.forward(x), F.linear(x, l.weight, l.bias));
    gradcheck((xx, w, b) => F.linear(xx, w, b), [x, l.weight, l.bias!]);
  });

  it("activations, Flatten, Embedding, LayerNorm and Dropout modules", () => {
    manualSeed(5);
    const x = randn([2, 3, 4]);
    assertClose(new nn.ReLU().forward(x), x.relu());
    assertClose(new nn.Sigmoid().forward(x), x.sigmoid());
    assertClose(new nn.Tanh().forward(x), x.tanh());
    assertClose(new nn.GELU().forward(x), x.gelu());
    assertClose(new nn.GELU("tanh").forward(x), F.gelu(x, { approximate: "tanh" }));
    expect(new nn.Flatten().forward(x).shape).toEqual([2, 12]);
    const emb = new nn.Embedding(5, 3);
    expect(emb.forward(new Int32Array([4, 0])).shape).toEqual([2, 3]);
    const ln = new nn.LayerNorm(4);
    expect(Array.from(ln.weight!.data)).toEqual([1, 1, 1, 1]);
    expect(Array.from(ln.bias!.data)).toEqual([0, 0, 0, 0]);
    assertClose(ln.forward(x), F.layerNorm(x, [4]));
    expect(new nn.LayerNorm(4, 1e-5, { elementwiseAffine: false }).parameters()).toHaveLength(0);
    const d = new nn.Dropout(0.5).eval();
    expect(d.forward(x)).toBe(x);
    expect(() => new nn.Dropout(2)).toThrow(ArgumentError);
  });
});

describe("flattenParameters", () => {
  it("packs all parameters into one shared buffer; each parameter is a view", () => {
    manualSeed(6);
    const model = new nn.Sequential(new nn.Linear(3, 4), new nn.ReLU(), new nn.Linear(4, 2));
    const values = model.parameters().map((p) => Array.from(p.data));
    const flat = nn.flattenParameters(model, { shared: true });
    expect(flat.data.buffer).toBeInstanceOf(SharedArrayBuffer);
    expect(flat.grad.buffer).toBeInstanceOf(SharedArrayBuffer);
    expect(flat.data.length).toBe(model.numParameters());
    expect(flat.layout.map((e) => [e.name, e.offset, e.size])).toEqual([["0.weight", 0, 12], ["0.bias", 12, 4], ["2.weight", 16, 8], ["2.bias", 24, 2]]);
    model.parameters().forEach((p, i) => {
      expect(p.data.buffer).toBe(flat.data.buffer);
      expect(p.grad!.data.buffer).toBe(flat.grad.buffer);
      expect(Array.from(p.data)).toEqual(values[i]); // values copied in
      expect(p.isShared).toBe(true);
    });
    flat.data[12] = 42;
    expect((model.children()[0] as nn.Linear).bias!.data[0]).toBe(42);
  });

  it("gradients accumulate into the flat grad buffer, and training still works", () => {
    manualSeed(7);
    const model = new nn.Sequential(new nn.Linear(2, 8), new nn.Tanh(), new nn.Linear(8, 1));
    const flat = nn.flattenParameters(model, { shared: true });
    const x = randn([32, 2]);
    const y = x.sum(1, { keepDims: true }).mul(0.5); // (32, 1)
    const opt = new optim.SGD(model.parameters(), { lr: 0.1 });
    const first = F.mseLoss(model.forward(x), y);
    first.backward();
    const norm1 = Math.hypot(...flat.grad);
    expect(norm1).toBeGreaterThan(0);
    F.mseLoss(model.forward(x), y).backward(); // same graph again: grads double in place
    expect(Math.hypot(...flat.grad)).toBeCloseTo(2 * norm1, 4);
    opt.zeroGrad();
    expect(flat.grad.every((g) => g === 0)).toBe(true);
    let loss = first.item();
    for (let i = 0; i < 100; i++) {
      opt.zeroGrad();
      const l = F.mseLoss(model.forward(x), y);
      l.backward();
      opt.step();
      loss = l.item();
    }
    expect(loss).toBeLessThan(first.item() * 0.1);
    // The optimizer wrote through the views into the flat buffer.
    expect(Array.from(model.parameters()[0].data)).toEqual(Array.from(flat.data.subarray(0, 16)));
  });

  it("binds to existing buffers without copying, and checks their size", () => {
    const model = new nn.Linear(2, 2);
    const data = new Float32Array(new SharedArrayBuffer(6 * 4)).fill(3);
    const grad = new Float32Array(new SharedArrayBuffer(6 * 4));
    nn.flattenParameters(model, { dataBuffer: data, gradBuffer: grad });
    expect(Array.from(model.weight.data)).toEqual([3, 3, 3, 3]);
    expect(() => nn.flattenParameters(new nn.Linear(2, 3), { dataBuffer: data, gradBuffer: grad })).toThrow(
      "flattenParameters: model has 9 parameters but the buffers hold 6 (values) and 6 (gradients)",
    );
  });
});

describe("freeze", () => {
  it("stops gradients and updates for matching parameters only", () => {
    manualSeed(8);
    const model = new nn.Sequential(new nn.Linear(2, 2), new nn.Linear(2, 1));
    expect(nn.freeze(model, /^0\./)).toEqual(["0.weight", "0.bias"]);
    const frozen = Array.from(model.parameters()[0].data);
    const opt = new optim.SGD(model.parameters(), { lr: 0.5 });
    F.mseLoss(model.forward(randn([4, 2])), zeros([4, 1]).add(1)).backward();
    expect(model.parameters()[0].grad).toBeNull();
    expect(model.parameters()[2].grad).not.toBeNull();
    opt.step();
    expect(Array.from(model.parameters()[0].data)).toEqual(frozen);
    model.requiresGrad_(true);
    expect(model.parameters().every((p) => p.requiresGrad)).toBe(true);
  });

  it("noGrad inference through a module records nothing", () => {
    const model = new nn.Linear(2, 2);
    const out = noGrad(() => model.forward(randn([1, 2])));
    expect(out.gradFn).toBeNull();
  });
});
