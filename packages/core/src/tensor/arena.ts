/**
 * Reuse of op output buffers from one training step to the next.
 *
 * A training step allocates the same activations every time (GPT at batch 12: ~20 MB of
 * Float32Arrays per step). Fresh arrays cost a zero-fill each, and their external memory makes
 * V8 run a full mark-compact every few steps, on this thread and on V8's helper threads, which
 * in data-parallel training steal a core from the other workers. PyTorch keeps such memory in
 * its caching allocator; JavaScript has no reference counts, so chainrule asks for a scope:
 *
 *     const arena = new BufferArena();
 *     for (const batch of batches) {
 *       const loss = arena.run(() => {
 *         const loss = F.crossEntropy(model.forward(batch.x), batch.y);
 *         loss.backward();
 *         opt.step();
 *         return loss.item();          // read what you need inside, or before the next run()
 *       });
 *     }
 *
 * Op outputs made inside `run` (activations, saved values) are recycled when the same arena's
 * next `run` begins, so a tensor made in one run must not be read after the next run starts.
 * Parameters, gradients (`.grad`), optimizer state and module buffers are never arena memory.
 * Only arrays of at least MIN_LENGTH floats are recycled: small ones cost the GC little.
 */

const MIN_LENGTH = 1024;

/** The arena whose run() is executing on this thread, if any. */
let active: BufferArena | null = null;

/** Every arena's arrays (by buffer): they must never become a `.grad` or enter the gradient pool. */
const arenaBuffers = new WeakSet<ArrayBufferLike>();

/** Test hook: fill every recycled array with NaN before handing it out (an op that reads its output before writing it shows); CHAINRULE_ARENA_POISON=1 sets it for a whole run, worker threads included. */
let poison = process.env.CHAINRULE_ARENA_POISON === "1";
export function setArenaPoison(on: boolean): void {
  poison = on;
}

export class BufferArena {
  /** Arrays handed out in the previous run, by length: free for this run. */
  private free = new Map<number, Float32Array[]>();
  /** Arrays handed out in this run. */
  private used: Float32Array[] = [];

  /**
   * Runs `fn` with op outputs taken from this arena. First, everything handed out in the previous
   * run becomes free for reuse (arrays the previous run did not reuse are dropped, so the arena
   * holds about one step's activations). A run inside a run of the same arena does not reset.
   */
  run<T>(fn: () => T): T {
    if (active === this) return fn();
    this.free.clear();
    for (const a of this.used) {
      let list = this.free.get(a.length);
      if (!list) this.free.set(a.length, (list = []));
      list.push(a);
    }
    this.used = [];
    const prev = active;
    active = this;
    try {
      return fn();
    } finally {
      active = prev;
    }
  }

  /** Drops every array (the next run allocates afresh). */
  clear(): void {
    this.free.clear();
    this.used = [];
  }

  /** Bytes the arena holds: free from the previous run, or handed out in this one (for tests and memory reports). */
  get heldBytes(): number {
    let n = 0;
    for (const list of this.free.values()) for (const a of list) n += a.byteLength;
    for (const a of this.used) n += a.byteLength;
    return n;
  }

  take(n: number): Float32Array {
    const list = this.free.get(n);
    let a = list !== undefined ? list.pop() : undefined;
    if (a === undefined) {
      a = new Float32Array(n);
      arenaBuffers.add(a.buffer);
    } else if (poison) {
      a.fill(NaN);
    }
    this.used.push(a);
    return a;
  }
}

/**
 * A Float32Array of length n for an op's output that the op writes COMPLETELY (its contents are
 * arbitrary): inside a BufferArena run, one recycled from the arena's previous run; else new.
 */
export function outputBuffer(n: number): Float32Array {
  return active !== null && n >= MIN_LENGTH ? active.take(n) : new Float32Array(n);
}

/**
 * Like outputBuffer, for n bytes an op writes completely and saves for its backward (pooling
 * taps): a view on a recycled Float32Array of ⌈n/4⌉ floats, so it costs no fresh external memory.
 */
export function outputBytes(n: number): Uint8Array {
  const f = outputBuffer(Math.ceil(n / 4));
  return new Uint8Array(f.buffer, f.byteOffset, n);
}

/** Like outputBytes, for n int32s (pooling's argmax): a view on a recycled Float32Array of n floats. */
export function outputInt32(n: number): Int32Array {
  const f = outputBuffer(n);
  return new Int32Array(f.buffer, f.byteOffset, n);
}

/** Like outputBuffer, but zero-filled (for ops that accumulate into their output). */
export function zeroedOutputBuffer(n: number): Float32Array {
  return active !== null && n >= MIN_LENGTH ? active.take(n).fill(0) : new Float32Array(n);
}

/** Whether `a` is arena memory (recycled by a later run): never keep it beyond the step. */
export function isArenaArray(a: Float32Array): boolean {
  return arenaBuffers.has(a.buffer);
}
