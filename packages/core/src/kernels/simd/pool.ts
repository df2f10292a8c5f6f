/**
 * Max pooling in WebAssembly SIMD (i32x4 / f32x4), the same outputs, taps and indices as the loops
 * of js/conv.ts:
 * - 2×2 max pool + ReLU (`maxPool2x2Relu`, the CNN's fused conv + pool + ReLU) and its backward,
 *   on the int32 bits after ReLU (non-negative floats order like their bits);
 * - the plain 2×2 stride-2 max pool (`maxPool2x2`) on float compares, NaN propagating as PyTorch's;
 * - max pooling's backward scatter (`maxPool2dBackward`, any geometry).
 * Whole planes are copied into the scratch memory (memory.ts): in batches of planes (PIN0…), or a
 * whole strided source span at once (BIG0…), since a memcpy per plane costs ~0.4 µs.
 */
import { F64, I32, V128, funcBody, funcType, get, i32const, set, simd, tee, vec } from "./asm.js";
import {
  addTo, anyTrue, beginConsts, ci, constLocals, decrementLoop, evenFloats, evenLanes, f64bytes, fgt, fne, iadd, ieq, igt, ishr, laneIdx, oddFloats,
  st, vand, vandnot, vbitselect, vor, zero,
} from "./codegen.js";
import { BIG0, BO0, BX0, BY0, PIN0, POOL_IN, POUT0, PSUM0, after, bigScratch, wasmFamily } from "./memory.js";

/**
 * pool(IN, OUT, TAP, planes, PH, G, PW, sHb, planeB) → any NaN seen: js/conv.ts maxPool2x2Relu's
 * arithmetic on `planes` planes copied to IN (planeB bytes apart, rows sHb bytes apart), four
 * outputs at a time (G groups a row): out and tap rows PW apart at OUT and TAP, in plane order.
 * A row's last group may write up to 3 outputs past PW: the next row's, written again after
 * (the caller leaves room past the last). On the bits after ReLU (non-negative floats order like
 * their int32 bits): the first maximum of each window (ties: the earlier tap), tap 4 where it is
 * +0. NaN is only detected: the caller then runs the loop, which knows which NaN to return.
 */
