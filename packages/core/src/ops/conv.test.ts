import { afterEach, describe, expect, it } from "vitest";
import { Generator, ShapeError, ArgumentError, Tensor, conv2d, maxPool2d, avgPool2d, adaptiveAvgPool2d, batchNorm2d, setSimdEnabled, simdAvailable, simdEnabled, type Conv2dOptions } from "../index.js";
import { gradcheck, assertClose } from "../testing/index.js";
import { type BatchNorm2dOptions, type BatchNormSync, type Conv2dLayout, batchNorm2dMaxPoolRelu, conv2dMaxPoolRelu, getConv2dLayout, setConv2dLayout } from "./conv.js";
import { relu } from "./elementwise.js";
import { createMnistCnn } from "../models/cnn.js";
import { Sequential } from "../nn/layers.js";

const gen = new Generator(7);
function randT(shape: number[], requiresGrad = true, scale = 1): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const d = new Float32Array(n);
  for (let i = 0; i < n; i++) d[i] = (gen.random() * 2 - 1) * scale;
  return new Tensor(d, shape, requiresGrad);
}

/** Direct convolution in float64, straight from the definition (PyTorch's cross-correlation). */
function naiveConv2d(x: Tensor, w: Tensor, b: Tensor | null, s: [number, number], p: [number, number], d: [number, number], groups: number): { data: Float64Array; shape: number[] } {
  const [N, C, H, W] = x.shape;
  const [O, Cg, kh, kw] = w.shape;
  const OH = Math.floor((H + 2 * p[0] - d[0] * (kh - 1) - 1) / s[0]) + 1;
  const OW = Math.floor((W + 2 * p[1] - d[1] * (kw - 1) - 1) / s[1]) + 1;
  const Og = O / groups;
  const out = new Float64Array(N * O * OH * OW);
  for (let n = 0; n < N; n++) for (let o = 0; o < O; o++) {
    const g = Math.floor(o / Og);
    for (let oh = 0; oh < OH; oh++) for (let ow = 0; ow < OW; ow++) {
      let acc = b ? b.data[o] : 0;
      for (let c = 0; c < Cg; c++) for (let i = 0; i < kh; i++) for (let j = 0; j < kw; j++) {
        const ih = oh * s[0] - p[0] + i * d[0], iw = ow * s[1] - p[1] + j * d[1];
        if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
        acc += x.data[((n * C + g * Cg + c) * H + ih) * W + iw] * w.data[((o * Cg + c) * kh + i) * kw + j];
      }
      out[((n * O + o) * OH + oh) * OW + ow] = acc;
    }
  }
  return { data: out, shape: [N, O, OH, OW] };
}

interface ConvCase {
  name: string;
  x: number[];
  w: number[];
  bias: boolean;
  stride: [number, number];
  padding: [number, number];
  dilation: [number, number];
  groups: number;
}

const cases: ConvCase[] = [
  { name: "3x3 pad 1 with bias", x: [2, 3, 6, 5], w: [4, 3, 3, 3], bias: true, stride: [1, 1], padding: [1, 1], dilation: [1, 1], groups: 1 },
  { name: "stride 2, uneven padding", x: [2, 2, 7, 6], w: [3, 2, 3, 2], bias: true, stride: [2, 2], padding: [1, 0], dilation: [1, 1], groups: 1 },
  { name: "stride (1,3)", x: [1, 2, 5, 9], w: [2, 2, 2, 3], bias: false, stride: [1, 3], padding: [0, 1], dilation: [1, 1], groups: 1 },
  { name: "dilation 2", x: [2, 2, 7, 7], w: [3, 2, 3, 3], bias: true, stride: [1, 1], padding: [2, 1], dilation: [2, 2], groups: 1 },
  { name: "groups 2", x: [2, 4, 5, 5], w: [6, 2, 3, 3], bias: true, stride: [1, 1], padding: [1, 1], dilation: [1, 1], groups: 2 },
  { name: "depthwise (groups = C)", x: [2, 3, 5, 4], w: [3, 1, 3, 3], bias: false, stride: [2, 1], padding: [1, 1], dilation: [1, 1], groups: 3 },
  { name: "1x1 pointwise", x: [3, 4, 3, 3], w: [5, 4, 1, 1], bias: true, stride: [1, 1], padding: [0, 0], dilation: [1, 1], groups: 1 },
  { name: "1x1 pointwise grouped", x: [2, 4, 3, 2], w: [6, 2, 1, 1], bias: false, stride: [1, 1], padding: [0, 0], dilation: [1, 1], groups: 2 },
  { name: "kernel bigger than stride, everything", x: [2, 4, 8, 7], w: [4, 2, 3, 2], bias: true, stride: [2, 3], padding: [1, 1], dilation: [2, 1], groups: 2 },
];

