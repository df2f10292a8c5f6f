/** The HTTP API's request checks against a model's shape and vocabulary (no server needed). */
import { describe, expect, it } from "vitest";
import { parseGenerate, parsePredict } from "./requests.js";
import type { ModelInfo } from "./protocol.js";
import type { HttpError } from "./errors.js";

const IMAGES: ModelInfo = {
  type: "cnn", description: "", parameters: 0, checkpoint: "/c", step: 1, inputShape: [1, 2, 3], task: "classification", outputs: 4, classes: 4,
};
const GPT: ModelInfo = {
  type: "gpt", description: "", parameters: 0, checkpoint: "/g", step: 1, inputShape: [8], task: "text", outputs: 3, vocabSize: 3,
  vocab: ["\n", "a", "b"], blockSize: 8, sample: { prompt: "a", tokens: 50, temperature: 0.7, topK: 2, seed: 0 },
};

/** The 400 that `f` throws: [field, message]. */
function refusal(f: () => unknown): [string | undefined, string] {
  try {
    f();
  } catch (e) {
    const err = e as HttpError;
    expect(err.status).toBe(400);
    return [err.field, err.message];
  }
  throw new Error("expected a 400");
}

describe("parsePredict", () => {
  const flat = [1, 2, 3, 4, 5, 6];
  const nested = [[[1, 2, 3], [4, 5, 6]]];

  it("reads flat rows and rows nested to the input shape into one row-major array", () => {
    const r = parsePredict({ inputs: [flat, nested], top: 2 }, IMAGES, 10);
    expect(r.n).toBe(2);
    expect(Array.from(r.rows)).toEqual([...flat, ...flat]);
    expect(r.top).toBe(2);
    expect(parsePredict({ inputs: [flat] }, IMAGES, 10).top).toBe(3);
    expect(parsePredict({ inputs: [flat], top: 99 }, IMAGES, 10).top).toBe(4); // at most the classes
  });

  it("names the field of the first problem", () => {
    expect(refusal(() => parsePredict({ inputs: [flat, [1, 2]] }, IMAGES, 10))).toEqual(["inputs[1]", "inputs[1]: 2 values but the model takes 6 (or nested lists of shape [1, 2, 3])"]);
    expect(refusal(() => parsePredict({ inputs: [[[[1, 2, 3], [4, 5]]]] }, IMAGES, 10))).toEqual(["inputs[0][0][1]", "inputs[0][0][1]: expected a list of 3 (dimension 2 of the input shape [1, 2, 3]), got 2 entries"]);
    expect(refusal(() => parsePredict({ inputs: [[[[1, 2, 3], [4, "5", 6]]]] }, IMAGES, 10))).toEqual(["inputs[0][0][1][1]", 'inputs[0][0][1][1]: expected a number, got "5"']);
    expect(refusal(() => parsePredict({ inputs: [[1, 2, 3, 4, 5, true]] }, IMAGES, 10))).toEqual(["inputs[0][5]", "inputs[0][5]: expected a number, got true"]);
    expect(refusal(() => parsePredict({ inputs: [7] }, IMAGES, 10))).toEqual(["inputs[0]", "inputs[0]: expected a list of 6 numbers, got 7"]);
    expect(refusal(() => parsePredict({ inputs: [flat, flat, flat] }, IMAGES, 2))[1]).toBe("inputs: 3 rows, more than the 2 one request may send");
    expect(refusal(() => parsePredict({ inputs: [flat], tops: 1 }, IMAGES, 10))).toEqual(["tops", "tops: unknown key (did you mean top?); expected inputs, top"]);
    expect(refusal(() => parsePredict({ inputs: [flat], top: 1.5 }, IMAGES, 10))).toEqual(["top", "top: expected an integer, got 1.5"]);
    expect(refusal(() => parsePredict({ inputs: "1,2" }, IMAGES, 10))).toEqual(["inputs", 'inputs: expected array, got "1,2"']);
    expect(refusal(() => parsePredict(null, IMAGES, 10))).toEqual(["body", "body: expected a JSON object, got null"]);
  });
});

describe("parseGenerate", () => {
  it("takes the checkpoint's sampling settings as defaults (seed 0) and the request's over them", () => {
    expect(parseGenerate({}, GPT, 100)).toEqual({ prompt: "a", maxTokens: 50, temperature: 0.7, topK: 2, seed: 0, stream: false });
    expect(parseGenerate({}, GPT, 20).maxTokens).toBe(20); // the default is capped by the server's limit
    expect(parseGenerate({ prompt: "ab\n", maxTokens: 5, temperature: 0, topK: 1, seed: 9, stream: true }, GPT, 100))
      .toEqual({ prompt: "ab\n", maxTokens: 5, temperature: 0, topK: 1, seed: 9, stream: true });
  });

  it("names the field of the first problem", () => {
    expect(refusal(() => parseGenerate({ prompt: "abc" }, GPT, 100))).toEqual(["prompt", 'prompt: character "c" is not in the model\'s vocabulary (3 characters: "\\nab")']);
    expect(refusal(() => parseGenerate({ maxTokens: 101 }, GPT, 100))).toEqual(["maxTokens", "maxTokens: 101 is more than this server's limit of 100"]);
    expect(refusal(() => parseGenerate({ maxTokens: -1 }, GPT, 100))[0]).toBe("maxTokens");
    expect(refusal(() => parseGenerate({ temperature: "hot" }, GPT, 100))).toEqual(["temperature", 'temperature: expected number, got "hot"']);
    expect(refusal(() => parseGenerate({ seed: 2 ** 32 }, GPT, 100))[0]).toBe("seed");
    expect(refusal(() => parseGenerate({ stream: "yes" }, GPT, 100))[0]).toBe("stream");
    expect(refusal(() => parseGenerate({ max_tokens: 5 }, GPT, 100))[1]).toMatch(/^max_tokens: unknown key \(did you mean maxTokens\?\)/);
  });
});
