/**
 * WebAssembly SIMD passes over flat parameters, in place on the memory that holds them: Adam /
 * AdamW (the js backend's adamUpdate, js/optim.ts: core's optimizers and the parallel workers) and
 * the reduce of gradient slots (the parallel package). `nn.flattenParameters` allocates parameters,
 * gradients and optimizer state in one memory (`arenaMemory`, through kernels().arenaMemory); the
 * parallel package allocates its shared memory here (`sharedMemory`) and registers it
 * (`registerMemory`). `kernelsFor(buffer)` finds the kernels bound to a registered memory.
 *
 * Adam runs in f32x4 lanes in float32 arithmetic, operation for operation as js/optim.ts's loop
 * (which rounds every operation with Math.fround), so the results are bit-identical to the loop.
 * The reduce runs in f64x2 lanes (two floats per instruction, promoted on load and rounded once on
 * store exactly as a Float32Array store rounds), bit-identical to the parallel package's loops; so
 * does the combine of hosts' 16-bit gradients, fused with their widening (combine.ts).
 *
 * The module is assembled here from bytes (asm.ts, no toolchain). Where SIMD is missing, or with
 * the switch off (switch.ts: CHAINRULE_SIMD=0), `loadKernels` returns null and the loops run.
 */

import { F32, F64, I32, V128, WA, get, moduleBytes, set, simd, uleb, vec } from "./asm.js";
import { ArgumentError } from "../../errors.js";
import { combineHalvesFn } from "./combine.js";
import { simdEnabled } from "./switch.js";

export interface SimdKernels {
  /** g = w0·s0 (float64, rounded once) over `pairs` pairs of floats at byte addresses. */
  reduce1(gAt: number, s0At: number, pairs: number, w0: number): void;
  /** g = w0·s0 + w1·s1. */
  reduce2(gAt: number, s0At: number, s1At: number, pairs: number, w0: number, w1: number): void;
  /** g = Σ_k w_k·s_k (k in slot order, float64 from 0, w_k = 0 skipped); weights: K float64 at wAt. */
  reduceK(gAt: number, s0At: number, pairs: number, K: number, stride: number, wAt: number): void;
  /** The same sum with every weight applied, w_k = 0 too (the parallel package's combine of hosts' gradients). */
  combineK(gAt: number, s0At: number, pairs: number, K: number, stride: number, wAt: number): void;
  /** out = Σ_k w_k · (16-bit floats at h0At + k·stride, widened) over four values a quad, fused (combine.ts); fromZero 1: from +0. */
  combineBf16(outAt: number, h0At: number, quads: number, K: number, stride: number, wAt: number, fromZero: number): void;
  combineFp16(outAt: number, h0At: number, quads: number, K: number, stride: number, wAt: number, fromZero: number): void;
  /** Adam without weight decay (js/optim.ts's fast path), float32 arithmetic over `quads` groups of four floats. */
  adam(pAt: number, gAt: number, mAt: number, vAt: number, quads: number, beta1: number, beta2: number, b1c: number, b2c: number, stepSize: number, invSqrtBc2: number, eps: number): void;
  /** Adam / AdamW with weight decay (js/optim.ts's general path). */
  adamWd(pAt: number, gAt: number, mAt: number, vAt: number, quads: number, beta1: number, beta2: number, b1c: number, b2c: number, stepSize: number, invSqrtBc2: number, eps: number, decay: number, l2: number): void;
}

/**
 * A shared WebAssembly.Memory (typed locally: the project's TypeScript libs carry no
 * WebAssembly declarations). It can be posted to worker threads; its buffer is a SharedArrayBuffer.
 */
export interface SharedMemory {
  readonly buffer: SharedArrayBuffer;
}

/** A WebAssembly.Memory, shared or not (its buffer is an ArrayBuffer or a SharedArrayBuffer). */
export interface WasmMemory {
  readonly buffer: ArrayBufferLike;
}

/** The most a (32-bit) WebAssembly memory can hold: 65,536 pages of 64 KiB, 4 GiB. */
export const MAX_SHARED_MEMORY_BYTES = 65536 * 65536;

