/**
 * Layer norm's affine case (weight and bias, rows of even width) in WebAssembly SIMD. The forward's
 * Σx, Σx² and the backward's weight and bias gradients (column sums) are js/nn.ts's float64 sums
 * (the column sums bit for bit); the forward's output and the backward's dx are computed in float32
 * lanes (within 2e-6 of the loops' float64 arithmetic). Rows are copied into the scratch memory
 * (memory.ts) a chunk at a time.
 */
import { F64, I32, V128, funcBody, funcType, get, i32const, set, simd, tee, uleb } from "./asm.js";
import { addTo, bumpBy, dadd, dmul, dsub, f32store, f64bytes, fadd, fmul, fsub, lanesSum, promote, zero } from "./codegen.js";
import { A0, AB0, AW0, B0, BB0, C0, CHUNK, M0, R0, W0, wasmFamily } from "./memory.js";

/** Byte distances from an x element to the same element of dout and dx, and from a mean to its rstd (memory.ts). */
const DOUT = 4 * (B0 - A0), DX = 4 * (C0 - A0), RSTD = 4 * (R0 - M0);
const loadAt = (addr: number[], offset: number) => [...addr, ...simd(0x00, 0, ...uleb(offset))]; // v128.load
const load2At = (addr: number[], offset: number) => [...addr, ...simd(0x5d, 0, ...uleb(offset))]; // v128.load64_zero: two floats
const storeAt = (addr: number[], value: number[], offset: number) => [...addr, ...value, ...simd(0x0b, 0, ...uleb(offset))];
const store2At = (addr: number[], value: number[], offset: number) => [...addr, ...value, ...simd(0x5b, 0, ...uleb(offset), 0)]; // v128.store64_lane 0
const highHalf = (v: number) => [...get(v), ...get(v), ...simd(0x0d, 8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15)]; // floats 2, 3 to lanes 0, 1
const splatF32 = simd(0x13), splatF64 = simd(0x14);
/** for (j = 0; j < end; j += step) body, with j and end locals. */
const stepLoop = (j: number, end: number, step: number, body: number[]) => [
  ...i32const(0), ...set(j),
  0x02, 0x40, ...get(end), 0x45, 0x0d, 0, 0x03, 0x40,
  ...body, ...get(j), ...i32const(step), 0x6a, ...tee(j), ...get(end), 0x49, 0x0d, 0, // j += step; continue if j < end
  0x0b, 0x0b,
];
/** body for the last two floats of rows of n floats (local N) when n % 4 == 2. */
const ifPair = (N: number, body: number[]) => [...get(N), ...i32const(2), 0x71, 0x04, 0x40, ...body, 0x0b];

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
  const [lo, hi, s0, s1, q0, q1, mh, ml, r4] = [15, 16, 17, 18, 19, 20, 21, 22, 23];
  const at = (base: number) => [...get(base), ...get(j), 0x6a]; // base + j
  const splat4 = (f64: number[]) => [...f64, 0xb6, ...splatF32]; // f32x4.splat(f32.demote(·))
  const quads = (body: number[]) => stepLoop(j, nq, 16, body);
  const pair = (body: number[]) => ifPair(N, body); // the last two floats when n % 4 == 2
  const outQuad = (load: (base: number) => number[]) => [...load(X), ...get(mh), ...fsub, ...get(ml), ...fsub, ...get(r4), ...fmul, ...load(W), ...fmul, ...load(Bb), ...fadd];
  const code = [
    ...get(N), 0xb7, ...set(nf),
    ...get(N), ...i32const(-4), 0x71, ...i32const(2), 0x74, ...set(nq), // bytes of the whole quads
    0x02, 0x40, 0x03, 0x40,
    ...get(ROWS), 0x45, 0x0d, 1,
    ...zero, ...set(s0), ...zero, ...set(s1), ...zero, ...set(q0), ...zero, ...set(q1),
    ...quads([
      ...load2At(at(X), 0), ...promote, ...set(lo), ...load2At(at(X), 8), ...promote, ...set(hi), // each pair as f64x2, no shuffle
      ...get(s0), ...get(lo), ...dadd, ...set(s0), ...get(s1), ...get(hi), ...dadd, ...set(s1),
      ...get(q0), ...get(lo), ...get(lo), ...dmul, ...dadd, ...set(q0), ...get(q1), ...get(hi), ...get(hi), ...dmul, ...dadd, ...set(q1),
    ]),
    ...pair([...get(X), ...get(nq), 0x6a, ...simd(0x5d, 0, 0), ...promote, ...tee(lo), ...get(s0), ...dadd, ...set(s0), ...get(q0), ...get(lo), ...get(lo), ...dmul, ...dadd, ...set(q0)]),
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
    ...pair([...get(O), ...get(nq), 0x6a, ...outQuad((base) => [...get(base), ...get(nq), 0x6a, ...simd(0x5d, 0, 0)]), ...simd(0x5b, 0, 0, 0)]),
    ...get(N), ...i32const(2), 0x74, ...tee(j), ...get(X), 0x6a, ...set(X), ...get(O), ...get(j), 0x6a, ...set(O), // next row
    ...get(ROWS), ...i32const(1), 0x6b, ...set(ROWS),
    0x0c, 0, 0x0b, 0x0b, 0x0b,
  ];
  return { type: funcType([I32, I32, I32, I32, I32, I32, I32, I32, F64]), code: funcBody([[2, I32], [4, F64], [9, V128]], code) };
}

