import { type Kernels, setKernelResolver, setKernels } from "./kernels.js";
import { jsKernels } from "./js/index.js";

export type BackendName = "js" | "blas";

export interface BackendReport {
  name: BackendName;
  /** One line saying what was picked and why. */
  reason: string;
}

let report: BackendReport = { name: "js", reason: "not yet resolved" };

/** Picks the backend: CHAINRULE_BACKEND if set, else the best one available. */
export function selectBackend(requested: string | undefined = process.env.CHAINRULE_BACKEND): Kernels {
  if (requested !== undefined && requested !== "" && requested !== "js" && requested !== "auto") {
    throw new Error(`CHAINRULE_BACKEND=${requested}: unknown backend (expected js or auto)`);
  }
  report = { name: "js", reason: requested === "js" ? "forced by CHAINRULE_BACKEND=js" : "reference TypeScript kernels" };
  return jsKernels;
}

export function backendReport(): BackendReport {
  return report;
}

/** Switches the backend at run time (tests run the suite on each). */
export function useBackend(name: BackendName | "auto"): BackendReport {
  setKernels(selectBackend(name));
  return report;
}

setKernelResolver(() => selectBackend());
