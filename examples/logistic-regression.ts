/**
 * Logistic regression: two Gaussian blobs in 2-D, Linear(2, 1) giving a logit,
 * sigmoid + binary cross-entropy (fused and stable in F.binaryCrossEntropyWithLogits),
 * plain SGD. Run: npx pnpm@10 exec tsx examples/logistic-regression.ts [epochs]
 */
import { F, Tensor, concat, full, manualSeed, nn, noGrad, optim, randn } from "@chainrule/core";

/** n points per class: class 0 around (-1, -1), class 1 around (1, 1), both with std 0.75. */
export function makeData(n = 100, seed = 0): { x: Tensor; y: Tensor } {
  manualSeed(seed);
  const x0 = randn([n, 2], { mean: -1, std: 0.75 }); // (n, 2)
  const x1 = randn([n, 2], { mean: 1, std: 0.75 }); // (n, 2)
  const x = concat([x0, x1], 0); // (2n, 2)
  const y = concat([full([n, 1], 0), full([n, 1], 1)], 0); // (2n, 1)
  return { x, y };
}

/** Fraction of points whose predicted class (logit > 0, i.e. σ(logit) > 0.5) matches the label. */
export function accuracy(logits: Tensor, y: Tensor): number {
  let correct = 0;
  for (let i = 0; i < y.size; i++) if ((logits.data[i] > 0 ? 1 : 0) === y.data[i]) correct++;
  return correct / y.size;
}

export function train(epochs = 200, lr = 0.5, log = false) {
  const { x, y } = makeData();
  manualSeed(1);
  const model = new nn.Linear(2, 1);
  const opt = new optim.SGD(model.parameters(), { lr });
  const losses: number[] = [];
  for (let epoch = 0; epoch < epochs; epoch++) {
    opt.zeroGrad();
    const loss = F.binaryCrossEntropyWithLogits(model.forward(x), y); // full batch, mean over points
    loss.backward();
    opt.step();
    losses.push(loss.item());
    if (log && (epoch % Math.max(1, Math.floor(epochs / 10)) === 0 || epoch === epochs - 1)) {
      console.log(`epoch ${String(epoch + 1).padStart(4)}  loss ${loss.item().toFixed(5)}`);
    }
  }
  const acc = noGrad(() => accuracy(model.forward(x), y));
  return { accuracy: acc, losses, weight: Array.from(model.weight.data), bias: model.bias!.data[0] };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const epochs = Number(process.argv[2] ?? 200);
  const { accuracy: acc, weight, bias, losses } = train(epochs, 0.5, true);
  console.log(`learned w = [${weight.map((v) => v.toFixed(4)).join(", ")}], b = ${bias.toFixed(4)}; final loss ${losses[losses.length - 1].toFixed(5)}`);
  console.log(`accuracy ${(acc * 100).toFixed(1)}%`);
}
