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
 * JavaScript does the data movement the Kernels interface needs: it packs op(A) (times alpha)
 * and op(B) into zero-padded panels (which absorbs transposes, offsets and leading
 * dimensions), copies beta·C into the staged block of C before the K loop and the result
 * out after it. The module is assembled from bytes with asm.ts; each thread (worker) that
 * loads this file gets its own instance and memory. `simdGemm` returns false where
 * WebAssembly SIMD is missing or CHAINRULE_SIMD=0, and the caller runs the TypeScript GEMM.
 */
import { I32, V128, WA, funcBody, funcType, get, i32const, moduleBytes, set, simd, tee } from "./asm.js";

const MR = 4; // rows of the micro-tile
const NV = 2; // f32x4 vectors across the micro-tile
const NR = 4 * NV; // columns of the micro-tile
const KC = 256; // depth of a packed block (A micro-panel 4 KiB, B micro-panel 8 KiB: L1)
const MC = 128; // rows of op(A) packed at once (128 KiB: L2)
const NC = 2048; // columns of op(B) packed at once (2 MiB)
const C_FLOATS = 1 << 22; // staged C block at most 16 MiB: wider problems get narrower column blocks

let enabled = process.env.CHAINRULE_SIMD !== "0" && process.env.CHAINRULE_PARALLEL_SIMD !== "0";

/**
 * Turns the SIMD GEMM off (the TypeScript GEMM runs) or back on; the initial value comes from
 * CHAINRULE_SIMD, like index.ts's switch for the optimizer kernels, which is separate so that
 * tests can compare those kernels with their JS loops on identical forward passes.
 */
export function setSimdGemmEnabled(on: boolean): void {
  enabled = on;
}

/** Whether the SIMD GEMM is switched on (it may still be unavailable: see `simdGemmAvailable`). */
export function simdGemmEnabled(): boolean {
  return enabled;
}

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

type Macro = (a: number, b: number, c: number, mPanels: number, nPanels: number, kc: number, ldc: number) => void;

interface Engine {
  macro: Macro;
  memory: { readonly buffer: ArrayBufferLike; grow(pages: number): number };
  f32: Float32Array;
}

let engine: Engine | null | undefined; // undefined: not tried yet; null: no WebAssembly SIMD here

