import { describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { F, getRngState, manualSeed, nn, optim, randn } from "../index.js";
import { CheckpointError, MODEL_FILE, STATE_FILE, loadCheckpoint, packNumbers, readCheckpoint, saveCheckpoint, unpackNumbers } from "./checkpoint.js";
import { CHECKSUMS_FILE } from "./checksums.js";
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
    expect(readdirSync(join(dir, "c")).sort()).toEqual([CHECKSUMS_FILE, MODEL_FILE, STATE_FILE]); // no temp files left
    expect(readdirSync(dir)).toEqual(["c"]); // nor a temporary directory beside it
  });

  it("readCheckpoint with optimizerState: false leaves the optimizer's state out and reads the rest the same", () => {
    const dir = mkdtempSync(join(tmpdir(), "ck-"));
    const a = mlp();
    const opt = new optim.Adam(a.parameters(), { lr: 0.01 });
    trainSteps(a, opt, 2);
    saveCheckpoint(dir, { model: a, optimizer: opt, step: 2, config: { lr: 0.01 } });
    const whole = readCheckpoint(dir), lean = readCheckpoint(dir, { optimizerState: false });
    expect(whole.state.optimizer).toBeDefined();
    expect(lean.state.optimizer).toBeUndefined();
    expect({ ...lean.state }).toEqual({ ...whole.state, optimizer: undefined });
    for (const [k, t] of Object.entries(whole.tensors)) expect(lean.tensors[k].data).toEqual(t.data);
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

  /** `readCheckpoint(dir)`'s error: one line, or "" when it reads. */
  function readError(dir: string): string {
    try {
      readCheckpoint(dir);
      return "";
    } catch (e) {
      expect(e).toBeInstanceOf(CheckpointError);
      const msg = (e as Error).message;
      expect(msg).not.toContain("\n");
      return msg;
    }
  }

  it("SHA256SUMS: a flipped byte in model.safetensors or state.json is a one-line error naming the file", () => {
    const dir = mkdtempSync(join(tmpdir(), "ck-"));
    saveCheckpoint(dir, { model: mlp(), step: 3, epoch: 1 });
    expect(readFileSync(join(dir, CHECKSUMS_FILE), "utf8")).toMatch(/^[0-9a-f]{64} {2}model\.safetensors\n[0-9a-f]{64} {2}state\.json\n$/);
    const m = join(dir, MODEL_FILE), good = readFileSync(m);
    const bad = Buffer.from(good);
    bad[bad.length - 5] ^= 0x10; // a weight's byte: the file still parses
    writeFileSync(m, bad);
    expect(readError(dir)).toMatch(new RegExp(`^corrupted checkpoint: ${m}: SHA-256 [0-9a-f]{12}… differs from [0-9a-f]{12}… recorded in SHA256SUMS`));
    expect(() => loadCheckpoint(dir, { model: mlp() })).toThrow(/model\.safetensors: SHA-256/);
    writeFileSync(m, good);
    expect(readError(dir)).toBe("");
    const s = join(dir, STATE_FILE), text = readFileSync(s, "utf8");
    writeFileSync(s, text.replace('"epoch":1', '"epoch":5')); // still valid JSON, a different epoch
    expect(readError(dir)).toMatch(new RegExp(`^corrupted checkpoint: ${s}: SHA-256 .* recorded in SHA256SUMS`));
    writeFileSync(s, text);
    rmSync(m);
    writeFileSync(join(dir, CHECKSUMS_FILE), readFileSync(join(dir, CHECKSUMS_FILE), "utf8") + "0".repeat(64) + "  adapters.safetensors\n");
    writeFileSync(m, good);
    expect(readError(dir)).toMatch(/^incomplete checkpoint: .*adapters\.safetensors: missing \(listed in SHA256SUMS\)/);
  });

  it("a checkpoint without SHA256SUMS (written before chainrule wrote checksums) still loads", () => {
    const dir = mkdtempSync(join(tmpdir(), "ck-"));
    manualSeed(4);
    const a = mlp();
    saveCheckpoint(dir, { model: a, step: 2 });
    rmSync(join(dir, CHECKSUMS_FILE));
    const b = mlp();
    expect(loadCheckpoint(dir, { model: b }).step).toBe(2);
    expect(Array.from(b.stateDict()["2.weight"].data)).toEqual(Array.from(a.stateDict()["2.weight"].data));
  });

  it("saving into an existing directory replaces each file and SHA256SUMS; more files are listed and verified too", () => {
    const dir = mkdtempSync(join(tmpdir(), "ck-"));
    writeFileSync(join(dir, "notes.txt"), "the user's own file");
    saveCheckpoint(dir, { model: mlp(), step: 1 });
    saveCheckpoint(dir, { model: mlp(), step: 2, files: { "adapters.safetensors": new Uint8Array([1, 2, 3]) } });
    expect(readCheckpoint(dir).state.step).toBe(2);
    expect(readdirSync(dir).sort()).toEqual([CHECKSUMS_FILE, "adapters.safetensors", MODEL_FILE, "notes.txt", STATE_FILE]);
    expect(readFileSync(join(dir, CHECKSUMS_FILE), "utf8")).not.toContain("notes.txt"); // not a file of the checkpoint
    writeFileSync(join(dir, "adapters.safetensors"), new Uint8Array([1, 2, 4]));
    expect(readError(dir)).toMatch(/adapters\.safetensors: SHA-256/);
    expect(() => saveCheckpoint(dir, { model: mlp(), files: { [STATE_FILE]: "{}" } })).toThrow(/saveCheckpoint: files: 'state\.json'/);
    expect(() => saveCheckpoint(dir, { model: mlp(), files: { "../x": "" } })).toThrow(/saveCheckpoint: files: '\.\.\/x'/);
  });

  it("a save killed before it completes leaves nothing that loads as a checkpoint", () => {
    const root = mkdtempSync(join(tmpdir(), "ck-"));
    const index = fileURLToPath(new URL("../index.ts", import.meta.url));
    // The process dies (SIGKILL: no cleanup runs) as the optimizer state is read: model.safetensors is written, state.json not.
    const killedSave = (dir: string) => {
      const script = `import(${JSON.stringify(index)}).then((c) => c.saveCheckpoint(${JSON.stringify(dir)}, { model: new c.nn.Linear(4, 3), step: 9, ` +
        `optimizer: { stateDict: () => process.kill(process.pid, "SIGKILL"), loadStateDict() {} } }))`;
      expect(() => execFileSync(process.execPath, ["--import", "tsx", "-e", script], { stdio: "pipe" })).toThrow();
    };
    const fresh = join(root, "fresh");
    killedSave(fresh);
    expect(existsSync(fresh)).toBe(false); // the directory appears only complete
    expect(readError(fresh)).toMatch(/checkpoint not found/);
    const left = readdirSync(root).filter((n) => n !== "fresh");
    expect(left).toHaveLength(1); // the temporary the kill left: .fresh.PID.XXXX.tmp, not a checkpoint either
    expect(left[0]).toMatch(/^\.fresh\.\d+\.[0-9a-f]{8}\.tmp$/);
    expect(readError(join(root, left[0]))).toMatch(/not a checkpoint \(no state\.json\)/);

    const existing = join(root, "existing");
    saveCheckpoint(existing, { model: new nn.Linear(4, 3), step: 1 });
    killedSave(existing); // the new model.safetensors replaced the old one; state.json and SHA256SUMS are the old save's
    expect(readError(existing)).toMatch(/come from different saves/);
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
