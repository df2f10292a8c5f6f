import { describe, expect, it } from "vitest";
import { GPT, Generator, KVCache, ShapeError, generate, manualSeed, nn, noGrad } from "../index.js";
import { assertClose } from "../testing/index.js";

const gpt2 = { vocabSize: 11, blockSize: 16, nLayer: 2, nHead: 2, nEmbd: 8 };
const llama = { ...gpt2, arch: "llama" as const, nHead: 4, nKvHead: 2, nEmbd: 16 };

function tokens(n: number, V: number, seed: number): number[] {
  const g = new Generator(seed);
  return Array.from({ length: n }, () => g.randint(V));
}

/** Logits of forwardCached fed in chunks (a prompt, then one token at a time) against one forward over the whole sequence. */
function checkCachedLogits(m: GPT, seq: number[], chunks: number[]): void {
  const whole = noGrad(() => m.forward(Int32Array.from(seq), [1, seq.length])); // (1, T, V)
  const cache = m.newCache();
  const V = m.config.vocabSize;
  let at = 0;
  for (const n of chunks) {
    const logits = m.forwardCached(seq.slice(at, at + n), cache); // (1, n, V)
    expect(logits.shape).toEqual([1, n, V]);
    assertClose(logits.data, whole.data.subarray(at * V, (at + n) * V), { atol: 2e-5, rtol: 1e-4 });
    at += n;
    expect(cache.length).toBe(at);
  }
}

describe("KV cache", () => {
  for (const [name, cfg] of [["gpt2", gpt2], ["gpt2 tied, no bias", { ...gpt2, tieWeights: true, bias: false }], ["llama (grouped-query)", llama], ["llama (multi-head)", { ...llama, nKvHead: 4 }]] as const) {
    it(`${name}: cached logits equal the whole-sequence forward`, () => {
      manualSeed(3);
      const m = new GPT(cfg);
      m.eval();
      const seq = tokens(16, cfg.vocabSize, 1);
      checkCachedLogits(m, seq, [5, 1, 1, 1, 4, 1, 3]); // fills the whole blockSize
    });

    it(`${name}: generate gives the same tokens with and without the cache, past blockSize too`, () => {
      manualSeed(4);
      const m = new GPT(cfg);
      for (const o of [{ seed: 1 }, { seed: 2, temperature: 0.7, topK: 4 }, { temperature: 0 }]) {
        const cached = generate(m, [1, 2, 3], { maxNewTokens: 30, ...o });
        const plain = generate(m, [1, 2, 3], { maxNewTokens: 30, ...o, kvCache: false });
        expect(cached).toEqual(plain);
      }
    });
  }

  it("works through LoRA-adapted layers", () => {
    manualSeed(5);
    const m = new GPT(llama);
    nn.applyLora(m, { rank: 2, targets: "q_proj|v_proj|down_proj" });
    for (const [n, p] of m.namedParameters()) if (n.includes("lora_B")) p.data.fill(0.05); // non-zero adapters
    m.eval();
    checkCachedLogits(m, tokens(8, 11, 2), [3, 1, 1, 1, 2]);
  });

  it("refuses positions past its capacity and a cache of another shape, naming them", () => {
    manualSeed(6);
    const m = new GPT(gpt2);
    const cache = m.newCache();
    m.forwardCached(tokens(16, 11, 3), cache);
    expect(() => m.forwardCached([1], cache)).toThrow(/1 new positions after 16 cached exceed the cache's 16 \(blockSize\)/);
    cache.reset();
    expect(() => m.forwardCached([1], new KVCache(3, 8, 16))).toThrow(ShapeError);
    expect(() => m.forwardCached([11], cache)).toThrow(/token id 11 at position 0 is out of range \[0, 11\)/);
    expect(() => new KVCache(2, 0, 4)).toThrow(/kvWidth must be a positive integer/);
  });
});