/** A shared memory of `bytes` (rounded up to 64 KiB pages), zero-filled; at most MAX_SHARED_MEMORY_BYTES. */
export function sharedMemory(bytes: number): SharedMemory {
  if (!(bytes <= MAX_SHARED_MEMORY_BYTES)) {
    throw new ArgumentError(`sharedMemory: ${(bytes / 2 ** 30).toFixed(2)} GiB requested, above WebAssembly's 4 GiB per memory`);
  }
  const pages = Math.max(1, Math.ceil(bytes / 65536));
  return new WA.Memory({ initial: pages, maximum: pages, shared: true }) as SharedMemory;
}

// ---- the kernels, in the assembler of asm.ts ----
const memarg = [0, 0]; // align 2^0 (unaligned is fine), offset 0
const load64zero = (addr: number) => [...get(addr), ...simd(0x5d, ...memarg)];
const promote = simd(0x5f);
const demote = simd(0x5e);
const store64 = (addr: number, value: number[]) => [...get(addr), ...value, ...simd(0x5b, ...memarg, 0)];
const splat = simd(0x14);
const [add, mul] = [0xf0, 0xf2].map((op) => simd(op)); // f64x2.add, f64x2.mul
const zero128 = simd(0x0c, ...new Array(16).fill(0));
/** addr += bytes */
const bump = (addr: number, bytes = 8) => [...get(addr), 0x41, bytes, 0x6a, ...set(addr)];
/** Loads two floats at `addr` as f64x2. */
const ld = (addr: number) => [...load64zero(addr), ...promote];

// f32x4: four floats per instruction, float32 arithmetic (IEEE, round to nearest on every op)
const ld4 = (addr: number) => [...get(addr), ...simd(0x00, ...memarg)];
const st4 = (addr: number, value: number[]) => [...get(addr), ...value, ...simd(0x0b, ...memarg)];
const [sqrt4, add4, sub4, mul4, div4] = [0xe3, 0xe4, 0xe5, 0xe6, 0xe7].map((op) => simd(op));

/**
 * A function whose params are `nPtr` i32 addresses, an i32 iteration count, then scalars
 * (f64, splatted to f64x2; or with `lanes` 4, f32 splatted to f32x4) held in v128 locals;
 * `body(L)` is one iteration over 2 (or 4) floats.
 */
function kernel(nPtr: number, nScalar: number, nTemp: number, body: (L: { ptr: (i: number) => number; s: (i: number) => number; t: (i: number) => number }) => number[], lanes: 2 | 4 = 2) {
  const count = nPtr;
  const firstScalar = nPtr + 1;
  const firstV = firstScalar + nScalar;
  const L = { ptr: (i: number) => i, s: (i: number) => firstV + i, t: (i: number) => firstV + nScalar + i };
  const params = [...new Array(nPtr).fill(I32), I32, ...new Array(nScalar).fill(lanes === 4 ? F32 : F64)];
  const type = [0x60, ...vec(params.map((t) => [t])), 0];
  const locals = vec([[...uleb(nScalar + nTemp), V128]]);
  const code: number[] = [];
  for (let i = 0; i < nScalar; i++) code.push(...get(firstScalar + i), ...(lanes === 4 ? simd(0x13) : splat), ...set(L.s(i)));
  code.push(
    0x02, 0x40, // block
    0x03, 0x40, // loop
    ...get(count), 0x45, 0x0d, 1, // br_if (count == 0) out
    ...body(L),
    ...new Array(nPtr).fill(0).flatMap((_, i) => bump(i, 4 * lanes)),
    ...get(count), 0x41, 1, 0x6b, ...set(count), // count -= 1
    0x0c, 0, // br loop
    0x0b, 0x0b, // end loop, end block
    0x0b, // end function
  );
  const fn = [...locals, ...code];
  return { type, code: [...uleb(fn.length), ...fn] };
}

/**
 * Adam / AdamW over four floats per iteration in float32 arithmetic, operation for operation
 * as js/optim.ts's loop (which rounds every operation with Math.fround, giving the same IEEE
 * float32 results): PyTorch also runs Adam in float32 for float32 parameters.
 */
