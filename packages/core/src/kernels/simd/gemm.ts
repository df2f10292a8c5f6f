/**
 * GEMM for the js backend in WebAssembly SIMD: C = alpha·op(A)·op(B) + beta·C, row-major.
 *
 * The same Goto/BLIS blocking as the TypeScript GEMM (js/gemm.ts), but the packed panels and
 * the block of C being computed live in a WebAssembly.Memory owned by this module, and the
 * macro-kernel (all micro-tiles of one packed A block × one packed B block) runs in
 * WebAssembly on f32x4 vectors: a MR×NR = 4×8 micro-tile held in 8 f32x4 accumulators
 * (f32x4.mul + f32x4.add; Node 20 has no relaxed-SIMD FMA without flags). V8 does not
 * vectorise JavaScript, so this is where the speed comes from (~3–4 → 10+ GFLOP/s).
 *
 * JavaScript moves the data the Kernels interface hands over (any Float32Array, offsets,
 * leading dimensions) in and out with TypedArray.set (memcpy): the rows of each block of A
 * and B into a raw block, zero-padded, which a second WebAssembly function packs into panels
 * (absorbing the transposes, times alpha for A); beta·C into the staged block of C before
 * the K loop, and the result back out after it. The module is assembled from bytes with asm.ts; each thread (worker) that
 * loads this file gets its own instance and memory. `simdGemm` returns false where
 * WebAssembly SIMD is missing or the switch is off (switch.ts), and the caller runs the TypeScript GEMM.
 */
import { F32, I32, V128, WA, funcBody, funcType, get, i32const, moduleBytes, set, simd, tee } from "./asm.js";
import { simdEnabled } from "./switch.js";

const MR = 4; // rows of the micro-tile
const NV = 2; // f32x4 vectors across the micro-tile
const NR = 4 * NV; // columns of the micro-tile
const KC = 256; // depth of a packed block (A micro-panel 4 KiB, B micro-panel 8 KiB: L1)
const MC = 128; // rows of op(A) packed at once (128 KiB: L2)
const NC = 2048; // columns of op(B) packed at once (2 MiB)
const C_FLOATS = 1 << 22; // staged C block at most 16 MiB: wider problems get narrower column blocks

// ---- the macro-kernel, in WebAssembly ----

const v128Load = (offset: number) => simd(0x00, 4, offset); // v128.load align=16
const v128Store = (offset: number) => simd(0x0b, 4, offset); // v128.store
const load32Splat = (offset: number) => simd(0x09, 2, offset); // v128.load32_splat
const f32x4Add = simd(0xe4), f32x4Mul = simd(0xe6);
const addTo = (l: number, n: number[]) => [...get(l), ...n, 0x6a, ...set(l)]; // l += n
const decrementLoop = (l: number) => [...get(l), ...i32const(1), 0x6b, ...tee(l), 0x0d, 0]; // if (--l != 0) continue

/**
 * macro(a, b, c, mPanels, nPanels, kc, ldc): for every MR-tall panel of the packed A block
 * (at byte address a, each [kc][MR]) and every NR-wide panel of the packed B block (at b,
 * each [kc][NR]), C tile += A panel · B panel, where C (at c, row stride ldc bytes) holds
 * mPanels·MR rows × nPanels·NR columns. Loop order: B panel outer (it stays in L1 while the
 * A panels stream from L2). All counts ≥ 1.
 */
