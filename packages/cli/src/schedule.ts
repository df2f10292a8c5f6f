/** The learning rate of each step of a job. */
import { optim } from "@chainrule/core";
import { UsageError } from "./errors.js";
import type { Job } from "./job/schema.js";

/** lr at each 0-based step. */
export function makeSchedule(job: Job, totalSteps: number): (step: number) => number {
  const lr = job.optimizer.lr;
  const s = job.schedule;
  if (s.type === "constant") return () => lr;
  if (s.type === "step") {
    const sch = new optim.StepDecay(lr, s.stepSize, s.gamma);
    return (i) => sch.lrAt(i);
  }
  if (s.warmupSteps > totalSteps) throw new UsageError(`schedule.warmupSteps: ${s.warmupSteps} is more than the run's ${totalSteps} steps`);
  const sch = new optim.CosineWithWarmup(lr, s.warmupSteps, totalSteps, s.minLr);
  return (i) => sch.lrAt(i);
}
