/**
 * float32 ⇄ bfloat16 / float16 against PyTorch's conversions (fixtures/half.json, made by
 * fixtures/half.py): the SIMD passes and the loops give PyTorch's bits for ties, subnormals,
 * float16's overflow, ±Inf and NaN, at every length remainder; widening is exact and a round trip
 * gives back every float16.
 */
import { readFileSync } from "node:fs";
import { afterEach, describe, expect, it } from "vitest";
import { setSimdEnabled } from "./switch.js";
import { decodeHalf, encodeHalf, type HalfFormat } from "../half.js";

const fixture = JSON.parse(readFileSync(new URL("../../fixtures/half.json", import.meta.url), "utf8")) as {
  float32: number[]; bf16: number[]; fp16: number[]; fp16Halves: number[]; fp16ToFloat32: number[];
};
const inputs = new Float32Array(Uint32Array.from(fixture.float32).buffer);
const isNaNHalf = (format: HalfFormat, h: number) => (h & 0x7fff) > (format === "bf16" ? 0x7f80 : 0x7c00);

afterEach(() => setSimdEnabled(true));

describe.each([["SIMD", true], ["loops", false]] as const)("%s", (_, simd) => {
  it.each(["bf16", "fp16"] as const)("%s: PyTorch's bits for every fixture value (NaN: a NaN)", (format) => {
    setSimdEnabled(simd);
    const want = fixture[format], got = new Uint16Array(inputs.length);
    encodeHalf(format, got, inputs);
    for (let i = 0; i < inputs.length; i++) {
      const what = `${format} of 0x${fixture.float32[i].toString(16)}`;
      if (Number.isNaN(inputs[i])) expect(isNaNHalf(format, got[i]), what).toBe(true);
      else expect(got[i].toString(16), what).toBe(want[i].toString(16));
    }
  });

  it("float16 → float32: PyTorch's bits; every float16 comes back from a round trip", () => {
    setSimdEnabled(simd);
    const h = Uint16Array.from(fixture.fp16Halves), out = new Float32Array(h.length), bits = new Uint32Array(out.buffer);
    decodeHalf("fp16", out, h);
    for (let i = 0; i < h.length; i++) {
      if (isNaNHalf("fp16", h[i])) expect(Number.isNaN(out[i])).toBe(true);
      else expect(bits[i], `0x${h[i].toString(16)}`).toBe(fixture.fp16ToFloat32[i]);
    }
    const all = new Uint16Array(65536).map((_, i) => i), wide = new Float32Array(65536), back = new Uint16Array(65536);
    decodeHalf("fp16", wide, all);
    encodeHalf("fp16", back, wide);
    for (let i = 0; i < 65536; i++) if (!isNaNHalf("fp16", i)) expect(back[i], `0x${i.toString(16)}`).toBe(i);
  });

  it("bfloat16 → float32 is the high half; a round trip gives back every bfloat16", () => {
    setSimdEnabled(simd);
    const all = new Uint16Array(65536).map((_, i) => i), wide = new Float32Array(65536), back = new Uint16Array(65536);
    decodeHalf("bf16", wide, all);
    const bits = new Uint32Array(wide.buffer);
    for (let i = 0; i < 65536; i++) expect(bits[i]).toBe((i << 16) >>> 0);
    encodeHalf("bf16", back, wide);
    for (let i = 0; i < 65536; i++) if (!isNaNHalf("bf16", i)) expect(back[i]).toBe(i);
  });

  it.each(["bf16", "fp16"] as const)("%s: lengths 0 … 17 and past a chunk: the values before n converted, those after untouched", (format) => {
    setSimdEnabled(simd);
    const want = new Uint16Array(inputs.length);
    setSimdEnabled(false);
    encodeHalf(format, want, inputs);
    setSimdEnabled(simd);
    for (const n of [...Array.from({ length: 18 }, (_, i) => i), 4095, 4096, 4097, 8200]) {
      const x = Float32Array.from({ length: n }, (_, i) => inputs[i % inputs.length]);
      const out = new Uint16Array(n + 3).fill(0xabcd);
      encodeHalf(format, out, x, n);
      for (let i = 0; i < n; i++) expect(out[i]).toBe(want[i % inputs.length]);
      expect([...out.subarray(n)]).toEqual([0xabcd, 0xabcd, 0xabcd]);
      const wide = new Float32Array(n + 3).fill(7), wantWide = new Float32Array(n);
      decodeHalf(format, wide, out, n);
      expect([...wide.subarray(n)]).toEqual([7, 7, 7]);
      setSimdEnabled(false);
      decodeHalf(format, wantWide, out, n);
      setSimdEnabled(simd);
      expect(new Uint32Array(wide.buffer, 0, n)).toEqual(new Uint32Array(wantWide.buffer));
    }
  });
});

it("a bad format or length is refused in one line", () => {
  expect(() => encodeHalf("f16" as HalfFormat, new Uint16Array(2), new Float32Array(2))).toThrow(/^encodeHalf: format must be "bf16" or "fp16", got "f16"$/);
  expect(() => decodeHalf("bf16", new Float32Array(2), new Uint16Array(4), 3)).toThrow(/^decodeHalf: 3 values do not fit its arrays \(4 in, 2 out\)$/);
});
