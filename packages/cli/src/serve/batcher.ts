/**
 * Dynamic batching of predict requests: requests that arrive together go through
 * the model as one batch. A batch leaves when a worker is free and either `maxBatch`
 * rows are queued, or the oldest request has waited `waitMs`, or no other request is
 * on its way (being received by the server: nothing to wait for, so a lone client pays
 * no window). Requests queued while every worker was busy have already waited, so they
 * leave at once. A request is never split across batches. When a batch of several
 * requests fails, each of them is retried alone, so one bad request fails only itself.
 */
import * as Comlink from "comlink";
import type { InferencePool, Lease } from "./pool.js";
import { HttpError, modelFailure, unavailable } from "./errors.js";

export interface BatcherOptions {
  /** Most rows in one batch (a single larger request still runs, alone). */
  maxBatch: number;
  /** How long the first request of a batch waits for others, in ms. */
  waitMs: number;
  /** Most rows waiting; beyond, requests get a 503. */
  maxQueueRows: number;
  /** Values per input row and per output row. */
  features: number;
  outputs: number;
}

interface Pending {
  rows: Float32Array;
  n: number;
  arrival: number;
  deadline: number;
  /** Retried alone after its batch failed: never batched again. */
  alone: boolean;
  resolve(out: Float32Array): void;
  reject(e: HttpError): void;
}

export class PredictBatcher {
  private queue: Pending[] = [];
  private queuedRows = 0;
  private pumping = false;
  private wakeUp: (() => void) | null = null;
  /** Predict requests the server is receiving (not yet submitted): they may join the next batch. */
  private arriving = 0;
  /** Batches run so far and the requests in them (for the server's statistics). */
  readonly stats = { batches: 0, requests: 0, rows: 0 };

  constructor(private readonly pool: InferencePool, private readonly o: BatcherOptions) {}

  /** The server started receiving a predict request; call the returned function once it is submitted or refused. */
  receiving(): () => void {
    this.arriving++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.arriving--;
      if (this.arriving === 0) this.wakeUp?.();
    };
  }

  /** Queues `n` rows (n × features values); resolves with n × outputs values. */
  submit(rows: Float32Array, n: number, deadline: number): Promise<Float32Array> {
    if (this.queuedRows + n > this.o.maxQueueRows && this.queuedRows > 0) {
      return Promise.reject(unavailable(`server busy: ${this.queuedRows} rows already queued (limit ${this.o.maxQueueRows}); retry later`));
    }
    return new Promise((resolve, reject) => {
      this.enqueue({ rows, n, arrival: Date.now(), deadline, alone: false, resolve, reject }, false);
    });
  }

  private enqueue(p: Pending, front: boolean): void {
    if (front) this.queue.unshift(p);
    else this.queue.push(p);
    this.queuedRows += p.n;
    if (this.queuedRows >= this.o.maxBatch) this.wakeUp?.();
    void this.pump();
  }

  /** One loop at a time: lease a worker, let the window fill, send the batch off, repeat while requests wait. */
  private async pump(): Promise<void> {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (this.queue.length > 0) {
        let lease: Lease;
        try {
          lease = await this.pool.acquire(Math.min(...this.queue.map((p) => p.deadline)));
        } catch (e) {
          this.failExpired(e as HttpError);
          continue;
        }
        await this.fillWindow();
        const batch = this.take();
        if (batch.length === 0) {
          lease.release();
          continue;
        }
        void this.run(lease, batch);
      }
    } finally {
      this.pumping = false;
    }
  }

  /** Waits until the oldest request has waited `waitMs` or a full batch is queued. */
  private async fillWindow(): Promise<void> {
    const oldest = this.queue[0];
    if (!oldest || oldest.alone) return;
    const left = oldest.arrival + this.o.waitMs - Date.now();
    if (left <= 0 || this.queuedRows >= this.o.maxBatch || this.arriving === 0) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, left);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.wakeUp = done;
    });
    this.wakeUp = null;
  }

  /** Whole requests from the front of the queue, up to maxBatch rows (at least one request). */
  private take(): Pending[] {
    const batch: Pending[] = [];
    let rows = 0;
    while (this.queue.length > 0) {
      const p = this.queue[0];
      if (batch.length > 0 && (p.alone || batch[0].alone || rows + p.n > this.o.maxBatch)) break;
      this.queue.shift();
      this.queuedRows -= p.n;
      if (p.deadline <= Date.now()) {
        p.reject(unavailable("no inference worker free within the request's time limit"));
        continue;
      }
      batch.push(p);
      rows += p.n;
    }
    return batch;
  }

  /** Rejects the requests whose deadline has passed (the pool had no worker for them in time). */
  private failExpired(e: HttpError): void {
    const now = Date.now();
    const keep: Pending[] = [];
    for (const p of this.queue) {
      if (p.deadline <= now) {
        this.queuedRows -= p.n;
        p.reject(e);
      } else keep.push(p);
    }
    this.queue = keep;
  }

  private async run(lease: Lease, batch: Pending[]): Promise<void> {
    const { features, outputs } = this.o;
    const n = batch.reduce((a, p) => a + p.n, 0);
    const x = new Float32Array(n * features); // (n, features)
    let offset = 0;
    for (const p of batch) {
      x.set(p.rows, offset * features);
      offset += p.n;
    }
    this.stats.batches++;
    this.stats.requests += batch.length;
    this.stats.rows += n;
    try {
      const deadline = Math.min(...batch.map((p) => p.deadline));
      const y = await lease.run((api) => api.predict(Comlink.transfer(x, [x.buffer]), n), deadline); // (n, outputs)
      offset = 0;
      for (const p of batch) {
        p.resolve(y.slice(offset * outputs, (offset + p.n) * outputs));
        offset += p.n;
      }
    } catch (e) {
      const err = modelFailure(e);
      if (batch.length === 1 || err.status === 504) {
        for (const p of batch) p.reject(err);
      } else {
        // Which request broke the batch is unknown: run each again on its own.
        for (const p of batch.reverse()) this.enqueue({ ...p, alone: true }, true);
      }
    } finally {
      lease.release();
    }
  }
}
