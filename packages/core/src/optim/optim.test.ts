import { describe, it, expect } from "vitest";
import { ArgumentError, Tensor, nn, optim, tensor } from "../index.js";
import { assertClose } from "../testing/index.js";

/**
 * Expected trajectories are computed here in float64 from PyTorch's published
 * update formulas (torch.optim.SGD / Adam / AdamW docs), not by calling rules.ts.
 * Gradients are fixed per step so only the update rule is under test.
 */
const P0 = [0.5, -1.2, 2.0, 0.0];
const GRADS = [
  [0.3, -0.1, 0.8, -0.5],
  [-0.2, 0.4, 0.1, 0.9],
  [0.05, 0.3, -0.6, 0.2],
];

function param(values = P0): nn.Parameter {
  return new nn.Parameter(Float32Array.from(values));
}

/** Runs `steps` optimizer steps on p with the fixed gradients; returns p after each step. */
function run(opt: { step(): void; zeroGrad(): void }, p: nn.Parameter, grads = GRADS): number[][] {
  const out: number[][] = [];
  for (const g of grads) {
    opt.zeroGrad();
    p.grad = new Tensor(Float32Array.from(g), p.shape);
    opt.step();
    out.push(Array.from(p.data));
  }
  return out;
}

interface SgdRef { lr: number; momentum?: number; dampening?: number; nesterov?: boolean; weightDecay?: number }
function sgdReference(h: SgdRef, p0 = P0, grads = GRADS): number[][] {
  const mu = h.momentum ?? 0, tau = h.dampening ?? 0, wd = h.weightDecay ?? 0;
  const p = [...p0], b = new Array(p.length).fill(0);
  const out: number[][] = [];
  grads.forEach((gt, t) => {
    for (let i = 0; i < p.length; i++) {
      let g = gt[i] + wd * p[i];
      if (mu !== 0) {
        b[i] = t === 0 ? g : mu * b[i] + (1 - tau) * g;
        g = h.nesterov ? g + mu * b[i] : b[i];
      }
      p[i] -= h.lr * g;
    }
    out.push([...p]);
  });
  return out;
}

interface AdamRef { lr: number; beta1: number; beta2: number; eps: number; weightDecay: number; decoupled: boolean }
function adamReference(h: AdamRef, p0 = P0, grads = GRADS): number[][] {
  const p = [...p0], m = new Array(p.length).fill(0), v = new Array(p.length).fill(0);
  const out: number[][] = [];
  grads.forEach((gt, k) => {
    const t = k + 1;
    for (let i = 0; i < p.length; i++) {
      let g = gt[i];
      if (h.decoupled) p[i] -= h.lr * h.weightDecay * p[i];
      else g += h.weightDecay * p[i];
      m[i] = h.beta1 * m[i] + (1 - h.beta1) * g;
      v[i] = h.beta2 * v[i] + (1 - h.beta2) * g * g;
      const mHat = m[i] / (1 - h.beta1 ** t);
      const vHat = v[i] / (1 - h.beta2 ** t);
      p[i] -= (h.lr * mHat) / (Math.sqrt(vHat) + h.eps);
    }
    out.push([...p]);
  });
  return out;
}

function expectTrajectory(actual: number[][], expected: number[][]): void {
  expect(actual).toHaveLength(expected.length);
  actual.forEach((row, t) => assertClose(row, expected[t], { atol: 1e-6, rtol: 1e-6 }));
}

describe("SGD against a hand-computed 3-step trajectory", () => {
  const cases: SgdRef[] = [
    { lr: 0.1 },
    { lr: 0.1, momentum: 0.9 },
    { lr: 0.1, momentum: 0.9, nesterov: true },
    { lr: 0.05, weightDecay: 0.1 },
    { lr: 0.1, momentum: 0.8, dampening: 0.3 },
    { lr: 0.1, momentum: 0.9, nesterov: true, weightDecay: 0.01 },
  ];
  for (const h of cases) {
    it(JSON.stringify(h), () => {
      const p = param();
      expectTrajectory(run(new optim.SGD([p], h), p), sgdReference(h));
    });
  }

  it("the first step is plain SGD even with momentum (buffer starts as the gradient)", () => {
    const p = param([1]);
    run(new optim.SGD([p], { lr: 0.5, momentum: 0.9, dampening: 0.5 }), p, [[2]]);
    expect(p.data[0]).toBeCloseTo(1 - 0.5 * 2, 7);
  });
});