const layouts: Conv2dLayout[] = ["shifted", "perImage", "batched"]; // "shifted" falls back to perImage for stride > 1
const defaultLayout = getConv2dLayout();
afterEach(() => setConv2dLayout(defaultLayout));

describe("conv2d", () => {
  for (const layout of layouts) {
    for (const c of cases) {
      it(`${layout}: ${c.name}: forward matches a direct convolution, gradients match central differences`, () => {
        setConv2dLayout(layout);
        const x = randT(c.x), w = randT(c.w), b = c.bias ? randT([c.w[0]]) : null;
        const opts = { stride: c.stride, padding: c.padding, dilation: c.dilation, groups: c.groups };
        const y = conv2d(x, w, b, opts);
        const ref = naiveConv2d(x, w, b, c.stride, c.padding, c.dilation, c.groups);
        expect(y.shape).toEqual(ref.shape);
        assertClose(y.data, ref.data, { atol: 1e-5, rtol: 1e-5 });
        const inputs = b ? [x, w, b] : [x, w];
        gradcheck((...t) => conv2d(t[0], t[1], t[2] ?? null, opts), inputs);
      });
    }
  }

  it("layouts agree on a CNN-sized layer, forward and backward", () => {
    const x = randT([4, 8, 12, 12]), w = randT([16, 8, 3, 3]), b = randT([16]);
    const g = randT([4, 16, 12, 12], false);
    const run = (layout: Conv2dLayout) => {
      setConv2dLayout(layout);
      x.grad = w.grad = b.grad = null;
      const y = conv2d(x, w, b, { padding: 1 });
      y.backward(g);
      return [y.data, x.grad!.data, w.grad!.data, b.grad!.data];
    };
    const a = run("perImage");
    for (const other of ["batched", "shifted", "auto"] as const) {
      const c = run(other);
      for (let i = 0; i < a.length; i++) assertClose(a[i], c[i], { atol: 1e-4, rtol: 1e-4 });
    }
  });

  it("skips the input gradient when the input needs none (first layer)", () => {
    const x = randT([2, 1, 5, 5], false), w = randT([3, 1, 3, 3]);
    const y = conv2d(x, w, null, { padding: 1 });
    y.backward(new Float32Array(y.size).fill(1));
    expect(x.grad).toBeNull();
    expect(w.grad).not.toBeNull();
  });

  it("padding 'same' and 'valid'", () => {
    const x = randT([1, 2, 6, 6], false), w = randT([2, 2, 5, 5], false);
    expect(conv2d(x, w, null, { padding: "same" }).shape).toEqual([1, 2, 6, 6]);
    expect(conv2d(x, w, null, { padding: "valid" }).shape).toEqual([1, 2, 2, 2]);
    assertClose(conv2d(x, w, null, { padding: "same" }), conv2d(x, w, null, { padding: 2 }));
    expect(() => conv2d(x, randT([2, 2, 2, 2], false), null, { padding: "same" })).toThrow(/asymmetric/);
  });

  it("propagates NaN", () => {
    const x = randT([1, 1, 4, 4], false);
    x.data[5] = NaN;
    const y = conv2d(x, randT([1, 1, 3, 3], false), null, { padding: 1 });
    expect(Number.isNaN(y.data[0])).toBe(true); // window of (0,0) covers (1,1)
    expect(Number.isNaN(y.data[15])).toBe(false); // window of (3,3) does not
  });

  it("names the op and the shapes on bad input", () => {
    const x = randT([2, 3, 5, 5], false);
    expect(() => conv2d(x, randT([4, 2, 3, 3], false))).toThrow(ShapeError);
    expect(() => conv2d(x, randT([4, 2, 3, 3], false))).toThrow("conv2d: input [2,3,5,5] x weight [4,2,3,3]: weight expects 2 input channels (2 per group x 1 groups), input has 3");
    expect(() => conv2d(randT([3, 5, 5], false), randT([4, 3, 3, 3], false))).toThrow("conv2d: input must be 4-D (N, C, H, W), got [3,5,5]");
    expect(() => conv2d(x, randT([4, 3, 3, 3], false), randT([3], false))).toThrow("conv2d: bias [3] must be [4]");
    expect(() => conv2d(x, randT([4, 3, 7, 7], false))).toThrow(/conv2d: input height 5 with padding 0 is smaller than the kernel size 7/);
    expect(() => conv2d(x, randT([4, 1, 3, 3], false), null, { groups: 2 })).toThrow(/divisible by groups 2/);
    expect(() => conv2d(x, randT([4, 3, 3, 3], false), null, { stride: 0 })).toThrow(ArgumentError);
    expect(() => conv2d(x, randT([4, 3, 3, 3], false), null, { padding: -1 })).toThrow("conv2d: padding must be a non-negative integer");
  });
});

