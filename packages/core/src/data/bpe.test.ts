import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { BpeTokenizer, CharTokenizer, tokenizerFromJSON } from "../index.js";

/** GPT-2's bytes_to_unicode, written out again here: byte b stands as this character in the vocabulary. */
function byteChars(): string[] {
  const printable = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  let next = 256;
  return Array.from({ length: 256 }, (_, b) => String.fromCodePoint(printable(b) ? b : next++));
}

const MERGES = ["h e", "l l", "he ll", "Ġ w", "o r"];

/** vocab.json and merges.txt as GPT-2 ships them: 256 byte tokens, the merges (ids 256..260), <|endoftext|> (261). */
function writeTokenizerFiles(dir: string, merges = MERGES, vocabExtra: Record<string, number> = {}): { vocab: string; merges: string } {
  const vocab: Record<string, number> = {};
  byteChars().forEach((c, b) => (vocab[c] = b));
  for (const m of merges) vocab[m.replace(" ", "")] = Object.keys(vocab).length;
  vocab["<|endoftext|>"] = Object.keys(vocab).length;
  Object.assign(vocab, vocabExtra);
  writeFileSync(join(dir, "vocab.json"), JSON.stringify(vocab));
  writeFileSync(join(dir, "merges.txt"), ["#version: 0.2", ...merges].join("\n") + "\n");
  return { vocab: join(dir, "vocab.json"), merges: join(dir, "merges.txt") };
}

describe("BpeTokenizer (GPT-2's byte-level BPE from vocab.json and merges.txt)", () => {
  const dir = mkdtempSync(join(tmpdir(), "chainrule-bpe-"));
  const files = writeTokenizerFiles(dir);
  const tok = BpeTokenizer.fromFiles(files.vocab, files.merges);

  it("applies the merges in priority order within each pre-token, spaces joined to the word after", () => {
    expect(tok.vocabSize).toBe(262);
    // "hello" → h e (256), l l (257), he ll (258), o; " world" → Ġ w (259), o r (260), l, d
    expect(Array.from(tok.encode("hello world"))).toEqual([258, 111, 259, 260, 108, 100]);
    // "hell" alone, and "ell": no "h e" first, so "l l" then nothing joins e + ll
    expect(Array.from(tok.encode("ell"))).toEqual([101, 257]);
    expect(Array.from(tok.encode("<|endoftext|>"))).toEqual([261]);
    // bytes outside ASCII: é is C3 A9, each its byte token; a newline is byte 10's token
    expect(Array.from(tok.encode("é\n"))).toEqual([byteChars().indexOf("Ã"), byteChars().indexOf("©"), byteChars().indexOf("Ċ")]);
  });

  it("decodes exactly what it encoded, any text", () => {
    for (const text of ["hello world", " hello  world, hello!\n", "Grüße, 世界 🙂 — tabs\tand\r\nlines", "<|endoftext|>hello"]) {
      expect(tok.decode(tok.encode(text))).toBe(text);
    }
  });

  it("streams: a character split across tokens appears once its last byte arrives", () => {
    const ids = Array.from(tok.encode("hé🙂!"));
    const d = tok.streamDecoder();
    const pieces = ids.map((id) => d.push(id));
    expect(pieces.join("")).toBe("hé🙂!");
    expect(pieces).toContain(""); // the first byte of é (and of 🙂) alone shows nothing yet
    expect(pieces.some((p) => p.includes("\uFFFD"))).toBe(false);
    // a lone first byte of é that nothing completes comes out as U+FFFD at the end
    const cut = tok.streamDecoder();
    expect(cut.push(104)).toBe("h");
    expect(cut.push(byteChars().indexOf("Ã"))).toBe("");
    expect(cut.flush()).toBe("\uFFFD");
  });

  it("round-trips through its JSON (what a checkpoint stores) and tokenizerFromJSON", () => {
    const again = tokenizerFromJSON(JSON.parse(JSON.stringify(tok.toJSON())));
    expect(again).toBeInstanceOf(BpeTokenizer);
    expect(Array.from(again.encode("hello world"))).toEqual([258, 111, 259, 260, 108, 100]);
    expect(tokenizerFromJSON({ type: "char", vocab: ["a", "b"] })).toBeInstanceOf(CharTokenizer);
    expect(() => tokenizerFromJSON({ type: "wordpiece" } as never)).toThrow(/unknown tokenizer type "wordpiece"/);
  });

  it("refuses broken files in one line naming the file and what is wrong", () => {
    const bad = mkdtempSync(join(tmpdir(), "chainrule-bpe-bad-"));
    const f = writeTokenizerFiles(bad);
    writeFileSync(f.merges, "#version: 0.2\nh e\nq z\n"); // "qz" is no token
    expect(() => BpeTokenizer.fromFiles(f.vocab, f.merges)).toThrow(/merges\.txt: .*merge 2 "q z" is not "left right" with left, right and their join in the vocabulary/);
    writeFileSync(f.vocab, JSON.stringify({ a: 0, b: 1 }));
    expect(() => BpeTokenizer.fromFiles(f.vocab, f.merges)).toThrow(/vocab\.json.*lacks 254 of the 256 byte tokens/);
    writeFileSync(f.vocab, "{not json");
    expect(() => BpeTokenizer.fromFiles(f.vocab, f.merges)).toThrow(/vocab\.json: not a vocab\.json/);
    expect(() => BpeTokenizer.fromFiles(join(bad, "none.json"), f.merges)).toThrow(/none\.json/);
    expect(() => tok.decode([5000])).toThrow(/id 5000 at position 0 is not in the vocabulary/);
  });
});