function maxPoolReluFn() {
  const [IN, OUT, TAP, PLANES, PH, G, PW, SHB, PLANEB] = [0, 1, 2, 3, 4, 5, 6, 7, 8];
  const [pp, ph, rowp, cp, r1, op, tp, o, tq, gc] = [9, 10, 11, 12, 13, 14, 15, 16, 17, 18]; // i32
  const [x0, x1, y0, y1, a, b, e, d, s01, s23, m01, m23, nan] = [19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31]; // v128
  beginConsts(32);
  const relu = (l: number) => [...get(l), ...get(l), ...i32const(31), ...ishr, ...vandnot, ...set(l)]; // x & ~(x >> 31)
  const isNan = (l: number) => [...get(l), ...get(l), ...fne];
  const load = (ptr: number, offset: number) => [...get(ptr), ...simd(0x00, 0, offset)];
  const loop = (counter: number, body: number[]) => [0x03, 0x40, ...body, ...decrementLoop(counter), 0x0b];
  const group = [
    // the window rows: 8 floats of row 2·ph (x) and of row 2·ph + 1 (y), split into even and odd columns
    ...load(cp, 0), ...set(x0), ...load(cp, 16), ...set(x1),
    ...get(cp), ...get(SHB), 0x6a, ...set(r1), ...load(r1, 0), ...set(y0), ...load(r1, 16), ...set(y1),
    ...get(nan), ...isNan(x0), ...vor, ...isNan(x1), ...vor, ...isNan(y0), ...vor, ...isNan(y1), ...vor, ...set(nan),
    ...get(x0), ...get(x1), ...evenFloats, ...set(a), ...get(x0), ...get(x1), ...oddFloats, ...set(b),
    ...get(y0), ...get(y1), ...evenFloats, ...set(e), ...get(y0), ...get(y1), ...oddFloats, ...set(d),
    ...relu(a), ...relu(b), ...relu(e), ...relu(d),
    ...get(b), ...get(a), ...igt, ...set(s01), ...get(b), ...get(a), ...get(s01), ...vbitselect, ...set(m01),
    ...get(d), ...get(e), ...igt, ...set(s23), ...get(d), ...get(e), ...get(s23), ...vbitselect, ...set(m23),
    // x0 = s (the bottom pair's max is larger), y0 = m (the window's max)
    ...get(m23), ...get(m01), ...igt, ...set(x0),
    ...get(m23), ...get(m01), ...get(x0), ...vbitselect, ...set(y0),
    ...st(o, get(y0)),
    // tap = m == 0 ? 4 : s ? 2 | (s23 & 1) : s01 & 1, narrowed to bytes, four stored
    ...ci(4),
    ...get(s23), ...ci(1), ...vand, ...ci(2), ...vor, ...get(s01), ...ci(1), ...vand, ...get(x0), ...vbitselect,
    ...get(y0), ...zero, ...ieq, ...vbitselect, ...set(x1),
    ...get(tq), ...get(x1), ...get(x1), ...simd(0x85), ...tee(x1), ...get(x1), ...simd(0x65), ...simd(0x5a, 0, 0, 0), // v128.store32_lane, lane 0
    ...addTo(o, i32const(16)), ...addTo(tq, i32const(4)), ...addTo(cp, i32const(32)),
  ];
  const code = [
    ...zero, ...set(nan),
    0x02, 0x40, ...get(PLANES), 0x45, 0x0d, 0, // if (planes == 0) skip
    ...get(OUT), ...set(op), ...get(TAP), ...set(tp), ...get(IN), ...set(pp),
    ...loop(PLANES, [
      ...get(pp), ...set(rowp), ...get(PH), ...set(ph),
      ...loop(ph, [
        ...get(rowp), ...set(cp), ...get(op), ...set(o), ...get(tp), ...set(tq), ...get(G), ...set(gc),
        ...loop(gc, group),
        ...get(op), ...get(PW), ...i32const(2), 0x74, 0x6a, ...set(op), // op += 4·PW (bytes)
        ...get(tp), ...get(PW), 0x6a, ...set(tp),
        ...get(rowp), ...get(SHB), ...i32const(1), 0x74, 0x6a, ...set(rowp), // two rows down
      ]),
      ...get(pp), ...get(PLANEB), 0x6a, ...set(pp),
    ]),
    0x0b,
    ...get(nan), ...anyTrue, 0x0b,
  ];
  const { init, count } = constLocals();
  return {
    type: [0x60, ...vec([IN, OUT, TAP, PLANES, PH, G, PW, SHB, PLANEB].map(() => [I32])), 1, I32],
    code: funcBody([[10, I32], [13 + count, V128]], [...init, ...code]),
  };
}

/**
 * poolBack(GOUT, TAP, DST, planes, PH, G, PW, sHb, planeB, SUMS): js/conv.ts maxPool2x2ReluBackward's
 * scatter over `planes` planes of a zeroed DST (layout as maxPoolReluFn's IN): each output's
 * gradient to its tap's window position (none for tap 4), four outputs at a time; the window rows
 * are OR-ed into DST (a position gets at most one gradient, and a row's last group may spill
 * zeros into the next row, which the OR leaves intact). SUMS[p] (float64) = the sum of the
 * gradients that passed in plane p, added in output order as the loop adds them (the conv bias's).
 */
