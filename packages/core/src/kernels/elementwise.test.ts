import { describe, expect, it } from "vitest";
import { reluBackward, reluForward } from "./js/elementwise.js";

describe("branch-free relu kernels", () => {
  const specials = [1, -1, 0, -0, NaN, -NaN, Infinity, -Infinity, 1e-45, -1e-45, 3.4e38, -3.4e38, 0.5, -0.5];
  it("forward equals max(x, 0) with NaN kept, -0 and -Inf to +0", () => {
    const x = new Float32Array(specials);
    // A negative-signed NaN (x86's default NaN) must survive too.
    new Int32Array(x.buffer)[5] = 0xffc00000 | 0;
    const out = new Float32Array(x.length);
    reluForward(out, x);
    x.forEach((v, i) => {
      if (Number.isNaN(v)) expect(Number.isNaN(out[i])).toBe(true);
      else expect(Object.is(out[i], v > 0 ? v : 0)).toBe(true);
    });
  });
  it("backward passes dout exactly where x > 0, else 0 (also for NaN and Inf dout)", () => {
    const x = new Float32Array(specials);
    const dout = new Float32Array(x.length).map((_, i) => [2, NaN, Infinity, -3][i % 4]);
    const dx = new Float32Array(x.length);
    reluBackward(dx, dout, x);
    x.forEach((v, i) => {
      const want = v > 0 ? dout[i] : 0;
      if (Number.isNaN(want)) expect(Number.isNaN(dx[i])).toBe(true);
      else expect(Object.is(dx[i], want)).toBe(true);
    });
  });
  it("works on views with an offset (subarrays of one buffer)", () => {
    const whole = new Float32Array([-1, 2, -3, 4, -5, 6]);
    const out = new Float32Array(8);
    reluForward(out.subarray(3, 7), whole.subarray(1, 5));
    expect(Array.from(out)).toEqual([0, 0, 0, 2, 0, 4, 0, 0]);
  });
});
