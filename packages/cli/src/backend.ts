/** The kernel backend a job asks for. */
import { useBackend } from "@chainrule/core";
import { CliError } from "./errors.js";
import type { Job } from "./job/schema.js";

/** Applies the job's backend choice (and sets CHAINRULE_BACKEND so worker threads agree). */
export function applyBackend(job: Job): string {
  if (job.backend !== "auto") process.env.CHAINRULE_BACKEND = job.backend;
  try {
    const r = useBackend(job.backend);
    return r.reason;
  } catch (e) {
    throw new CliError(`backend: ${(e as Error).message}`);
  }
}
