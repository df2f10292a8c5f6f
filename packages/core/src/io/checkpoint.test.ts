import { describe, expect, it } from "vitest";
import { existsSync, mkdtempSync, readFileSync, readdirSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { F, getRngState, manualSeed, nn, optim, randn } from "../index.js";
import { CheckpointError, MODEL_FILE, STATE_FILE, loadCheckpoint, packNumbers, readCheckpoint, saveCheckpoint, unpackNumbers } from "./checkpoint.js";
import { writeFileAtomicSync } from "./atomic.js";

function mlp(h = 8) {
  return new nn.Sequential(new nn.Linear(4, h), new nn.ReLU(), new nn.Linear(h, 3));
}

function trainSteps(model: nn.Module, opt: optim.Optimizer<any>, n: number) {
  for (let i = 0; i < n; i++) {
    const x = randn([5, 4]);
    opt.zeroGrad();
    F.crossEntropy(model.forward(x), [0, 1, 2, 1, 0]).backward();
    opt.step();
  }
}

describe("checkpoints", () => {
  it("save → load restores weights, optimizer state and RNG so training continues identically", () => {
    const dir = mkdtempSync(join(tmpdir(), "ck-"));
    manualSeed(3);
    const a = mlp();
    const optA = new optim.Adam(a.parameters(), { lr: 0.01 });
    trainSteps(a, optA, 3);
    saveCheckpoint(join(dir, "c"), { model: a, optimizer: optA, step: 3, epoch: 1, config: { lr: 0.01 }, extra: { tokenizer: ["a", "b"] } });
    trainSteps(a, optA, 4);

    manualSeed(99);
    const b = mlp();
    const optB = new optim.Adam(b.parameters(), { lr: 0.01 });
    const st = loadCheckpoint(join(dir, "c"), { model: b, optimizer: optB });
    expect(st.step).toBe(3);
    expect(st.epoch).toBe(1);
    expect(st.config).toEqual({ lr: 0.01 });
    expect(st.extra).toEqual({ tokenizer: ["a", "b"] });
    trainSteps(b, optB, 4);
    for (const [k, t] of Object.entries(a.stateDict())) expect(Buffer.from(b.stateDict()[k].data.buffer).equals(Buffer.from(t.data.buffer)), k).toBe(true);
    expect(readdirSync(join(dir, "c")).sort()).toEqual([MODEL_FILE, STATE_FILE]); // no temp files left
  });

  it("a checkpoint that does not match the model is a one-line error naming keys and shapes", () => {
    const dir = mkdtempSync(join(tmpdir(), "ck-"));
    saveCheckpoint(dir, { model: mlp(8) });
    const other = mlp(16);
    const before = Array.from(other.parameters()[0].data);
    expect(() => loadCheckpoint(dir, { model: other })).toThrow(CheckpointError);
    try {
      loadCheckpoint(dir, { model: other });
    } catch (e) {
      const msg = (e as Error).message;
      expect(msg).not.toContain("\n");
      expect(msg).toContain("0.weight [8,4] in checkpoint vs [16,4] in model");
    }
    expect(Array.from(other.parameters()[0].data)).toEqual(before); // nothing copied
    const extra = new nn.Sequential(new nn.Linear(4, 8), new nn.ReLU(), new nn.Linear(8, 3), new nn.Linear(3, 3));
    expect(() => loadCheckpoint(dir, { model: extra })).toThrow(/missing keys \[3\.weight, 3\.bias\]/);
  });

  it("truncated or corrupted files are clear errors", () => {
    const dir = mkdtempSync(join(tmpdir(), "ck-"));
    saveCheckpoint(dir, { model: mlp(), optimizer: new optim.SGD(mlp().parameters(), { momentum: 0.9 }) });
    const m = join(dir, MODEL_FILE);
    const good = readFileSync(m);
    truncateSync(m, good.length - 7);
    expect(() => readCheckpoint(dir)).toThrow(/corrupted checkpoint: .*model\.safetensors: truncated/);
    writeFileSync(m, good);
    const s = join(dir, STATE_FILE);
    truncateSync(s, 20);
    expect(() => readCheckpoint(dir)).toThrow(/corrupted checkpoint: .*state\.json: invalid JSON/);
    expect(() => readCheckpoint(join(dir, "missing"))).toThrow(/checkpoint not found/);
  });

  it("detects a model file and a state file from different saves", () => {
    const d1 = mkdtempSync(join(tmpdir(), "ck-"));
    const d2 = mkdtempSync(join(tmpdir(), "ck-"));
    saveCheckpoint(d1, { model: mlp() });
    saveCheckpoint(d2, { model: mlp() });
    writeFileSync(join(d1, STATE_FILE), readFileSync(join(d2, STATE_FILE)));
    expect(() => readCheckpoint(d1)).toThrow(/come from different saves/);
  });

  it("a quantized checkpoint (weights: quantizedStateDict) is a quarter of the size and reads back as the dequantized weights", () => {
    const dir = mkdtempSync(join(tmpdir(), "ck-"));
    manualSeed(5);
    const wide = () => new nn.Sequential(new nn.Linear(128, 256), new nn.ReLU(), new nn.Linear(256, 10));
    const a = wide();
    saveCheckpoint(join(dir, "f"), { model: a });
    saveCheckpoint(join(dir, "q"), { model: a, weights: nn.quantizedStateDict(a), metadata: { chainrule_quantization: "int8" } });
    const size = (d: string) => readFileSync(join(dir, d, MODEL_FILE)).length;
    expect(size("q") / size("f")).toBeLessThan(0.3);
    const { tensors, metadata } = readCheckpoint(join(dir, "q"));
    expect(metadata.chainrule_quantization).toBe("int8");
    expect(Object.keys(tensors).sort()).toEqual(Object.keys(a.stateDict()).sort());
    const w = a.stateDict()["0.weight"];
    expect(Array.from(tensors["0.weight"].data)).toEqual(Array.from(nn.dequantizeInt8(nn.quantizeInt8(w.data, w.shape))));
    const b = wide();
    loadCheckpoint(join(dir, "q"), { model: b });
    expect(Array.from(b.stateDict()["2.bias"].data)).toEqual(Array.from(a.stateDict()["2.bias"].data));
  });

  it("packs float32 arrays exactly", () => {
    const arr = Array.from(new Float32Array(40).map((_, i) => Math.fround(Math.sin(i) * 1e-3)));
    const back = unpackNumbers(JSON.parse(JSON.stringify(packNumbers({ m: arr, small: [1, 2], rng: [4294967295, 1, 2, 3] })))) as any;
    expect(back.m).toEqual(arr);
    expect(back.small).toEqual([1, 2]);
    expect(back.rng).toEqual([4294967295, 1, 2, 3]);
    expect(getRngState().length).toBe(4);
  });

  it("atomic write replaces the file and leaves no temporary behind", () => {
    const dir = mkdtempSync(join(tmpdir(), "at-"));
    const p = join(dir, "f.txt");
    writeFileAtomicSync(p, "one");
    writeFileAtomicSync(p, "two");
    expect(readFileSync(p, "utf8")).toBe("two");
    expect(readdirSync(dir)).toEqual(["f.txt"]);
    expect(existsSync(p)).toBe(true);
  });
});