describe("Adam / AdamW against a hand-computed 3-step trajectory", () => {
  const base = { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8 };
  it("Adam, defaults", () => {
    const p = param();
    expectTrajectory(run(new optim.Adam([p], { lr: 0.01 }), p), adamReference({ ...base, weightDecay: 0, decoupled: false }));
  });

  it("Adam with L2 weight decay and custom betas", () => {
    const h = { lr: 0.05, beta1: 0.8, beta2: 0.95, eps: 1e-6, weightDecay: 0.1, decoupled: false };
    const p = param();
    expectTrajectory(run(new optim.Adam([p], { lr: h.lr, betas: [0.8, 0.95], eps: 1e-6, weightDecay: 0.1 }), p), adamReference(h));
  });

  it("AdamW: decoupled decay, default weightDecay 0.01", () => {
    const p = param();
    expectTrajectory(run(new optim.AdamW([p], { lr: 0.01 }), p), adamReference({ ...base, weightDecay: 0.01, decoupled: true }));
    const q = param();
    expectTrajectory(run(new optim.AdamW([q], { lr: 0.1, weightDecay: 0.5 }), q), adamReference({ ...base, lr: 0.1, weightDecay: 0.5, decoupled: true }));
  });

  it("the first Adam step moves every coordinate by about lr (sign of the gradient)", () => {
    const p = param();
    run(new optim.Adam([p], { lr: 0.01 }), p, [GRADS[0]]);
    P0.forEach((v, i) => expect(p.data[i]).toBeCloseTo(v - 0.01 * Math.sign(GRADS[0][i]), 6));
  });
});

describe("Optimizer mechanics", () => {
  it("parameter groups keep their own hyper-parameters", () => {
    const a = param(), b = param();
    const opt = new optim.SGD([{ params: [a], lr: 0.1 }, { params: [b], lr: 0.01, momentum: 0.9 }], { lr: 1 });
    const grads = GRADS[0];
    for (let s = 0; s < 3; s++) {
      a.grad = new Tensor(Float32Array.from(grads), a.shape);
      b.grad = new Tensor(Float32Array.from(grads), b.shape);
      opt.step();
    }
    const same = [grads, grads, grads];
    expectTrajectory([Array.from(a.data)], [sgdReference({ lr: 0.1 }, P0, same)[2]]);
    expectTrajectory([Array.from(b.data)], [sgdReference({ lr: 0.01, momentum: 0.9 }, P0, same)[2]]);
    expect(opt.paramGroups.map((g) => g.hyper.lr)).toEqual([0.1, 0.01]);
    opt.setLr(0.5);
    expect(opt.paramGroups.map((g) => g.hyper.lr)).toEqual([0.5, 0.5]);
  });

  it("zeroGrad zeroes in place; step skips parameters without a gradient or frozen", () => {
    const a = param(), b = param(), c = param();
    const opt = new optim.SGD([a, b, c], { lr: 1 });
    a.grad = new Tensor(Float32Array.from(GRADS[0]), a.shape);
    c.grad = new Tensor(Float32Array.from(GRADS[0]), c.shape);
    c.requiresGrad = false;
    const g = a.grad;
    opt.step();
    expect(Array.from(b.data)).toEqual(Array.from(Float32Array.from(P0)));
    expect(Array.from(c.data)).toEqual(Array.from(Float32Array.from(P0)));
    opt.zeroGrad();
    expect(a.grad).toBe(g);
    expect(Array.from(g.data)).toEqual([0, 0, 0, 0]);
  });

  for (const kind of ["SGD", "Adam", "AdamW"] as const) {
    it(`${kind}: stateDict → JSON → loadStateDict continues bit-identically`, () => {
      const make = (p: nn.Parameter) =>
        kind === "SGD" ? new optim.SGD([p], { lr: 0.1, momentum: 0.9, nesterov: true }) : kind === "Adam" ? new optim.Adam([p], { lr: 0.01 }) : new optim.AdamW([p], { lr: 0.01 });
      const p = param();
      const opt = make(p);
      run(opt, p, GRADS.slice(0, 2));
      const saved = JSON.parse(JSON.stringify(opt.stateDict()));
      const q = param(Array.from(p.data));
      const restored = make(q);
      restored.loadStateDict(saved);
      expect(restored.stepCount).toBe(2);
      const more = [GRADS[2], GRADS[0], GRADS[1]];
      run(opt, p, more);
      run(restored, q, more);
      expect(Array.from(q.data)).toEqual(Array.from(p.data));
    });
  }

  it("loadStateDict rejects state for another optimizer or shape", () => {
    const p = param();
    const sgd = new optim.SGD([p], { lr: 0.1, momentum: 0.9 });
    run(sgd, p, GRADS.slice(0, 1));
    const adam = new optim.Adam([param()]);
    expect(() => adam.loadStateDict(sgd.stateDict())).toThrow("Adam.loadStateDict: state is for SGD");
    const sd = sgd.stateDict();
    sd.state["0"].momentumBuffer = [1, 2];
    expect(() => new optim.SGD([param()], { lr: 0.1, momentum: 0.9 }).loadStateDict(sd)).toThrow(/has 2 values, parameter has 4/);
  });

  it("invalid hyper-parameters throw before any work (NaN lr, bad betas, nesterov without momentum, no params)", () => {
    expect(() => new optim.SGD([param()], { lr: NaN })).toThrow(ArgumentError);
    expect(() => new optim.SGD([param()], { lr: NaN })).toThrow("SGD: lr must be a finite number ≥ 0, got NaN");
    expect(() => new optim.Adam([param()], { lr: NaN })).toThrow("Adam: lr must be a finite number ≥ 0, got NaN");
    expect(() => new optim.AdamW([param()], { lr: -1 })).toThrow(/^AdamW: lr/);
    expect(() => new optim.Adam([param()], { betas: [1, 0.999] })).toThrow("Adam: beta1 must be in [0, 1), got 1");
    expect(() => new optim.SGD([param()], { lr: 0.1, nesterov: true })).toThrow(/nesterov needs momentum/);
    expect(() => new optim.SGD([], { lr: 0.1 })).toThrow("SGD: no parameters given");
    const opt = new optim.SGD([param()], { lr: 0.1 });
    expect(() => opt.setLr(NaN)).toThrow(ArgumentError);
    expect(opt.paramGroups[0].hyper.lr).toBe(0.1);
  });
});

