/**
 * Layer norm's affine case (weight and bias, rows of even width) in WebAssembly SIMD. The sums are
 * js/nn.ts's, in float64 (Σx, Σx², and the backward's row and column sums: they match the loops to
 * the last bits of a float64 sum); the forward's output is computed in float32 lanes (within 2e-6 of
 * the loop), the backward's dx in f64x2 lanes operation for operation. Rows are copied into the
 * scratch memory (memory.ts) a chunk at a time.
 */
import { F64, I32, V128, funcBody, funcType, get, i32const, set, simd, tee } from "./asm.js";
import { bumpBy, dadd, dmul, dsub, f32load, f32store, f64bytes, fadd, fmul, fsub, lanesSum, ld2, ldv, pairsLoop, promote, splat2, st2, stv, zero } from "./codegen.js";
import { A0, AB0, AW0, B0, BB0, C0, CHUNK, M0, R0, W0, wasmFamily } from "./memory.js";

/**
 * lnForward(X, O, W, Bb, M, R, rows, n, eps): per row of n floats (n even), mean and variance
 * from Σx, Σx² in float64 (a quad of floats a step, its halves promoted into two accumulator
 * pairs), rs = 1/√(max(var, 0) + eps); then out = (x − m)·rs·w + b in float32 lanes, with m
 * split into a float32 head and tail so that x − m loses nothing to m's rounding. Output within
 * a few float32 roundings of the loop's float64 arithmetic (layernorm.test.ts: 2e-6); a whole
 * row in f64x2 lanes took twice as long.
 */
function lnForwardFn() {
  const [X, O, W, Bb, M, R, ROWS, N, EPS] = [0, 1, 2, 3, 4, 5, 6, 7, 8];
  const [j, nq] = [9, 10];
  const [m, rs, nf, vr] = [11, 12, 13, 14];
  const [x, lo, hi, s0, s1, q0, q1, mh, ml, r4] = [15, 16, 17, 18, 19, 20, 21, 22, 23, 24];
  const at = (base: number) => [...get(base), ...get(j), 0x6a]; // base + j
  const highHalf = simd(0x0d, 8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15); // floats 2, 3 to lanes 0, 1
  const splat4 = (f64: number[]) => [...f64, 0xb6, ...simd(0x13)]; // f32x4.splat(f32.demote(·))
  /** for (j = 0; j < nq; j += 16) body */
  const quads = (body: number[]) => [
    ...i32const(0), ...set(j),
    0x02, 0x40, ...get(nq), 0x45, 0x0d, 0, 0x03, 0x40,
    ...body, ...get(j), ...i32const(16), 0x6a, ...tee(j), ...get(nq), 0x49, 0x0d, 0, // j += 16; continue if j < nq
    0x0b, 0x0b,
  ];
  const ifPair = (body: number[]) => [...get(N), ...i32const(2), 0x71, 0x04, 0x40, ...body, 0x0b]; // the last two floats when n % 4 == 2
  const outQuad = (load: (base: number) => number[]) => [...load(X), ...get(mh), ...fsub, ...get(ml), ...fsub, ...get(r4), ...fmul, ...load(W), ...fmul, ...load(Bb), ...fadd];
  const code = [
    ...get(N), 0xb7, ...set(nf),
    ...get(N), ...i32const(-4), 0x71, ...i32const(2), 0x74, ...set(nq), // bytes of the whole quads
    0x02, 0x40, 0x03, 0x40,
    ...get(ROWS), 0x45, 0x0d, 1,
    ...zero, ...set(s0), ...zero, ...set(s1), ...zero, ...set(q0), ...zero, ...set(q1),
    ...quads([
      ...at(X), ...simd(0x00, 0, 0), ...tee(x), ...promote, ...set(lo), ...get(x), ...get(x), ...highHalf, ...promote, ...set(hi),
      ...get(s0), ...get(lo), ...dadd, ...set(s0), ...get(s1), ...get(hi), ...dadd, ...set(s1),
      ...get(q0), ...get(lo), ...get(lo), ...dmul, ...dadd, ...set(q0), ...get(q1), ...get(hi), ...get(hi), ...dmul, ...dadd, ...set(q1),
    ]),
    ...ifPair([...get(X), ...get(nq), 0x6a, ...simd(0x5d, 0, 0), ...promote, ...tee(lo), ...get(s0), ...dadd, ...set(s0), ...get(q0), ...get(lo), ...get(lo), ...dmul, ...dadd, ...set(q0)]),
    ...get(s0), ...get(s1), ...dadd, ...set(s0), ...get(q0), ...get(q1), ...dadd, ...set(q0),
    ...lanesSum(s0), ...get(nf), 0xa3, ...set(m),
    ...lanesSum(q0), ...get(nf), 0xa3, ...get(m), ...get(m), 0xa2, 0xa1, ...set(vr),
    // rs = 1 / sqrt((vr > 0 ? vr : 0) + eps)
    0x44, ...f64bytes(1), ...get(vr), 0x44, ...f64bytes(0), ...get(vr), 0x44, ...f64bytes(0), 0x64, 0x1b, ...get(EPS), 0xa0, 0x9f, 0xa3, ...set(rs),
    ...f32store(M, get(m)), ...f32store(R, get(rs)), ...bumpBy(M, 4), ...bumpBy(R, 4),
    // m = mh + ml (float32 head and tail); rs in float32
    ...get(m), ...get(m), 0xb6, 0xbb, 0xa1, ...set(vr), // the tail, 0 where m is ±∞ (∞ − ∞)
    ...splat4(get(m)), ...set(mh), ...splat4([...get(vr), 0x44, ...f64bytes(0), ...get(vr), ...get(vr), 0x61, 0x1b]), ...set(ml), ...splat4(get(rs)), ...set(r4),
    ...quads([...at(O), ...outQuad((base) => [...at(base), ...simd(0x00, 0, 0)]), ...simd(0x0b, 0, 0)]),
    ...ifPair([...get(O), ...get(nq), 0x6a, ...outQuad((base) => [...get(base), ...get(nq), 0x6a, ...simd(0x5d, 0, 0)]), ...simd(0x5b, 0, 0, 0)]),
    ...get(N), ...i32const(2), 0x74, ...tee(j), ...get(X), 0x6a, ...set(X), ...get(O), ...get(j), 0x6a, ...set(O), // next row
    ...get(ROWS), ...i32const(1), 0x6b, ...set(ROWS),
    0x0c, 0, 0x0b, 0x0b, 0x0b,
  ];
  return { type: funcType([I32, I32, I32, I32, I32, I32, I32, I32, F64]), code: funcBody([[2, I32], [4, F64], [10, V128]], code) };
}

