/**
 * The exchange between hosts, one per host, bucket by bucket while backward goes on.
 *
 * As each of this host's ranks finishes a parameter's gradient (core's leaf-gradient hook), it
 * counts the parameter into its bucket's READY word (layout.ts). When every rank has counted
 * every parameter of the next bucket, the exchange reduces that bucket over the ranks' slots
 * (rank order, in WebAssembly SIMD in place where the slots lie in the WebAssembly memory) into
 * the host's mean gradient, sends it to the other hosts and combines theirs in
 * host order (float64, rounded once): every host ends with the same bits, whatever MPI's own
 * reduction order. With 2 hosts a bucket is one MPI_Allgather; with more, a reduce-scatter
 * (MPI_Alltoall, each host sums one part) then an MPI_Allgather of the summed parts, which puts
 * 2·(H−1)/H of the bucket on the wire per host instead of H−1 times it. With gradientCompression
 * each of these collectives carries 16-bit floats (core's encodeHalf): the sender rounds, and every
 * host — the sender too — sums the decoded values, so the bits still agree. The collective delivers
 * into the WebAssembly memory that holds the gradient (layout.ts hostCombineRegion), where core's
 * SIMD kernel combines in place (reduce.ts combineHosts). Then the loss totals
 * and the averaged batch-norm buffers (float32 always), and DONE, which the ranks wait for before
 * their update.
 *
 * With MPI it runs on a thread of its own (exchange-thread.ts), the only one calling MPI during
 * training (MPI_THREAD_SERIALIZED), so buckets cross the network while the ranks still compute.
 * With a communicator object (one worker), the replica runs it after its backward.
 */
import { decodeHalf, encodeHalf } from "@chainrule/core";
import { type SimdKernels, registerSimdMemory } from "@chainrule/core/internal";
import { CONTROL, type GradientBucket, HOSTX, HOST_TOTALS, gradientSlots, waitBoundMs } from "./layout.js";
import type { Communicator } from "./mpi.js";
import { type CombineKernels, combineHostHalves, combineHosts, reduceRange } from "./reduce.js";
import type { GradientCompression, WorkerContext } from "./types.js";

/** The shared words and where a waiting thread reads the exchange's failure. */
export interface HostSyncViews { sync: Int32Array; totals: Float64Array; error: Uint8Array }

export function hostSyncViews(ctx: WorkerContext): HostSyncViews {
  return { sync: new Int32Array(ctx.hostSync), totals: new Float64Array(ctx.hostTotals), error: new Uint8Array(ctx.hostError) };
}

/** Records a failure of the exchange for the ranks waiting on DONE (they throw with this message). */
export function recordExchangeFailure(ctx: WorkerContext, message: string): void {
  const v = hostSyncViews(ctx), bytes = new TextEncoder().encode(message).subarray(0, v.error.length - 1);
  v.error.fill(0);
  v.error.set(bytes);
  Atomics.store(v.sync, HOSTX.FAILED, 1);
  Atomics.notify(v.sync, HOSTX.DONE);
}

/** The exchange's failure message, as it wrote it. */
export function exchangeFailure(v: HostSyncViews): string {
  const end = v.error.indexOf(0);
  return new TextDecoder().decode(v.error.slice(0, end < 0 ? v.error.length : end));
}

export class HostExchange {
  private readonly v: HostSyncViews;
  private readonly grad: Float32Array;
  private readonly slots: Float32Array[];
  private readonly exchange: Float64Array;
  private readonly control: Int32Array;
  /** Per bucket: counts that make it ready (its parameters × ranks), and its floats. */
  private readonly full: number[];
  private readonly sizes: number[];
  private readonly rankWeights: Float64Array;
  private readonly compression: GradientCompression;
  private hostWeights: number[] = [];
  private bufferWeights: number[] = [];
  private allCounted = 0;
  private stop = false;
  private pack = new Float32Array(0);
  private gathered = new Float32Array(0);
  private part = new Float32Array(0);
  private mine = new Float32Array(0);
  private buffers = new Float32Array(0);
  private halvesOut = new Uint16Array(0);
  private halvesIn = new Uint16Array(0);
  /** Core's SIMD kernels bound to the WebAssembly memory, for the reduce over the slots (null: SIMD off or missing). */
  private readonly reduceKernels: SimdKernels | null;
  /** The combine's SIMD kernels, and where its operands lie in the WebAssembly memory (null: plain arrays and the loops). */
  private readonly combine: CombineKernels | null = null;
  private readonly inMemory: { gathered: Float32Array; mine: Float32Array } | null = null;

