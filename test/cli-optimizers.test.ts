/**
 * Jobs with RMSprop and Adagrad: PyTorch's option names and defaults in the job, training through
 * the real command with 2 workers, and a run resumed from its first epoch's checkpoint ending
 * with the same tensor bytes and optimizer state as an uninterrupted one.
 */
import { afterAll, describe, expect, it } from "vitest";
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { parseJob } from "../packages/cli/src/job/parse.js";
import { checkpointTensors, cli, latestCheckpoint, tempDir, writeJobIn, jobParseError as parseError } from "./cli-helpers.ts";

const TMP = tempDir("chainrule-optimizers-");
afterAll(() => rmSync(TMP, { recursive: true, force: true }));

describe("optimizer.type rmsprop and adagrad in a job", () => {
  it("take PyTorch's defaults and option names; bad values are named", () => {
    expect(parseJob({ optimizer: { type: "rmsprop" } }, "job.json").optimizer).toEqual({ type: "rmsprop", lr: 0.01, alpha: 0.99, eps: 1e-8, weightDecay: 0, momentum: 0, centered: false });
    expect(parseJob({ optimizer: { type: "adagrad" } }, "job.json").optimizer).toEqual({ type: "adagrad", lr: 0.01, lrDecay: 0, weightDecay: 0, initialAccumulatorValue: 0, eps: 1e-10 });
    expect(parseError({ optimizer: { type: "rmsprop", alpha: 1.5 } })).toMatch(/^job\.json: optimizer\.alpha: /);
    expect(parseError({ optimizer: { type: "adagrad", initialAccumulator: 0.1 } })).toBe("job.json: optimizer.initialAccumulator: unknown key (did you mean optimizer.initialAccumulatorValue?)");
    expect(parseError({ optimizer: { type: "rmsprop", betas: [0.9, 0.99] } })).toMatch(/^job\.json: optimizer\.betas: unknown key/);
  });

  const cases: [string, unknown][] = [
    ["rmsprop", { type: "rmsprop", lr: 0.002, momentum: 0.5, centered: true }],
    ["adagrad", { type: "adagrad", lr: 0.05, lrDecay: 0.01, initialAccumulatorValue: 0.1 }],
  ];
  it.each(cases)("%s: a job trains with 2 workers; resumed after epoch 1 it ends bit-identical to an uninterrupted run", async (name, optimizer) => {
    const job = writeJobIn(TMP, name, {
      model: { type: "mlp", hidden: [16] }, data: { type: "mnist", limitTrain: 256, limitHeldOut: 100 },
      optimizer, epochs: 2, batchSize: 32, workers: 2, seed: 3, log: { everySteps: 1 },
    });
    const whole = join(TMP, `${name}-whole`), split = join(TMP, `${name}-split`);
    const [a, b] = await Promise.all([cli(["train", job, "--out", whole]), cli(["train", job, "--out", split, "--epochs", "1"])]);
    expect(a.code, a.stderr).toBe(0);
    expect(b.code, b.stderr).toBe(0);
    const losses = readFileSync(join(whole, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l)).filter((r) => r.kind === "step").map((r) => r.loss as number);
    expect(losses).toHaveLength(16);
    expect(losses.slice(-4).reduce((x, y) => x + y) / 4).toBeLessThan(losses.slice(0, 4).reduce((x, y) => x + y) / 4);
    const resumed = await cli(["train", "--resume", "--out", split, "--epochs", "2"]);
    expect(resumed.code, resumed.stderr).toBe(0);
    const wa = checkpointTensors(latestCheckpoint(whole)), wb = checkpointTensors(latestCheckpoint(split));
    expect(Object.keys(wb)).toEqual(Object.keys(wa));
    for (const k of Object.keys(wa)) expect(Buffer.from(wb[k].data.buffer, wb[k].data.byteOffset, wb[k].data.byteLength).equals(Buffer.from(wa[k].data.buffer, wa[k].data.byteOffset, wa[k].data.byteLength)), `${k} differs`).toBe(true);
    const sa = JSON.parse(readFileSync(join(latestCheckpoint(whole), "state.json"), "utf8"));
    const sb = JSON.parse(readFileSync(join(latestCheckpoint(split), "state.json"), "utf8"));
    expect(sb.step).toBe(16);
    expect(Object.keys(sa.optimizer.optimizer.buffers)).toEqual(name === "rmsprop" ? ["squareAvg", "gradAvg", "momentumBuffer"] : ["sum"]);
    expect(sb.optimizer).toEqual(sa.optimizer);
  }, 120_000);
});