function maxPoolReluBackFn() {
  const [GOUT, TAP, DST, PLANES, PH, G, PW, SHB, PLANEB, SUMS] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
  const [pp, ph, rowp, cp, r1, go, tq, gc] = [10, 11, 12, 13, 14, 15, 16, 17]; // i32
  const sum = 18; // f64
  const [g, t, lanes, valid, v0, v1, v2, v3] = [19, 20, 21, 22, 23, 24, 25, 26]; // v128
  beginConsts(27);
  const loop = (counter: number, body: number[]) => [0x03, 0x40, ...body, ...decrementLoop(counter), 0x0b];
  const pick = (k: number, l: number) => [...get(g), ...get(t), ...ci(k), ...ieq, ...vand, ...get(valid), ...vand, ...set(l)];
  const lowPairs = simd(0x0d, 0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
  const highPairs = simd(0x0d, 8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
  /** DST[addr + off] |= value (v128). */
  const orInto = (addr: number, off: number, value: number[]) => [...get(addr), ...get(addr), ...simd(0x00, 0, off), ...value, ...vor, ...simd(0x0b, 0, off)];
  const addLane = (k: number) => [...get(sum), ...get(g), ...simd(0x1f, k), 0xbb, 0xa0, ...set(sum)]; // sum += f64(lane k)
  const group = [
    ...get(go), ...simd(0x00, 0, 0), ...set(g),
    ...get(tq), ...simd(0x5c, 0, 0), ...simd(0x89), ...simd(0xa9), ...set(t), // 4 tap bytes → i32x4
    ...get(lanes), ...get(PW), ...simd(0x11), ...simd(0x39), ...set(valid), // lane < PW (i32x4.lt_s)
    ...pick(0, v0), ...pick(1, v1), ...pick(2, v2), ...pick(3, v3),
    ...orInto(cp, 0, [...get(v0), ...get(v1), ...lowPairs]), ...orInto(cp, 16, [...get(v0), ...get(v1), ...highPairs]),
    ...get(cp), ...get(SHB), 0x6a, ...set(r1),
    ...orInto(r1, 0, [...get(v2), ...get(v3), ...lowPairs]), ...orInto(r1, 16, [...get(v2), ...get(v3), ...highPairs]),
    // the passed gradients (tap < 4, lane < PW), summed lane by lane in output order
    ...get(v0), ...get(v1), ...vor, ...get(v2), ...vor, ...get(v3), ...vor, ...set(g),
    ...addLane(0), ...addLane(1), ...addLane(2), ...addLane(3),
    ...get(lanes), ...ci(4), ...iadd, ...set(lanes),
    ...addTo(go, i32const(16)), ...addTo(tq, i32const(4)), ...addTo(cp, i32const(32)),
  ];
  const code = [
    0x02, 0x40, ...get(PLANES), 0x45, 0x0d, 0, // if (planes == 0) skip
    ...get(DST), ...set(pp),
    ...loop(PLANES, [
      0x44, ...f64bytes(0), ...set(sum),
      ...get(pp), ...set(rowp), ...get(PH), ...set(ph),
      ...loop(ph, [
        ...get(rowp), ...set(cp), ...get(G), ...set(gc), ...laneIdx, ...set(lanes),
        ...get(GOUT), ...set(go), ...get(TAP), ...set(tq),
        ...loop(gc, group),
        ...get(GOUT), ...get(PW), ...i32const(2), 0x74, 0x6a, ...set(GOUT), // next output row
        ...get(TAP), ...get(PW), 0x6a, ...set(TAP),
        ...get(rowp), ...get(SHB), ...i32const(1), 0x74, 0x6a, ...set(rowp), // two rows down
      ]),
      ...get(SUMS), ...get(sum), 0x39, 3, 0, // f64.store
      ...addTo(SUMS, i32const(8)),
      ...get(pp), ...get(PLANEB), 0x6a, ...set(pp),
    ]),
    0x0b, 0x0b,
  ];
  const { init, count } = constLocals();
  return {
    type: funcType([I32, I32, I32, I32, I32, I32, I32, I32, I32, I32]),
    code: funcBody([[8, I32], [1, F64], [8 + count, V128]], [...init, ...code]),
  };
}

/**
 * maxPool(IN, OUT, ARG, planes, OH, G, OW, Wb, planeB): js/conv.ts maxPool2x2 (2×2, stride 2, no
 * padding) on float compares: per window the first of a, b, e, d unless a later one is larger, or
 * is NaN where the best so far is not (PyTorch's NaN propagation); ARG gets the in-plane flat index
 * (int32). Planes of H rows of W floats (Wb = 4W bytes) planeB bytes apart; outputs OW a row, four
 * at a time (a row's last group may write the next row's first outputs, rewritten after).
 */
function maxPool2x2Fn() {
  const [IN, OUT, ARG, PLANES, OH, G, OW, WB, PLANEB] = [0, 1, 2, 3, 4, 5, 6, 7, 8];
  const [pp, oh, rowp, cp, r1, o, ag, gc, rowIdx, w] = [9, 10, 11, 12, 13, 14, 15, 16, 17, 18]; // i32
  const [x0, x1, y0, y1, best, idx, take, col, v, iv] = [19, 20, 21, 22, 23, 24, 25, 26, 27, 28]; // v128
  beginConsts(29);
  const load = (ptr: number, offset: number) => [...get(ptr), ...simd(0x00, 0, offset)];
  const loop = (counter: number, body: number[]) => [0x03, 0x40, ...body, ...decrementLoop(counter), 0x0b];
  /** best, idx ← v, iv where v > best, or v is NaN and best is not. */
  const consider = [
    ...get(v), ...get(best), ...fgt, ...get(v), ...get(v), ...fne, ...get(best), ...get(best), ...simd(0x41), ...vand, ...vor, ...set(take),
    ...get(v), ...get(best), ...get(take), ...vbitselect, ...set(best),
    ...get(iv), ...get(idx), ...get(take), ...vbitselect, ...set(idx),
  ];
  const group = [
    ...load(cp, 0), ...set(x0), ...load(cp, 16), ...set(x1),
    ...get(cp), ...get(WB), 0x6a, ...set(r1), ...load(r1, 0), ...set(y0), ...load(r1, 16), ...set(y1),
    // a: even columns of the top row (the first of each window), its indices rowIdx + col
    ...get(x0), ...get(x1), ...evenFloats, ...set(best), ...get(rowIdx), ...simd(0x11), ...get(col), ...iadd, ...set(idx),
    ...get(x0), ...get(x1), ...oddFloats, ...set(v), ...get(idx), ...ci(1), ...iadd, ...set(iv), ...consider,
    ...get(y0), ...get(y1), ...evenFloats, ...set(v), ...get(rowIdx), ...get(w), 0x6a, ...simd(0x11), ...get(col), ...iadd, ...set(iv), ...consider,
    ...get(y0), ...get(y1), ...oddFloats, ...set(v), ...get(iv), ...ci(1), ...iadd, ...set(iv), ...consider,
    ...st(o, get(best)), ...st(ag, get(idx)),
    ...get(col), ...ci(8), ...iadd, ...set(col),
    ...addTo(o, i32const(16)), ...addTo(ag, i32const(16)), ...addTo(cp, i32const(32)),
  ];
  const code = [
    0x02, 0x40, ...get(PLANES), 0x45, 0x0d, 0,
    ...get(WB), ...i32const(2), 0x76, ...set(w), // W (floats) = Wb >> 2
    ...get(IN), ...set(pp), ...get(OUT), ...set(o), ...get(ARG), ...set(ag),
    ...loop(PLANES, [
      ...get(pp), ...set(rowp), ...get(OH), ...set(oh), ...i32const(0), ...set(rowIdx),
      ...loop(oh, [
        ...get(rowp), ...set(cp), ...get(G), ...set(gc), ...evenLanes, ...set(col),
        ...loop(gc, group),
        ...get(OUT), ...get(OW), ...i32const(2), 0x74, 0x6a, ...tee(OUT), ...set(o),
        ...get(ARG), ...get(OW), ...i32const(2), 0x74, 0x6a, ...tee(ARG), ...set(ag),
        ...get(rowp), ...get(WB), ...i32const(1), 0x74, 0x6a, ...set(rowp), // two rows down
        ...get(rowIdx), ...get(w), ...i32const(1), 0x74, 0x6a, ...set(rowIdx),
      ]),
      ...get(pp), ...get(PLANEB), 0x6a, ...set(pp),
    ]),
    0x0b, 0x0b,
  ];
  const { init, count } = constLocals();
  return { type: funcType([I32, I32, I32, I32, I32, I32, I32, I32, I32]), code: funcBody([[10, I32], [10 + count, V128]], [...init, ...code]) };
}

/**
 * poolScatter(DX, DOUT, ARG, planes, oplane, planeB): js/conv.ts maxPool2dBackward's scatter into
 * zeroed planes: DX[plane p][ARG[o]] += DOUT[o] for each output (ARG < 0: none), scalar float32 adds
 * (the loop's float64 add of two float32 values rounds to the same float32).
 */
function poolScatterFn() {
  const [DX, DOUT, ARG, PLANES, OPLANE, PLANEB] = [0, 1, 2, 3, 4, 5];
  const [o, a, at] = [6, 7, 8];
  const loop = (counter: number, body: number[]) => [0x03, 0x40, ...body, ...decrementLoop(counter), 0x0b];
  const code = [
    0x02, 0x40, ...get(PLANES), 0x45, 0x0d, 0, ...get(OPLANE), 0x45, 0x0d, 0,
    ...loop(PLANES, [
      ...get(OPLANE), ...set(o),
      ...loop(o, [
        ...get(ARG), 0x28, 2, 0, ...tee(a), // i32.load
        ...i32const(0), 0x4e, // a >= 0 (i32.ge_s)
        0x04, 0x40,
        ...get(DX), ...get(a), ...i32const(2), 0x74, 0x6a, ...tee(at),
        ...get(at), 0x2a, 2, 0, ...get(DOUT), 0x2a, 2, 0, 0x92, 0x38, 2, 0, // f32: dx[a] += dout[o]
        0x0b,
        ...addTo(ARG, i32const(4)), ...addTo(DOUT, i32const(4)),
      ]),
      ...get(DX), ...get(PLANEB), 0x6a, ...set(DX),
    ]),
    0x0b, 0x0b,
  ];
  return { type: funcType([I32, I32, I32, I32, I32, I32]), code: funcBody([[3, I32]], code) };
}

type PoolRelu = (inp: number, out: number, tap: number, planes: number, PH: number, G: number, PW: number, sHb: number, planeB: number) => number;
type PoolReluBack = (gout: number, tap: number, dst: number, planes: number, PH: number, G: number, PW: number, sHb: number, planeB: number, sums: number) => void;
type Pool = (inp: number, out: number, arg: number, planes: number, OH: number, G: number, OW: number, Wb: number, planeB: number) => void;
type PoolScatter = (dx: number, dout: number, arg: number, planes: number, oplane: number, planeB: number) => void;

/** The pooling kernels (batchnorm-pool.ts chains maxPoolRelu and maxPoolReluBack after batch norm's). */
export const poolFamily = wasmFamily<{ maxPoolRelu: PoolRelu; maxPoolReluBack: PoolReluBack; maxPool: Pool; poolScatter: PoolScatter }>(() => [
  [maxPoolReluFn(), "maxPoolRelu"], [maxPoolReluBackFn(), "maxPoolReluBack"], [maxPool2x2Fn(), "maxPool"], [poolScatterFn(), "poolScatter"],
]);

/**
 * js/conv.ts maxPool2x2Relu (same arguments, same bits, taps included) with the pooling in
 * WebAssembly SIMD: the source span holding every plane copied into the scratch memory with one
 * memcpy, pooled there one image at a time (its C planes sC apart) four outputs at a time, and
 * the outputs and taps copied out with one memcpy each (a memcpy per plane costs ~0.4 µs).
 * False (the caller runs its loop) where SIMD is off, the span does not fit, or a plane holds a NaN.
 */
export function simdMaxPool2x2Relu(
  out: Float32Array, tap: Uint8Array, outOff: number, src: Float32Array, srcOff: number,
  N: number, C: number, PH: number, PW: number, sN: number, sC: number, sH: number,
): boolean {
  const f = poolFamily();
  if (f === null || N === 0 || C === 0 || PH === 0 || PW === 0 || sH < 2 * PW) return false;
  const e = f.fn, mem = f.mem;
  const planeLen = (2 * PH - 1) * sH + 2 * PW; // floats from a plane's first row to its last window
  const span = (N - 1) * sN + (C - 1) * sC + planeLen, PL = PH * PW, n = N * C * PL, G = (PW + 3) >> 2;
  const S0 = BIG0, O0 = after(S0 + span), T0 = after(O0 + n); // source, outputs, taps (bytes from 4·T0)
  if (!bigScratch(mem, T0 - BIG0 + n / 4 + 64)) return false;
  const m = mem.f32;
  m.set(src.subarray(srcOff, srcOff + span), S0);
  for (let i = 0; i < N; i++) {
    // A row's last group may write up to 3 outputs past its end: the next image's, written after.
    if (e.maxPoolRelu(4 * (S0 + i * sN), 4 * (O0 + i * C * PL), 4 * T0 + i * C * PL, C, PH, G, PW, 4 * sH, 4 * sC)) return false; // a NaN
  }
  out.set(m.subarray(O0, O0 + n), outOff);
  tap.set(mem.u8.subarray(4 * T0, 4 * T0 + n), outOff);
  return true;
}

/**
 * js/conv.ts maxPool2x2ReluBackward (same arguments; dsrc zeroed by the caller) with the scatter
 * in WebAssembly SIMD: gout and the taps copied in, scattered one image at a time into a zeroed
 * copy of dsrc's span (zeros where no gradient passes), the span copied out whole, and dbias[c] +=
 * each plane's sum in the loop's order (same float64 sums, same bits). False (the caller runs its
 * loop) where SIMD is off or the planes could overlap in dsrc.
 */
export function simdMaxPool2x2ReluBackward(
  dsrc: Float32Array, srcOff: number, gout: Float32Array, tap: Uint8Array, outOff: number,
  N: number, C: number, PH: number, PW: number, sN: number, sC: number, sH: number, dbias: Float32Array | null,
): boolean {
  const f = poolFamily();
  if (f === null || N === 0 || C === 0 || PH === 0 || PW === 0 || sH < 2 * PW || C > POOL_IN / 4) return false;
  const e = f.fn, mem = f.mem;
  const planeLen = (2 * PH - 1) * sH + 2 * PW;
  // Planes must not overlap (channel-major or image-major strides): each position gets one gradient.
  const disjoint = (sN >= planeLen && (C === 1 || sC >= N * sN)) || (sC >= planeLen && (N === 1 || sN >= C * sC));
  if (!disjoint) return false;
  const span = (N - 1) * sN + (C - 1) * sC + planeLen, PL = PH * PW, n = N * C * PL, G = (PW + 3) >> 2;
  const D0 = BIG0, G0 = after(D0 + span), T0 = after(G0 + n); // dsrc's span, gout, taps (bytes from 4·T0)
  if (!bigScratch(mem, T0 - BIG0 + n / 4 + 64)) return false;
  const m = mem.f32, sums = mem.f64;
  m.fill(0, D0, G0); // the scatter ORs rows in, and may spill zeros past a plane's last row
  m.set(gout.subarray(outOff, outOff + n), G0);
  mem.u8.set(tap.subarray(outOff, outOff + n), 4 * T0);
  for (let i = 0; i < N; i++) {
    e.maxPoolReluBack(4 * (G0 + i * C * PL), 4 * T0 + i * C * PL, 4 * (D0 + i * sN), C, PH, G, PW, 4 * sH, 4 * sC, 4 * PSUM0);
    if (dbias) for (let c = 0; c < C; c++) dbias[c] += sums[PSUM0 / 2 + c];
  }
  dsrc.set(m.subarray(D0, D0 + span), srcOff);
  return true;
}

/**
 * js/conv.ts maxPool2x2 (planes of H×W, 2×2 windows, stride 2) in WebAssembly SIMD, the same
 * outputs and argmax: whole planes copied in, outputs and indices copied out. False where SIMD is
 * off or a plane does not fit.
 */
export function simdMaxPool2x2(out: Float32Array, argmax: Int32Array, x: Float32Array, planes: number, H: number, W: number, OH: number, OW: number): boolean {
  const f = poolFamily();
  const plane = H * W, oplane = OH * OW;
  if (f === null || OH === 0 || OW === 0 || plane > POOL_IN) return false;
  const e = f.fn, m = f.mem.f32, i32 = f.mem.i32;
  const per = Math.floor(POOL_IN / plane), G = (OW + 3) >> 2;
  for (let p = 0; p < planes; p += per) {
    const k = Math.min(per, planes - p);
    m.set(x.subarray(p * plane, (p + k) * plane), PIN0);
    e.maxPool(4 * PIN0, 4 * POUT0, 4 * BO0, k, OH, G, OW, 4 * W, 4 * plane);
    out.set(m.subarray(POUT0, POUT0 + k * oplane), p * oplane);
    argmax.set(i32.subarray(BO0, BO0 + k * oplane), p * oplane); // the indices sit in the out region
  }
  return true;
}

/**
 * js/conv.ts maxPool2dBackward in WebAssembly: a chunk of whole dx planes zeroed in the memory, the
 * outputs' gradients added at their argmax, the planes copied out (all of dx is written). Same bits.
 * False where SIMD is off or a plane does not fit.
 */
export function simdMaxPool2dBackward(dx: Float32Array, dout: Float32Array, argmax: Int32Array, planes: number, plane: number, oplane: number): boolean {
  const f = poolFamily();
  if (f === null || plane > POOL_IN || oplane > POOL_IN || plane === 0) return false;
  const e = f.fn, m = f.mem.f32, i32 = f.mem.i32;
  const per = Math.floor(POOL_IN / Math.max(plane, oplane));
  for (let p = 0; p < planes; p += per) {
    const k = Math.min(per, planes - p);
    m.fill(0, BX0, BX0 + k * plane);
    m.set(dout.subarray(p * oplane, (p + k) * oplane), BY0);
    i32.set(argmax.subarray(p * oplane, (p + k) * oplane), BO0);
    e.poolScatter(4 * BX0, 4 * BY0, 4 * BO0, k, oplane, 4 * plane);
    dx.set(m.subarray(BX0, BX0 + k * plane), p * plane);
  }
  if (dx.length > planes * plane) dx.fill(0, planes * plane); // as the loop's fill
  return true;
}
