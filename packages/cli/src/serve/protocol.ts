/** What the server and its inference worker threads exchange. */

/** The served model, as `GET /v1/model` reports it (the worker describes what it loaded). */
export interface ModelInfo {
  /** The job's model type: mlp, linear, logistic, cnn, gpt or module. */
  type: string;
  /** One line, as `chainrule train` prints it. */
  description: string;
  parameters: number;
  /** The checkpoint directory served. */
  checkpoint: string;
  /** Optimizer steps the checkpoint was trained for. */
  step: number;
  /** One input row's shape (features: its product); for GPT, unused. */
  inputShape: number[];
  task: "classification" | "regression" | "text";
  /** Classes (classification), values per row (regression) or vocabulary size (text). */
  outputs: number;
  /** Classification: how many classes. */
  classes?: number;
  /** Class names, when the training labels were strings. */
  classNames?: string[];
  /** GPT: how many tokens (characters) the model knows. */
  vocabSize?: number;
  /** GPT: the characters of the vocabulary, by token id. */
  vocab?: string[];
  /** GPT: its tokenizer, characters or GPT-2's byte-level BPE (no vocab: any text encodes). */
  tokenizer?: "char" | "bpe";
  /** GPT: the longest context the model sees. */
  blockSize?: number;
  /** GPT: the job's sampling defaults (prompt, tokens, temperature, topK, seed). */
  sample?: { prompt: string; tokens: number; temperature: number; topK?: number; seed: number };
}

/** One generation, validated by the server. */
export interface GenerateParams {
  prompt: string;
  maxTokens: number;
  temperature: number;
  topK?: number;
  seed: number;
}
