import { describe, expect, it } from "vitest";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { DataError, isShared, makeDataset, splitDataset, subset, toShared } from "./dataset.js";
import { embeddedMnistSplit, loadEmbeddedMnist } from "./mnist.js";
import { decodeIdx, encodeIdx, loadIdxDataset, loadIdxDirectory, readIdx } from "./idx.js";
import { loadCsv, parseCsv } from "./csv.js";

const tmp = () => mkdtempSync(join(tmpdir(), "data-"));

describe("Dataset", () => {
  const ds = makeDataset({ inputs: Float32Array.from({ length: 20 }, (_, i) => i), inputShape: [2], targets: Int32Array.from([0, 1, 2, 0, 1, 2, 0, 1, 2, 0]), numClasses: 3 });
  it("subsets, splits deterministically and moves to shared memory", () => {
    expect(ds.length).toBe(10);
    const s = subset(ds, [3, 1]);
    expect(Array.from(s.inputs)).toEqual([6, 7, 2, 3]);
    expect(Array.from(s.targets)).toEqual([0, 1]);
    const a = splitDataset(ds, { heldOut: 0.3, seed: 5 });
    const b = splitDataset(ds, { heldOut: 3, seed: 5 });
    expect(a.heldOut.length).toBe(3);
    expect(Array.from(a.train.inputs)).toEqual(Array.from(b.train.inputs));
    const all = [...Array.from(a.train.inputs), ...Array.from(a.heldOut.inputs)].sort((x, y) => x - y);
    expect(all).toEqual(Array.from(ds.inputs));
    const sh = toShared(ds);
    expect(isShared(sh)).toBe(true);
    expect(sh.inputs.buffer).toBeInstanceOf(SharedArrayBuffer);
    expect(isShared(splitDataset(ds, { heldOut: 2, shared: true }).train)).toBe(true);
  });
  it("rejects bad shapes and labels", () => {
    expect(() => makeDataset({ inputs: new Float32Array(5), inputShape: [2], targets: new Int32Array(2) })).toThrow(DataError);
    expect(() => makeDataset({ inputs: new Float32Array(4), inputShape: [2], targets: Int32Array.from([0, 5]), numClasses: 3 })).toThrow(/row 1 has class 5/);
    expect(() => splitDataset(ds, { heldOut: 10 })).toThrow(/held-out size/);
  });
});

describe("embedded MNIST", () => {
  it("has 10,000 digits in [0, 1] and a deterministic split", () => {
    const all = loadEmbeddedMnist();
    expect(all.length).toBe(10000);
    expect(all.inputShape).toEqual([1, 28, 28]);
    let lo = Infinity, hi = -Infinity;
    for (const v of all.inputs) { if (v < lo) lo = v; if (v > hi) hi = v; }
    expect(lo).toBe(0);
    expect(hi).toBeLessThanOrEqual(1);
    const counts = new Array(10).fill(0);
    for (const t of all.targets) counts[t]++;
    expect(counts.every((c) => c > 800)).toBe(true);
    const a = embeddedMnistSplit({ heldOut: 1000, limitTrain: 50 });
    const b = embeddedMnistSplit({ heldOut: 1000, limitTrain: 50 });
    expect(a.train.length).toBe(50);
    expect(a.heldOut.length).toBe(1000);
    expect(Array.from(a.train.targets)).toEqual(Array.from(b.train.targets));
  }, 30_000);
});