function adamBody(wd: boolean) {
  // ptrs: p g m v; scalars: beta1 beta2 b1c b2c stepSize invSqrtBc2 eps [decay l2]; temps: g, mi, vi, pi
  return (L: { ptr: (i: number) => number; s: (i: number) => number; t: (i: number) => number }) => {
    const [P, G, M, V] = [0, 1, 2, 3].map(L.ptr);
    const [B1, B2, B1C, B2C, SS, IB, EPS, DECAY, L2] = [0, 1, 2, 3, 4, 5, 6, 7, 8].map(L.s);
    const [g, mi, vi, pi] = [0, 1, 2, 3].map(L.t);
    return [
      // pi = p·decay; gi = g + l2·pi   (fast path: gi = g)
      ...(wd ? [...ld4(P), ...get(DECAY), ...mul4, ...set(pi), ...ld4(G), ...get(L2), ...get(pi), ...mul4, ...add4, ...set(g)] : [...ld4(G), ...set(g)]),
      // mi = beta1·m + b1c·gi
      ...get(B1), ...ld4(M), ...mul4, ...get(B1C), ...get(g), ...mul4, ...add4, ...set(mi),
      // vi = beta2·v + (b2c·gi)·gi
      ...get(B2), ...ld4(V), ...mul4, ...get(B2C), ...get(g), ...mul4, ...get(g), ...mul4, ...add4, ...set(vi),
      ...st4(M, get(mi)),
      ...st4(V, get(vi)),
      // p = p − (stepSize·mi) / (sqrt(vi)·invSqrtBc2 + eps)
      ...st4(P, [
        ...(wd ? get(pi) : ld4(P)),
        ...get(SS), ...get(mi), ...mul4,
        ...get(vi), ...sqrt4, ...get(IB), ...mul4, ...get(EPS), ...add4,
        ...div4, ...sub4,
      ]),
    ];
  };
}

/**
 * reduceK(g, s0, pairs, K, stride, w): g = Σ_k w_k·s_k over K slots `stride` bytes apart,
 * accumulated in float64 from 0 in slot order, skipping w_k = 0 (rules as reduceRange's
 * ≥ 3-slot path); weights are K float64 at byte address w. With `skipZero` false (combineK) every
 * term is added, as combineHosts's loop does (0·NaN and 0·Inf are NaN there).
 */
function reduceKFn(skipZero: boolean) {
  const [G, S0, PAIRS, K, STRIDE, W, k, sp, wp, wk, acc] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
  const type = [0x60, ...vec([I32, I32, I32, I32, I32, I32].map((t) => [t])), 0];
  const locals = vec([[3, I32], [1, F64], [1, V128]]);
  const addTo = (l: number, by: number[]) => [...get(l), ...by, 0x6a, ...set(l)];
  const code = [
    0x02, 0x40, 0x03, 0x40, // block, loop (pairs)
    ...get(PAIRS), 0x45, 0x0d, 1,
    ...zero128, ...set(acc),
    ...get(S0), ...set(sp), ...get(W), ...set(wp), ...get(K), ...set(k),
    0x02, 0x40, 0x03, 0x40, // block, loop (slots)
    ...get(k), 0x45, 0x0d, 1,
    ...get(wp), 0x2b, 3, 0, ...set(wk), // wk = f64.load(wp)
    ...(skipZero ? [...get(wk), 0x44, 0, 0, 0, 0, 0, 0, 0, 0, 0x62, 0x04, 0x40] : []), // if (wk != 0)
    ...get(acc), ...get(wk), ...splat, ...ld(sp), ...mul, ...add, ...set(acc),
    ...(skipZero ? [0x0b] : []),
    ...addTo(sp, get(STRIDE)), ...addTo(wp, [0x41, 8]), ...get(k), 0x41, 1, 0x6b, ...set(k),
    0x0c, 0, 0x0b, 0x0b, // br slots, end loop, end block
    ...store64(G, [...get(acc), ...demote]),
    ...addTo(G, [0x41, 8]), ...addTo(S0, [0x41, 8]), ...get(PAIRS), 0x41, 1, 0x6b, ...set(PAIRS),
    0x0c, 0, 0x0b, 0x0b, // br pairs, end loop, end block
    0x0b,
  ];
  const fn = [...locals, ...code];
  return { type, code: [...uleb(fn.length), ...fn] };
}