function instantiate(): Engine | null {
  if (engine !== undefined) return engine;
  try {
    const mod = new WA.Module(moduleBytes([macroKernel()], ["macro"], false));
    const memory = new WA.Memory({ initial: 16 });
    const inst = new WA.Instance(mod, { env: { memory } });
    engine = { macro: inst.exports.macro as Macro, memory, f32: new Float32Array(memory.buffer) };
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

/** Whether `simdGemm` will run (WebAssembly SIMD compiled and CHAINRULE_SIMD not 0). */
export function simdGemmAvailable(): boolean {
  return enabled && instantiate() !== null;
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
  if (!enabled) return false;
  const e = instantiate();
  if (e === null) return false;
  if (M === 0 || N === 0) return true;
  if (K === 0 || alpha === 0) {
    scaleC(M, N, beta, C, cOff, ldc);
    return true;
  }

  // Memory: [packed A block | packed B block | staged C block], each 16-byte aligned.
  const Mp = roundUp(M, MR);
  let ncMax = Math.min(NC, roundUp(N, NR));
  if (Mp * ncMax > C_FLOATS) ncMax = Math.max(NR, Math.floor(C_FLOATS / Mp / NR) * NR);
  const kcMax = Math.min(K, KC);
  const aAt = 0;
  const bAt = aAt + roundUp(Math.min(Mp, MC), MR) * kcMax;
  const cAt = bAt + ncMax * kcMax;
  const f32 = reserve(e, cAt + Mp * ncMax);

  for (let jc = 0; jc < N; jc += ncMax) {
    const nc = Math.min(ncMax, N - jc);
    const ncp = roundUp(nc, NR); // row stride of the staged C block
    stageC(f32, cAt, ncp, M, Mp, nc, jc, beta, C, cOff, ldc);
    for (let pc = 0; pc < K; pc += KC) {
      const kc = Math.min(KC, K - pc);
      packB(f32, bAt, transB, B, bOff, ldb, pc, kc, jc, nc);
      for (let ic = 0; ic < M; ic += MC) {
        const mc = Math.min(MC, M - ic);
        packA(f32, aAt, transA, A, aOff, lda, ic, mc, pc, kc, alpha);
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

/** op(B)[pc..pc+kc, jc..jc+nc] → NR-wide panels at `at`, each [kc][NR], zero-padded on the right. */
function packB(dst: Float32Array, at: number, trans: boolean, B: Float32Array, off: number, ld: number, pc: number, kc: number, jc: number, nc: number): void {
  for (let p = 0, j0 = jc; j0 < jc + nc; p++, j0 += NR) {
    const w = Math.min(NR, jc + nc - j0);
    const base = at + p * NR * kc;
    if (!trans) {
      let src = off + pc * ld + j0, d = base;
      if (w === NR) {
        for (let k = 0; k < kc; k++, src += ld, d += NR) {
          dst[d] = B[src]; dst[d + 1] = B[src + 1]; dst[d + 2] = B[src + 2]; dst[d + 3] = B[src + 3];
          dst[d + 4] = B[src + 4]; dst[d + 5] = B[src + 5]; dst[d + 6] = B[src + 6]; dst[d + 7] = B[src + 7];
        }
      } else {
        for (let k = 0; k < kc; k++, src += ld, d += NR) {
          for (let j = 0; j < NR; j++) dst[d + j] = j < w ? B[src + j] : 0;
        }
      }
    } else if (w === NR) {
      // op(B)(k, j) = B[j, k]: gather one value from each of NR rows of B per k, write NR contiguous.
      const r0 = off + j0 * ld + pc, r1 = r0 + ld, r2 = r1 + ld, r3 = r2 + ld, r4 = r3 + ld, r5 = r4 + ld, r6 = r5 + ld, r7 = r6 + ld;
      for (let k = 0, d = base; k < kc; k++, d += NR) {
        dst[d] = B[r0 + k]; dst[d + 1] = B[r1 + k]; dst[d + 2] = B[r2 + k]; dst[d + 3] = B[r3 + k];
        dst[d + 4] = B[r4 + k]; dst[d + 5] = B[r5 + k]; dst[d + 6] = B[r6 + k]; dst[d + 7] = B[r7 + k];
      }
    } else {
      for (let j = 0; j < NR; j++) {
        if (j < w) {
          const src = off + (j0 + j) * ld + pc;
          for (let k = 0, d = base + j; k < kc; k++, d += NR) dst[d] = B[src + k];
        } else {
          for (let k = 0, d = base + j; k < kc; k++, d += NR) dst[d] = 0;
        }
      }
    }
  }
}

/** alpha·op(A)[ic..ic+mc, pc..pc+kc] → MR-tall panels at `at`, each [kc][MR], zero-padded at the bottom. */
function packA(dst: Float32Array, at: number, trans: boolean, A: Float32Array, off: number, ld: number, ic: number, mc: number, pc: number, kc: number, alpha: number): void {
  for (let p = 0, i0 = ic; i0 < ic + mc; p++, i0 += MR) {
    const h = Math.min(MR, ic + mc - i0);
    const base = at + p * MR * kc;
    if (!trans && h === MR && alpha === 1) {
      // One value from each of the MR rows per k, written contiguously.
      const r0 = off + i0 * ld + pc, r1 = r0 + ld, r2 = r1 + ld, r3 = r2 + ld;
      for (let k = 0, d = base; k < kc; k++, d += MR) {
        dst[d] = A[r0 + k]; dst[d + 1] = A[r1 + k]; dst[d + 2] = A[r2 + k]; dst[d + 3] = A[r3 + k];
      }
    } else if (!trans) {
      for (let i = 0; i < MR; i++) {
        if (i < h) {
          const src = off + (i0 + i) * ld + pc;
          if (alpha === 1) for (let k = 0, d = base + i; k < kc; k++, d += MR) dst[d] = A[src + k];
          else for (let k = 0, d = base + i; k < kc; k++, d += MR) dst[d] = alpha * A[src + k];
        } else {
          for (let k = 0, d = base + i; k < kc; k++, d += MR) dst[d] = 0;
        }
      }
    } else {
      // op(A)(i, k) = A[k, i]: each k gives MR contiguous values of A.
      let src = off + pc * ld + i0, d = base;
      if (h === MR && alpha === 1) {
        for (let k = 0; k < kc; k++, src += ld, d += MR) {
          dst[d] = A[src]; dst[d + 1] = A[src + 1]; dst[d + 2] = A[src + 2]; dst[d + 3] = A[src + 3];
        }
      } else {
        for (let k = 0; k < kc; k++, src += ld, d += MR) {
          for (let i = 0; i < MR; i++) dst[d + i] = i < h ? alpha * A[src + i] : 0;
        }
      }
    }
  }
}