describe("IDX", () => {
  it("reads plain and gzip files, u8 images normalised to [0, 1]", () => {
    const dir = tmp();
    const imgs = encodeIdx("u8", [3, 2, 2], [0, 255, 51, 102, 1, 2, 3, 4, 255, 255, 0, 0]);
    // byte-level check of the header: 00 00 08 03, then 3, 2, 2 as big-endian u32
    expect(Array.from(imgs.subarray(0, 16))).toEqual([0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 2]);
    writeFileSync(join(dir, "train-images-idx3-ubyte.gz"), gzipSync(imgs));
    writeFileSync(join(dir, "train-labels-idx1-ubyte"), encodeIdx("u8", [3], [7, 0, 2]));
    const ds = loadIdxDirectory(dir, "train");
    expect(ds.inputShape).toEqual([1, 2, 2]);
    expect(ds.inputs[1]).toBe(1);
    expect(ds.inputs[2]).toBeCloseTo(0.2);
    expect(Array.from(ds.targets)).toEqual([7, 0, 2]);
    expect(ds.numClasses).toBe(8);
    expect(readIdx(join(dir, "train-labels-idx1-ubyte")).shape).toEqual([3]);
    for (const t of ["i8", "i16", "i32", "f32", "f64"] as const) expect(Array.from(decodeIdx(encodeIdx(t, [2], [-3, 5])).data)).toEqual([-3, 5]);
  });
  it("names the file on bad magic, size mismatch, label count and missing files", () => {
    const dir = tmp();
    const bad = join(dir, "bad.idx");
    writeFileSync(bad, Uint8Array.from([1, 2, 3, 4, 5]));
    expect(() => readIdx(bad)).toThrow(`${bad}: bad IDX magic number 01 02 03 04`);
    const short = join(dir, "short.idx");
    writeFileSync(short, encodeIdx("u8", [4], [1, 2, 3, 4]).subarray(0, 10));
    expect(() => readIdx(short)).toThrow(/short\.idx: size mismatch: header says \[4\] of u8 \(12 bytes\) but the file has 10 bytes \(truncated\?\)/);
    writeFileSync(join(dir, "i"), encodeIdx("u8", [2, 1, 1], [1, 2]));
    writeFileSync(join(dir, "l"), encodeIdx("u8", [3], [1, 2, 3]));
    expect(() => loadIdxDataset(join(dir, "i"), join(dir, "l"))).toThrow(/3 labels but .* has 2 images/);
    expect(() => readIdx(join(dir, "none"))).toThrow(/none: cannot read \(no such file\)/);
    expect(() => loadIdxDirectory(dir, "test")).toThrow(/t10k-images-idx3-ubyte\[\.gz\]: no such file/);
  });
});

describe("CSV", () => {
  it("reads a header, a label by name, and string classes", () => {
    const ds = parseCsv("a,b,species\n1,2,setosa\n3,4.5,virginica\n\n5,6,setosa\n", "iris.csv", { label: "species" });
    expect(ds.length).toBe(3);
    expect(Array.from(ds.inputs)).toEqual([1, 2, 3, 4.5, 5, 6]);
    expect(Array.from(ds.targets)).toEqual([0, 1, 0]);
    expect(ds.classNames).toEqual(["setosa", "virginica"]);
    expect(ds.featureNames).toEqual(["a", "b"]);
  });
  it("reads headerless files with a label index, and regression targets", () => {
    const ds = parseCsv("2,1,0.5\n1,0,1.5\n", "x.csv", { label: 0 });
    expect(Array.from(ds.targets)).toEqual([2, 1]);
    expect(ds.numClasses).toBe(3);
    expect(Array.from(ds.inputs)).toEqual([1, 0.5, 0, 1.5]);
    const r = parseCsv("x,y\n1,0.5\n2,-1.25\n", "r.csv", { label: "y" });
    expect(r.targets).toBeInstanceOf(Float32Array);
    expect(Array.from(r.targets)).toEqual([0.5, -1.25]);
    expect(r.targetShape).toEqual([1]); // (N, 1), like a Linear(D, 1) output
  });
  it("errors name the file, line and column", () => {
    expect(() => parseCsv("a,b,y\n1,2,0\n1,oops,1\n", "f.csv", { label: "y" })).toThrow("f.csv:3: column 2 ('b'): \"oops\" is not a number");
    expect(() => parseCsv("a,b,y\n1,2,0\n1,2\n", "f.csv", { label: "y" })).toThrow("f.csv:3: expected 3 fields (as on line 1), found 2");
    expect(() => parseCsv("a,b,y\n1,2,0\n", "f.csv", { label: "z" })).toThrow(/no column named 'z'/);
    expect(() => parseCsv("", "f.csv")).toThrow(/empty CSV/);
    expect(() => loadCsv("/nonexistent/data.csv")).toThrow("/nonexistent/data.csv: cannot read (no such file)");
  });
});