/**
 * lnBackward(DX, DO, X, W, AW, AB, M, R, rows, n): js/nn.ts lnBackwardAffine. Per row,
 * d = dout·w; Σd and Σd·(x − m); dx = rs·(dout·w − meanD − h·meanDX) with h = (x − m)·rs;
 * the float64 column sums AW += dout·h, AB += dout (n float64 each).
 */
function lnBackwardFn() {
  const [DX, DO, X, W, AW, AB, M, R, ROWS, N] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
  const [j, pdx, pdo, px, pw, paw, pab] = [10, 11, 12, 13, 14, 15, 16];
  const [nf, rs] = [17, 18];
  const [sd, sdx, m2, rs2, md, mdx, dy, h] = [19, 20, 21, 22, 23, 24, 25, 26];
  const code = [
    ...get(N), 0xb7, ...set(nf),
    0x02, 0x40, 0x03, 0x40,
    ...get(ROWS), 0x45, 0x0d, 1,
    ...f32load(M), ...splat2, ...set(m2), ...f32load(R), ...tee(rs), ...splat2, ...set(rs2), ...bumpBy(M, 4), ...bumpBy(R, 4),
    ...zero, ...set(sd), ...zero, ...set(sdx), ...get(DO), ...set(pdo), ...get(X), ...set(px), ...get(W), ...set(pw),
    ...pairsLoop(j, N, [
      ...ld2(pdo), ...ld2(pw), ...dmul, ...tee(dy), ...get(sd), ...dadd, ...set(sd),
      ...get(dy), ...ld2(px), ...get(m2), ...dsub, ...dmul, ...get(sdx), ...dadd, ...set(sdx),
      ...bumpBy(pdo, 8), ...bumpBy(px, 8), ...bumpBy(pw, 8),
    ]),
    ...lanesSum(sd), ...get(nf), 0xa3, ...splat2, ...set(md),
    ...get(rs), ...lanesSum(sdx), 0xa2, ...get(nf), 0xa3, ...splat2, ...set(mdx),
    ...get(DX), ...set(pdx), ...get(DO), ...set(pdo), ...get(X), ...set(px), ...get(W), ...set(pw), ...get(AW), ...set(paw), ...get(AB), ...set(pab),
    ...pairsLoop(j, N, [
      ...ld2(pdo), ...set(dy),
      ...ld2(px), ...get(m2), ...dsub, ...get(rs2), ...dmul, ...set(h),
      ...st2(pdx, [...get(rs2), ...get(dy), ...ld2(pw), ...dmul, ...get(md), ...dsub, ...get(h), ...get(mdx), ...dmul, ...dsub, ...dmul]),
      ...stv(paw, [...ldv(paw), ...get(dy), ...get(h), ...dmul, ...dadd]),
      ...stv(pab, [...ldv(pab), ...get(dy), ...dadd]),
      ...bumpBy(pdx, 8), ...bumpBy(pdo, 8), ...bumpBy(px, 8), ...bumpBy(pw, 8), ...bumpBy(paw, 16), ...bumpBy(pab, 16),
    ]),
    ...get(pdx), ...set(DX), ...get(pdo), ...set(DO), ...get(px), ...set(X),
    ...get(ROWS), ...i32const(1), 0x6b, ...set(ROWS),
    0x0c, 0, 0x0b, 0x0b, 0x0b,
  ];
  return { type: funcType([I32, I32, I32, I32, I32, I32, I32, I32, I32, I32]), code: funcBody([[7, I32], [2, F64], [8, V128]], code) };
}

