/** Errors thrown by @chainrule/parallel, with factories so every message names the worker, step and cause. */
import { ChainruleError } from "@chainrule/core";

/** Which part of a step a failure happened in. */
export type Phase = "init" | "grad" | "reduce" | "update" | "eval";

/** A pool-level failure: bad configuration, layout mismatch, use after close. */
export class ParallelError extends ChainruleError {}

/** Two workers built models whose parameters (names, shapes, offsets) differ. */
export class LayoutMismatchError extends ParallelError {}

/**
 * A step (or init / evaluate) failed in a worker. The pool has been destroyed
 * (no thread is left behind); the next call starts a fresh one.
 */
export class ParallelStepError extends ParallelError {
  constructor(
    message: string,
    /** The failing worker (rank), or the ranks still running when a timeout fired. */
    readonly ranks: number[],
    /** The optimizer step (1-based) that failed; 0 for init / evaluate. */
    readonly step: number,
    readonly phase: Phase,
    /**
     * True when the failure happened while parameters and optimizer state were
     * being updated: some chunks may hold the new values and some the old. Restore
     * a checkpoint (`setState`) before going on. False means parameters are exactly
     * as before the step.
     */
    readonly paramsModified: boolean,
    override readonly cause: unknown,
  ) {
    super(message);
  }

  get rank(): number {
    return this.ranks[0];
  }
}

function causeText(cause: unknown): string {
  if (cause instanceof Error) return `${cause.name === "Error" ? "" : cause.name + ": "}${cause.message}`;
  return String(cause);
}

export function workerFailed(rank: number, step: number, phase: Phase, paramsModified: boolean, cause: unknown): ParallelStepError {
  const what = step > 0 ? `step ${step}` : phase;
  const state = paramsModified ? "parameters may be partially updated" : "parameters unchanged";
  return new ParallelStepError(`${what}: worker ${rank} failed in ${phase}: ${causeText(cause)} (${state})`, [rank], step, phase, paramsModified, cause);
}

export function phaseTimedOut(ranks: number[], step: number, phase: Phase, paramsModified: boolean, ms: number): ParallelStepError {
  const what = step > 0 ? `step ${step}` : phase;
  const state = paramsModified ? "parameters may be partially updated" : "parameters unchanged";
  const who = ranks.length === 1 ? `worker ${ranks[0]}` : `workers ${ranks.join(", ")}`;
  const cause = new Error(`no answer within ${ms} ms`);
  return new ParallelStepError(`${what}: ${who} timed out in ${phase} after ${ms} ms; threads terminated (${state})`, ranks, step, phase, paramsModified, cause);
}

/** A step ended on request (DataParallel.abort) while these ranks had not finished it. */
export function stepAborted(reason: string, ranks: number[], step: number, phase: Phase, paramsModified: boolean): ParallelStepError {
  const state = paramsModified ? "parameters may be partially updated" : "parameters unchanged";
  const who = ranks.length === 0 ? "" : ` while waiting for ${ranks.length === 1 ? `worker ${ranks[0]}` : `workers ${ranks.join(", ")}`} in ${phase}`;
  return new ParallelStepError(`step ${step}: aborted (${reason})${who}; threads terminated (${state})`, ranks, step, phase, paramsModified, new Error(reason));
}
