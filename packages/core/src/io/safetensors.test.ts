import { describe, expect, it } from "vitest";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SafetensorsError, decodeSafetensors, encodeSafetensors, halfToFloat, loadSafetensors, saveSafetensors } from "./safetensors.js";

/** Builds a file byte by byte from the spec: u64 LE header length, header, byte buffer. */
function build(header: string, data: number[], opts: { pad?: boolean; lengthOverride?: bigint } = {}): Uint8Array {
  let h = header;
  if (opts.pad ?? true) while (h.length % 8 !== 0) h += " ";
  const hb = new TextEncoder().encode(h);
  const len = opts.lengthOverride ?? BigInt(hb.length);
  const lenBytes: number[] = [];
  for (let i = 0n; i < 8n; i++) lenBytes.push(Number((len >> (8n * i)) & 0xffn));
  return Uint8Array.from([...lenBytes, ...hb, ...data]);
}

// 1.0f = 00 00 80 3f, -2.5f = 00 00 20 c0 (little-endian)
const F32_1_M25 = [0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x20, 0xc0];
// F16: 1.0 = 0x3c00, -2.0 = 0xc000, 65504 = 0x7bff
const F16_1_M2_MAX = [0x00, 0x3c, 0x00, 0xc0, 0xff, 0x7b];
// BF16: 1.0 = 0x3f80, -3.0 = 0xc040
const BF16_1_M3 = [0x80, 0x3f, 0x40, 0xc0];
// F64 0.5 = 3fe0000000000000
const F64_HALF = [0, 0, 0, 0, 0, 0, 0xe0, 0x3f];
// I64 -3, I32 7
const I64_M3 = [0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
const I32_7 = [7, 0, 0, 0];

describe("safetensors reader (fixture built byte by byte from the spec)", () => {
  it("reads F32, F16, BF16, F64, I64, I32 tensors and __metadata__", () => {
    const header = JSON.stringify({
      __metadata__: { format: "pt", note: "hi" },
      a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
      h: { dtype: "F16", shape: [1, 3], data_offsets: [8, 14] },
      b: { dtype: "BF16", shape: [2], data_offsets: [14, 18] },
      d: { dtype: "F64", shape: [], data_offsets: [18, 26] },
      l: { dtype: "I64", shape: [1], data_offsets: [26, 34] },
      i: { dtype: "I32", shape: [1, 1], data_offsets: [34, 38] },
    });
    const bytes = build(header, [...F32_1_M25, ...F16_1_M2_MAX, ...BF16_1_M3, ...F64_HALF, ...I64_M3, ...I32_7]);
    const { tensors, metadata } = decodeSafetensors(bytes);
    expect(metadata).toEqual({ format: "pt", note: "hi" });
    expect(Array.from(tensors.a.data)).toEqual([1, -2.5]);
    expect(tensors.h.shape).toEqual([1, 3]);
    expect(Array.from(tensors.h.data)).toEqual([1, -2, 65504]);
    expect(Array.from(tensors.b.data)).toEqual([1, -3]);
    expect(tensors.d.shape).toEqual([]);
    expect(Array.from(tensors.d.data)).toEqual([0.5]);
    expect(Array.from(tensors.l.data)).toEqual([-3]);
    expect(Array.from(tensors.i.data)).toEqual([7]);
    expect(tensors.h.dtype).toBe("F16");
  });

  it("accepts zero-size tensors and an empty file of tensors", () => {
    const t = decodeSafetensors(build(JSON.stringify({ e: { dtype: "F32", shape: [0, 3], data_offsets: [0, 0] } }), []));
    expect(t.tensors.e.data.length).toBe(0);
    expect(Object.keys(decodeSafetensors(build("{}", [])).tensors)).toEqual([]);
  });

  it("half-precision edge cases", () => {
    expect(halfToFloat(0x0001)).toBe(2 ** -24);
    expect(halfToFloat(0x7c00)).toBe(Infinity);
    expect(halfToFloat(0xfc00)).toBe(-Infinity);
    expect(halfToFloat(0x7e00)).toBeNaN();
    expect(Object.is(halfToFloat(0x8000), -0)).toBe(true);
  });
});

describe("safetensors writer", () => {
  it("writes exactly what the reference writer writes (sorted names, space padding to 8 bytes)", () => {
    const bytes = encodeSafetensors({ z: { data: new Float32Array([1]), shape: [1] }, a: { data: new Float32Array([1, -2.5]), shape: [2] } }, { format: "pt" });
    const header = '{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"z":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}';
    const expected = build(header, [...F32_1_M25, 0x00, 0x00, 0x80, 0x3f]);
    expect(Array.from(bytes)).toEqual(Array.from(expected));
    expect((8 + Number(new DataView(bytes.buffer).getBigUint64(0, true))) % 8).toBe(0);
  });

  it("writes Int8Array data as I8 after the F32 tensors, and reads it back as float32", () => {
    const bytes = encodeSafetensors({ a: { data: new Int8Array([-127, 5]), shape: [2] }, z: { data: new Float32Array([1]), shape: [1] } });
    const header = '{"z":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"I8","shape":[2],"data_offsets":[4,6]}}';
    expect(Array.from(bytes)).toEqual(Array.from(build(header, [0x00, 0x00, 0x80, 0x3f, 0x81, 0x05])));
    const { tensors } = decodeSafetensors(bytes);
    expect(tensors.a).toEqual({ dtype: "I8", shape: [2], data: new Float32Array([-127, 5]) });
  });

  // One F32 tensor [1.0] named `name`: the header is {"<name>":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}},
  // 53 bytes plus the name. The spec: an 8-byte little-endian length N, then N bytes of header padded
  // with spaces to a multiple of 8 (N counts the spaces), then the data.
  it.each([
    [56, 56, "www"], // already a multiple of 8: no padding
    [55, 56, "ww"],
    [54, 56, "w"],
    [61, 64, "wwwwwwww"],
    [60, 64, "wwwwwww"],
    [59, 64, "wwwwww"],
    [58, 64, "wwwww"],
    [57, 64, "wwww"], // 7 spaces
  ])("a %i-byte header is written as %i bytes: length, header, spaces (tensor %s)", (headerBytes, paddedBytes, name) => {
    const header = `{"${name}":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`;
    expect(header.length).toBe(headerBytes);
    const expected = [paddedBytes, 0, 0, 0, 0, 0, 0, 0, ...Buffer.from(header), ...Array(paddedBytes - headerBytes).fill(0x20), 0x00, 0x00, 0x80, 0x3f];
    expect(Array.from(encodeSafetensors({ [name]: { data: new Float32Array([1]), shape: [1] } }))).toEqual(expected);
  });

  it("round-trips through a file (atomic write)", () => {
    const dir = mkdtempSync(join(tmpdir(), "st-"));
    const path = join(dir, "w.safetensors");
    const w = new Float32Array([0.1, -1e-30, 3.4e38, NaN, -0]);
    saveSafetensors(path, { "layers.0.weight": { data: w, shape: [5, 1] }, "b": { data: new Float32Array(0), shape: [0] } });
    const { tensors } = loadSafetensors(path);
    expect(tensors["layers.0.weight"].shape).toEqual([5, 1]);
    expect(Buffer.from(tensors["layers.0.weight"].data.buffer).equals(Buffer.from(w.buffer))).toBe(true);
    expect(readFileSync(path).length).toBeGreaterThan(8);
  });

  it("refuses data that does not fit the shape", () => {
    expect(() => encodeSafetensors({ a: { data: new Float32Array(3), shape: [2, 2] } })).toThrow(/'a' has 3 values but shape \[2,2\] needs 4/);
  });
});

describe("safetensors rejects malformed input with clear errors", () => {
  const good = JSON.stringify({ a: { dtype: "F32", shape: [2], data_offsets: [0, 8] } });
  const cases: [string, Uint8Array, RegExp][] = [
    ["too short for the length", Uint8Array.from([1, 2, 3]), /f\.st: truncated: 3 bytes/],
    ["huge header length", build(good, F32_1_M25, { lengthOverride: 1n << 40n }), /header length 1099511627776 exceeds/],
    ["header length beyond the file", build(good, F32_1_M25, { lengthOverride: 500n }), /truncated: header length 500/],
    ["invalid JSON", build('{"a": {', F32_1_M25), /not valid JSON/],
    ["not an object", build("[1,2]", []), /does not start with '\{'/],
    ["unknown dtype", build(JSON.stringify({ a: { dtype: "F33", shape: [2], data_offsets: [0, 8] } }), F32_1_M25), /tensor 'a': unknown dtype 'F33'/],
    ["shape/size mismatch", build(JSON.stringify({ a: { dtype: "F32", shape: [3], data_offsets: [0, 8] } }), F32_1_M25), /shape \[3\] of F32 needs 12 bytes but data_offsets \[0, 8\] span 8/],
    ["overlapping offsets", build(JSON.stringify({ a: { dtype: "F32", shape: [2], data_offsets: [0, 8] }, b: { dtype: "F32", shape: [1], data_offsets: [4, 8] } }), F32_1_M25), /overlap/],
    ["gap between tensors", build(JSON.stringify({ a: { dtype: "F32", shape: [1], data_offsets: [4, 8] } }), F32_1_M25), /gap/],
    ["out-of-bounds offsets", build(JSON.stringify({ a: { dtype: "F32", shape: [4], data_offsets: [0, 16] } }), F32_1_M25), /truncated: tensors need 16 data bytes but the file has 8/],
    ["trailing bytes", build(good, [...F32_1_M25, 1, 2]), /2 trailing bytes/],
    ["negative dims", build(JSON.stringify({ a: { dtype: "F32", shape: [-2], data_offsets: [0, 8] } }), F32_1_M25), /shape must be an array of non-negative integers/],
    ["end before begin", build(JSON.stringify({ a: { dtype: "F32", shape: [0], data_offsets: [8, 0] } }), F32_1_M25), /end before they begin/],
    ["bad metadata", build(JSON.stringify({ __metadata__: { n: 3 } }), []), /__metadata__\.n must be a string/],
    ["unsupported dtype", build(JSON.stringify({ a: { dtype: "F8_E4M3", shape: [2], data_offsets: [0, 2] } }), [1, 2]), /dtype F8_E4M3 is not supported/],
  ];
  for (const [name, bytes, re] of cases) {
    it(name, () => {
      expect(() => decodeSafetensors(bytes, "f.st")).toThrow(SafetensorsError);
      expect(() => decodeSafetensors(bytes, "f.st")).toThrow(re);
    });
  }

  it("a truncated file names the file", () => {
    const dir = mkdtempSync(join(tmpdir(), "st-"));
    const path = join(dir, "cut.safetensors");
    const bytes = encodeSafetensors({ a: { data: new Float32Array(100), shape: [100] } });
    writeFileSync(path, bytes.subarray(0, bytes.length - 10));
    expect(() => loadSafetensors(path)).toThrow(`${path}: truncated`);
    expect(() => loadSafetensors(join(dir, "nope"))).toThrow(/nope: cannot read \(no such file\)/);
  });
});
