/**
 * gradientCompression in one process: two hosts through a communicator whose other host sends
 * what this one sends, so the combined gradient is this host's own, decoded. It is the float32
 * gradient rounded to bf16 / fp16 bit for bit; fp16's overflow makes the step's gradient
 * non-finite (bf16 keeps float32's range); a bad value is refused in one line.
 * (Across processes with mpirun: mpi.test.ts.)
 */
import { expect, test } from "vitest";
import { type Dataset, decodeHalf, encodeHalf, makeDataset, toShared } from "@chainrule/core";
import { DataParallel, type GradientCompression } from "@chainrule/parallel";
import type { Communicator } from "../packages/parallel/src/mpi.ts";
import { MODELS, makeData } from "./fixtures/parallel-data.ts";

const mirror: Communicator = {
  rank: 0, size: 2,
  allgather(send, recv) {
    recv.set(send as never, 0);
    recv.set(send as never, send.length);
  },
};

/** One Adam step of a small MLP on 2 mirrored hosts; the mean gradient and the parameters after it. */
async function oneStep(ds: Dataset, loss: "crossEntropy" | "mseLoss", gradientCompression?: GradientCompression): Promise<{ grad: Float32Array; params: Float32Array }> {
  const outputs = ds.targets instanceof Int32Array ? 3 : 1;
  const dp = new DataParallel({
    model: { module: MODELS, export: "mlp", options: { sizes: [6, 16, outputs] } },
    loss, optimizer: { type: "adam", lr: 0.01 }, workers: 1, seed: 3, hosts: mirror, gradientCompression,
  });
  try {
    await dp.init();
    await dp.step(ds);
    return { grad: dp.grad.slice(), params: dp.params.slice() };
  } finally {
    await dp.close();
  }
}

test.each(["bf16", "fp16"] as const)("%s: the step's gradient is the float32 gradient rounded to %s, bit for bit", async (format) => {
  const ds = makeData(24, 6, 3);
  const float32 = (await oneStep(ds, "crossEntropy")).grad;
  const halves = new Uint16Array(float32.length), want = new Float32Array(float32.length);
  encodeHalf(format, halves, float32);
  decodeHalf(format, want, halves);
  const got = (await oneStep(ds, "crossEntropy", format)).grad;
  expect(new Uint32Array(got.buffer)).toEqual(new Uint32Array(want.buffer));
  expect(got).not.toEqual(float32);
});

test("fp16 overflows beyond ±65504: the step's gradient holds ±Inf there and the update makes parameters non-finite; bf16 keeps float32's range", async () => {
  const ds = makeData(24, 6, 0), targets = (ds.targets as Float32Array).map((t) => t * 1e6);
  const huge = toShared(makeDataset({ inputs: ds.inputs as Float32Array, targets, inputShape: [6], targetShape: [1] }));
  const float32 = await oneStep(huge, "mseLoss");
  const beyond = [...float32.grad.keys()].filter((i) => Math.abs(float32.grad[i]) >= 65520);
  expect(beyond.length).toBeGreaterThan(0);
  const fp16 = await oneStep(huge, "mseLoss", "fp16");
  for (let i = 0; i < float32.grad.length; i++) {
    expect(fp16.grad[i], `gradient ${i}`).toBe(Math.abs(float32.grad[i]) >= 65520 ? Math.sign(float32.grad[i]) * Infinity : fp16.grad[i]);
    if (Math.abs(float32.grad[i]) < 65520) expect(Number.isFinite(fp16.grad[i])).toBe(true);
  }
  expect(fp16.params.some((p) => !Number.isFinite(p))).toBe(true);
  const bf16 = await oneStep(huge, "mseLoss", "bf16");
  expect(bf16.grad.every(Number.isFinite) && bf16.params.every(Number.isFinite)).toBe(true);
});

test("a bad gradientCompression is refused in one line, naming the option", () => {
  expect(() => new DataParallel({ model: { module: MODELS, export: "mlp" }, loss: "crossEntropy", optimizer: { type: "sgd", lr: 0.1 }, gradientCompression: "fp8" as GradientCompression }))
    .toThrow(/^DataParallel: gradientCompression must be "none", "bf16" or "fp16", got "fp8"$/);
});
