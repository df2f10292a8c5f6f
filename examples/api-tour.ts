/**
 * The README's library API tour, as a program (test/examples.test.ts checks that the README's
 * code block is this file's code and runs it). Run: npx -y pnpm@10 exec tsx examples/api-tour.ts
 */
import { Tensor, tensor, manualSeed, nn, optim, F, noGrad,
         saveCheckpoint, loadCheckpoint, embeddedMnistSplit } from "@chainrule/core";

manualSeed(0);                                   // every init, shuffle and dropout mask is reproducible
const x = tensor([[1, 2], [3, 4]], { requiresGrad: true });
const y = x.matmul(x).relu().sum();              // ops with PyTorch names, camelCase
y.backward();                                    // reverse-mode autodiff (iterative, no recursion)
console.log(x.grad!.toArray());                  // [ [ 7, 11 ], [ 9, 13 ] ]

const model = new nn.Sequential(new nn.Flatten(), new nn.Linear(784, 128), new nn.ReLU(), new nn.Linear(128, 10));
const opt = new optim.AdamW(model.parameters(), { lr: 1e-3 });
const { train } = embeddedMnistSplit({ heldOut: 1000 }); // Dataset: inputs (N, 1, 28, 28), Int32 targets
const batch = new Tensor(train.inputs.subarray(0, 64 * 784), [64, 1, 28, 28]); // (B, C, H, W)
opt.zeroGrad();
const loss = F.crossEntropy(model.forward(batch), train.targets.subarray(0, 64)); // stable log-sum-exp, mean
loss.backward();
opt.step();
console.log(`loss ${loss.item().toFixed(4)}`);

saveCheckpoint("ckpt", { model, optimizer: opt, step: 1 });  // model.safetensors + state.json + SHA256SUMS, atomic
loadCheckpoint("ckpt", { model, optimizer: opt });           // verified; one-line error if a checksum or keys/shapes differ
noGrad(() => model.forward(batch));                          // inference without a graph