/**
 * lnBackward(X, W, AW, AB, M, rows, n): js/nn.ts lnBackwardAffine over rows of n floats (n even)
 * at X, their dout at X + DOUT, dx written at X + DX, means at M and rstd at M + RSTD.
 * Row by row: Σd and Σd·(x − m) with d = dout·w (float32 lanes over 16 floats at a time, added into
 * float64 sums), then dx = rs·(dout·w − meanD − h·meanDX), h = (x − m)·rs, in float32 lanes (within
 * 2e-6 of the loop's float64 arithmetic; float64 throughout took 1.4× as long). Then eight columns at
 * a time over all rows with their float64 sums in registers (no load and store of AW, AB per row):
 * AW += dout·h, AB += dout, h in float64 as the loop's and in its order, so the same bits.
 */
function lnBackwardFn() {
  const [X, W, AW, AB, M, ROWS, N] = [0, 1, 2, 3, 4, 5, 6];
  const [j, nq, row, p, mp, mEnd, stride, n8, end] = [7, 8, 9, 10, 11, 12, 13, 14, 15];
  const [rs, nf] = [16, 17];
  const [m4, rs4, md4, mdx4, sd, sdx, s4, sx4, d, xm, m2, rs2, dl] = Array.from({ length: 13 }, (_, i) => 18 + i);
  const acc = Array.from({ length: 8 }, (_, i) => 31 + i); // the column sums' registers: AW's four, AB's four
  const [awl, abl] = [acc[0], acc[4]];
  const quads = (body: number[]) => stepLoop(j, nq, 16, body);
  const pair = (body: number[]) => ifPair(N, body); // the last two floats when n % 4 == 2
  const wAt = [...get(W), ...get(j), 0x6a];
  const rowAt = [...get(row), ...get(j), 0x6a, ...tee(p)];
  /** The f32x4 d = dout·w and xm = x − m at p (quads: whole vectors; the last pair: two floats). */
  const dAndXm = (load: (addr: number[], offset: number) => number[]) => [
    ...load(rowAt, DOUT), ...load(wAt, 0), ...fmul, ...set(d),
    ...load(get(p), 0), ...get(m4), ...fsub, ...set(xm),
  ];
  /** dx = rs·((dout·w − meanD) − (x − m)·rs·meanDX), f32x4 */
  const dxOf = (load: (addr: number[], offset: number) => number[]) => [
    ...get(rs4), ...load(get(p), DOUT), ...load(wAt, 0), ...fmul, ...get(md4), ...fsub,
    ...load(get(p), 0), ...get(m4), ...fsub, ...get(rs4), ...fmul, ...get(mdx4), ...fmul, ...fsub, ...fmul,
  ];
  /** acc += dout·h, accB += dout for one row and one f64x2 of columns (`x`, `dout`: the code pushing them as f64x2). */
  const columnStep = (x: number[], dout: number[], acc: number, accB: number) => [
    ...get(acc), ...dout, ...tee(dl), ...x, ...get(m2), ...dsub, ...get(rs2), ...dmul, ...dmul, ...dadd, ...set(acc),
    ...get(accB), ...get(dl), ...dadd, ...set(accB),
  ];
  /** Over all rows for the columns at byte offset j: `perRow` with p at the row's element, m2 and rs2 its statistics. */
  const overRows = (perRow: number[]) => [
    ...get(X), ...get(j), 0x6a, ...set(p), ...get(M), ...set(mp),
    0x03, 0x40,
    ...get(mp), 0x2a, 2, 0, 0xbb, ...splatF64, ...set(m2), ...get(mp), 0x2a, 2, ...uleb(RSTD), 0xbb, ...splatF64, ...set(rs2),
    ...perRow,
    ...addTo(p, get(stride)), ...bumpBy(mp, 4), ...get(mp), ...get(mEnd), 0x49, 0x0d, 0,
    0x0b,
  ];
  const accAt = (base: number, offset: number) => [...get(base), ...get(j), ...get(j), 0x6a, 0x6a, ...simd(0x00, 0, offset)]; // base + 2j: the f64 of column j/4
  const accStore = (base: number, offset: number, v: number) => [...get(base), ...get(j), ...get(j), 0x6a, 0x6a, ...get(v), ...simd(0x0b, 0, offset)];
  /** The column sums of the k quads of columns from byte offset j, their float64 sums in registers over all rows. */
  const columnBlock = (k: number) => {
    const [aw, ab] = [acc.slice(0, 2 * k), acc.slice(4, 4 + 2 * k)];
    const pairAt = (offset: number) => [...load2At(get(p), offset), ...promote]; // two floats as f64x2, no shuffle
    const perQuad = (q: number) => [
      ...columnStep(pairAt(16 * q), pairAt(DOUT + 16 * q), aw[2 * q], ab[2 * q]),
      ...columnStep(pairAt(16 * q + 8), pairAt(DOUT + 16 * q + 8), aw[2 * q + 1], ab[2 * q + 1]),
    ];
    return [
      ...aw.flatMap((l, i) => [...accAt(AW, 16 * i), ...set(l)]), ...ab.flatMap((l, i) => [...accAt(AB, 16 * i), ...set(l)]),
      ...overRows(Array.from({ length: k }, (_, q) => perQuad(q)).flat()),
      ...aw.flatMap((l, i) => accStore(AW, 16 * i, l)), ...ab.flatMap((l, i) => accStore(AB, 16 * i, l)),
    ];
  };
  const code = [
    ...get(N), 0xb7, ...set(nf),
    ...get(N), ...i32const(-4), 0x71, ...i32const(2), 0x74, ...set(nq), // bytes of the whole quads
    ...get(N), ...i32const(2), 0x74, ...set(stride),
    ...get(M), ...get(ROWS), ...i32const(2), 0x74, 0x6a, ...set(mEnd),
    // rows: the sums, then dx
    ...get(X), ...set(row), ...get(M), ...set(mp),
    0x03, 0x40,
    ...get(mp), 0x2a, 2, 0, ...splatF32, ...set(m4),
    ...get(mp), 0x2a, 2, ...uleb(RSTD), ...splatF32, ...set(rs4), ...get(mp), 0x2a, 2, ...uleb(RSTD), 0xbb, ...set(rs),
    ...zero, ...set(sd), ...zero, ...set(sdx), ...i32const(0), ...set(j),
    0x02, 0x40, ...get(nq), 0x45, 0x0d, 0, 0x03, 0x40, // blocks of up to 4 quads: float32 sums, added into the float64 ones
    ...get(j), ...i32const(64), 0x6a, ...tee(end), ...get(nq), ...get(end), ...get(nq), 0x49, 0x1b, ...set(end), // end = min(j + 16 floats, nq)
    ...zero, ...set(s4), ...zero, ...set(sx4),
    0x03, 0x40,
    ...dAndXm(loadAt),
    ...get(s4), ...get(d), ...fadd, ...set(s4),
    ...get(sx4), ...get(d), ...get(xm), ...fmul, ...fadd, ...set(sx4),
    ...get(j), ...i32const(16), 0x6a, ...tee(j), ...get(end), 0x49, 0x0d, 0,
    0x0b,
    ...get(sd), ...get(s4), ...promote, ...highHalf(s4), ...promote, ...dadd, ...dadd, ...set(sd),
    ...get(sdx), ...get(sx4), ...promote, ...highHalf(sx4), ...promote, ...dadd, ...dadd, ...set(sdx),
    ...get(j), ...get(nq), 0x49, 0x0d, 0,
    0x0b, 0x0b,
    ...pair([
      ...get(nq), ...set(j),
      ...dAndXm(load2At),
      ...get(sd), ...get(d), ...promote, ...dadd, ...set(sd),
      ...get(sdx), ...get(d), ...get(xm), ...fmul, ...promote, ...dadd, ...set(sdx),
    ]),
    ...lanesSum(sd), ...get(nf), 0xa3, 0xb6, ...splatF32, ...set(md4),
    ...get(rs), ...lanesSum(sdx), 0xa2, ...get(nf), 0xa3, 0xb6, ...splatF32, ...set(mdx4),
    ...quads(storeAt(rowAt, dxOf(loadAt), DX)),
    ...pair([...get(nq), ...set(j), ...store2At(rowAt, dxOf(load2At), DX)]),
    ...addTo(row, get(stride)), ...bumpBy(mp, 4), ...get(mp), ...get(mEnd), 0x49, 0x0d, 0,
    0x0b,
    // columns: eight at a time, then four, then the last pair
    ...get(nq), ...i32const(-32), 0x71, ...set(n8),
    ...stepLoop(j, n8, 32, columnBlock(2)),
    ...get(nq), ...i32const(16), 0x71, 0x04, 0x40, ...get(n8), ...set(j), ...columnBlock(1), 0x0b,
    ...pair([
      ...get(nq), ...set(j),
      ...accAt(AW, 0), ...set(awl), ...accAt(AB, 0), ...set(abl),
      ...overRows(columnStep([...load2At(get(p), 0), ...promote], [...load2At(get(p), DOUT), ...promote], awl, abl)),
      ...accStore(AW, 0, awl), ...accStore(AB, 0, abl),
    ]),
    0x0b,
  ];
  return { type: funcType([I32, I32, I32, I32, I32, I32, I32]), code: funcBody([[9, I32], [2, F64], [21, V128]], code) };
}

type LnForward = (x: number, o: number, w: number, b: number, m: number, r: number, rows: number, n: number, eps: number) => void;
type LnBackward = (x: number, w: number, aw: number, ab: number, m: number, rows: number, n: number) => void;
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
    e.lnBackward(4 * A0, 4 * W0, 4 * AW0, 4 * AB0, 4 * M0, c, n); // dout at B0, dx to C0, rstd at R0
    dx.set(m.subarray(C0, C0 + len), r * n);
  }
  accW.set(d.subarray(AW0 / 2, AW0 / 2 + n));
  accB.set(d.subarray(AB0 / 2, AB0 / 2 + n));
  return true;
}