describe("conv2dMaxPoolRelu", () => {
  const composed = (x: Tensor, w: Tensor, b: Tensor | null, opts: Conv2dOptions) => relu(maxPool2d(conv2d(x, w, b, opts), 2));
  /** Output and the gradients of every input for the output gradient g. */
  const run = (f: typeof composed, x: Tensor, w: Tensor, b: Tensor | null, opts: Conv2dOptions, g: Float32Array) => {
    for (const t of [x, w, b]) if (t) t.grad = null;
    const y = f(x, w, b, opts);
    y.backward(g);
    return { y, grads: [x, w, b].filter((t) => t !== null).map((t) => t!.grad!.data) };
  };
  const shapes = [
    { name: "1 input channel (im2col path), bias", x: [3, 1, 8, 8], w: [4, 1, 3, 3], bias: true, opts: { padding: 1 } },
    { name: "8 channels (shifted path), bias", x: [2, 8, 6, 6], w: [5, 8, 3, 3], bias: true, opts: { padding: 1 } },
    { name: "odd output size (last row and column dropped), no bias", x: [2, 8, 7, 5], w: [3, 8, 3, 3], bias: false, opts: { padding: 1 } },
    { name: "no padding, dilation 2", x: [2, 3, 9, 8], w: [4, 3, 2, 3], bias: true, opts: { padding: 0, dilation: 2 } },
    { name: "stride 2 (composition)", x: [2, 2, 9, 9], w: [3, 2, 3, 3], bias: true, opts: { padding: 1, stride: 2 } },
    { name: "groups 2 (composition)", x: [2, 4, 6, 6], w: [4, 2, 3, 3], bias: true, opts: { padding: 1, groups: 2 } },
  ];
  for (const layout of ["auto", "shifted", "perImage", "batched"] as const) {
    for (const c of shapes) {
      it(`${layout}: ${c.name}: same output and gradients as relu(maxPool2d(conv2d))`, () => {
        setConv2dLayout(layout);
        const x = randT(c.x), w = randT(c.w), b = c.bias ? randT([c.w[0]]) : null;
        const ref = composed(x, w, b, c.opts);
        const g = randT(ref.shape, false).data;
        const a = run(conv2dMaxPoolRelu, x, w, b, c.opts, g), e = run(composed, x, w, b, c.opts, g);
        expect(a.y.shape).toEqual(e.y.shape);
        assertClose(a.y.data, e.y.data, { atol: 1e-5, rtol: 1e-5 });
        for (let i = 0; i < e.grads.length; i++) assertClose(a.grads[i], e.grads[i], { atol: 1e-5, rtol: 1e-5 });
      });
    }
  }

  for (const layout of ["shifted", "perImage"] as const) {
    it(`${layout}: gradcheck`, () => {
      setConv2dLayout(layout);
      // Small, from a fixed seed: few windows, none of whose top two values (or max and 0) lie within a step.
      const local = new Generator(11);
      const r = (shape: number[]) => new Tensor(Float32Array.from({ length: shape.reduce((a, v) => a * v, 1) }, () => local.random() * 2 - 1), shape, true);
      const x = r([2, 3, 4, 4]), w = r([4, 3, 3, 3]), b = r([4]);
      gradcheck((a, ww, bb) => conv2dMaxPoolRelu(a, ww, bb, { padding: 1 }), [x, w, b], { eps: 1e-3, atol: 3e-3 });
    });
  }

  it("gradient only through positive maxima; NaN propagates like the composition", () => {
    const x = randT([1, 1, 4, 4]);
    x.data[0] = NaN; // the top-left pooled cell of a 1x1 identity conv
    const w = new Tensor(new Float32Array([1]), [1, 1, 1, 1], true);
    const b = new Tensor(new Float32Array([-0.25]), [1], true);
    const y = conv2dMaxPoolRelu(x, w, b);
    const e = composed(x, w, b, {});
    expect(Array.from(y.data)).toEqual(Array.from(e.data));
    expect(Number.isNaN(y.data[0])).toBe(true);
    y.backward(new Float32Array(y.size).fill(1));
    let passed = 0;
    for (let i = 1; i < 4; i++) if (y.data[i] > 0) passed++;
    expect(b.grad!.data[0]).toBe(passed); // one per positive pooled value
  });

  it("scratch buffers: two forward passes before one backward, and a retained graph backward twice", () => {
    for (const layout of ["shifted", "perImage"] as const) {
      setConv2dLayout(layout);
      const x1 = randT([2, 8, 6, 6]), x2 = randT([2, 8, 6, 6]), w = randT([4, 8, 3, 3]), b = randT([4]);
      const g = randT([2, 4, 3, 3], false).data;
      const ref = run(composed, x1, w, b, { padding: 1 }, g).grads;
      for (const t of [x1, w, b]) t.grad = null;
      const y1 = conv2dMaxPoolRelu(x1, w, b, { padding: 1 });
      conv2dMaxPoolRelu(x2, w, b, { padding: 1 }).backward(g); // overwrites the scratches after y1's forward
      w.grad = b.grad = null;
      y1.backward(g, { retainGraph: true });
      for (const [i, t] of [x1, w, b].entries()) assertClose(t.grad!.data, ref[i], { atol: 1e-5, rtol: 1e-5 });
      y1.backward(g);
      for (const [i, t] of [x1, w, b].entries()) assertClose(t.grad!.data, ref[i].map((v) => 2 * v), { atol: 1e-5, rtol: 1e-5 });
    }
  });

  it("the CNN runs its conv blocks fused: same logits and gradients as layer by layer", () => {
    const model = createMnistCnn({ channels: [8, 16], hidden: 16 });
    const x = randT([3, 1, 28, 28], false);
    const g = randT([3, 10], false).data;
    const grads = (forward: (t: Tensor) => Tensor) => {
      for (const p of model.parameters()) p.grad = null;
      const y = forward(x);
      y.backward(g);
      return [y.data, ...model.parameters().map((p) => p.grad!.data)];
    };
    const fused = grads((t) => model.forward(t));
    const plain = grads((t) => Sequential.prototype.forward.call(model, t));
    for (let i = 0; i < plain.length; i++) assertClose(fused[i], plain[i], { atol: 1e-5, rtol: 1e-4 });
  });
});

