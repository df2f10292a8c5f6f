import { describe, expect, it } from "vitest";
import { ArgumentError, CharTokenizer, TextBatchSampler, loadCorpus, loadDefaultCorpus, shuffleLines, trainValSplit } from "../index.js";

describe("CharTokenizer", () => {
  it("builds a sorted vocabulary of distinct characters and round-trips text", () => {
    const tok = CharTokenizer.fromText("hello world\n");
    expect(tok.vocab).toEqual(["\n", " ", "d", "e", "h", "l", "o", "r", "w"]);
    expect(tok.vocabSize).toBe(9);
    const ids = tok.encode("hello world\n");
    expect(ids).toBeInstanceOf(Int32Array);
    expect(Array.from(ids)).toEqual([4, 3, 5, 5, 6, 1, 8, 6, 7, 5, 2, 0]);
    expect(tok.decode(ids)).toBe("hello world\n");
    expect(tok.decode([])).toBe("");
  });

  it("treats a character outside the BMP as one token", () => {
    const text = "a😀b😀é";
    const tok = CharTokenizer.fromText(text);
    expect(tok.vocab).toEqual(["a", "b", "é", "😀"]);
    expect(Array.from(tok.encode(text))).toEqual([0, 3, 1, 3, 2]);
    expect(tok.decode(tok.encode(text))).toBe(text);
  });

  it("saves and restores through JSON (object or string)", () => {
    const tok = CharTokenizer.fromText("the quick brown fox");
    const json = tok.toJSON();
    expect(json.type).toBe("char");
    const back = CharTokenizer.fromJSON(JSON.parse(JSON.stringify(json)));
    expect(back.vocab).toEqual(tok.vocab);
    expect(CharTokenizer.fromJSON(JSON.stringify(tok)).decode(tok.encode("quick"))).toBe("quick");
    expect(() => CharTokenizer.fromJSON({ type: "bpe", vocab: [] } as any)).toThrow(ArgumentError);
    expect(() => CharTokenizer.fromJSON({ type: "char", vocab: ["a", "a"] })).toThrow(/repeats/);
    expect(() => CharTokenizer.fromJSON({ type: "char", vocab: ["ab"] })).toThrow(/single character/);
  });

  it("names unknown characters and out-of-range ids", () => {
    const tok = CharTokenizer.fromText("abc");
    expect(() => tok.encode("abz")).toThrow(/"z" at position 2 is not in the vocabulary/);
    expect(() => tok.decode([0, 3])).toThrow(/id 3 at position 1 is out of range \[0, 3\)/);
    expect(tok.covers("cab")).toBe(true);
    expect(tok.covers("cabd")).toBe(false);
    expect(() => CharTokenizer.fromText("")).toThrow(/empty vocabulary/);
  });
});

describe("trainValSplit and TextBatchSampler", () => {
  const data = Int32Array.from({ length: 100 }, (_, i) => i);

  it("splits into a leading train part and a trailing validation part", () => {
    const { train, val } = trainValSplit(data, 0.1);
    expect(train.length).toBe(90);
    expect(val.length).toBe(10);
    expect(val[0]).toBe(90);
    expect(trainValSplit(data, 0).val.length).toBe(0);
    expect(() => trainValSplit(data, 1)).toThrow(ArgumentError);
  });

  it("draws (B, T) windows whose targets are the inputs shifted by one", () => {
    const s = new TextBatchSampler(data, 4, 8, 1);
    const { x, y, shape } = s.sample();
    expect(shape).toEqual([4, 8]);
    expect(x.length).toBe(32);
    for (let b = 0; b < 4; b++) {
      for (let t = 0; t < 8; t++) {
        expect(y[b * 8 + t]).toBe(x[b * 8 + t] + 1);
        if (t > 0) expect(x[b * 8 + t]).toBe(x[b * 8 + t - 1] + 1);
      }
      expect(x[b * 8] + 8).toBeLessThan(100); // the target window stays inside the corpus
    }
  });

  it("same seed, same batches; different seeds differ; the windows cover the corpus", () => {
    const a = new TextBatchSampler(data, 4, 8, 7), b = new TextBatchSampler(data, 4, 8, 7), c = new TextBatchSampler(data, 4, 8, 8);
    const ba = a.sample(), bb = b.sample(), bc = c.sample();
    expect(Array.from(bb.x)).toEqual(Array.from(ba.x));
    expect(Array.from(bc.x)).not.toEqual(Array.from(ba.x));
    const starts = new Set<number>();
    for (let i = 0; i < 500; i++) {
      const { x } = a.sample();
      for (let r = 0; r < 4; r++) starts.add(x[r * 8]);
    }
    expect(starts.size).toBe(92); // every start 0..91
  });

  it("rejects a corpus shorter than blockSize + 1 and bad sizes", () => {
    expect(() => new TextBatchSampler(data.subarray(0, 8), 2, 8)).toThrow(/too short for blockSize 8/);
    expect(() => new TextBatchSampler(data, 0, 8)).toThrow(/batchSize/);
    expect(() => new TextBatchSampler(data, 2, 2.5)).toThrow(/blockSize/);
  });
});

describe("bundled corpora", () => {
  it("loads the default corpus offline: names one a line", () => {
    const text = loadDefaultCorpus();
    const lines = text.trim().split("\n");
    expect(lines.length).toBe(4951);
    expect(lines[0]).toBe("Aaren");
    const tok = CharTokenizer.fromText(text);
    expect(tok.vocabSize).toBe(54);
    expect(tok.decode(tok.encode(text))).toBe(text);
  });

  it("the second corpus (male names) is covered by the default corpus's vocabulary", () => {
    const male = loadCorpus("male-names");
    expect(male.trim().split("\n").length).toBe(3898);
    expect(CharTokenizer.fromText(loadDefaultCorpus()).covers(male)).toBe(true);
    expect(() => loadCorpus("nope" as any)).toThrow(/unknown corpus 'nope'/);
  });

  it("shuffleLines is a seeded permutation of the lines", () => {
    const text = "a\nb\nc\nd\ne\n";
    const s = shuffleLines(text, 3);
    expect(shuffleLines(text, 3)).toBe(s);
    expect(s.trim().split("\n").sort()).toEqual(["a", "b", "c", "d", "e"]);
    expect(s.endsWith("\n")).toBe(true);
  });
});
