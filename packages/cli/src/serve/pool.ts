/**
 * A pool of inference worker threads answering calls through comlink. The first worker reads
 * the checkpoint and moves the weights to shared memory; the others (and any started later in
 * place of one that failed) build the model over those same bytes, so the weights are held once
 * whatever the number of workers. Predict batches lease an idle worker (waiting in
 * arrival order, up to their deadline), run on it alone and give it back. Generations
 * share workers instead: each goes to the worker holding the fewest, whose generations
 * then advance token by token in turn. A worker that dies (or overruns a call's deadline
 * and is stopped) fails only the calls it was running; another is started in its place.
 */
import { Worker } from "node:worker_threads";
import * as Comlink from "comlink";
import { nodeEndpoint } from "./comlink-endpoint.js";
import type { InferenceApi } from "./inference-worker.js";
import type { ModelInfo } from "./protocol.js";
import type { ModelRecipe, ModuleConsent } from "../checkpoint-model.js";
import type { SharedWeights } from "./shared-weights.js";
import { HttpError, unavailable } from "./errors.js";

const ENTRY = new URL("./worker-entry.mjs", import.meta.url);
/** Restart delays after a worker fails to load its model: 1 s doubling to 30 s. */
const RESTART_MIN_MS = 1000, RESTART_MAX_MS = 30_000;
/** How long a worker may take to load the model (a user's module could hang). */
const LOAD_TIMEOUT_MS = 120_000;

interface Slot {
  id: number;
  worker: Worker;
  api: Comlink.Remote<InferenceApi>;
  /** Rejects when the thread exits. */
  exited: Promise<never>;
  /** Set while the pool itself stops the thread (timeout, close), so its exit is not reported as a crash. */
  stopping: boolean;
  /** The model is loaded. */
  ready: boolean;
  /** Generations running on it. */
  streams: number;
}

/** An idle worker lent to one caller until `release()`. */
export interface Lease {
  /** Runs `call` on the leased worker; rejects with a 500 if the thread dies, a 504 (and stops it) past `deadline`. */
  run<T>(call: (api: Comlink.Remote<InferenceApi>) => Promise<T>, deadline: number): Promise<T>;
  release(): void;
}

interface Waiter {
  deadline: number;
  resolve(lease: Lease): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout;
}

export class InferencePool {
  private readonly idle: Slot[] = [];
  private readonly waiters: Waiter[] = [];
  private readonly live = new Set<Slot>();
  private nextId = 0;
  private closed = false;
  private restartDelay = RESTART_MIN_MS;
  /** The model as the first worker loaded it: the others attach to its weights. */
  private shared: { recipe: ModelRecipe; weights: SharedWeights } | null = null;

  private constructor(private readonly checkpoint: string, private readonly consent: ModuleConsent, private readonly log: (line: string) => void) {}

  /**
   * Starts `size` workers: the first loads the checkpoint, then the others attach to its shared
   * weights; rejects with the first error (no worker is left running).
   */
  static async start(checkpoint: string, consent: ModuleConsent, size: number, log: (line: string) => void): Promise<{ pool: InferencePool; info: ModelInfo }> {
    const pool = new InferencePool(checkpoint, consent, log);
    let first: { slot: Slot; info: ModelInfo };
    try {
      first = await pool.spawn();
    } catch (e) {
      await pool.close();
      throw e;
    }
    const started = await Promise.allSettled(Array.from({ length: size - 1 }, () => pool.spawn()));
    const failed = started.find((r) => r.status === "rejected");
    if (failed) {
      await pool.close();
      throw (failed as PromiseRejectedResult).reason;
    }
    pool.giveBack(first.slot);
    for (const r of started as PromiseFulfilledResult<{ slot: Slot; info: ModelInfo }>[]) pool.giveBack(r.value.slot);
    return { pool, info: first.info };
  }

  /** Workers running (loaded or loading). */
  get size(): number {
    return this.live.size;
  }

  /** Generations running on the workers. */
  get generating(): number {
    let n = 0;
    for (const slot of this.live) n += slot.streams;
    return n;
  }

  /** Waits for an idle worker, in arrival order; rejects with a 503 when `deadline` (ms since epoch) passes first. */
  acquire(deadline: number): Promise<Lease> {
    if (this.closed) return Promise.reject(unavailable("server is shutting down"));
    const slot = this.idle.pop();
    if (slot) return Promise.resolve(this.lease(slot));
    return new Promise<Lease>((resolve, reject) => {
      const waiter: Waiter = {
        deadline, resolve, reject,
        timer: setTimeout(() => {
          this.waiters.splice(this.waiters.indexOf(waiter), 1);
          reject(unavailable(`no inference worker free within the request's time limit (${this.live.size} workers, all busy)`));
        }, Math.max(0, deadline - Date.now())),
      };
      this.waiters.push(waiter);
    });
  }