  constructor(private readonly ctx: WorkerContext, private readonly comm: Communicator) {
    const buf = ctx.memory.buffer, P = ctx.numParams;
    this.v = hostSyncViews(ctx);
    this.grad = new Float32Array(buf, ctx.gradAt, P);
    this.slots = gradientSlots(ctx, this.grad);
    this.exchange = new Float64Array(ctx.exchange);
    this.control = new Int32Array(ctx.control);
    this.full = ctx.buckets.map((b) => b.params.length * ctx.world);
    this.sizes = ctx.buckets.map((b) => piecesLength(b.pieces));
    // The last row of the reduce weights, where the SIMD reduce over 3 or more slots reads them.
    this.rankWeights = new Float64Array(buf, ctx.weightsAt + 8 * ctx.world * ctx.world, ctx.world);
    this.compression = ctx.gradientCompression;
    const region = ctx.hostCombine, kernels = registerSimdMemory(ctx.memory);
    this.reduceKernels = kernels;
    if (region && kernels && comm.size === ctx.hosts) {
      this.combine = { kernels, weights: new Float64Array(buf, region.weightsAt, ctx.hosts) };
      this.inMemory = { gathered: new Float32Array(buf, region.gatheredAt, region.gatheredFloats), mine: new Float32Array(buf, region.mineAt, region.mineFloats) };
    }
  }

  /** Waits (in slices, until told to quit) for the ranks to enter a step. False: quit. */
  awaitStep(): boolean {
    const s = this.v.sync;
    for (;;) {
      if (Atomics.load(s, HOSTX.QUIT) !== 0) return false;
      const v = Atomics.load(s, HOSTX.ENTERED);
      if (v >= this.ctx.world) return true;
      Atomics.wait(s, HOSTX.ENTERED, v, 1000);
    }
  }

  /** One step's exchange (the ranks have entered it, or will); DONE + 1 when complete. Throws on a timeout or a failed MPI call. */
  runStep(): void {
    const s = this.v.sync, { world, buckets } = this.ctx;
    this.take(HOSTX.ENTERED, world, "the ranks to enter the step");
    let busy = 0;
    const t0 = performance.now();
    this.head();
    busy += performance.now() - t0;
    for (let b = 0; b < buckets.length; b++) {
      this.take(HOSTX.READY + b, this.full[b], `bucket ${b} of the gradient`);
      const t1 = performance.now();
      this.bucket(buckets[b], this.sizes[b]);
      busy += performance.now() - t1;
    }
    this.take(HOSTX.SETTLED, 1, "rank 0 to average the buffers");
    const t2 = performance.now();
    this.tail();
    busy += performance.now() - t2;
    this.v.totals[HOST_TOTALS.MS] = busy;
    Atomics.add(s, HOSTX.DONE, 1);
    Atomics.notify(s, HOSTX.DONE);
  }

