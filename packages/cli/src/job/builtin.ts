/** The jobs the CLI knows by name: the default (mnist), gpt and cnn. */
/**
 * `chainrule train` with no JOB: an MLP 784-512-256-10 on the embedded MNIST
 * digits (9,000 train / 1,000 held-out), Adam with a cosine schedule, on all
 * cores. About 96% held-out accuracy in under a minute on 2 cores.
 */
export const DEFAULT_JOB = {
  model: { type: "mlp", hidden: [512, 256] },
  data: { type: "mnist", heldOut: 1000 },
  optimizer: { type: "adam", lr: 1e-3 },
  schedule: { type: "cosine", warmupSteps: 0 },
  epochs: 15,
  batchSize: 64,
  workers: "auto",
} as const;
/**
 * `chainrule train gpt`: a character-level GPT on the bundled female first-names
 * list (lines shuffled, last 10% held out), data-parallel over the cores (workers auto), with a
 * sample of generated names at the end.
 */
export const GPT_JOB = {
  name: "gpt",
  model: { type: "gpt", blockSize: 32, nLayer: 4, nHead: 4, nEmbd: 64 },
  data: { type: "text", stride: 8 }, // the bundled female-names list (`--set data.file=FILE` for your own text)
  optimizer: { type: "adamw", lr: 3e-3, weightDecay: 0.01 },
  schedule: { type: "cosine", warmupSteps: 20, minLr: 3e-4 },
  epochs: 4,
  batchSize: 32,
  workers: "auto",
  clipGradNorm: 1,
  sample: { tokens: 160, prompt: "\n", temperature: 0.8 },
} as const;

/**
 * `chainrule train cnn`: the two-conv-block CNN (conv 32 → conv 64, each with batch norm,
 * max-pool, ReLU; Linear 128) on the embedded MNIST digits (9,000 train / 1,000 held-out),
 * random crop (padding 2) done in the workers, Adam with a cosine schedule, data-parallel on
 * the cores (workers auto). Any IDX image set: `--set data.type=idx --set data.dir=DIR`.
 */
export const CNN_JOB = {
  name: "cnn",
  model: { type: "cnn", batchNorm: true },
  data: { type: "mnist", heldOut: 1000 },
  optimizer: { type: "adam", lr: 2e-3 },
  schedule: { type: "cosine", warmupSteps: 0 },
  augment: { crop: 2 },
  epochs: 8,
  batchSize: 64,
  workers: "auto",
} as const;

/** Jobs the CLI knows by name (`chainrule train NAME`), when no file of that name exists. */
export const BUILTIN_JOBS: Record<string, object> = { gpt: GPT_JOB, mnist: DEFAULT_JOB, cnn: CNN_JOB };