function macroKernel() {
  const [A, B, Cp, MP, NP, KCn, LDC] = [0, 1, 2, 3, 4, 5, 6];
  const [jp, ip, k, pa, pb, ap, ci, cr] = [7, 8, 9, 10, 11, 12, 13, 14];
  const acc = (r: number, v: number) => 15 + r * NV + v;
  const bv = (v: number) => 15 + MR * NV + v;
  const av = 15 + MR * NV + NV;

  const tile = (op: "load" | "store") => {
    const code = [...get(ci), ...set(cr)];
    for (let r = 0; r < MR; r++) {
      for (let v = 0; v < NV; v++) {
        if (op === "load") code.push(...get(cr), ...v128Load(16 * v), ...set(acc(r, v)));
        else code.push(...get(cr), ...get(acc(r, v)), ...v128Store(16 * v));
      }
      code.push(...addTo(cr, get(LDC)));
    }
    return code;
  };

  const kStep: number[] = [];
  for (let v = 0; v < NV; v++) kStep.push(...get(pb), ...v128Load(16 * v), ...set(bv(v)));
  for (let r = 0; r < MR; r++) {
    kStep.push(...get(pa), ...load32Splat(4 * r), ...set(av));
    for (let v = 0; v < NV; v++) kStep.push(...get(acc(r, v)), ...get(av), ...get(bv(v)), ...f32x4Mul, ...f32x4Add, ...set(acc(r, v)));
  }

  const code = [
    ...get(NP), ...set(jp),
    0x03, 0x40, // loop over B panels
    ...get(A), ...set(ap), ...get(Cp), ...set(ci), ...get(MP), ...set(ip),
    0x03, 0x40, // loop over A panels
    ...tile("load"),
    ...get(ap), ...set(pa), ...get(B), ...set(pb), ...get(KCn), ...set(k),
    0x03, 0x40, // loop over k
    ...kStep,
    ...addTo(pa, i32const(4 * MR)), ...addTo(pb, i32const(4 * NR)),
    ...decrementLoop(k),
    0x0b,
    ...tile("store"),
    ...get(pa), ...set(ap), // the next A panel follows this one
    ...get(cr), ...set(ci), // the next MR rows of C
    ...decrementLoop(ip),
    0x0b,
    ...get(pb), ...set(B), // the next B panel
    ...addTo(Cp, i32const(4 * NR)),
    ...decrementLoop(jp),
    0x0b,
    0x0b,
  ];
  return {
    type: funcType([I32, I32, I32, I32, I32, I32, I32]),
    code: funcBody([[8, I32], [MR * NV + NV + 1, V128]], code),
  };
}

/**
 * pack(dst, src, panels, kc, width, sK, sJ, sP, alpha): packs `panels` panels of `width`
 * values × kc, each laid out [k][width], from a raw block copied into the memory, where value
 * (panel p, k, j) lies at byte src + p·sP + k·sK + j·sJ; multiplies by alpha (op(A)'s scale).
 */
function packKernel() {
  const [DST, SRC, PANELS, KCn, WIDTH, SK, SJ, SP, ALPHA] = [0, 1, 2, 3, 4, 5, 6, 7, 8];
  const [p, k, j, sk, sj] = [9, 10, 11, 12, 13];
  const code = [
    ...get(PANELS), ...set(p),
    0x03, 0x40, // loop over panels
    ...get(SRC), ...set(sk), ...get(KCn), ...set(k),
    0x03, 0x40, // loop over k
    ...get(sk), ...set(sj), ...get(WIDTH), ...set(j),
    0x03, 0x40, // loop over the panel's width
    ...get(DST), ...get(sj), 0x2a, 2, 0, ...get(ALPHA), 0x94, 0x38, 2, 0, // f32.store(dst, f32.load(sj) · alpha)
    ...addTo(DST, i32const(4)), ...addTo(sj, get(SJ)),
    ...decrementLoop(j),
    0x0b,
    ...addTo(sk, get(SK)),
    ...decrementLoop(k),
    0x0b,
    ...addTo(SRC, get(SP)),
    ...decrementLoop(p),
    0x0b,
    0x0b,
  ];
  return { type: funcType([I32, I32, I32, I32, I32, I32, I32, I32, F32]), code: funcBody([[5, I32]], code) };
}

type Pack = (dst: number, src: number, panels: number, kc: number, width: number, sK: number, sJ: number, sP: number, alpha: number) => void;
type Macro = (a: number, b: number, c: number, mPanels: number, nPanels: number, kc: number, ldc: number) => void;

interface Engine {
  macro: Macro;
  pack: Pack;
  memory: { readonly buffer: ArrayBufferLike; grow(pages: number): number };
  f32: Float32Array;
}

let engine: Engine | null | undefined; // undefined: not tried yet; null: no WebAssembly SIMD here

