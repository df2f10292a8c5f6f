/**
 * Divergence: a run whose loss blew up is stopped (exit 1, the last checkpoint kept) instead of
 * training on to a finite but meaningless loss. The rule: the loss is above `factor` × the lowest
 * running median it reached (the median of the last WINDOW step losses), for `steps` steps in a
 * row. A loss that wanders, or a single bad batch, does not trip it; weights that explode do.
 * Non-finite losses, gradients and parameters always stop the run (job.divergence or not).
 */
import type { nn } from "@chainrule/core";
import { CliError } from "./errors.js";

/** Losses in the running median. */
const WINDOW = 50;

export interface DivergenceRule {
  factor: number;
  steps: number;
}

/** A monitor's history, saved in each checkpoint (state.json extra.divergence). */
export interface DivergenceState {
  /** The last WINDOW losses in the running median, oldest first. */
  recent: number[];
  /** The lowest running median so far; null before the first step. */
  best: number | null;
  /** Steps in a row above factor × best. */
  streak: number;
}

export class DivergenceMonitor {
  private readonly recent: number[] = [];
  /** The lowest running median so far: the loss level the run had reached. */
  private best = Infinity;
  private streak = 0;

  /** `saved`: the history at a checkpoint the run continues from (absent in checkpoints of older chainrule versions: a fresh history). */
  constructor(private readonly rule: DivergenceRule | false, saved?: DivergenceState) {
    if (!saved || !Array.isArray(saved.recent)) return;
    this.recent.push(...saved.recent.slice(-WINDOW));
    this.best = saved.best ?? Infinity;
    this.streak = saved.streak ?? 0;
  }

  /** The history so far, to save with a checkpoint. */
  state(): DivergenceState {
    return { recent: [...this.recent], best: Number.isFinite(this.best) ? this.best : null, streak: this.streak };
  }

  /** Counts step `step`'s loss; throws a one-line CliError when the run has diverged. */
  check(loss: number, step: number, epoch: number): void {
    if (!Number.isFinite(loss)) throw new CliError(`diverged: the loss became ${loss} at step ${step} (epoch ${epoch}); try a lower --lr or set clipGradNorm`);
    if (!this.rule) return;
    if (this.best < Infinity && loss > this.rule.factor * this.best) {
      // Not added to the window: a diverging stretch must not raise the level it is measured against.
      if (++this.streak >= this.rule.steps) {
        throw new CliError(
          `diverged: the loss was above ${this.rule.factor} × its running median (${fmt(this.best)}) for ${this.streak} steps, ${fmt(loss)} at step ${step} (epoch ${epoch}); ` +
          `try a lower --lr or set clipGradNorm (or set divergence to false in the job to train on)`,
        );
      }
      return;
    }
    this.streak = 0;
    this.recent.push(loss);
    if (this.recent.length > WINDOW) this.recent.shift();
    // From the first step on: a run can blow up at its second step (Adam at lr 1e9 does), and a
    // median over the blown-up losses would measure the explosion against itself.
    this.best = Math.min(this.best, median(this.recent));
  }
}

function median(a: number[]): number {
  const s = [...a].sort((x, y) => x - y);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function fmt(x: number): string {
  return Math.abs(x) >= 1e5 || (x !== 0 && Math.abs(x) < 1e-3) ? x.toExponential(2) : x.toFixed(4);
}

/**
 * The first non-finite parameter, as "name[index] = value", or null. Non-finite gradients
 * make the optimizer write NaN or Infinity into the weights at once, so this finds them.
 */
export function nonFiniteParameter(model: nn.Module): string | null {
  for (const [name, p] of model.namedParameters()) {
    const d = p.data;
    let sum = 0;
    for (let i = 0; i < d.length; i++) sum += d[i]; // one pass; NaN or ±Infinity anywhere makes the sum non-finite
    if (Number.isFinite(sum)) continue;
    for (let i = 0; i < d.length; i++) if (!Number.isFinite(d[i])) return `${name}[${i}] = ${d[i]}`;
  }
  return null;
}