/** Distinct values (gaps of 0.05) so a gradcheck step never changes which element is the max. */
function distinctT(shape: number[]): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const perm = gen.permutation(n);
  const d = new Float32Array(n);
  for (let i = 0; i < n; i++) d[i] = (perm[i] - n / 2) * 0.05;
  return new Tensor(d, shape, true);
}

describe("maxPool2d", () => {
  it("forward against hand values; backward routes the gradient to the maxima", () => {
    const x = new Tensor(new Float32Array([1, 5, 2, 0, 3, 4, 8, 1, 0, 0, 1, 1, -1, 9, 2, 7]), [1, 1, 4, 4], true);
    const y = maxPool2d(x, 2);
    expect(Array.from(y.data)).toEqual([5, 8, 9, 7]);
    y.backward(new Float32Array([1, 2, 3, 4]));
    expect(Array.from(x.grad!.data)).toEqual([0, 1, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 3, 0, 4]);
  });

  for (const [name, k, o] of [
    ["2x2", 2, {}],
    ["3x3 stride 2 padding 1", 3, { stride: 2, padding: 1 }],
    ["(2,3) stride (1,2)", [2, 3], { stride: [1, 2] }],
    ["dilation 2", 2, { dilation: 2 }],
  ] as const) {
    it(`gradcheck: ${name}`, () => {
      const x = distinctT([2, 3, 7, 6]);
      gradcheck((t) => maxPool2d(t, k as any, o as any), [x], { eps: 1e-3 });
    });
  }

  it("overlapping windows sum their gradients", () => {
    const x = new Tensor(new Float32Array([0, 0, 0, 0, 9, 0, 0, 0, 0]), [1, 1, 3, 3], true);
    const y = maxPool2d(x, 2, { stride: 1 });
    expect(Array.from(y.data)).toEqual([9, 9, 9, 9]);
    y.backward(new Float32Array([1, 1, 1, 1]));
    expect(x.grad!.data[4]).toBe(4);
  });

  it("propagates NaN and names the op on bad input", () => {
    const x = new Tensor(new Float32Array([1, NaN, 2, 3]), [1, 1, 2, 2]);
    expect(Number.isNaN(maxPool2d(x, 2).data[0])).toBe(true);
    expect(() => maxPool2d(new Tensor(new Float32Array(4), [1, 2, 2]), 2)).toThrow("maxPool2d: input must be 4-D (N, C, H, W), got [1,2,2]");
    expect(() => maxPool2d(x, 3)).toThrow("maxPool2d: input height 2 with padding 0 is smaller than the kernel size 3");
    expect(() => maxPool2d(x, 2, { padding: 2 })).toThrow(/maxPool2d: padding \[2,2\] must be at most half/);
  });
});

