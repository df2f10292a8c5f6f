import { describe, expect, it } from "vitest";
import { Tensor } from "../tensor/tensor.js";
import { manualSeed } from "../tensor/random.js";
import { Linear, ReLU, Sequential, LayerNorm } from "./layers.js";
import { BatchNorm2d, Conv2d } from "./conv.js";
import { SCALE_SUFFIX, dequantizeInt8, dequantizeStateDict, int8WeightNames, quantizeInt8, quantizedStateDict } from "./quantize.js";
import { decodeSafetensors, encodeSafetensors } from "../io/safetensors.js";

describe("int8 per-channel quantization", () => {
  it("scales each row by its largest magnitude / 127 and rounds to the nearest step", () => {
    // row 0: max 2.54 → scale 0.02; row 1: max 0.127 → scale 0.001; row 2: all zero → scale 1
    const w = quantizeInt8(new Float32Array([2.54, -1.3, 0.011, 0.127, -0.0651, 0.0004, 0, 0, 0]), [3, 3]);
    expect(Array.from(w.scale)).toEqual([Math.fround(Math.fround(2.54) / 127), Math.fround(Math.fround(0.127) / 127), 1]);
    expect(Array.from(w.q)).toEqual([127, -65, 1, 127, -65, 0, 0, 0, 0]);
  });

  it("reads back within half a step of each row's scale, and exactly for values on the grid", () => {
    manualSeed(3);
    const data = Float32Array.from({ length: 64 * 9 }, (_, i) => Math.sin(i * 1.7) * (1 + (i % 64)));
    const w = quantizeInt8(data, [64, 9]);
    const back = dequantizeInt8(w);
    for (let i = 0; i < data.length; i++) expect(Math.abs(back[i] - data[i])).toBeLessThanOrEqual(w.scale[Math.floor(i / 9)] / 2 + 1e-6);
    expect(Array.from(dequantizeInt8(quantizeInt8(back, [64, 9])))).toEqual(Array.from(back));
  });

  it("refuses a non-finite weight, naming it", () => {
    expect(() => quantizeInt8(new Float32Array([1, NaN]), [1, 2], "fc.weight")).toThrow(/quantizeInt8: fc\.weight: non-finite value NaN in row 0/);
  });

  it("quantizes the weights of Linear and Conv2d layers only, and round-trips through safetensors", () => {
    manualSeed(0);
    const model = new Sequential(new Conv2d(1, 4, 3), new BatchNorm2d(4), new ReLU(), new Linear(8, 5), new LayerNorm(5));
    expect([...int8WeightNames(model).values()]).toEqual(["0.weight", "3.weight"]);
    const dict = quantizedStateDict(model);
    expect(dict["0.weight"].data).toBeInstanceOf(Int8Array);
    expect(dict["3.weight"].data).toBeInstanceOf(Int8Array);
    expect(dict["3.weight" + SCALE_SUFFIX].shape).toEqual([5]);
    expect(dict["3.bias"].data).toBeInstanceOf(Float32Array);
    expect(dict["1.running_var"].data).toBeInstanceOf(Float32Array);
    const loaded = dequantizeStateDict(decodeSafetensors(encodeSafetensors(dict)).tensors);
    expect(Object.keys(loaded).sort()).toEqual(Object.keys(model.stateDict()).sort());
    const w = model.stateDict()["3.weight"] as Tensor;
    expect(Array.from(loaded["3.weight"].data)).toEqual(Array.from(dequantizeInt8(quantizeInt8(w.data, w.shape))));
    expect(loaded["3.weight"].dtype).toBe("F32");
    expect(Array.from(loaded["3.bias"].data)).toEqual(Array.from((model.stateDict()["3.bias"] as Tensor).data));
  });

  it("refuses scales that do not fit the weight's rows, naming the key", () => {
    const t = { w: { dtype: "I8", shape: [2, 2], data: new Float32Array(4) }, w_scale: { dtype: "F32", shape: [3], data: new Float32Array(3) } };
    expect(() => dequantizeStateDict(t)).toThrow(/'w_scale' has 3 scales but 'w' has 2 rows/);
  });
});
