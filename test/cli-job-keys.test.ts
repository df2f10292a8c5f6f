/** A misspelled job key is named with the key it was probably meant to be, in the job file and in --set. */
import { describe, expect, it } from "vitest";
import { cli, expectOneLineError, jobParseError as error } from "./cli-helpers.ts";

describe("did you mean, for job keys", () => {
  it("suggests the closest key of the same section (the branch the section's type picks)", () => {
    expect(error({ epoch: 3 })).toBe("job.json: epoch: unknown key (did you mean epochs?)");
    expect(error({ model: { type: "mlp", hiden: [3] } })).toBe("job.json: model.hiden: unknown key (did you mean model.hidden?)");
    expect(error({ model: { type: "gpt", nlayer: 2 }, data: { type: "text" } })).toBe("job.json: model.nlayer: unknown key (did you mean model.nLayer?)");
    expect(error({ optimizer: { type: "sgd", momentun: 0.9 } })).toBe("job.json: optimizer.momentun: unknown key (did you mean optimizer.momentum?)");
    expect(error({ data: { type: "csv", path: "a.csv", lable: "y" } })).toBe("job.json: data.lable: unknown key (did you mean data.label?)");
    expect(error({ checkpoint: { keepBest: { metrc: "heldOutLoss" } } })).toBe("job.json: checkpoint.keepBest.metrc: unknown key (did you mean checkpoint.keepBest.metric?)");
    expect(error({ paramGroups: [{ match: "x", lr: 1, mtach: "y" }] })).toBe("job.json: paramGroups[0].mtach: unknown key (did you mean paramGroups[0].match?)");
    expect(error({ optimizer: { type: "adam", weight_decay: 0.1 } })).toBe("job.json: optimizer.weight_decay: unknown key (did you mean optimizer.weightDecay?)");
  });

  it("suggests nothing for a key close to none", () => {
    expect(error({ bogus: 1 })).toBe("job.json: bogus: unknown key");
    expect(error({ foo: 1 })).toBe("job.json: foo: unknown key"); // a short key is only matched up to case and _ or -
    expect(error({ model: { type: "linear", hidden: [8] } })).toBe("job.json: model.hidden: unknown key");
  });

  it("through the command: --set with a misspelled key", async () => {
    expectOneLineError(await cli(["train", "--set", "earlyStoping.patience=2"]), /earlyStoping: unknown key \(did you mean earlyStopping\?\)/, 2);
  }, 30_000);
});
