import { describe, expect, it } from "vitest";
import { gradientBuckets } from "./layout.js";

// Four parameters laid out one after another: sizes 10, 4, 20, 6.
const layout = [{ offset: 0, size: 10 }, { offset: 10, size: 4 }, { offset: 14, size: 20 }, { offset: 34, size: 6 }];

describe("gradientBuckets", () => {
  it("fills buckets from the last parameter back, each at least the cap, adjacent ranges merged", () => {
    expect(gradientBuckets(layout, [true, true, true, true], 24)).toEqual([
      { params: [3, 2], pieces: [14, 40] },
      { params: [1, 0], pieces: [0, 14] },
    ]);
    expect(gradientBuckets(layout, [true, true, true, true], 1e9)).toEqual([{ params: [3, 2, 1, 0], pieces: [0, 40] }]);
    expect(gradientBuckets(layout, [true, true, true, true], 1).map((b) => b.params)).toEqual([[3], [2], [1], [0]]);
  });

  it("leaves frozen parameters out, so a bucket may hold several pieces", () => {
    expect(gradientBuckets(layout, [true, false, true, true], 1e9)).toEqual([{ params: [3, 2, 0], pieces: [14, 40, 0, 10] }]);
    expect(gradientBuckets(layout, [false, false, false, false], 8)).toEqual([]);
  });
});
