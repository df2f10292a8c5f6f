import { ArgumentError } from "../errors.js";

/** A learning-rate schedule: lr as a function of the step (0-based). */
export interface LrSchedule {
  lrAt(step: number): number;
}

/** lr·gamma^floor(step / stepSize) (PyTorch's StepLR, counted in steps). */
export class StepDecay implements LrSchedule {
  constructor(readonly baseLr: number, readonly stepSize: number, readonly gamma = 0.1) {
    if (!(stepSize > 0)) throw new ArgumentError(`StepDecay: stepSize must be > 0, got ${stepSize}`);
  }
  lrAt(step: number): number {
    return this.baseLr * Math.pow(this.gamma, Math.floor(step / this.stepSize));
  }
}

/** Linear warm-up from 0 to baseLr over warmupSteps, then cosine decay to minLr at totalSteps (nanoGPT's get_lr). */
export class CosineWithWarmup implements LrSchedule {
  constructor(readonly baseLr: number, readonly warmupSteps: number, readonly totalSteps: number, readonly minLr = 0) {
    if (!(totalSteps > 0) || warmupSteps < 0 || warmupSteps > totalSteps) {
      throw new ArgumentError(`CosineWithWarmup: need 0 ≤ warmupSteps (${warmupSteps}) ≤ totalSteps (${totalSteps}), totalSteps > 0`);
    }
  }
  lrAt(step: number): number {
    if (step < this.warmupSteps) return (this.baseLr * (step + 1)) / (this.warmupSteps + 1);
    if (step >= this.totalSteps) return this.minLr;
    const ratio = (step - this.warmupSteps) / Math.max(1, this.totalSteps - this.warmupSteps);
    return this.minLr + 0.5 * (1 + Math.cos(Math.PI * ratio)) * (this.baseLr - this.minLr);
  }
}

export class ConstantLr implements LrSchedule {
  constructor(readonly baseLr: number) {}
  lrAt(): number {
    return this.baseLr;
  }
}
