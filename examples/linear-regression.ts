/**
 * The textbook chain-rule example: fit y = 2x + 1 + noise with Linear(1, 1),
 * MSE and plain SGD. Run: npx pnpm@10 exec tsx examples/linear-regression.ts [epochs]
 */
import { F, manualSeed, nn, noGrad, optim, randn } from "@chainrule/core";

export function makeData(n = 100, seed = 0) {
  manualSeed(seed);
  const x = randn([n, 1]); // (N, 1)
  const noise = randn([n, 1], { std: 0.1 });
  const y = x.mul(2).add(1).add(noise); // (N, 1)
  return { x: x.detach(), y: y.detach() };
}

export function train(epochs = 100, lr = 0.01, log = false) {
  const { x, y } = makeData();
  manualSeed(1);
  const model = new nn.Linear(1, 1);
  const opt = new optim.SGD(model.parameters(), { lr });
  const losses: number[] = [];
  for (let epoch = 0; epoch < epochs; epoch++) {
    opt.zeroGrad();
    const loss = F.mseLoss(model.forward(x), y); // full batch
    loss.backward();
    opt.step();
    losses.push(loss.item());
    if (log && (epoch % Math.max(1, Math.floor(epochs / 10)) === 0 || epoch === epochs - 1)) {
      console.log(`epoch ${String(epoch + 1).padStart(4)}  loss ${loss.item().toFixed(5)}`);
    }
  }
  const w = model.weight.data[0], b = model.bias!.data[0];
  const finalLoss = noGrad(() => F.mseLoss(model.forward(x), y).item());
  return { w, b, losses, finalLoss };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const epochs = Number(process.argv[2] ?? 100);
  const { w, b, finalLoss } = train(epochs, 0.01, true);
  console.log(`learned w = ${w.toFixed(4)}, b = ${b.toFixed(4)} (true: 2, 1); final MSE ${finalLoss.toFixed(5)}`);
}
