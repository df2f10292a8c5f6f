/** Synchronised batch norm: the ranks' batch-norm statistics combined through shared memory. */
import type { BatchNormSync } from "@chainrule/core";
import { CONTROL, waitBoundMs } from "./layout.js";
import type { WorkerContext } from "./types.js";

/**
 * Synchronised batch norm over shared memory. Each call (a BatchNorm2d forward or backward in
 * training) writes this rank's row — [element count, counted targets, C values, C values] in
 * float64 — into exchange parity (call & 1), meets the other active ranks at the BN barrier
 * (target call × active, bounded wait), then every rank combines all rows in rank order, so all
 * get the same numbers. Two parities suffice: a rank can only write call k+2's row after every
 * rank arrived at call k+1, i.e. finished reading call k's.
 */
export class SharedBatchNorm implements BatchNormSync {
  private rank = 0;
  private active = 1;
  private step = 0;
  private counted = 0;
  private calls = 0;
  private readonly x: Float64Array;
  private readonly c: Int32Array;
  constructor(private readonly ctx: WorkerContext) {
    this.x = new Float64Array(ctx.memory.buffer, ctx.bnAt, 2 * ctx.world * ctx.bnRow);
    this.c = new Int32Array(ctx.control);
  }
  begin(rank: number, active: number, step: number, counted: number): void {
    this.rank = rank;
    this.active = active;
    this.step = step;
    this.counted = counted;
    this.calls = 0;
  }
  /** Publishes this rank's row (a, b: C values each), waits for the others; returns the exchange parity's base. */
  private exchange(head: number, a: Float64Array, b: Float64Array): number {
    const k = ++this.calls, { world, bnRow } = this.ctx, C = a.length;
    if (2 + 2 * C > bnRow) throw new Error(`syncBatchNorm: ${C} channels, the exchange holds ${(bnRow - 2) / 2}`);
    const base = (k & 1) * world * bnRow, row = base + this.rank * bnRow, x = this.x;
    x[row] = head;
    x[row + 1] = this.counted;
    x.set(a, row + 2);
    x.set(b, row + 2 + C);
    const target = k * this.active, c = this.c, t0 = performance.now(), timeout = waitBoundMs(this.c);
    if (Atomics.add(c, CONTROL.BN, 1) + 1 >= target) Atomics.notify(c, CONTROL.BN);
    else {
      for (let v = Atomics.load(c, CONTROL.BN); v < target; v = Atomics.load(c, CONTROL.BN)) {
        const left = t0 + timeout - performance.now();
        if (left <= 0) throw new Error(`step ${this.step}: batch-norm sync ${k} timed out after ${timeout} ms (${v - (k - 1) * this.active} of ${this.active} workers arrived)`);
        Atomics.wait(c, CONTROL.BN, v, left);
      }
    }
    return base;
  }
  forward(count: number, mean: Float64Array, m2: Float64Array): { count: number; mean: Float64Array; variance: Float64Array } {
    const C = mean.length, base = this.exchange(count, mean, m2), { bnRow } = this.ctx, x = this.x;
    const gm = new Float64Array(C), gm2 = new Float64Array(C);
    let n = 0;
    for (let r = 0; r < this.active; r++) {
      const row = base + r * bnRow, nk = x[row];
      if (nk === 0) continue;
      const nn2 = n + nk;
      for (let ch = 0; ch < C; ch++) {
        const d = x[row + 2 + ch] - gm[ch];
        gm[ch] += (d * nk) / nn2;
        gm2[ch] += x[row + 2 + C + ch] + (d * d * n * nk) / nn2;
      }
      n = nn2;
    }
    const variance = gm2.map((v) => (n > 0 ? v / n : 0));
    return { count: n, mean: gm, variance };
  }
  backward(sdy: Float64Array, sdyx: Float64Array): { sdy: Float64Array; sdyx: Float64Array } {
    const C = sdy.length, base = this.exchange(0, sdy, sdyx), { bnRow } = this.ctx, x = this.x;
    if (!(this.counted > 0)) throw new Error(`step ${this.step}: syncBatchNorm on a shard without counted targets`);
    const gs = new Float64Array(C), gx = new Float64Array(C);
    for (let r = 0; r < this.active; r++) {
      const row = base + r * bnRow, w = x[row + 1] / this.counted;
      for (let ch = 0; ch < C; ch++) {
        gs[ch] += w * x[row + 2 + ch];
        gx[ch] += w * x[row + 2 + C + ch];
      }
    }
    return { sdy: gs, sdyx: gx };
  }
}
