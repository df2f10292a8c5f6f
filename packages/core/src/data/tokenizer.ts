/** The tokenizers a text checkpoint may carry, behind one type: characters, or GPT-2's byte-level BPE. */
import { ArgumentError } from "../errors.js";
import { CharTokenizer, type CharTokenizerJSON } from "./text.js";
import { BpeTokenizer, type BpeTokenizerJSON } from "./bpe.js";

export type TextTokenizer = CharTokenizer | BpeTokenizer;
export type TextTokenizerJSON = CharTokenizerJSON | BpeTokenizerJSON;

/** The tokenizer a checkpoint's JSON describes (`type` "char" or "bpe"). */
export function tokenizerFromJSON(j: TextTokenizerJSON): TextTokenizer {
  switch ((j as { type?: unknown } | null)?.type) {
    case "char": return CharTokenizer.fromJSON(j as CharTokenizerJSON);
    case "bpe": return BpeTokenizer.fromJSON(j as BpeTokenizerJSON);
    default: throw new ArgumentError(`tokenizerFromJSON: unknown tokenizer type ${JSON.stringify((j as { type?: unknown } | null)?.type)} (known: "char", "bpe")`);
  }
}
