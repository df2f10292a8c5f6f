import { describe, expect, it } from "vitest";
import { causalAttention, conv2d, countMacs, kernels, nn, noGrad, zeros } from "../index.js";

describe("countMacs", () => {
  it("counts a linear stack's forward as Σ in·out per row, linear in the rows", () => {
    const m = new nn.Sequential(new nn.Linear(784, 512), new nn.ReLU(), new nn.Linear(512, 256), new nn.ReLU(), new nn.Linear(256, 10));
    const perRow = 784 * 512 + 512 * 256 + 256 * 10; // 535,040
    expect(countMacs(() => noGrad(() => { m.forward(zeros([1, 784])); }))).toBe(perRow);
    expect(countMacs(() => noGrad(() => { m.forward(zeros([7, 784])); }))).toBe(7 * perRow);
  });

  it("counts a convolution's GEMMs (at least OH·OW·O·C·k², the direct product) and attention's batched GEMMs", () => {
    const direct = 8 * 8 * 4 * 3 * 9;
    const conv = countMacs(() => noGrad(() => { conv2d(zeros([1, 3, 8, 8]), zeros([4, 3, 3, 3]), null, { padding: 1 }); }));
    expect(conv).toBeGreaterThanOrEqual(direct);
    expect(conv).toBeLessThan(2 * direct); // a padded layout may compute a few extra columns
    // q·kᵀ and P·v: 2 heads × (T·T·d) each, T = 6, d = 4 (qkv packs 3·2·4 features).
    const att = countMacs(() => noGrad(() => { causalAttention(zeros([1, 6, 24]), 2); }));
    expect(att).toBeGreaterThanOrEqual(2 * 2 * 6 * 6 * 4 * 0.5);
    expect(att).toBeLessThanOrEqual(2 * 2 * 6 * 6 * 4);
  });

  it("restores the backend, also when the function throws", () => {
    const before = kernels();
    expect(() => countMacs(() => { throw new Error("boom"); })).toThrow("boom");
    expect(kernels()).toBe(before);
    countMacs(() => {});
    expect(kernels()).toBe(before);
  });
});
