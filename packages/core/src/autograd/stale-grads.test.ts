import { describe, expect, it } from "vitest";
import { Tensor, conv2d, layerNorm, linear, manualSeed, matmul, mul, randn } from "../index.js";
import { markGradsStale, zeroStaleGrads } from "../internal.js";
import { conv2dMaxPoolRelu, setConv2dLayout, type Conv2dLayout } from "../ops/conv.js";
import { tokenPositionEmbedding } from "../models/gpt-ops.js";

/**
 * markGradsStale: the next backward overwrites each leaf's .grad instead of adding to it (what the
 * data-parallel workers use instead of zeroing their gradient slots). For every way an op writes a
 * leaf's gradient (GEMM beta, sumRows, += kernels, the engine's own accumulation), a backward over
 * stale garbage must give exactly the gradient a backward into zeroed .grad gives.
 */
type Case = { name: string; params: () => Tensor[]; loss: (p: Tensor[]) => Tensor };

const cases: Case[] = [
  { name: "linear (GEMM dW, sumRows db)", params: () => [randn([5, 4], { requiresGrad: true }), randn([5], { requiresGrad: true })], loss: ([w, b]) => linear(randn([3, 4]), w, b).pow(2).sum() },
  { name: "matmul, both operands leaves", params: () => [randn([3, 4], { requiresGrad: true }), randn([4, 2], { requiresGrad: true })], loss: ([a, b]) => matmul(a, b).pow(2).sum() },
  { name: "a weight used twice (overwrite, then add)", params: () => [randn([4, 4], { requiresGrad: true })], loss: ([w]) => linear(linear(randn([2, 4]), w), w).pow(2).sum() },
  { name: "elementwise (the engine's accumulation)", params: () => [randn([6], { requiresGrad: true })], loss: ([p]) => mul(p, randn([6])).pow(2).sum() },
  { name: "layerNorm (+= kernel)", params: () => [randn([6], { requiresGrad: true }), randn([6], { requiresGrad: true })], loss: ([w, b]) => layerNorm(randn([3, 6]), [6], w, b).pow(2).mul(randn([3, 6])).sum() },
  {
    name: "token + position embedding (scatter-add)", params: () => [randn([7, 3], { requiresGrad: true }), randn([4, 3], { requiresGrad: true })],
    loss: ([wte, wpe]) => tokenPositionEmbedding(Int32Array.from([1, 3, 3, 0, 6, 1, 2, 2]), 2, 4, wte, wpe).pow(2).sum(),
  },
  ...(["perImage", "shifted", "batched"] as Conv2dLayout[]).flatMap((layout): Case[] => [
    { name: `conv2d (${layout})`, params: () => [randn([4, 2, 3, 3], { requiresGrad: true }), randn([4], { requiresGrad: true })], loss: ([w, b]) => conv2dIn(layout, () => conv2d(randn([2, 2, 6, 6]), w, b, { padding: 1 }).pow(2).sum()) },
    { name: `conv2dMaxPoolRelu (${layout})`, params: () => [randn([8, 2, 3, 3], { requiresGrad: true }), randn([8], { requiresGrad: true })], loss: ([w, b]) => conv2dIn(layout, () => conv2dMaxPoolRelu(randn([2, 2, 6, 6]), w, b, { padding: 1 }).pow(2).sum()) },
  ]),
];

function conv2dIn(layout: Conv2dLayout, f: () => Tensor): Tensor {
  setConv2dLayout(layout);
  try { return f(); } finally { setConv2dLayout("auto"); }
}

/** The gradients of `c` at seed 1 after a backward into .grad holding `prefill`'s gradients (seed 2), optionally marked stale. */
function gradsAfter(c: Case, prefill: boolean, stale: boolean): Float32Array[] {
  manualSeed(0);
  const params = c.params();
  if (prefill) { manualSeed(2); c.loss(params).backward(); } // garbage from "the last step"
  if (stale) markGradsStale(params);
  manualSeed(1);
  c.loss(params).backward();
  return params.map((p) => Float32Array.from(p.grad!.data));
}

describe("stale leaf gradients (markGradsStale / zeroStaleGrads)", () => {
  for (const c of cases) {
    it(`${c.name}: a backward over stale .grad equals one into fresh .grad`, () => {
      const fresh = gradsAfter(c, false, false), over = gradsAfter(c, true, true), summed = gradsAfter(c, true, false);
      fresh.forEach((g, i) => {
        expect(Array.from(over[i]).map((v, j) => Math.abs(v - g[j])).reduce((a, b) => Math.max(a, b), 0)).toBe(0);
        expect(Array.from(summed[i]).some((v, j) => v !== g[j])).toBe(true); // without the mark the old values stay (the test can fail)
      });
    });
  }

  it("zeroStaleGrads zeroes what the backward did not reach, and leaves what it wrote", () => {
    manualSeed(0);
    const used = randn([3], { requiresGrad: true }), unused = randn([3], { requiresGrad: true });
    mul(mul(used, unused), 2).sum().backward(); // both hold gradients now
    markGradsStale([used, unused]);
    mul(used, 3).sum().backward();
    zeroStaleGrads([used, unused]);
    expect(Array.from(used.grad!.data)).toEqual([3, 3, 3]);
    expect(Array.from(unused.grad!.data)).toEqual([0, 0, 0]);
    // A second backward after the mark was consumed adds, as usual.
    mul(used, 3).sum().backward();
    expect(Array.from(used.grad!.data)).toEqual([6, 6, 6]);
  });
});
