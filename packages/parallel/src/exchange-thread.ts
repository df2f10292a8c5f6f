/**
 * The thread that runs a host's exchange with the other hosts (host-exchange.ts) when they are
 * reached through MPI: it waits for the ranks to enter a step, takes the gradient's buckets as
 * backward finishes them, and is the one thread calling MPI while the job trains. A failure is
 * written where the ranks read it (they fail their step with it) and ends the thread.
 */
import { workerData } from "node:worker_threads";
import { HostExchange } from "./host-exchange.js";
import { mpiWorld } from "./mpi.js";
import type { WorkerContext } from "./types.js";

const ctx = workerData as WorkerContext;
const exchange = new HostExchange(ctx, mpiWorld());
try {
  while (exchange.awaitStep()) exchange.runStep();
} catch (e) {
  exchange.fail((e as Error).message);
}
