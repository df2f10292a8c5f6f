/**
 * The three reference models as a user writes them, in the style of the README's API tour:
 * plain `nn` modules, `new optim.Adam(model.parameters())`, `F.crossEntropy`, `loss.backward()`,
 * `opt.step()`, imports from `@chainrule/core` alone. No nn.flattenParameters, no BufferArena,
 * no fused op or layout chosen by hand: whatever makes them fast happens inside the library.
 * bench/user-code.ts times them against PyTorch's anchors (../shared/anchors/torch_*.py),
 * whose code each mirrors line for line.
 *
 * (A `.mts` file loaded through bench/_core-alias.mjs, which resolves `@chainrule/core` to this
 * checkout's package the way a user's program resolves it.)
 */
import { F, GPT, Tensor, manualSeed, nn, optim, rand } from "@chainrule/core";

/** One training step; returns the loss. */
export type Step = () => number;

/** The step as the README writes it: zeroGrad, forward, cross-entropy, backward, step. */
function trainingStep(model: nn.Module, opt: optim.Optimizer<{ lr: number }>, x: Tensor, y: Int32Array): Step {
  return () => {
    opt.zeroGrad();
    const loss = F.crossEntropy(model.forward(x), y);
    loss.backward();
    opt.step();
    return loss.item();
  };
}

/** torch_mlp.py: 784-512-256-10, ReLU, cross-entropy, Adam lr 1e-3, random inputs. */
export function mlp(batch = 128): Step {
  manualSeed(0);
  const model = new nn.Sequential(new nn.Linear(784, 512), new nn.ReLU(), new nn.Linear(512, 256), new nn.ReLU(), new nn.Linear(256, 10));
  const opt = new optim.Adam(model.parameters(), { lr: 1e-3 });
  const x = rand([batch, 784]); // (B, 784)
  const y = Int32Array.from({ length: batch }, (_, i) => (i * 7919) % 10); // (B)
  return trainingStep(model, opt, x, y);
}

/** torch_cnn.py: conv 1→32 3×3 pad 1, ReLU, max-pool 2, conv 32→64, ReLU, max-pool 2, Linear 3136→128, ReLU, Linear 128→10; Adam lr 1e-3. */
export function cnn(batch = 64): Step {
  manualSeed(0);
  const model = new nn.Sequential(
    new nn.Conv2d(1, 32, 3, { padding: 1 }), new nn.ReLU(), new nn.MaxPool2d(2),
    new nn.Conv2d(32, 64, 3, { padding: 1 }), new nn.ReLU(), new nn.MaxPool2d(2),
    new nn.Flatten(), new nn.Linear(3136, 128), new nn.ReLU(), new nn.Linear(128, 10),
  );
  const opt = new optim.Adam(model.parameters(), { lr: 1e-3 });
  const x = rand([batch, 1, 28, 28]); // (B, 1, 28, 28)
  const y = Int32Array.from({ length: batch }, (_, i) => (i * 7919) % 10);
  return trainingStep(model, opt, x, y);
}

/** torch_gpt.py: 4 layers, 4 heads, C 128, T 64, vocab 65, batch 12, AdamW lr 1e-3, random tokens. */
export function gpt(batch = 12): Step {
  manualSeed(0);
  const T = 64, V = 65;
  const model = new GPT({ vocabSize: V, blockSize: T, nLayer: 4, nHead: 4, nEmbd: 128 });
  const opt = new optim.AdamW(model.parameters(), { lr: 1e-3 });
  const x = new Tensor(Float32Array.from({ length: batch * T }, (_, i) => (i * 7919) % V), [batch, T]); // (B, T) token ids
  const y = Int32Array.from({ length: batch * T }, (_, i) => (i * 104729 + 3) % V); // (B·T) next tokens
  return trainingStep(model, opt, x, y); // logits (B, T, V)
}
