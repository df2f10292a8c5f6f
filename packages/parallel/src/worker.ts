/**
 * The pool worker thread. It keeps one model replica (replica.ts) bound to the shared memory
 * between tasks, but no rank-specific state: the rank, its gradient slot and its optimizer chunk
 * come with each task and live in shared memory, so piscina may run any rank on any thread.
 * Tasks: init (build the replica, meet the other threads), serve (a rank's step loop, rung
 * through the shared doorbell) and eval (a share of an evaluation).
 */
import { threadId } from "node:worker_threads";
import { BELL, type DatasetViews, STEP_DESC, STEP_RESULT, datasetViews } from "./layout.js";
import { Replica } from "./replica.js";
import type { DatasetRef, EvalResult, EvalTask, InitResult, InitTask, ServeTask, Task, WorkerContext } from "./types.js";

/** This thread's replica, for the pool that built it. */
let replica: Replica | null = null;
/** Views of the last dataset a task named (steps name the same one over and over). */
let data: { ref: DatasetRef; views: DatasetViews } | null = null;

function viewsFor(ref: DatasetRef): DatasetViews {
  if (data && data.ref.x === ref.x && data.ref.y === ref.y && data.ref.xOffset === ref.xOffset && data.ref.length === ref.length) return data.views;
  data = { ref, views: datasetViews(ref) };
  return data.views;
}

/** The replica of pool `poolId`: every thread built it in init (the init barrier saw `world` threads). */
function replicaOf(poolId: string): Replica {
  if (replica === null || replica.ctx.poolId !== poolId) throw new Error(`this thread holds no replica for pool ${poolId} (it did not take part in init)`);
  return replica;
}

async function init(t: InitTask): Promise<InitResult> {
  let mismatch: string | null = null;
  if (replica === null || replica.ctx.poolId !== t.ctx.poolId) {
    const built = await Replica.build(t.ctx);
    if (built instanceof Replica) replica = built;
    else mismatch = built.mismatch;
  }
  // Barrier: hold this thread until all ranks have built, so each init ran on its own thread.
  const c = new Int32Array(t.ctx.control);
  Atomics.add(c, 0, 1);
  Atomics.notify(c, 0);
  const deadline = Date.now() + t.timeoutMs;
  for (let v = Atomics.load(c, 0); v < t.ctx.world; v = Atomics.load(c, 0)) {
    const left = deadline - Date.now();
    if (left <= 0) throw new Error(`init barrier: ${v} of ${t.ctx.world} workers arrived within ${t.timeoutMs} ms`);
    Atomics.wait(c, 0, v, left);
  }
  return { rank: t.rank, threadId, mismatch };
}

/**
 * Runs this rank's steps as the main thread rings the doorbell: wait on the rank's command word
 * (bounded by `idleMs`), read the step description, run the step, write the result row, count
 * the rank done. Commands run in order, one after another: the main thread may ring the next
 * one while this rank still runs the last (at most one ahead; descriptions, result rows and done
 * counts alternate by the command's parity). A step that throws ends the loop with that error
 * (the task rejects). After `idleMs` without a command the loop marks its word EXITED —
 * compareExchange, so a command that arrives at that moment is never lost — and returns; the
 * main thread then starts a new loop.
 */
