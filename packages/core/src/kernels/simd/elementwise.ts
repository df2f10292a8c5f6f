/**
 * Flat elementwise passes in WebAssembly SIMD (f32x4), which V8 does not vectorise: the product
 * of linearGelu's backward (kernels().mul), the sums with which the autograd engine accumulates
 * gradients (kernels().accumulate), and ReLU forward and backward (js/elementwise.ts, the MLP's).
 * Each wrapper copies chunks of its operands into the scratch memory (memory.ts), runs, and
 * copies the results out. Same bits as the float32 loops.
 */
import { I32, V128, funcBody, funcType, get, i32const, set } from "./asm.js";
import { addTo, decrementLoop, fadd, fgt, fmul, fne, ld, st, vand, vor, zero } from "./codegen.js";
import { A0, B0, CHUNK, wasmFamily } from "./memory.js";

/** mul / add (out, a, b, quads): out = a ⊙ b or a + b. */
function binaryFn(op: number[]) {
  const [O, A, B, N] = [0, 1, 2, 3];
  const code = [
    0x02, 0x40, ...get(N), 0x45, 0x0d, 0,
    0x03, 0x40,
    ...st(O, [...ld(A), ...ld(B), ...op]),
    ...addTo(O, i32const(16)), ...addTo(A, i32const(16)), ...addTo(B, i32const(16)),
    ...decrementLoop(N), 0x0b, 0x0b, 0x0b,
  ];
  return { type: funcType([I32, I32, I32, I32]), code: funcBody([], code) };
}

/**
 * relu(out, x, _, quads): out = x where x > 0 or NaN, else +0, as a mask on the bits (the same
 * bits as js/elementwise.ts reluForward: a NaN's payload is kept, −0 becomes +0).
 */
function reluFn() {
  const [O, A, , N] = [0, 1, 2, 3];
  const v = 4;
  const code = [
    0x02, 0x40, ...get(N), 0x45, 0x0d, 0,
    0x03, 0x40,
    ...ld(A), ...set(v),
    ...st(O, [...get(v), ...get(v), ...zero, ...fgt, ...get(v), ...get(v), ...fne, ...vor, ...vand]),
    ...addTo(O, i32const(16)), ...addTo(A, i32const(16)),
    ...decrementLoop(N), 0x0b, 0x0b, 0x0b,
  ];
  return { type: funcType([I32, I32, I32, I32]), code: funcBody([[1, V128]], code) };
}

type Fn4 = (a: number, b: number, c: number, n: number) => void;
const family = wasmFamily<{ mul: Fn4; add: Fn4; relu: Fn4; reluBack: Fn4 }>(() => [
  [binaryFn(fmul), "mul"], [binaryFn(fadd), "add"], [reluFn(), "relu"], [binaryFn([...zero, ...fgt, ...vand]), "reluBack"],
]);

/** out = a ⊙ b over n floats (out may alias a or b); false where SIMD is off. */
export function simdMul(out: Float32Array, a: Float32Array, b: Float32Array, n: number): boolean {
  const k = family();
  return k !== null && binaryChunks(k.fn.mul, k.mem.f32, out, a, b, n);
}

/** out = a + b over n floats (out may alias a or b); false where SIMD is off. */
export function simdAdd(out: Float32Array, a: Float32Array, b: Float32Array, n: number): boolean {
  const k = family();
  return k !== null && binaryChunks(k.fn.add, k.mem.f32, out, a, b, n);
}

/** out = relu(x) over n floats, bit for bit as js/elementwise.ts reluForward; false where SIMD is off. */
export function simdRelu(out: Float32Array, x: Float32Array, n: number): boolean {
  const k = family();
  if (k === null) return false;
  const m = k.mem.f32, e = k.fn;
  for (let i = 0; i < n; i += CHUNK) {
    const c = Math.min(CHUNK, n - i);
    m.set(x.subarray(i, i + c), A0);
    e.relu(4 * A0, 4 * A0, 0, (c + 3) >> 2);
    out.set(m.subarray(A0, A0 + c), i);
  }
  return true;
}

/** dx = dout where x > 0, else 0, over n floats, as js/elementwise.ts reluBackward; false where SIMD is off. */
export function simdReluBackward(dx: Float32Array, dout: Float32Array, x: Float32Array, n: number): boolean {
  const k = family();
  return k !== null && binaryChunks(k.fn.reluBack, k.mem.f32, dx, dout, x, n);
}

/** Chunks of a and b copied in (memcpy), `fn` run over them, the results copied out. */
function binaryChunks(fn: Fn4, m: Float32Array, out: Float32Array, a: Float32Array, b: Float32Array, n: number): true {
  for (let i = 0; i < n; i += CHUNK) {
    const c = Math.min(CHUNK, n - i);
    m.set(a.subarray(i, i + c), A0);
    m.set(b.subarray(i, i + c), B0);
    fn(4 * A0, 4 * A0, 4 * B0, (c + 3) >> 2);
    out.set(m.subarray(A0, A0 + c), i);
  }
  return true;
}
