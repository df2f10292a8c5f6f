/** How many workers `workers: "auto"` takes: cores, batch rows, the model's work per row, shared memory. */
import { availableParallelism } from "node:os";
import { countMacs, noGrad, zeros } from "@chainrule/core";
import { maxWorkersFor, optimizerStateBuffers } from "@chainrule/parallel";
import { adaptationOf, buildJobModel, type ModelContext } from "./models.js";
import type { Job } from "./job/schema.js";

/**
 * Forward multiply-adds a worker's shard should hold at least under `workers: "auto"`: below it
 * the step's fixed costs (reduce, optimizer, waking the workers, the slowest rank) outweigh the
 * shard. Measured on a 16-core VM with the default MLP job (535k per row, batch 64): 16 workers
 * (4 rows, 2.1M each) ran at 10.7k samples/s, 8 workers (4.3M each) at 16.3k, 4 at 14.9k; the cnn
 * job (4.7M per row) was fastest at 16 workers (4 rows, 19M each).
 */
export const MIN_MACS_PER_SHARD = 4e6;

/** What start-up measured of the model: forward multiply-adds per row, and how many workers' shared memory fits. */
export interface ModelProbe {
  macsPerRow: number;
  maxWorkers: number;
}

/** What set the count `workers: "auto"` chose. */
export type AutoWorkersLimit = "cores" | "rows" | "shards" | "memory";

/**
 * "auto": one worker per core, at most one per row, no more than shards of MIN_MACS_PER_SHARD,
 * and no more than fit WebAssembly's 4 GiB (when the model was probed); and which bound set it.
 */
export function autoWorkersChoice(cores: number, batchSize: number, probe: ModelProbe | null): { workers: number; limit: AutoWorkersLimit } {
  const bounds: [number, AutoWorkersLimit][] = [[cores, "cores"], [batchSize, "rows"]];
  if (probe !== null) {
    bounds.push([probe.maxWorkers, "memory"]);
    if (probe.macsPerRow > 0) bounds.push([Math.floor((batchSize * probe.macsPerRow) / MIN_MACS_PER_SHARD), "shards"]);
  }
  let [n, limit] = bounds[0];
  for (const [m, l] of bounds) if (m < n) [n, limit] = [m, l];
  return { workers: Math.max(1, n), limit };
}

export function autoWorkers(cores: number, batchSize: number, probe: ModelProbe | null): number {
  return autoWorkersChoice(cores, batchSize, probe).workers;
}

/** The cores this process may use: all of them, or its share when mpirun started several processes on this machine. */
export function coresPerProcess(): number {
  const local = Number(process.env.OMPI_COMM_WORLD_LOCAL_SIZE ?? 1);
  return Math.max(1, Math.floor(availableParallelism() / (local > 0 ? local : 1)));
}

/** The number of worker threads a job asks for. */
export function resolveWorkers(job: Job, probe: ModelProbe | null = null, cores = availableParallelism(), hosts = 1): number {
  // With hosts, each host's workers share 1/hosts of the batch's rows.
  return job.workers === "auto" ? autoWorkers(cores, Math.max(1, Math.floor(job.batchSize / hosts)), probe) : job.workers;
}

/** " (auto: …)" when `workers: "auto"` stopped below one worker per core: shards too small, or memory. */
export function autoWorkersNote(job: Job, probe: ModelProbe | null, hosts = 1): string | undefined {
  if (job.workers !== "auto" || probe === null) return undefined;
  const cores = coresPerProcess();
  const { workers, limit } = autoWorkersChoice(cores, Math.max(1, Math.floor(job.batchSize / hosts)), probe);
  if (limit === "memory") return ` (auto: ${workers} of ${cores} cores: more workers' gradient slots do not fit WebAssembly's 4 GiB)`;
  if (limit !== "shards") return undefined;
  const m = (v: number) => (v >= 1e6 ? `${(v / 1e6).toFixed(1)}M` : `${Math.round(v / 1e3)}k`);
  return ` (auto: ${workers} of ${cores} cores: ${m(probe.macsPerRow)} multiply-adds per row × ${job.batchSize} rows, shards of ≥ ${m(MIN_MACS_PER_SHARD)})`;
}

/**
 * What `workers: "auto"` sizes by: the model's forward multiply-adds for one row (one forward of a
 * zero row, GEMMs counted) and how many workers' shared memory fits. A model that cannot be built
 * fails the job here; one whose probe forward fails is reported, and auto then counts cores and
 * rows only. The engine seeds its own build, so this one does not change the run.
 */
export async function probeModel(job: Job, ctx: ModelContext): Promise<ModelProbe | null> {
  const model = await buildJobModel({ model: job.model, ctx, adapt: adaptationOf(job) });
  const P = model.parameters().reduce((n, p) => n + p.data.length, 0);
  try {
    model.eval();
    const macsPerRow = countMacs(() => noGrad(() => { model.forward(zeros([1, ...ctx.inputShape])); }));
    return { macsPerRow, maxWorkers: maxWorkersFor(P, optimizerStateBuffers(job.optimizer).length) };
  } catch (e) {
    process.stderr.write(`workers auto: a forward of one zero row failed (${(e as Error).message}); choosing by cores and batch rows only\n`);
    return null;
  }
}