  /**
   * A share of the ready worker running the fewest generations, for one generation; a 503
   * when every worker already runs `maxPerWorker` or none is ready.
   */
  share(maxPerWorker: number): Lease {
    if (this.closed) throw unavailable("server is shutting down");
    let best: Slot | undefined;
    for (const slot of this.live) if (slot.ready && (!best || slot.streams < best.streams)) best = slot;
    if (!best) throw unavailable("no inference worker ready (restarting); retry shortly");
    if (best.streams >= maxPerWorker) throw unavailable(`server busy: ${maxPerWorker} generations on each of ${this.live.size} workers; retry later`);
    const slot = best;
    slot.streams++;
    let released = false;
    return {
      run: (call, deadline) => this.runOn(slot, call, deadline),
      release: () => {
        if (released) return;
        released = true;
        slot.streams--;
      },
    };
  }

  /** Stops every worker; waiting callers get a 503. */
  async close(): Promise<void> {
    this.closed = true;
    for (const w of this.waiters.splice(0)) {
      clearTimeout(w.timer);
      w.reject(unavailable("server is shutting down"));
    }
    await Promise.all([...this.live].map((s) => this.stop(s)));
    this.idle.length = 0;
  }

  private lease(slot: Slot): Lease {
    let released = false;
    return {
      run: (call, deadline) => this.runOn(slot, call, deadline),
      release: () => {
        if (released) return;
        released = true;
        if (this.live.has(slot)) this.giveBack(slot);
      },
    };
  }

  private async runOn<T>(slot: Slot, call: (api: Comlink.Remote<InferenceApi>) => Promise<T>, deadline: number): Promise<T> {
    if (!this.live.has(slot)) throw new HttpError(500, "model: the inference worker stopped before this request ran");
    let timer: NodeJS.Timeout | undefined;
    const overrun = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        reject(new HttpError(504, `model: no answer within the request's time limit; inference worker ${slot.id} stopped and replaced`));
        void this.stop(slot).then(() => this.replace());
      }, Math.max(0, deadline - Date.now()));
    });
    try {
      return await Promise.race([call(slot.api), slot.exited, overrun]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Hands an idle worker to the longest waiting caller, or parks it. */
  private giveBack(slot: Slot): void {
    const waiter = this.waiters.shift();
    if (!waiter) {
      this.idle.push(slot);
      return;
    }
    clearTimeout(waiter.timer);
    waiter.resolve(this.lease(slot));
  }

  private async spawn(): Promise<{ slot: Slot; info: ModelInfo }> {
    const id = this.nextId++;
    const worker = new Worker(ENTRY);
    const api = Comlink.wrap<InferenceApi>(nodeEndpoint(worker));
    const slot: Slot = { id, worker, api, stopping: false, ready: false, streams: 0, exited: null as unknown as Promise<never> };
    slot.exited = new Promise<never>((_, reject) => {
      worker.once("error", (e) => reject(new HttpError(500, `model: inference worker ${id} failed: ${e.message}`)));
      worker.once("exit", (code) => {
        reject(new HttpError(500, `model: inference worker ${id} exited (code ${code}) while running this request`));
        this.onExit(slot, code);
      });
    });
    slot.exited.catch(() => {}); // observed by the calls that race it
    this.live.add(slot);
    let timer: NodeJS.Timeout | undefined;
    const tooSlow = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`inference worker ${id}: the model did not load within ${LOAD_TIMEOUT_MS / 1000} s`)), LOAD_TIMEOUT_MS);
    });
    try {
      const info = await Promise.race([this.loadOn(api), slot.exited, tooSlow]);
      slot.ready = true;
      return { slot, info };
    } catch (e) {
      await this.stop(slot);
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  /** The first worker loads the checkpoint and shares its weights; the others attach to them. */
  private async loadOn(api: Comlink.Remote<InferenceApi>): Promise<ModelInfo> {
    if (this.shared) return api.attach(this.checkpoint, this.consent, this.shared.recipe, this.shared.weights);
    const { info, recipe, shared } = await api.load(this.checkpoint, this.consent);
    this.shared = { recipe, weights: shared };
    return info;
  }

  private onExit(slot: Slot, code: number): void {
    slot.ready = false;
    const wasLive = this.live.delete(slot);
    const i = this.idle.indexOf(slot);
    if (i >= 0) this.idle.splice(i, 1);
    if (!wasLive || slot.stopping || this.closed) return;
    this.log(`inference worker ${slot.id} exited (code ${code}); starting another`);
    this.replace();
  }

  /** Starts a worker in place of one that is gone, retrying with growing delays if the model fails to load. */
  private replace(): void {
    if (this.closed) return;
    this.spawn().then(
      ({ slot }) => {
        this.restartDelay = RESTART_MIN_MS;
        if (this.closed) void this.stop(slot);
        else this.giveBack(slot);
      },
      (e: Error) => {
        this.log(`inference worker failed to start: ${e.message.replace(/\s*\n\s*/g, " ")}; retrying in ${this.restartDelay / 1000} s`);
        setTimeout(() => this.replace(), this.restartDelay).unref();
        this.restartDelay = Math.min(RESTART_MAX_MS, this.restartDelay * 2);
      },
    );
  }

  private async stop(slot: Slot): Promise<void> {
    slot.stopping = true;
    slot.ready = false;
    this.live.delete(slot);
    const i = this.idle.indexOf(slot);
    if (i >= 0) this.idle.splice(i, 1);
    await slot.worker.terminate();
  }
}