  /** Waits until `word` holds `count` (bounded), then takes them off for the next step. */
  private take(word: number, count: number, what: string): void {
    const s = this.v.sync, bound = waitBoundMs(this.control), deadline = performance.now() + bound;
    for (let v = Atomics.load(s, word); v < count; v = Atomics.load(s, word)) {
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`host ${this.comm.rank} exchange: waited ${bound} ms for ${what}`);
      Atomics.wait(s, word, v, left);
    }
    Atomics.sub(s, word, count);
  }

  /** The ranks' weights within this host, and every host's counted targets, active ranks and stop request. */
  private head(): void {
    const { world } = this.ctx, x = this.exchange, H = this.comm.size;
    let counted = 0;
    for (let k = 0; k < world; k++) counted += x[3 * k];
    for (let k = 0; k < world; k++) this.rankWeights[k] = counted > 0 ? x[3 * k] / counted : 0;
    const all = new Float64Array(3 * H);
    this.comm.allgather(new Float64Array([counted, this.v.totals[HOST_TOTALS.ACTIVE], Atomics.load(this.control, CONTROL.STOP)]), all);
    let allCounted = 0, allActive = 0, stop = false;
    for (let h = 0; h < H; h++) { allCounted += all[3 * h]; allActive += all[3 * h + 1]; stop ||= all[3 * h + 2] > 0; }
    this.allCounted = allCounted;
    this.stop = stop;
    this.hostWeights = Array.from({ length: H }, (_, h) => (allCounted > 0 ? all[3 * h] / allCounted : 0));
    this.bufferWeights = Array.from({ length: H }, (_, h) => (allActive > 0 ? all[3 * h + 1] / allActive : 0));
  }

  /** One bucket: this host's ranks reduced into the mean gradient, then combined with the other hosts'. */
  private bucket(bucket: GradientBucket, n: number): void {
    const { pieces } = bucket, g = this.grad;
    if (this.slots[0] !== g) for (let i = 0; i < pieces.length; i += 2) reduceRange(g, this.slots, this.rankWeights, pieces[i], pieces[i + 1], false, this.reduceKernels);
    // One piece is sent in place; several are packed.
    let send: Float32Array;
    if (pieces.length === 2) send = g.subarray(pieces[0], pieces[1]);
    else {
      send = this.scratch("pack", n);
      for (let i = 0, at = 0; i < pieces.length; i += 2) { send.set(g.subarray(pieces[i], pieces[i + 1]), at); at += pieces[i + 1] - pieces[i]; }
    }
    const H = this.comm.size, w = this.hostWeights, format = this.compression;
    if (H <= 2 || !this.comm.alltoall) {
      if (format !== "none") {
        // Every host's halves are widened, weighed and summed in one pass.
        const halves = this.received(H * n);
        this.allgatherHalves(send, halves);
        for (let i = 0, at = 0; i < pieces.length; i += 2) {
          const len = pieces[i + 1] - pieces[i];
          combineHostHalves(format, g, pieces[i], halves, n, at, len, w, this.combine);
          at += len;
        }
        return;
      }
      const all = this.scratch("gathered", H * n);
      this.allgather(send, all);
      for (let i = 0, at = 0; i < pieces.length; i += 2) {
        const len = pieces[i + 1] - pieces[i];
        combineHosts(g, pieces[i], all, n, at, len, w, this.combine);
        at += len;
      }
      return;
    }
    // Reduce-scatter: host h sums part h (m floats; the last part padded with zeros), then all parts are gathered.
    const m = Math.ceil(n / H), padded = this.scratch("part", H * m);
    padded.set(send);
    padded.fill(0, n);
    const mine = this.scratch("mine", m);
    if (format !== "none") {
      const parts = this.received(H * m);
      const out = this.halves("halvesOut", padded.length);
      encodeHalf(format, out, padded);
      this.comm.alltoall!(out, parts);
      combineHostHalves(format, mine, 0, parts, m, 0, m, w, this.combine);
    } else {
      const parts = this.scratch("gathered", H * m);
      this.comm.alltoall!(padded, parts);
      combineHosts(mine, 0, parts, m, 0, m, w, this.combine);
    }
    this.allgather(mine, padded);
    for (let i = 0, at = 0; i < pieces.length; i += 2) {
      const len = pieces[i + 1] - pieces[i];
      g.set(padded.subarray(at, at + len), pieces[i]);
      at += len;
    }
  }

  /** MPI_Allgather of gradient values: float32 as they are, or rounded to 16 bits and decoded (every host's, this one's included). */
  private allgather(send: Float32Array, recv: Float32Array): void {
    const format = this.compression;
    if (format === "none") return this.comm.allgather(send, recv);
    const back = this.halves("halvesIn", recv.length);
    this.allgatherHalves(send, back);
    decodeHalf(format, recv, back);
  }

  /** MPI_Allgather of gradient values rounded to 16 bits (gradientCompression), left as halves. */
  private allgatherHalves(send: Float32Array, recv: Uint16Array): void {
    const out = this.halves("halvesOut", send.length);
    encodeHalf(this.compression as "bf16" | "fp16", out, send);
    this.comm.allgather(out, recv);
  }

  /** Where a collective delivers `n` halves to combine: the WebAssembly memory's region when they fit, else a plain array. */
  private received(n: number): Uint16Array {
    const g = this.inMemory?.gathered;
    if (g && 2 * g.length >= n) return new Uint16Array(g.buffer, g.byteOffset, n);
    return this.halves("halvesIn", n);
  }

  /** After the gradient: the loss totals and the batch-norm buffers (active ranks' weights). */
  private tail(): void {
    const { world } = this.ctx, x = this.exchange, H = this.comm.size, t = this.v.totals;
    let lossSum = 0;
    for (let k = 0; k < world; k++) lossSum += x[3 * k + 1];
    const losses = new Float64Array(H);
    this.comm.allgather(new Float64Array([lossSum]), losses);
    let allLoss = 0;
    for (let h = 0; h < H; h++) allLoss += losses[h];
    const B = this.ctx.buffers.reduce((n, b) => n + b.size, 0);
    if (B > 0) {
      const canon = new Float32Array(this.ctx.memory.buffer, this.ctx.buffersAt, B), all = this.scratch("buffers", H * B);
      this.comm.allgather(canon, all);
      combineHosts(canon, 0, all, B, 0, B, this.bufferWeights);
    }
    t[HOST_TOTALS.COUNTED] = this.allCounted;
    t[HOST_TOTALS.LOSS_SUM] = allLoss;
    t[HOST_TOTALS.STOP] = this.stop ? 1 : 0;
  }

  private scratch(name: "pack" | "gathered" | "part" | "mine" | "buffers", n: number): Float32Array {
    const inside = (name === "gathered" || name === "mine") && this.inMemory?.[name];
    if (inside && inside.length >= n) return inside.subarray(0, n);
    if (this[name].length < n) this[name] = new Float32Array(n);
    return this[name].subarray(0, n);
  }

  private halves(name: "halvesOut" | "halvesIn", n: number): Uint16Array {
    if (this[name].length < n) this[name] = new Uint16Array(n);
    return this[name].subarray(0, n);
  }
}

function piecesLength(pieces: readonly number[]): number {
  let n = 0;
  for (let i = 0; i < pieces.length; i += 2) n += pieces[i + 1] - pieces[i];
  return n;
}