describe("avgPool2d", () => {
  it("forward against hand values, padding counted or not", () => {
    const x = new Tensor(new Float32Array([1, 2, 3, 4]), [1, 1, 2, 2]);
    expect(Array.from(avgPool2d(x, 2).data)).toEqual([2.5]);
    // 3x3 window, padding 1, stride 2 over 2x2: the one window covers all 4 inputs out of 9 cells.
    assertClose(avgPool2d(x, 3, { stride: 2, padding: 1 }), [10 / 9]);
    assertClose(avgPool2d(x, 3, { stride: 2, padding: 1, countIncludePad: false }), [10 / 4]);
  });

  for (const cip of [true, false]) {
    it(`gradcheck with padding, countIncludePad ${cip}`, () => {
      const x = randT([2, 2, 7, 6]);
      gradcheck((t) => avgPool2d(t, 3, { stride: 2, padding: 1, countIncludePad: cip }), [x]);
      gradcheck((t) => avgPool2d(t, [2, 3], { stride: [2, 1], countIncludePad: cip }), [x]);
    });
  }

  it("names the op on bad input", () => {
    expect(() => avgPool2d(randT([1, 1, 4, 4], false), 0)).toThrow("avgPool2d: kernelSize must be a positive integer");
  });
});

describe("adaptiveAvgPool2d", () => {
  it("divisible sizes equal plain average pooling; uneven bins follow floor/ceil", () => {
    const x = randT([2, 3, 8, 6], false);
    assertClose(adaptiveAvgPool2d(x, [4, 3]), avgPool2d(x, 2), { atol: 1e-6 });
    // H = 5 → 3 bins: [0,2), [1,4), [3,5)
    const v = new Tensor(new Float32Array([1, 2, 3, 4, 5]), [1, 1, 5, 1]);
    assertClose(adaptiveAvgPool2d(v, [3, 1]), [1.5, 3, 4.5]);
    assertClose([adaptiveAvgPool2d(x, 1).data[0]], x.data.subarray(0, 48).reduce((a, b) => a + b, 0) / 48, { atol: 1e-6 });
  });

  it("gradcheck, uneven and upsampling sizes", () => {
    const x = randT([2, 2, 5, 7]);
    gradcheck((t) => adaptiveAvgPool2d(t, [3, 2]), [x]);
    gradcheck((t) => adaptiveAvgPool2d(t, [7, 9]), [x]);
    gradcheck((t) => adaptiveAvgPool2d(t, 1), [x]);
  });

  it("names the op on bad input", () => {
    expect(() => adaptiveAvgPool2d(randT([1, 4, 4], false), 2)).toThrow("adaptiveAvgPool2d: input must be 4-D");
    expect(() => adaptiveAvgPool2d(randT([1, 1, 4, 4], false), [0, 2])).toThrow("adaptiveAvgPool2d: outputSize must be a positive integer");
  });
});