describe("LR schedules", () => {
  it("StepDecay: lr·gamma^floor(step/stepSize)", () => {
    const s = new optim.StepDecay(0.1, 10, 0.5);
    expect([0, 9, 10, 19, 20, 25].map((t) => s.lrAt(t))).toEqual([0.1, 0.1, 0.05, 0.05, 0.025, 0.025]);
    expect(() => new optim.StepDecay(0.1, 0)).toThrow(ArgumentError);
  });

  it("CosineWithWarmup: linear warm-up, cosine to minLr, then flat", () => {
    const s = new optim.CosineWithWarmup(1, 10, 110, 0.1);
    expect(s.lrAt(0)).toBeCloseTo(1 / 11, 12);
    expect(s.lrAt(9)).toBeCloseTo(10 / 11, 12);
    expect(s.lrAt(10)).toBeCloseTo(1, 12);
    expect(s.lrAt(35)).toBeCloseTo(0.1 + 0.5 * (1 + Math.cos(Math.PI / 4)) * 0.9, 12);
    expect(s.lrAt(60)).toBeCloseTo(0.55, 12);
    expect(s.lrAt(110)).toBe(0.1);
    expect(s.lrAt(500)).toBe(0.1);
    for (let t = 10; t < 110; t++) expect(s.lrAt(t + 1)).toBeLessThanOrEqual(s.lrAt(t));
    expect(() => new optim.CosineWithWarmup(1, 20, 10)).toThrow(ArgumentError);
    expect(new optim.ConstantLr(0.3).lrAt()).toBe(0.3);
  });
});

describe("clipGradNorm", () => {
  it("returns the global norm before clipping and scales every gradient to maxNorm", () => {
    const a = tensor([0, 0], { requiresGrad: true }), b = tensor([0], { requiresGrad: true }), c = tensor([1], { requiresGrad: true });
    a.grad = tensor([3, 4]);
    b.grad = tensor([12]);
    // c has no gradient: skipped.
    const norm = optim.clipGradNorm([a, b, c], 6.5);
    expect(norm).toBeCloseTo(13, 6);
    const coef = 6.5 / (13 + 1e-6);
    assertClose(a.grad, [3 * coef, 4 * coef], { atol: 1e-6 });
    assertClose(b.grad, [12 * coef], { atol: 1e-6 });
    expect(Math.hypot(...a.grad.data, ...b.grad.data)).toBeCloseTo(6.5, 5);
  });

  it("leaves gradients alone under the threshold and rejects a NaN maxNorm", () => {
    const a = tensor([0, 0], { requiresGrad: true });
    a.grad = tensor([3, 4]);
    expect(optim.clipGradNorm([a], 10)).toBeCloseTo(5, 6);
    expect(Array.from(a.grad.data)).toEqual([3, 4]);
    expect(() => optim.clipGradNorm([a], NaN)).toThrow(ArgumentError);
  });
});
