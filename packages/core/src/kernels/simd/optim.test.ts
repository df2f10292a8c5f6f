import { afterAll, beforeEach, describe, expect, it } from "vitest";
import { F, manualSeed, nn, optim, rand, setSimdEnabled, simdAvailable } from "../../index.js";
import { arenaMemory, registerMemory, sharedMemory } from "./optim.js";

const { adamUpdate } = optim;

function fill(a: Float32Array, seed: number, scale = 1): void {
  let s = seed;
  for (let i = 0; i < a.length; i++) {
    s = (s * 1103515245 + 12345) % 2147483648;
    a[i] = ((s / 2147483648) * 2 - 1) * scale;
  }
}

describe("WebAssembly SIMD Adam (simd/optim.ts)", () => {
  // These tests compare the kernel with the JS loop, so they turn the kernels on even under CHAINRULE_SIMD=0.
  beforeEach(() => setSimdEnabled(true));
  afterAll(() => setSimdEnabled(process.env.CHAINRULE_SIMD !== "0"));

  it("are available on this Node and can be turned off", () => {
    expect(simdAvailable()).toBe(true);
    setSimdEnabled(false);
    expect(simdAvailable()).toBe(false);
    expect(arenaMemory(1024)).toBeNull();
  });

  for (const shared of [false, true]) {
    for (const [name, h] of [
      ["Adam", { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, decoupled: false }],
      ["Adam + L2", { lr: 0.01, beta1: 0.8, beta2: 0.99, eps: 1e-6, weightDecay: 0.05, decoupled: false }],
      ["AdamW", { lr: 0.003, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, decoupled: true }],
    ] as const) {
      it(`${name} in place on a ${shared ? "shared" : "plain"} memory is bit-identical to the JS loop (odd ranges, 30 steps)`, () => {
        const n = 1001;
        const mem = shared ? sharedMemory(4 * 4 * n + 64) : arenaMemory(4 * 4 * n + 64)!;
        if (shared) registerMemory(mem);
        const [p, g, m, v] = [0, 1, 2, 3].map((k) => new Float32Array(mem.buffer, 4 + k * 4 * n, n)); // unaligned on purpose
        const [p2, g2, m2, v2] = [0, 1, 2, 3].map(() => new Float32Array(n));
        fill(p, 1);
        p2.set(p);
        for (let step = 1; step <= 30; step++) {
          fill(g, step + 7, 1 / step);
          g2.set(g);
          adamUpdate(p, g, m, v, 3, n, h, step); // kernel (quads) + the last elements in JS
          adamUpdate(p2, g2, m2, v2, 3, n, h, step); // plain arrays: the JS loop
        }
        expect(Buffer.from(p.buffer, p.byteOffset, p.byteLength).equals(Buffer.from(p2.buffer))).toBe(true);
        expect(Buffer.from(m.buffer, m.byteOffset, m.byteLength).equals(Buffer.from(m2.buffer))).toBe(true);
        expect(Buffer.from(v.buffer, v.byteOffset, v.byteLength).equals(Buffer.from(v2.buffer))).toBe(true);
      });
    }
  }

  it("flattenParameters packs into the arena; Adam's state lives there; a second optimizer takes it over without corrupting the first", () => {
    const make = () => {
      manualSeed(3);
      return new nn.Sequential(new nn.Linear(7, 5), new nn.ReLU(), new nn.Linear(5, 3));
    };
    const run = (m: nn.Module, opt: optim.Optimizer<any>, steps: number) => {
      manualSeed(4);
      const x = rand([8, 7]);
      const y = new Int32Array([0, 1, 2, 0, 1, 2, 0, 1]);
      for (let s = 0; s < steps; s++) {
        opt.zeroGrad();
        F.crossEntropy(m.forward(x), y).backward();
        opt.step();
      }
    };
    setSimdEnabled(false);
    const off = nn.flattenParameters(make());
    expect(off.data.buffer).not.toBe(off.grad.buffer); // SIMD off: plain buffers
    setSimdEnabled(true);
    const a = make(), b = make();
    const fa = nn.flattenParameters(a);
    expect(fa.data.buffer).toBe(fa.grad.buffer); // one WebAssembly.Memory
    // b's twin on plain buffers (given, so no arena): its Adam runs the JS loop, its forward and backward the same kernels as a's
    const total = fa.data.length;
    const fb = nn.flattenParameters(b, { dataBuffer: new Float32Array(total), gradBuffer: new Float32Array(total), copyValues: true });
    const oa = new optim.AdamW(a.parameters(), { lr: 0.01 });
    run(a, oa, 3);
    expect((oa as any).state.get(a.parameters()[0]).expAvg.buffer).toBe(fa.data.buffer);
    // A second optimizer on the same parameters claims the state regions; the first keeps a copy.
    const other = new optim.Adam(a.parameters(), { lr: 0.5 });
    run(a, other, 1);
    const ob = new optim.AdamW(b.parameters(), { lr: 0.01 });
    run(b, ob, 3);
    const other2 = new optim.Adam(b.parameters(), { lr: 0.5 });
    run(b, other2, 1);
    run(a, oa, 4);
    run(b, ob, 4);
    expect(Array.from(fa.data)).toEqual(Array.from(fb.data));
    expect(oa.stateDict()).toEqual(ob.stateDict());
  });
});

describe("sharedMemory", () => {
  it("refuses more than WebAssembly's 4 GiB with the size asked for", () => {
    expect(() => sharedMemory(5 * 2 ** 30)).toThrow(/sharedMemory: 5\.00 GiB requested, above WebAssembly's 4 GiB per memory/);
    expect(sharedMemory(100).buffer.byteLength).toBe(65536);
  });
});