function instantiate(): Engine | null {
  if (engine !== undefined) return engine;
  try {
    const mod = new WA.Module(moduleBytes([macroKernel(), packKernel()], ["macro", "pack"], false));
    const memory = new WA.Memory({ initial: 16 });
    const inst = new WA.Instance(mod, { env: { memory } });
    engine = { macro: inst.exports.macro as Macro, pack: inst.exports.pack as Pack, memory, f32: new Float32Array(memory.buffer) };
  } catch {
    engine = null;
  }
  return engine;
}

/** Grows the memory to hold `floats` floats (views over the old buffer are refreshed). */
function reserve(e: Engine, floats: number): Float32Array {
  const bytes = floats * 4;
  if (e.memory.buffer.byteLength < bytes) {
    e.memory.grow(Math.ceil((bytes - e.memory.buffer.byteLength) / 65536));
  }
  if (e.f32.buffer !== e.memory.buffer) e.f32 = new Float32Array(e.memory.buffer);
  return e.f32;
}

/** Whether `simdGemm` will run (WebAssembly SIMD compiled and the switch on: switch.ts). */
export function simdGemmAvailable(): boolean {
  return simdEnabled() && instantiate() !== null;
}

const roundUp = (n: number, m: number) => Math.ceil(n / m) * m;

/**
 * C = alpha·op(A)·op(B) + beta·C in WebAssembly SIMD; the Kernels.gemm signature.
 * Returns false (and touches nothing) where the SIMD GEMM is unavailable or disabled.
 */
export function simdGemm(
  transA: boolean, transB: boolean, M: number, N: number, K: number, alpha: number,
  A: Float32Array, aOff: number, lda: number,
  B: Float32Array, bOff: number, ldb: number,
  beta: number, C: Float32Array, cOff: number, ldc: number,
): boolean {
  if (!simdEnabled()) return false;
  const e = instantiate();
  if (e === null) return false;
  if (M === 0 || N === 0) return true;
  if (K === 0 || alpha === 0) {
    scaleC(M, N, beta, C, cOff, ldc);
    return true;
  }

  // Memory: [packed A block | packed B block | staged C block | raw block], each 16-byte aligned.
  const Mp = roundUp(M, MR);
  let ncMax = Math.min(NC, roundUp(N, NR));
  if (Mp * ncMax > C_FLOATS) ncMax = Math.max(NR, Math.floor(C_FLOATS / Mp / NR) * NR);
  const kcMax = Math.min(K, KC);
  const aAt = 0;
  const bAt = aAt + roundUp(Math.min(Mp, MC), MR) * kcMax;
  const cAt = bAt + ncMax * kcMax;
  const rawAt = cAt + Mp * ncMax;
  const f32 = reserve(e, rawAt + kcMax * Math.max(ncMax, roundUp(Math.min(Mp, MC), MR)));

  for (let jc = 0; jc < N; jc += ncMax) {
    const nc = Math.min(ncMax, N - jc);
    const ncp = roundUp(nc, NR); // row stride of the staged C block
    stageC(f32, cAt, ncp, M, Mp, nc, jc, beta, C, cOff, ldc);
    for (let pc = 0; pc < K; pc += KC) {
      const kc = Math.min(KC, K - pc);
      packB(e, f32, bAt, rawAt, transB, B, bOff, ldb, pc, kc, jc, nc);
      for (let ic = 0; ic < M; ic += MC) {
        const mc = Math.min(MC, M - ic);
        packA(e, f32, aAt, rawAt, transA, A, aOff, lda, ic, mc, pc, kc, alpha);
        e.macro(4 * aAt, 4 * bAt, 4 * (cAt + ic * ncp), Math.ceil(mc / MR), ncp / NR, kc, 4 * ncp);
      }
    }
    // C[:, jc..jc+nc] = the staged block.
    for (let i = 0; i < M; i++) {
      const s = cAt + i * ncp, d = cOff + i * ldc + jc;
      if (nc >= 16) C.set(f32.subarray(s, s + nc), d);
      else for (let j = 0; j < nc; j++) C[d + j] = f32[s + j];
    }
  }
  return true;
}

/** C = beta·C (beta = 0 writes zeros, whatever C held). */
function scaleC(M: number, N: number, beta: number, C: Float32Array, cOff: number, ldc: number): void {
  if (beta === 1) return;
  for (let i = 0; i < M; i++) {
    const row = cOff + i * ldc;
    if (beta === 0) C.fill(0, row, row + N);
    else for (let j = 0; j < N; j++) C[row + j] *= beta;
  }
}

