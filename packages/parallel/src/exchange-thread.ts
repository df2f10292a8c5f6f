/**
 * The thread that runs a host's exchange with the other hosts (host-exchange.ts) when they are
 * reached through MPI: it waits for the ranks to enter a step, takes the gradient's buckets as
 * backward finishes them, and is the one thread calling MPI while the job trains. A failure is
 * written where the ranks read it (they fail their step with it) and ends the thread.
 */
import { workerData } from "node:worker_threads";
import { HostExchange, recordExchangeFailure } from "./host-exchange.js";
import { mpiWorld } from "./mpi.js";
import type { WorkerContext } from "./types.js";

const ctx = workerData as WorkerContext;
try {
  const exchange = new HostExchange(ctx, mpiWorld());
  while (exchange.awaitStep()) exchange.runStep();
} catch (e) {
  recordExchangeFailure(ctx, `host exchange thread: ${(e as Error).message}`);
}
