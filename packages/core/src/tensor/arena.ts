/**
 * Reuse of op output buffers from one training step to the next, without and with a scope.
 *
 * A training step allocates the same activations every time (GPT at batch 12: ~20 MB of
 * Float32Arrays per step). Fresh arrays cost a zero-fill each, and their external memory makes
 * V8 run a full mark-compact every few steps, on this thread and on V8's helper threads, which
 * in data-parallel training steal a core from the other workers. PyTorch keeps such memory in
 * its caching allocator and frees a tensor when its last reference goes; JavaScript has no
 * reference counts, so chainrule recycles what it can prove dead:
 *
 * - **Dead arrays** (the pool): gradients consumed by their op's backward, buffers an op saved
 *   for backward once that backward has freed them, and the intermediate activations of
 *   chainrule's own modules (below) go to a pool by length, from which the next op output or
 *   gradient of that length is taken (`outputBuffer`, `gradBuffer`).
 * - **Intermediate activations, without being asked** (`forwardScope`): inside the forward of
 *   one of chainrule's own modules (nn.Sequential, the layers, GPT, ...), with nothing but
 *   chainrule's own modules below it, an op output the forward does not return can be reached
 *   only through the graph of the value it returns. When no graph was built (noGrad, frozen
 *   inputs) they are dead when the forward returns; otherwise the backward that frees that
 *   graph (no retainGraph) hands them to the pool. A user's own Module class is not known to
 *   keep nothing, so its forward, and anything containing it, recycles only through the pool's
 *   other sources. Tensors reached through `gradFn.inputs` after that backward are not valid.
 * - **Everything a step makes, in a scope** (`BufferArena`): all op outputs made inside
 *   `arena.run` are recycled when the same arena's next run begins, the explicit form that the
 *   data-parallel workers use:
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
 *   A tensor made in one run must not be read after the next run starts. Parameters,
 *   gradients (`.grad`), optimizer state and module buffers are never arena memory.
 *
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
 * arbitrary): inside a BufferArena run, one recycled from the arena's previous run; else a dead
 * array from the pool, or a new one.
 */
export function outputBuffer(n: number): Float32Array {
  if (active !== null && n >= MIN_LENGTH) return active.take(n);
  return recycledBuffer(n) ?? made(new Float32Array(n));
}

// ---- The pool of dead arrays ----

/** Dead arrays by length, for the next outputBuffer or gradBuffer of that length. Whole ArrayBuffers only; bounded. */
const pool = new Map<number, Float32Array[]>();
/** Buffers now in the pool: an array handed in twice must not be handed out twice. */
const pooled = new WeakSet<ArrayBufferLike>();
let pooledBytes = 0;
const POOL_MAX_BYTES = 64 << 20;

/**
 * Hands an array nobody references any more to the pool (an op's saved buffer once its
 * backward freed it, a consumed gradient). Arena memory, views into larger buffers, shared
 * memory and arrays below MIN_LENGTH are not pooled.
 */
export function releaseBuffer(a: Float32Array): void {
  const buf = a.buffer;
  if (a.length < MIN_LENGTH || a.byteOffset !== 0 || a.byteLength !== buf.byteLength || !(buf instanceof ArrayBuffer)) return;
  if (arenaBuffers.has(buf) || pooled.has(buf) || a.byteLength > POOL_MAX_BYTES) return;
  privateBuffers.delete(buf);
  if (pooledBytes + a.byteLength > POOL_MAX_BYTES) {
    // Full: drop the arrays of other lengths (a former batch size, an evaluation), oldest first.
    for (const [len, list] of pool) {
      if (len === a.length) continue;
      pooledBytes -= len * 4 * list.length;
      pool.delete(len);
      if (pooledBytes + a.byteLength <= POOL_MAX_BYTES) break;
    }
    if (pooledBytes + a.byteLength > POOL_MAX_BYTES) return;
  }
  let list = pool.get(a.length);
  if (!list) pool.set(a.length, (list = []));
  list.push(a);
  pooled.add(buf);
  pooledBytes += a.byteLength;
}

/** A dead array of length n from the pool (recorded by an open forward scope), or null. */
export function recycledBuffer(n: number): Float32Array | null {
  const list = n >= MIN_LENGTH ? pool.get(n) : undefined;
  const a = list !== undefined ? list.pop() : undefined;
  if (a === undefined) return null;
  pooledBytes -= a.byteLength;
  pooled.delete(a.buffer);
  if (poison) a.fill(NaN);
  return made(a);
}

/** Bytes in the pool (for tests and memory reports). */
export function pooledBufferBytes(): number {
  return pooledBytes;
}

// ---- Intermediate activations of chainrule's own modules ----

/** Arrays allocated inside the open forward scope (see forwardScope), or null outside one. */
let scope: Float32Array[] | null = null;

/** Buffers of intermediate activations a forward scope made and did not return: the pool's once their graph is freed. */
const privateBuffers = new WeakSet<ArrayBufferLike>();

/** Whether a forward scope or a BufferArena run is open (a forward scope inside either just runs). */
export function forwardScopeOpen(): boolean {
  return scope !== null || active !== null;
}

function made(a: Float32Array): Float32Array {
  if (scope !== null && a.length >= MIN_LENGTH) scope.push(a);
  return a;
}

/**
 * Runs `forward`, the forward of a module whose code (and that of every module below it) keeps
 * no op output but the one it returns, so that the arrays made inside and not returned are
 * recycled: at once when the result has no graph, else by the backward that frees it
 * (`releaseIfIntermediate`). Inside another scope or a BufferArena run, just runs `forward`.
 */
export function forwardScope<T extends { data: Float32Array; gradFn: unknown }>(forward: () => T): T {
  if (scope !== null || active !== null) return forward();
  const arrays: Float32Array[] = [];
  scope = arrays;
  let out: T;
  try {
    out = forward();
  } finally {
    scope = null;
  }
  const kept = out.data.buffer;
  const dead = out.gradFn === null; // no graph reaches them: nothing does
  for (const a of arrays) {
    if (a.buffer === kept || pooled.has(a.buffer)) continue;
    if (dead) releaseBuffer(a);
    else privateBuffers.add(a.buffer);
  }
  return out;
}

/**
 * Called by the backward engine for each tensor whose node a graph-freeing backward has just
 * run: when its data is an intermediate activation of a forward scope, nothing can read it any
 * more, and it goes to the pool.
 */
export function releaseIfIntermediate(data: Float32Array): void {
  if (privateBuffers.has(data.buffer)) releaseBuffer(data);
}

/** Whether `a` is an intermediate activation awaiting its backward (an array the engine must not adopt as a .grad). */
export function isIntermediate(a: Float32Array): boolean {
  return privateBuffers.has(a.buffer);
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
  if (active !== null && n >= MIN_LENGTH) return active.take(n).fill(0);
  return recycledBuffer(n)?.fill(0) ?? made(new Float32Array(n));
}

/** Whether `a` is arena memory (recycled by a later run): never keep it beyond the step. */
export function isArenaArray(a: Float32Array): boolean {
  return arenaBuffers.has(a.buffer);
}
