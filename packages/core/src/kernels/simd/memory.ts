/**
 * The scratch memory of the elementwise, image and attention kernels, and its layout: the one
 * place where the regions of every family are laid out.
 *
 * WebAssembly addresses only its own memory, so these kernels copy their operands in
 * (TypedArray.set, a memcpy), run, and copy the results out. Every family (gelu.ts, elementwise.ts,
 * layernorm.ts, attention.ts, pool.ts, batchnorm.ts, batchnorm-pool.ts, conv.ts) is its own small
 * module, instantiated (`wasmFamily`) on this one unshared WebAssembly.Memory. Each thread that
 * loads this file gets its own memory and instances: no state is shared across threads.
 * (The GEMM, gemm.ts, owns its own memory; Adam and the reduce, optim.ts, run in place on
 * memories that hold the operands.)
 *
 * Layout, in floats from the start of the memory (`after`: 64-byte aligned, with slack):
 *
 * | region | size | used by |
 * |---|---|---|
 * | A0, B0 | CHUNK each | two operands of the chunked passes: GELU (h, d), mul / add / ReLU, causal softmax (P, dP); layer norm's x and dout |
 * | C0, W0, BB0, M0, R0 | CHUNK (M0, R0: CHUNK/2) | layer norm: dx, weight, bias, mean, rstd |
 * | AW0, AB0 | 2·CHUNK each (float64) | layer norm's column sums Σ dout·x̂ and Σ dout |
 * | PIN0, POUT0, PTAP0 | POOL_IN, POOL_IN/4, POOL_IN/16 (taps are bytes) | 2×2 max pooling: copied planes, pooled outputs, taps |
 * | PSUM0 | POOL_IN/2 (float64, one per plane) | the 2×2 pool + ReLU backward's per-plane gradient sums |
 * | BX0, BY0, BO0 | POOL_IN each | batch norm's x, dy, out; the max pool's argmax (BO0); its backward scatter (BX0, BY0, BO0) |
 * | BNP0 | BN_ARRAYS·BN_MAXC (float64) | batch norm's per-channel arrays (`BN`) |
 * | BIG0 … | grows up to BIG_MAX | whole tensors: the padded copies and im2col (conv.ts), the 2×2 pool + ReLU (pool.ts); attention's score blocks (attention.ts) |
 *
 * The operand regions do not start at multiples of 4 KiB: a Float32Array of the size these kernels
 * get is page-aligned, and copying out of a region at the same address modulo 4096 runs ~5× slower
 * (4K aliasing between the copy's loads and stores).
 */
import { WA, moduleBytes } from "./asm.js";
import type { WasmFunction } from "./codegen.js";
import { simdEnabled } from "./switch.js";

/** Floats per chunk and operand (16 KiB: three operands stay in L1/L2). */
export const CHUNK = 4096;
export const A0 = 64, B0 = A0 + CHUNK + 128;
export const C0 = B0 + CHUNK + 128, W0 = C0 + CHUNK + 128, BB0 = W0 + CHUNK + 128, M0 = BB0 + CHUNK + 128, R0 = M0 + CHUNK / 2 + 64;
export const AW0 = R0 + CHUNK / 2 + 64, AB0 = AW0 + 2 * CHUNK + 128;
/** Floats of whole planes a pooling or batch-norm call copies in at once. */
export const POOL_IN = 4 * CHUNK;
export const PIN0 = AB0 + 2 * CHUNK + 128, POUT0 = PIN0 + POOL_IN + 128, PTAP0 = POUT0 + POOL_IN / 4 + 128;
export const PSUM0 = PTAP0 + POOL_IN / 16 + 64;
export const BX0 = PSUM0 + POOL_IN / 2 + 128, BY0 = BX0 + POOL_IN + 128, BO0 = BY0 + POOL_IN + 128, BNP0 = BO0 + POOL_IN + 128;
/** Channels the per-channel float64 arrays hold (more: the loops run). */
export const BN_MAXC = 1024;
/** Batch norm's per-channel float64 arrays, BN_MAXC floats64 each from BNP0, in this order. */
export const BN = { MEAN: 0, RSTD: 1, K: 2, MDY: 3, MDYX: 4, SUM: 5, SUM2: 6 } as const;
const BN_ARRAYS = 7;
const MEM_FLOATS = BNP0 + 2 * BN_ARRAYS * BN_MAXC;
/** Where the growable scratch for whole tensors begins (floats, 64-byte aligned), and its largest size. */
export const BIG0 = Math.ceil((MEM_FLOATS + 128) / 16) * 16 + 64;
const BIG_MAX = 1 << 26;

/** Float offset `at` rounded up to a 64-byte boundary, past `slack` floats. */
export const after = (at: number, slack = 64) => Math.ceil((at + slack) / 16) * 16;

/** The memory and its views (refreshed when it grows: growing replaces the buffer). */
export interface Scratch {
  memory: { readonly buffer: ArrayBufferLike; grow(pages: number): number };
  f32: Float32Array;
  f64: Float64Array;
  u8: Uint8Array;
  i32: Int32Array;
}

let scratch: Scratch | null | undefined;

/** The scratch memory (made on first use). Throws where WebAssembly is missing. */
function scratchMemory(): Scratch {
  if (scratch) return scratch;
  const memory = new WA.Memory({ initial: Math.ceil((4 * MEM_FLOATS) / 65536) });
  const b = memory.buffer;
  scratch = { memory, f32: new Float32Array(b), f64: new Float64Array(b), u8: new Uint8Array(b), i32: new Int32Array(b) };
  return scratch;
}

/**
 * One family's kernels: `build` lists its functions and their export names; the module is compiled
 * and instantiated on the scratch memory at the first call. The returned function gives the
 * exports and the memory's views, or null where SIMD is off (switch.ts) or the module does not
 * compile (no WebAssembly SIMD; `CHAINRULE_DEBUG_SIMD=1` prints why): callers then run their loops.
 */
export function wasmFamily<T>(build: () => [WasmFunction, string][]): () => { fn: T; mem: Scratch } | null {
  let family: { fn: T; mem: Scratch } | null | undefined;
  return () => {
    if (!simdEnabled()) return null;
    if (family === undefined) {
      try {
        const entries = build();
        const mod = new WA.Module(moduleBytes(entries.map((e) => e[0]), entries.map((e) => e[1]), false));
        const mem = scratchMemory();
        family = { fn: new WA.Instance(mod, { env: { memory: mem.memory } }).exports as T, mem };
      } catch (err) {
        if (process.env.CHAINRULE_DEBUG_SIMD) console.error(err);
        family = null;
      }
    }
    return family;
  };
}

/**
 * The memory from BIG0 on, grown to hold `floats` (the views refreshed); false above BIG_MAX
 * floats (256 MiB), where callers run their loops. Read the views after calling this.
 */
export function bigScratch(mem: Scratch, floats: number): boolean {
  if (floats > BIG_MAX) return false;
  const need = 4 * (BIG0 + floats + 64);
  if (mem.memory.buffer.byteLength < need) {
    mem.memory.grow(Math.ceil((need - mem.memory.buffer.byteLength) / 65536));
    const b = mem.memory.buffer;
    mem.f32 = new Float32Array(b);
    mem.f64 = new Float64Array(b);
    mem.u8 = new Uint8Array(b);
    mem.i32 = new Int32Array(b);
  }
  return true;
}