describe("batchNorm2d", () => {
  it("training: normalises with batch statistics and updates running stats (unbiased var) with momentum", () => {
    // Channel 0 holds 1..4 over (N=2, H=1, W=2), channel 1 holds 10, 10, 20, 20.
    const x = new Tensor(new Float32Array([1, 2, 10, 10, 3, 4, 20, 20]), [2, 2, 1, 2]);
    const rm = new Tensor(new Float32Array([0, 1]), [2]), rv = new Tensor(new Float32Array([1, 2]), [2]);
    const w = new Tensor(new Float32Array([2, 1]), [2]), b = new Tensor(new Float32Array([0.5, -1]), [2]);
    const y = batchNorm2d(x, rm, rv, w, b, { training: true, momentum: 0.1, eps: 1e-5 });
    // channel 0: mean 2.5, biased var 1.25, unbiased 5/3
    const r0 = 1 / Math.sqrt(1.25 + 1e-5), r1 = 1 / Math.sqrt(25 + 1e-5);
    assertClose(y, [-1.5 * r0 * 2 + 0.5, -0.5 * r0 * 2 + 0.5, -5 * r1 - 1, -5 * r1 - 1, 0.5 * r0 * 2 + 0.5, 1.5 * r0 * 2 + 0.5, 5 * r1 - 1, 5 * r1 - 1]);
    assertClose(rm, [0.9 * 0 + 0.1 * 2.5, 0.9 * 1 + 0.1 * 15]);
    assertClose(rv, [0.9 * 1 + 0.1 * (5 / 3), 0.9 * 2 + 0.1 * (100 / 3)]);
  });

  it("eval: normalises with the running statistics and leaves them alone", () => {
    const x = new Tensor(new Float32Array([1, 2, 3, 4]), [1, 2, 1, 2]);
    const rm = new Tensor(new Float32Array([1, -1]), [2]), rv = new Tensor(new Float32Array([4, 0.25]), [2]);
    const y = batchNorm2d(x, rm, rv, null, null, { training: false, eps: 0 + 1e-12 });
    assertClose(y, [0, 0.5, 8, 10], { atol: 1e-5 });
    assertClose(rm, [1, -1]);
    assertClose(rv, [4, 0.25]);
  });

  it("gradcheck in training mode (gradient through the batch statistics), with and without affine", () => {
    const x = randT([3, 2, 3, 2], true, 2), w = randT([2]), b = randT([2]);
    gradcheck((a, ww, bb) => batchNorm2d(a, null, null, ww, bb, { training: true }), [x, w, b], { eps: 1e-3, atol: 2e-3 });
    gradcheck((a) => batchNorm2d(a, null, null, null, null, { training: true }), [x], { eps: 1e-3, atol: 2e-3 });
  });

  it("gradcheck in eval mode", () => {
    const x = randT([2, 3, 2, 2]), w = randT([3]), b = randT([3]);
    const rm = randT([3], false), rv = new Tensor(new Float32Array([0.5, 1, 2]), [3]);
    gradcheck((a, ww, bb) => batchNorm2d(a, rm, rv, ww, bb, { training: false }), [x, w, b]);
  });

  it("training output has zero mean and unit variance per channel", () => {
    const x = randT([4, 3, 5, 5], false, 3);
    const y = batchNorm2d(x, null, null, null, null, { training: true });
    for (let c = 0; c < 3; c++) {
      let s = 0, s2 = 0;
      for (let n = 0; n < 4; n++) for (let i = 0; i < 25; i++) { const v = y.data[(n * 3 + c) * 25 + i]; s += v; s2 += v * v; }
      expect(Math.abs(s / 100)).toBeLessThan(1e-5);
      expect(Math.abs(s2 / 100 - 1)).toBeLessThan(1e-3);
    }
  });

  it("names the op and shapes on bad input", () => {
    const x = randT([2, 3, 2, 2], false);
    expect(() => batchNorm2d(x, null, null, randT([2], false))).toThrow("batchNorm2d: weight [2] must be [3] for input [2,3,2,2]");
    expect(() => batchNorm2d(x, null, null, null, null, { training: false })).toThrow("batchNorm2d: evaluation mode needs runningMean and runningVar");
    expect(() => batchNorm2d(randT([1, 3, 1, 1], false), null, null)).toThrow("batchNorm2d: expected more than 1 value per channel when training");
    expect(() => batchNorm2d(x, null, null, null, null, { momentum: 2 })).toThrow(ArgumentError);
  });
});