type LnForward = (x: number, o: number, w: number, b: number, m: number, r: number, rows: number, n: number, eps: number) => void;
type LnBackward = (dx: number, dout: number, x: number, w: number, aw: number, ab: number, m: number, r: number, rows: number, n: number) => void;
const family = wasmFamily<{ lnForward: LnForward; lnBackward: LnBackward }>(() => [[lnForwardFn(), "lnForward"], [lnBackwardFn(), "lnBackward"]]);

/**
 * js/nn.ts layerNorm's affine case (weight and bias) in WebAssembly; false (nothing touched)
 * where SIMD is off or the shape does not fit (n odd or over CHUNK): the caller runs its loop.
 */
export function simdLayerNorm(
  out: Float32Array, mean: Float32Array, rstd: Float32Array, x: Float32Array,
  weight: Float32Array, bias: Float32Array, rows: number, n: number, eps: number,
): boolean {
  if ((n & 1) !== 0 || n > CHUNK || rows === 0) return false;
  const k = family();
  if (k === null) return false;
  const e = k.fn, m = k.mem.f32;
  m.set(weight.subarray(0, n), W0);
  m.set(bias.subarray(0, n), BB0);
  const per = Math.floor(CHUNK / n);
  for (let r = 0; r < rows; r += per) {
    const c = Math.min(per, rows - r), len = c * n;
    m.set(x.subarray(r * n, r * n + len), A0);
    e.lnForward(4 * A0, 4 * B0, 4 * W0, 4 * BB0, 4 * M0, 4 * R0, c, n, eps);
    out.set(m.subarray(B0, B0 + len), r * n);
    mean.set(m.subarray(M0, M0 + c), r);
    rstd.set(m.subarray(R0, R0 + c), r);
  }
  return true;
}

/**
 * js/nn.ts lnBackwardAffine in WebAssembly: dx, and the float64 column sums added into accW
 * (Σ dout·x̂) and accB (Σ dout). False where SIMD is off or the shape does not fit.
 */
export function simdLayerNormBackward(
  dx: Float32Array, accW: Float64Array, accB: Float64Array, dout: Float32Array, x: Float32Array,
  mean: Float32Array, rstd: Float32Array, weight: Float32Array, rows: number, n: number,
): boolean {
  if ((n & 1) !== 0 || n > CHUNK || rows === 0) return false;
  const k = family();
  if (k === null) return false;
  const e = k.fn, m = k.mem.f32, d = k.mem.f64;
  m.set(weight.subarray(0, n), W0);
  d.set(accW.subarray(0, n), AW0 / 2);
  d.set(accB.subarray(0, n), AB0 / 2);
  const per = Math.floor(CHUNK / n);
  for (let r = 0; r < rows; r += per) {
    const c = Math.min(per, rows - r), len = c * n;
    m.set(x.subarray(r * n, r * n + len), A0);
    m.set(dout.subarray(r * n, r * n + len), B0);
    m.set(mean.subarray(r, r + c), M0);
    m.set(rstd.subarray(r, r + c), R0);
    e.lnBackward(4 * C0, 4 * B0, 4 * A0, 4 * W0, 4 * AW0, 4 * AB0, 4 * M0, 4 * R0, c, n);
    dx.set(m.subarray(C0, C0 + len), r * n);
  }
  accW.set(d.subarray(AW0 / 2, AW0 / 2 + n));
  accB.set(d.subarray(AB0 / 2, AB0 / 2 + n));
  return true;
}
