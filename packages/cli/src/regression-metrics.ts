/**
 * Held-out figures of a regression model beside its loss: mean squared error, mean absolute
 * error and R² (the coefficient of determination, 1 − SSE/SST per output, averaged over the
 * outputs as scikit-learn's r2_score does). Computed in float64 over the whole set.
 */
import { Tensor, noGrad, type Dataset, type nn } from "@chainrule/core";

export interface RegressionMetrics {
  mse: number;
  mae: number;
  /** NaN when a target column is constant (its variance is 0). */
  r2: number;
}

/** The model's MSE, MAE and R² on `ds` (numeric targets), in eval mode, batches of `batchSize` rows. */
export function regressionMetrics(model: nn.Module, ds: Dataset, batchSize = 1024): RegressionMetrics {
  const outputs = ds.targetShape.reduce((a, b) => a * b, 1);
  const perRow = ds.inputs.length / Math.max(1, ds.length);
  const targets = ds.targets;
  let squared = 0, absolute = 0;
  const mean = new Float64Array(outputs), sse = new Float64Array(outputs), sst = new Float64Array(outputs);
  for (let i = 0; i < ds.length * outputs; i++) mean[i % outputs] += targets[i] / ds.length;
  const wasTraining = model.training;
  model.eval();
  try {
    noGrad(() => {
      for (let start = 0; start < ds.length; start += batchSize) {
        const n = Math.min(batchSize, ds.length - start);
        const x = new Tensor(ds.inputs.slice(start * perRow, (start + n) * perRow), [n, ...ds.inputShape]);
        const y = model.forward(x).data; // (n, outputs)
        for (let i = 0; i < n * outputs; i++) {
          const t = targets[start * outputs + i], e = y[i] - t, k = i % outputs;
          squared += e * e;
          absolute += Math.abs(e);
          sse[k] += e * e;
          sst[k] += (t - mean[k]) ** 2;
        }
      }
    });
  } finally {
    model.train(wasTraining);
  }
  let r2 = 0;
  for (let k = 0; k < outputs; k++) r2 += sst[k] > 0 ? 1 - sse[k] / sst[k] : NaN;
  const count = ds.length * outputs;
  return { mse: squared / count, mae: absolute / count, r2: r2 / outputs };
}
