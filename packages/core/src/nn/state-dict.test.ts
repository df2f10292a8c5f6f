import { describe, expect, it } from "vitest";
import { ArgumentError, GPT, Tensor, describeMismatch, manualSeed, nn, tensor } from "../index.js";

const bnModel = () => new nn.Sequential(new nn.Conv2d(1, 2, 3), new nn.BatchNorm2d(2));

describe("state dicts that load PyTorch's", () => {
  it("batch norm buffers carry PyTorch's names, and a PyTorch-named dict loads strictly", () => {
    const m = bnModel();
    expect(Object.keys(m.stateDict())).toEqual(["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked"]);
    const torchDict: Record<string, Tensor> = { ...m.stateDict() };
    torchDict["1.running_mean"] = tensor([0.25, -1]);
    torchDict["1.running_var"] = tensor([2, 3]);
    torchDict["1.num_batches_tracked"] = new Tensor(new Float32Array([7]), []);
    const fresh = bnModel();
    expect(fresh.loadStateDict(torchDict)).toEqual({ missingKeys: [], unexpectedKeys: [] });
    const bn = fresh["1" as keyof typeof fresh] as unknown as nn.BatchNorm2d;
    expect(Array.from(bn.runningMean!.data)).toEqual([0.25, -1]);
    expect(Array.from(bn.runningVar!.data)).toEqual([2, 3]);
    expect(bn.numBatchesTracked!.item()).toBe(7);
  });

  it("reads the former camel-case names too (checkpoints written before), strictly", () => {
    const m = bnModel();
    const old: Record<string, Tensor> = {};
    for (const [k, v] of Object.entries(m.stateDict())) {
      old[k.replace("running_mean", "runningMean").replace("running_var", "runningVar").replace("num_batches_tracked", "numBatchesTracked")] = v.clone();
    }
    old["1.runningMean"] = tensor([5, 6]);
    const fresh = bnModel();
    expect(describeMismatch(old, fresh)).toBeNull();
    expect(fresh.loadStateDict(old)).toEqual({ missingKeys: [], unexpectedKeys: [] });
    expect(Array.from(fresh.stateDict()["1.running_mean"].data)).toEqual([5, 6]);
  });

  it("BatchNorm1d shares the names and options", () => {
    const bn = new nn.BatchNorm1d(3, { momentum: 0.5 });
    expect(Object.keys(bn.stateDict())).toEqual(["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]);
    bn.forward(tensor([[1, 2, 3], [3, 2, 1]]));
    expect(Array.from(bn.runningMean!.data)).toEqual([1, 1, 1]); // 0.5·0 + 0.5·2
    expect(() => new nn.BatchNorm1d(3, { momentun: 0.5 } as any)).toThrow("BatchNorm1d: unknown option 'momentun' (did you mean 'momentum'?)");
  });

  it("a tied head's duplicate (nanoGPT's lm_head.weight) is accepted with strict when it equals its twin", () => {
    manualSeed(0);
    const cfg = { vocabSize: 11, blockSize: 8, nLayer: 1, nHead: 2, nEmbd: 8, tieWeights: true };
    const model = new GPT(cfg);
    const dict: Record<string, Tensor> = {};
    for (const [k, v] of Object.entries(new GPT(cfg).stateDict())) dict[k] = v.clone();
    expect("lm_head.weight" in dict).toBe(false);
    dict["lm_head.weight"] = dict["transformer.wte.weight"].clone();
    expect(describeMismatch(dict, model)).toBeNull();
    expect(model.loadStateDict(dict)).toEqual({ missingKeys: [], unexpectedKeys: [] });
    expect(Array.from(model.lm_head.stateDict().weight.data)).toEqual(Array.from(dict["transformer.wte.weight"].data));
    // The duplicate alone stands in for its twin.
    const onlyHead = { ...dict };
    delete onlyHead["transformer.wte.weight"];
    expect(new GPT(cfg).loadStateDict(onlyHead).missingKeys).toEqual([]);
    // Differing copies are an error naming both keys.
    dict["lm_head.weight"] = dict["lm_head.weight"].mul(2);
    expect(() => new GPT(cfg).loadStateDict(dict)).toThrow("loadStateDict: 'lm_head.weight' is tied to 'transformer.wte.weight' in the model but their values differ in the state dict");
    expect(describeMismatch(dict, new GPT(cfg))).toMatch(/'lm_head.weight' is tied to 'transformer.wte.weight'/);
  });

  it("unknown keys still fail strict loads; strict is the only option", () => {
    const m = bnModel();
    const dict = { ...m.stateDict(), "1.running_meen": tensor([0, 0]) };
    expect(() => bnModel().loadStateDict(dict)).toThrow(/unexpected keys \[1.running_meen\]/);
    expect(() => bnModel().loadStateDict(m.stateDict(), { stict: false } as any)).toThrow(ArgumentError);
  });
});