describe("batchNorm2dMaxPoolRelu", () => {
  const composed = (x: Tensor, rm: Tensor | null, rv: Tensor | null, w: Tensor | null, b: Tensor | null, opts: BatchNorm2dOptions) =>
    relu(maxPool2d(batchNorm2d(x, rm, rv, w, b, opts), 2));
  /** Output, gradients of x, weight, bias for output gradient g, and the running statistics after. */
  const run = (f: typeof composed, x: Tensor, w: Tensor | null, b: Tensor | null, opts: BatchNorm2dOptions, g: Float32Array, running: boolean) => {
    const C = x.shape[1];
    const rm = running ? new Tensor(Float32Array.from({ length: C }, (_, c) => 0.1 * c), [C]) : null;
    const rv = running ? new Tensor(Float32Array.from({ length: C }, (_, c) => 1 + 0.2 * c), [C]) : null;
    for (const t of [x, w, b]) if (t) t.grad = null;
    const y = f(x, rm, rv, w, b, opts);
    y.backward(g);
    return { y, grads: [x, w, b].filter((t) => t !== null).map((t) => t!.grad!.data), rm, rv };
  };
  const cases = [
    { name: "small (loop path)", x: [3, 4, 6, 8] },
    { name: "CNN-sized (SIMD path where available)", x: [8, 16, 14, 14] },
    { name: "odd height and width (last row and column dropped)", x: [3, 5, 7, 9] },
    { name: "odd plane size, large (loop path)", x: [16, 8, 7, 7] },
  ];
  for (const simd of [true, false]) {
    for (const c of cases) {
      for (const mode of ["training", "eval", "training, no affine"] as const) {
        it(`${simd ? "simd on" : "simd off"}: ${c.name}, ${mode}: same output, gradients and running statistics as relu(maxPool2d(batchNorm2d))`, () => {
          const was = simdEnabled();
          setSimdEnabled(simd);
          try {
            const x = randT(c.x, true, 2);
            const C = c.x[1];
            const affine = mode !== "training, no affine";
            const w = affine ? randT([C]) : null, b = affine ? randT([C]) : null;
            const opts: BatchNorm2dOptions = { training: mode !== "eval", momentum: 0.1, eps: 1e-5 };
            const outShape = [c.x[0], C, c.x[2] >> 1, c.x[3] >> 1];
            const g = randT(outShape, false).data;
            const a = run(batchNorm2dMaxPoolRelu, x, w, b, opts, g, true), e = run(composed, x, w, b, opts, g, true);
            expect(a.y.shape).toEqual(outShape);
            assertClose(a.y.data, e.y.data, { atol: 1e-5, rtol: 1e-5 });
            for (let i = 0; i < e.grads.length; i++) assertClose(a.grads[i], e.grads[i], { atol: 1e-5, rtol: 1e-4 });
            assertClose(a.rm!.data, e.rm!.data, { atol: 1e-6, rtol: 1e-6 });
            assertClose(a.rv!.data, e.rv!.data, { atol: 1e-6, rtol: 1e-6 });
          } finally {
            setSimdEnabled(was);
          }
        });
      }
    }
  }

  it("the SIMD engine runs the CNN-sized case (where WebAssembly SIMD exists)", () => {
    if (!simdAvailable()) return;
    // A NaN makes the SIMD pool decline and the loop run: a different path, the same result.
    const x = randT([8, 16, 14, 14], false, 2);
    const y = batchNorm2dMaxPoolRelu(x, null, null);
    x.data[5] = NaN;
    const yNan = batchNorm2dMaxPoolRelu(x, null, null), eNan = composed(x, null, null, null, null, {});
    expect(Array.from(yNan.data, Number.isNaN)).toEqual(Array.from(eNan.data, Number.isNaN));
    expect(y.data.some((v, i) => v !== yNan.data[i])).toBe(true);
  });

  it("gradcheck, training and eval", () => {
    const x = distinctT([2, 3, 4, 4]), w = randT([3]), b = randT([3]);
    gradcheck((a, ww, bb) => batchNorm2dMaxPoolRelu(a, null, null, ww, bb, { training: true }), [x, w, b], { eps: 1e-3, atol: 3e-3 });
    const rm = randT([3], false), rv = new Tensor(new Float32Array([0.5, 1, 2]), [3]);
    gradcheck((a, ww, bb) => batchNorm2dMaxPoolRelu(a, rm, rv, ww, bb, { training: false }), [x, w, b], { eps: 1e-3, atol: 3e-3 });
  });

  it("synchronised: the statistics and gradient sums go through the sync (one rank: the same as without)", () => {
    // Multi-rank parity runs end to end in test/cnn-parallel.test.ts (the CNN's blocks use this op).
    const calls: string[] = [];
    const identity: BatchNormSync = {
      forward(count, mean, m2) {
        calls.push(`forward ${count}`);
        return { count, mean, variance: m2.map((v) => v / count) };
      },
      backward(sdy, sdyx) {
        calls.push("backward");
        return { sdy, sdyx };
      },
    };
    const x = randT([4, 3, 6, 6], true, 2), w = randT([3]), b = randT([3]);
    const g = randT([4, 3, 3, 3], false).data;
    const a = run((xx, rm, rv, ww, bb, o) => batchNorm2dMaxPoolRelu(xx, rm, rv, ww, bb, { ...o, sync: identity }), x, w, b, { training: true }, g, true);
    const e = run(batchNorm2dMaxPoolRelu, x, w, b, { training: true }, g, true);
    expect(calls).toEqual(["forward 144", "backward"]);
    assertClose(a.y.data, e.y.data, { atol: 1e-6, rtol: 1e-5 });
    for (let i = 0; i < e.grads.length; i++) assertClose(a.grads[i], e.grads[i], { atol: 1e-5, rtol: 1e-4 });
    assertClose(a.rv!.data, e.rv!.data, { atol: 1e-6, rtol: 1e-5 });
    // In evaluation the sync is not used.
    run((xx, rm, rv, ww, bb, o) => batchNorm2dMaxPoolRelu(xx, rm, rv, ww, bb, { ...o, sync: identity }), x, w, b, { training: false }, g, true);
    expect(calls).toHaveLength(2);
  });

  it("the CNN runs batch norm, pooling and ReLU fused: same logits, gradients and running statistics as layer by layer", () => {
    const model = createMnistCnn({ channels: [8, 16], hidden: 16, batchNorm: true });
    const x = randT([4, 1, 28, 28], false);
    const g = randT([4, 10], false).data;
    const buffers = model.namedBuffers().map(([, t]) => t);
    const state = () => buffers.map((t) => t.data.slice());
    const start = state();
    const grads = (forward: (t: Tensor) => Tensor) => {
      buffers.forEach((t, i) => t.data.set(start[i]));
      for (const p of model.parameters()) p.grad = null;
      const y = forward(x);
      y.backward(g);
      return [y.data, ...model.parameters().map((p) => p.grad!.data), ...state()];
    };
    const fused = grads((t) => model.forward(t));
    const plain = grads((t) => Sequential.prototype.forward.call(model, t));
    for (let i = 0; i < plain.length; i++) assertClose(fused[i], plain[i], { atol: 1e-5, rtol: 1e-4 });
  });

  it("names the op and the shapes on bad input", () => {
    const x = randT([2, 3, 4, 4], false);
    expect(() => batchNorm2dMaxPoolRelu(x, null, null, randT([2], false))).toThrow("batchNorm2dMaxPoolRelu: weight [2] must be [3] for input [2,3,4,4]");
    expect(() => batchNorm2dMaxPoolRelu(x, null, null, null, null, { training: false })).toThrow("batchNorm2dMaxPoolRelu: evaluation mode needs runningMean and runningVar");
    expect(() => batchNorm2dMaxPoolRelu(randT([2, 3, 4], false), null, null)).toThrow(ShapeError);
    expect(() => batchNorm2dMaxPoolRelu(randT([1, 3, 1, 1], false), null, null)).toThrow("expected more than 1 value per channel");
  });
});