function buildModule(shared: boolean): Uint8Array {
  const fns = [
    // reduce1(g, s0, pairs, w0)
    kernel(2, 1, 1, (L) => [
      ...store64(L.ptr(0), [...get(L.s(0)), ...ld(L.ptr(1)), ...mul, ...demote]),
    ]),
    // reduce2(g, s0, s1, pairs, w0, w1): w0·s0 + w1·s1
    kernel(3, 2, 1, (L) => [
      ...store64(L.ptr(0), [...get(L.s(0)), ...ld(L.ptr(1)), ...mul, ...get(L.s(1)), ...ld(L.ptr(2)), ...mul, ...add, ...demote]),
    ]),
    kernel(4, 7, 4, adamBody(false), 4),
    kernel(4, 9, 4, adamBody(true), 4),
    reduceKFn(true),
    reduceKFn(false),
    combineHalvesFn("bf16"),
    combineHalvesFn("fp16"),
  ];
  const names = ["reduce1", "reduce2", "adam", "adamWd", "reduceK", "combineK", "combineBf16", "combineFp16"];
  return moduleBytes(fns, names, shared);
}

const compiled: [object | null | undefined, object | null | undefined] = [undefined, undefined];

/** The compiled module for shared or unshared memories, or null where WebAssembly SIMD is missing. */
function moduleFor(shared: boolean): object | null {
  const i = shared ? 1 : 0;
  if (compiled[i] === undefined) {
    try {
      compiled[i] = new WA.Module(buildModule(shared));
    } catch {
      compiled[i] = null;
    }
  }
  return compiled[i]!;
}

/** The kernels bound to `memory`, or null where WebAssembly SIMD is unavailable or disabled. */
export function loadKernels(memory: WasmMemory): SimdKernels | null {
  if (!simdEnabled()) return null;
  const shared = typeof SharedArrayBuffer !== "undefined" && memory.buffer instanceof SharedArrayBuffer;
  const mod = moduleFor(shared);
  if (mod === null) return null;
  return new WA.Instance(mod, { env: { memory } }).exports as unknown as SimdKernels;
}

/** Whether the SIMD kernels are in use in this process (for reports). */
export function simdAvailable(): boolean {
  return simdEnabled() && typeof WA === "object" && moduleFor(true) !== null;
}

// ---- memories the kernels run in place on ----

const byBuffer = new WeakMap<ArrayBufferLike, SimdKernels>();

/**
 * Makes the kernels run on typed arrays over `memory.buffer`: `kernelsFor(view.buffer)`
 * finds them, and the js backend's `adamUpdate` uses them when all its operands lie there
 * (the parallel workers register their shared memory). Returns the kernels, or null.
 */
export function registerMemory(memory: WasmMemory): SimdKernels | null {
  const k = loadKernels(memory);
  if (k !== null) byBuffer.set(memory.buffer, k);
  return k;
}

/** The kernels bound to the memory whose buffer is `buffer`, when it was registered and SIMD is on. */
export function kernelsFor(buffer: ArrayBufferLike): SimdKernels | null {
  return simdEnabled() ? byBuffer.get(buffer) ?? null : null;
}

/**
 * An unshared (or, with `shared`, shared) WebAssembly.Memory of at least `bytes`, registered
 * for the kernels; null when SIMD is off or unavailable (callers then use plain buffers).
 */
export function arenaMemory(bytes: number, shared = false): WasmMemory | null {
  if (!simdEnabled() || typeof WA !== "object" || moduleFor(shared) === null) return null;
  try {
    const pages = Math.max(1, Math.ceil(bytes / 65536));
    const memory = shared ? new WA.Memory({ initial: pages, maximum: pages, shared: true }) : new WA.Memory({ initial: pages });
    return registerMemory(memory) ? memory : null;
  } catch {
    return null;
  }
}
