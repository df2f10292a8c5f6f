import { describe, expect, it } from "vitest";
import { gradientBuckets, hostCombineRegion, planMemory } from "./layout.js";

// Four parameters laid out one after another: sizes 10, 4, 20, 6.
const layout = [{ offset: 0, size: 10 }, { offset: 10, size: 4 }, { offset: 14, size: 20 }, { offset: 34, size: 6 }];

describe("gradientBuckets", () => {
  it("fills buckets from the last parameter back up to the cap, adjacent ranges merged; a larger parameter is a bucket of its own", () => {
    expect(gradientBuckets(layout, [true, true, true, true], 24)).toEqual([
      { params: [3], pieces: [34, 40] },
      { params: [2, 1], pieces: [10, 34] },
      { params: [0], pieces: [0, 10] },
    ]);
    expect(gradientBuckets(layout, [true, true, true, true], 8).map((b) => b.params)).toEqual([[3], [2], [1], [0]]);
    expect(gradientBuckets(layout, [true, true, true, true], 1e9)).toEqual([{ params: [3, 2, 1, 0], pieces: [0, 40] }]);
    expect(gradientBuckets(layout, [true, true, true, true], 1).map((b) => b.params)).toEqual([[3], [2], [1], [0]]);
  });

  it("leaves frozen parameters out, so a bucket may hold several pieces", () => {
    expect(gradientBuckets(layout, [true, false, true, true], 1e9)).toEqual([{ params: [3, 2, 0], pieces: [14, 40, 0, 10] }]);
    expect(gradientBuckets(layout, [false, false, false, false], 8)).toEqual([]);
  });
});

describe("planMemory", () => {
  const P = 1024, R = 4096; // a region: 4,096 bytes

  it("keeps everything in the WebAssembly memory when it fits: params | grad | slots | optimizer state", () => {
    expect(planMemory(P, 3, 2, 100, 1e9)).toEqual({ paramsAt: 0, gradAt: R, slotsAt: 2 * R, optAt: 5 * R, end: 7 * R, slotsOutside: false, optOutside: false });
    // One worker: its slot is the mean gradient.
    expect(planMemory(P, 1, 2, 100, 1e9)).toEqual({ paramsAt: 0, gradAt: R, slotsAt: R, optAt: 2 * R, end: 4 * R, slotsOutside: false, optOutside: false });
  });

  it("moves the slots out first, then the optimizer state, and gives up when parameters and gradient do not fit", () => {
    expect(planMemory(P, 3, 2, 100, 7 * R)).toEqual({ paramsAt: 0, gradAt: R, slotsAt: 0, optAt: 2 * R, end: 4 * R, slotsOutside: true, optOutside: false });
    expect(planMemory(P, 3, 2, 100, 4 * R)).toEqual({ paramsAt: 0, gradAt: R, slotsAt: 0, optAt: 0, end: 2 * R, slotsOutside: true, optOutside: true });
    expect(planMemory(P, 1, 2, 100, 4 * R)).toEqual({ paramsAt: 0, gradAt: R, slotsAt: R, optAt: 0, end: 2 * R, slotsOutside: false, optOutside: true });
    expect(planMemory(P, 3, 2, 100, 2 * R)).toBeNull();
  });
});

describe("hostCombineRegion", () => {
  it("holds every host's copy of the largest bucket, this host's part of it and the weights, each 64-byte aligned", () => {
    const buckets = gradientBuckets(layout, [true, false, true, true], 24); // [34, 40], [14, 34], [0, 10]: largest 20
    const r = hostCombineRegion(100, 3, buckets);
    expect(r).toEqual({ gatheredAt: 128, gatheredFloats: 60, mineAt: 384, mineFloats: 7, weightsAt: 448, end: 472 });
    expect(hostCombineRegion(0, 2, [{ params: [3, 0], pieces: [34, 40, 0, 10] }]).gatheredFloats).toBe(32); // pieces summed
  });
});