function serve(t: ServeTask): void {
  const rep = replicaOf(t.poolId);
  const ctx = rep.ctx, W = ctx.world, r = t.rank;
  const bell = new Int32Array(ctx.bell), desc = new Float64Array(ctx.stepDesc), out = new Float64Array(ctx.stepResults);
  const word = BELL.SEQ + r, descSize = STEP_DESC.size(W);
  const d = viewsFor(t.data);
  const indicesAt = (at: number) => new Int32Array(t.idx, 4 * desc[at + STEP_DESC.IDX_AT]);
  let seq = t.seen;
  // While waiting at a step's gradient barrier: if the next step was rung already, gather its rows (shuffled batches, one micro-batch).
  const prefetchNext = () => {
    if (Atomics.load(bell, word) <= seq) return;
    const nx = ((seq + 1) & 1) * descSize;
    if (!desc[nx + STEP_DESC.HAS_IDX]) return;
    const a = desc[nx + STEP_DESC.OFFSETS + r], b = desc[nx + STEP_DESC.OFFSETS + r + 1];
    if (b <= a || (t.microBatchSize > 0 && t.microBatchSize < b - a)) return;
    rep.prefetch(seq + 1, d, indicesAt(nx), desc[nx + STEP_DESC.ROW_START], a, b);
  };
  for (let seen = t.seen; ;) {
    let cmd = Atomics.load(bell, word);
    if (cmd === seen) {
      Atomics.wait(bell, word, seen, t.idleMs);
      cmd = Atomics.load(bell, word);
      if (cmd === seen) {
        if (Atomics.compareExchange(bell, word, seen, BELL.EXITED) === seen) return;
        cmd = Atomics.load(bell, word);
      }
    }
    if (cmd === BELL.STOP) return;
    seq = ++seen;
    const at = (seq & 1) * descSize, row = ((seq & 1) * W + r) * STEP_RESULT.size;
    const t0 = performance.now();
    const res = rep.step({
      rank: r, seq, step: desc[at + STEP_DESC.STEP], idx: desc[at + STEP_DESC.HAS_IDX] ? indicesAt(at) : null,
      start: desc[at + STEP_DESC.OFFSETS + r], end: desc[at + STEP_DESC.OFFSETS + r + 1], rowStart: desc[at + STEP_DESC.ROW_START],
      microBatchSize: t.microBatchSize, hyper: { ...t.hyper, lr: desc[at + STEP_DESC.LR] }, clip: t.clip, active: desc[at + STEP_DESC.ACTIVE], augment: t.augment,
      barrierBase: desc[at + STEP_DESC.BARRIER_BASE], startBarrier: desc[at + STEP_DESC.START_BARRIER] === 1,
    }, d, prefetchNext);
    out[row + STEP_RESULT.ROWS] = res.rows;
    out[row + STEP_RESULT.COUNTED] = res.counted;
    out[row + STEP_RESULT.LOSS_SUM] = res.lossSum;
    out[row + STEP_RESULT.GATHER_MS] = res.gatherMs;
    out[row + STEP_RESULT.COMPUTE_MS] = res.computeMs;
    out[row + STEP_RESULT.WAIT_MS] = res.waitMs;
    out[row + STEP_RESULT.REDUCE_MS] = res.reduceMs;
    out[row + STEP_RESULT.OPT_MS] = res.optMs;
    out[row + STEP_RESULT.GRAD_NORM] = res.gradNorm;
    out[row + STEP_RESULT.STEP_MS] = performance.now() - t0;
    out[row + STEP_RESULT.HOSTS_COUNTED] = res.hostsCounted ?? 0;
    out[row + STEP_RESULT.HOSTS_LOSS_SUM] = res.hostsLossSum ?? 0;
    out[row + STEP_RESULT.HOSTS_MS] = res.hostsMs ?? 0;
    out[row + STEP_RESULT.HOSTS_EXPOSED_MS] = res.hostsExposedMs ?? 0;
    out[row + STEP_RESULT.HOSTS_STOP] = res.hostsStop ? 1 : 0;
    out[row + STEP_RESULT.STEP] = desc[at + STEP_DESC.STEP];
    const done = BELL.DONE + (seq & 1);
    if (Atomics.add(bell, done, 1) + 1 >= W) Atomics.notify(bell, done);
  }
}

async function evaluate(t: EvalTask): Promise<EvalResult> {
  const rep = await ensureReplica(t.ctx);
  const idx = t.idx ? new Int32Array(t.idx) : null;
  return { rank: t.rank, rows: t.end - t.start, ...rep.evaluate(viewsFor(t.data), idx, t.rowStart, t.start, t.end, t.batchSize) };
}

async function ensureReplica(ctx: WorkerContext): Promise<Replica> {
  if (replica && replica.ctx.poolId === ctx.poolId) return replica;
  const built = await Replica.build(ctx);
  if (!(built instanceof Replica)) throw new Error(`this thread's model layout differs from the main thread's: ${built.mismatch}`);
  return (replica = built);
}

export default async function run(task: Task): Promise<unknown> {
  switch (task.kind) {
    case "init": return init(task);
    case "serve": return serve(task);
    case "eval": return evaluate(task);
  }
}
