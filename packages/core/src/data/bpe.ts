/**
 * GPT-2's byte-level BPE tokenizer, loaded from its two files (vocab.json: token → id;
 * merges.txt: one merge "a b" per line, in priority order). The encoding and decoding are
 * Hugging Face's own JavaScript implementation (@huggingface/tokenizers), configured as
 * GPT-2's tokenizer.json configures it: ByteLevel pre-tokenizer (GPT-2's split regex, no
 * prefix space), BPE model, ByteLevel decoder; `<|endoftext|>` is a special token when the
 * vocabulary has it. Decoding is exact (no clean-up of spaces before punctuation).
 */
import { readFileSync } from "node:fs";
import { Tokenizer } from "@huggingface/tokenizers";
import { ArgumentError } from "../errors.js";

/** The JSON form of a BpeTokenizer (what a checkpoint stores). */
export interface BpeTokenizerJSON {
  type: "bpe";
  /** Token (in GPT-2's byte-to-character alphabet) → id. */
  vocab: Record<string, number>;
  /** Merges in priority order, each "left right". */
  merges: string[];
}

const END_OF_TEXT = "<|endoftext|>";

export class BpeTokenizer {
  readonly vocab: Readonly<Record<string, number>>;
  readonly merges: readonly string[];
  /** One more than the largest id. */
  readonly vocabSize: number;
  private readonly tokenizer: Tokenizer;

  constructor(vocab: Record<string, number>, merges: readonly string[]) {
    if (vocab === null || typeof vocab !== "object" || Array.isArray(vocab)) throw new ArgumentError("BpeTokenizer: vocab must be an object of token → id");
    const ids = Object.values(vocab);
    if (ids.length === 0) throw new ArgumentError("BpeTokenizer: empty vocabulary");
    for (const [tok, id] of Object.entries(vocab)) {
      if (!Number.isInteger(id) || id < 0) throw new ArgumentError(`BpeTokenizer: vocab entry ${JSON.stringify(tok)} has id ${JSON.stringify(id)}, expected a whole number ≥ 0`);
    }
    const missing = byteAlphabet().filter((c) => !(c in vocab));
    if (missing.length) throw new ArgumentError(`BpeTokenizer: the vocabulary lacks ${missing.length} of the 256 byte tokens (e.g. ${JSON.stringify(missing[0])}); a byte-level BPE vocabulary has them all`);
    merges.forEach((m, i) => {
      const parts = m.split(" ");
      if (parts.length !== 2 || !(parts[0] in vocab) || !(parts[1] in vocab) || !(parts.join("") in vocab)) {
        throw new ArgumentError(`BpeTokenizer: merge ${i + 1} ${JSON.stringify(m)} is not "left right" with left, right and their join in the vocabulary`);
      }
    });
    this.vocab = vocab;
    this.merges = [...merges];
    this.vocabSize = ids.reduce((m, id) => Math.max(m, id), 0) + 1; // a loop: a spread of 50k+ ids can overflow the stack
    const special = END_OF_TEXT in vocab ? [{ id: vocab[END_OF_TEXT], content: END_OF_TEXT, single_word: false, lstrip: false, rstrip: false, normalized: true, special: true }] : [];
    this.tokenizer = new Tokenizer({
      version: "1.0", truncation: null, padding: null, added_tokens: special, normalizer: null,
      pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
      post_processor: null,
      decoder: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
      model: { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: "", end_of_word_suffix: "", fuse_unk: false, byte_fallback: false, vocab, merges: [...merges] },
    }, { clean_up_tokenization_spaces: false });
  }

  /** From GPT-2's files: vocab.json and merges.txt (its "#version" line skipped). Errors name the file. */
  static fromFiles(vocabPath: string, mergesPath: string): BpeTokenizer {
    let vocab: Record<string, number>;
    try {
      vocab = JSON.parse(readFileSync(vocabPath, "utf8"));
    } catch (e) {
      throw new ArgumentError(`${vocabPath}: not a vocab.json (${(e as Error).message})`);
    }
    let text: string;
    try {
      text = readFileSync(mergesPath, "utf8");
    } catch (e) {
      throw new ArgumentError(`${mergesPath}: ${(e as Error).message}`);
    }
    const merges = text.split("\n").map((l) => l.replace(/\r$/, "")).filter((l) => l !== "" && !l.startsWith("#version"));
    try {
      return new BpeTokenizer(vocab, merges);
    } catch (e) {
      throw new ArgumentError(`${vocabPath}, ${mergesPath}: ${(e as Error).message}`);
    }
  }

  static fromJSON(j: BpeTokenizerJSON): BpeTokenizer {
    if (j === null || typeof j !== "object" || j.type !== "bpe" || !Array.isArray(j.merges)) throw new ArgumentError('BpeTokenizer.fromJSON: expected { type: "bpe", vocab: {...}, merges: string[] }');
    return new BpeTokenizer(j.vocab, j.merges);
  }

  /** Any text: every byte has a token. */
  covers(_text: string): boolean {
    return true;
  }

  encode(text: string): Int32Array {
    return Int32Array.from(this.tokenizer.encode(text, { add_special_tokens: false }).ids);
  }

  /** Ids → text; an id the vocabulary lacks throws, naming it. A token ending inside a UTF-8 character decodes to U+FFFD until the rest follows. */
  decode(ids: ArrayLike<number>): string {
    const list = Array.from(ids);
    list.forEach((id, i) => {
      if (this.tokenizer.id_to_token(id) === undefined) throw new ArgumentError(`BpeTokenizer.decode: id ${id} at position ${i} is not in the vocabulary`);
    });
    return this.tokenizer.decode(list, { skip_special_tokens: false, clean_up_tokenization_spaces: false });
  }

  /**
   * A decoder for streaming: `push(id)` returns the text the ids so far add, holding back a
   * character whose UTF-8 bytes have not all arrived yet; `flush()` returns what is held back
   * at the end (U+FFFD for bytes that never formed a character).
   */
  streamDecoder(): { push(id: number): string; flush(): string } {
    const ids: number[] = [];
    let shown = 0;
    const take = (holdBack: boolean) => {
      let text = this.decode(ids);
      if (holdBack && text.endsWith("\uFFFD")) text = text.slice(0, -1); // incomplete character: wait for its other bytes
      const fresh = text.slice(shown);
      shown = Math.max(shown, text.length);
      return fresh;
    };
    return {
      push: (id) => {
        ids.push(id);
        return take(true);
      },
      flush: () => take(false),
    };
  }

  toJSON(): BpeTokenizerJSON {
    return { type: "bpe", vocab: { ...this.vocab }, merges: [...this.merges] };
  }
}

/** GPT-2's bytes_to_unicode: the 256 characters that stand for the bytes 0..255 in its vocabulary. */
function byteAlphabet(): string[] {
  const printable = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  let next = 256;
  return Array.from({ length: 256 }, (_, b) => String.fromCodePoint(printable(b) ? b : next++));
}