/** staged (Mp × ncp at `at`) = beta·C[:, jc..jc+nc], zeros in the padding (no stale values, no denormals). */
function stageC(f32: Float32Array, at: number, ncp: number, M: number, Mp: number, nc: number, jc: number, beta: number, C: Float32Array, cOff: number, ldc: number): void {
  if (beta === 0) {
    f32.fill(0, at, at + Mp * ncp);
    return;
  }
  for (let i = 0; i < M; i++) {
    const d = at + i * ncp, s = cOff + i * ldc + jc;
    if (beta === 1 && nc >= 16) f32.set(C.subarray(s, s + nc), d);
    else for (let j = 0; j < nc; j++) f32[d + j] = beta * C[s + j];
    if (ncp > nc) f32.fill(0, d + nc, d + ncp);
  }
  if (Mp > M) f32.fill(0, at + M * ncp, at + Mp * ncp);
}

/**
 * Copies rows of `src` into the raw block at `at`: `count` rows of `len` values, the first at
 * `from`, `ld` apart, stored `stride` apart with zeros from len to stride (so that packing can
 * read whole panels); `padRows` more rows of zeros after them.
 */
function copyRows(f32: Float32Array, at: number, stride: number, src: Float32Array, from: number, ld: number, count: number, len: number, padRows: number): void {
  for (let r = 0, s = from, d = at; r < count; r++, s += ld, d += stride) {
    if (len >= 16) f32.set(src.subarray(s, s + len), d);
    else for (let j = 0; j < len; j++) f32[d + j] = src[s + j];
    if (stride > len) f32.fill(0, d + len, d + stride);
  }
  if (padRows > 0) f32.fill(0, at + count * stride, at + (count + padRows) * stride);
}

/** op(B)[pc..pc+kc, jc..jc+nc] → NR-wide panels at `at`, each [kc][NR], zero-padded on the right. */
function packB(e: Engine, f32: Float32Array, at: number, raw: number, trans: boolean, B: Float32Array, off: number, ld: number, pc: number, kc: number, jc: number, nc: number): void {
  const ncp = roundUp(nc, NR), panels = ncp / NR;
  if (!trans) {
    // raw [kc][ncp]: value (p, k, j) at k·ncp + p·NR + j
    copyRows(f32, raw, ncp, B, off + pc * ld + jc, ld, kc, nc, 0);
    e.pack(4 * at, 4 * raw, panels, kc, NR, 4 * ncp, 4, 4 * NR, 1);
  } else {
    // op(B)(k, j) = B[j, k]: raw [ncp][kc], value (p, k, j) at (p·NR + j)·kc + k
    copyRows(f32, raw, kc, B, off + jc * ld + pc, ld, nc, kc, ncp - nc);
    e.pack(4 * at, 4 * raw, panels, kc, NR, 4, 4 * kc, 4 * NR * kc, 1);
  }
}

/** alpha·op(A)[ic..ic+mc, pc..pc+kc] → MR-tall panels at `at`, each [kc][MR], zero-padded at the bottom. */
function packA(e: Engine, f32: Float32Array, at: number, raw: number, trans: boolean, A: Float32Array, off: number, ld: number, ic: number, mc: number, pc: number, kc: number, alpha: number): void {
  const mcp = roundUp(mc, MR), panels = mcp / MR;
  if (!trans) {
    // raw [mcp][kc]: value (p, k, i) at (p·MR + i)·kc + k
    copyRows(f32, raw, kc, A, off + ic * ld + pc, ld, mc, kc, mcp - mc);
    e.pack(4 * at, 4 * raw, panels, kc, MR, 4, 4 * kc, 4 * MR * kc, alpha);
  } else {
    // op(A)(i, k) = A[k, i]: raw [kc][mcp], value (p, k, i) at k·mcp + p·MR + i
    copyRows(f32, raw, mcp, A, off + pc * ld + ic, ld, kc, mc, 0);
    e.pack(4 * at, 4 * raw, panels, kc, MR, 4 * mcp, 4, 4 * MR, alpha);
  }
}
