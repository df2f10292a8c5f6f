import { afterAll, describe, expect, it } from "vitest";
import { ArgumentError, Generator, ShapeError, Tensor, causalAttention, matmul, maskedFill, mul, permute, reshape, slice, softmax, transpose, useBackend } from "../index.js";
import { assertClose, gradcheck } from "../testing/index.js";
import { setSimdEnabled, simdEnabled } from "../kernels/simd/switch.js";

const simdOn = simdEnabled();

function randT(shape: number[], seed: number, requiresGrad = true, scale = 1): Tensor {
  const gen = new Generator(seed);
  const n = shape.reduce((a, b) => a * b, 1);
  const d = new Float32Array(n);
  for (let i = 0; i < n; i++) d[i] = (gen.random() * 2 - 1) * scale;
  return new Tensor(d, shape, requiresGrad);
}

/** The same attention from primitive ops: split heads, q·kᵀ/√hs, causal maskedFill, softmax, ·v, merge heads. */
function composite(qkv: Tensor, H: number): Tensor {
  const [B, T, C3] = qkv.shape;
  const C = C3 / 3, hs = C / H;
  const heads = permute(reshape(qkv, [B, T, 3, H, hs]), [2, 0, 3, 1, 4]); // (3, B, H, T, hs)
  const [q, k, v] = [0, 1, 2].map((i) => reshape(slice(heads, 0, i, i + 1), [B, H, T, hs]));
  const m = new Float32Array(T * T);
  for (let i = 0; i < T; i++) for (let j = i + 1; j < T; j++) m[i * T + j] = 1;
  const att = softmax(maskedFill(mul(matmul(q, transpose(k, -2, -1)), 1 / Math.sqrt(hs)), new Tensor(m, [T, T]), -Infinity), -1);
  return reshape(permute(matmul(att, v), [0, 2, 1, 3]), [B, T, C]);
}

/** Straight from the definition in float64, one (b, h, i) at a time. */
function naive(qkv: Tensor, H: number): Float64Array {
  const [B, T, C3] = qkv.shape;
  const C = C3 / 3, hs = C / H, x = qkv.data;
  const out = new Float64Array(B * T * C);
  for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) for (let i = 0; i < T; i++) {
    const s: number[] = [];
    for (let j = 0; j <= i; j++) {
      let dot = 0;
      for (let d = 0; d < hs; d++) dot += x[(b * T + i) * C3 + h * hs + d] * x[(b * T + j) * C3 + C + h * hs + d];
      s.push(dot / Math.sqrt(hs));
    }
    const m = Math.max(...s);
    const e = s.map((v) => Math.exp(v - m));
    const z = e.reduce((a, c) => a + c, 0);
    for (let d = 0; d < hs; d++) {
      let acc = 0;
      for (let j = 0; j <= i; j++) acc += (e[j] / z) * x[(b * T + j) * C3 + 2 * C + h * hs + d];
      out[(b * T + i) * C + h * hs + d] = acc;
    }
  }
  return out;
}

for (const backend of ["js", "blas"] as const) {
  describe(`causalAttention (${backend} kernels)`, () => {
    let available = true;
    try {
      useBackend(backend);
    } catch {
      available = false;
    }
    afterAll(() => void useBackend("auto"));
    const maybe = available ? it : it.skip;

    maybe("matches the definition computed in float64", () => {
      useBackend(backend);
      const qkv = randT([2, 5, 3 * 8], 1, false);
      assertClose(causalAttention(qkv, 2), Array.from(naive(qkv, 2)), { atol: 1e-6, rtol: 1e-5 });
      // one head, one position: the output is v itself
      const one = randT([1, 1, 6], 2, false);
      assertClose(causalAttention(one, 1), one.data.subarray(4, 6), { atol: 1e-7 });
    });

    maybe("forward and gradient equal the composite of primitive ops", () => {
      useBackend(backend);
      const a = randT([3, 7, 3 * 12], 3);
      const b = new Tensor(a.data.slice(), a.shape, true);
      const ya = causalAttention(a, 3), yb = composite(b, 3);
      assertClose(ya, yb, { atol: 1e-6, rtol: 1e-5 });
      const g = randT([3, 7, 12], 4, false);
      ya.backward(g);
      yb.backward(g);
      assertClose(a.grad!, b.grad!, { atol: 1e-6, rtol: 1e-5 });
    });

    maybe("through the score blocks (T a multiple of 4), the chunked softmax (blocks over their limit) or the loops: forward and gradient as with SIMD off, T = 1 and tails", () => {
      useBackend(backend);
      for (const [B, T, H, hs] of [[2, 4, 2, 4], [2, 64, 4, 8], [1, 68, 2, 6], [2, 1, 3, 2], [1, 9, 2, 4], [1, 1028, 1, 2]]) {
        const run = (simd: boolean) => {
          setSimdEnabled(simd);
          try {
            const x = randT([B, T, 3 * H * hs], T + H, true, 2);
            const y = causalAttention(x, H);
            y.backward(randT([B, T, H * hs], 7, false));
            return [y.data.slice(), x.grad!.data.slice()];
          } finally {
            setSimdEnabled(simdOn);
          }
        };
        const [y1, g1] = run(true), [y2, g2] = run(false);
        assertClose(new Tensor(y1, [y1.length]), Array.from(y2), { atol: 1e-6, rtol: 1e-5 });
        assertClose(new Tensor(g1, [g1.length]), Array.from(g2), { atol: 1e-5, rtol: 1e-5 });
      }
    });

    maybe("gradcheck (central differences)", () => {
      useBackend(backend);
      gradcheck((x) => causalAttention(x, 2), [randT([2, 4, 3 * 4], 5)]);
      gradcheck((x) => causalAttention(x, 1), [randT([1, 6, 3 * 3], 6)]);
    });

    maybe("gradcheck with attention dropout (fixed mask through a seeded generator)", () => {
      useBackend(backend);
      gradcheck((x) => causalAttention(x, 2, { dropout: 0.3, generator: new Generator(9) }), [randT([2, 4, 3 * 4], 7)]);
    });
  });
}

describe("causalAttention semantics", () => {
  it("does not look ahead: changing position j leaves outputs before j unchanged", () => {
    const qkv = randT([1, 6, 3 * 4], 8, false);
    const y1 = causalAttention(qkv, 2);
    const d = qkv.data.slice();
    for (let c = 0; c < 12; c++) d[4 * 12 + c] += 1; // perturb q, k, v at position 4
    const y2 = causalAttention(new Tensor(d, qkv.shape), 2);
    expect(Array.from(y2.data.subarray(0, 4 * 4))).toEqual(Array.from(y1.data.subarray(0, 4 * 4)));
    expect(Array.from(y2.data.subarray(4 * 4))).not.toEqual(Array.from(y1.data.subarray(4 * 4)));
  });

  it("dropout: identity in eval mode, reproducible with a seeded generator, scaled by 1/(1-p)", () => {
    const qkv = randT([2, 5, 3 * 4], 10, false);
    const plain = causalAttention(qkv, 2);
    assertClose(causalAttention(qkv, 2, { dropout: 0.5, training: false }), plain, { atol: 0 });
    const a = causalAttention(qkv, 2, { dropout: 0.5, generator: new Generator(3) });
    const b = causalAttention(qkv, 2, { dropout: 0.5, generator: new Generator(3) });
    expect(Array.from(a.data)).toEqual(Array.from(b.data));
    expect(Array.from(a.data)).not.toEqual(Array.from(plain.data));
    // p → 0 through the same path equals no dropout
    assertClose(causalAttention(qkv, 2, { dropout: 1e-12, generator: new Generator(3) }), plain, { atol: 1e-6 });
  });

  it("rejects bad shapes and arguments before any work", () => {
    expect(() => causalAttention(randT([2, 12], 1), 2)).toThrow(ShapeError);
    expect(() => causalAttention(randT([1, 2, 10], 1), 2)).toThrow(/not 3 × nHead/);
    expect(() => causalAttention(randT([1, 2, 12], 1), 0)).toThrow(ArgumentError);
    expect(() => causalAttention(randT([1, 2, 12], 1), 2, { dropout: 1 })).toThrow(ArgumentError);
  });

  it("propagates NaN", () => {
    const qkv = randT([1, 3, 6], 11, false);
    qkv.data[3] = NaN; // k at position 0
    const y = causalAttention(qkv, 1);
    expect(y.data.every((v) => Number.isNaN(v))).toBe(true);
  });
  it("buffers saved for backward stay intact across retained graphs, interleaved forwards and pool reuse", () => {
    // P is (B, H, T, T) = 2·2·16·16 = 1024 floats: large enough to go through the buffer pool.
    const shape = [2, 16, 24], H = 2;
    const g = randT([2, 16, 8], 30, false);
    const ref = (seed: number) => {
      const x = randT(shape, seed);
      composite(x, H).backward(g);
      return x.grad!;
    };
    const a = randT(shape, 31), b = randT(shape, 32), c = randT(shape, 33), d = randT(shape, 34);
    const ya = causalAttention(a, H), yb = causalAttention(b, H); // two forwards before any backward
    ya.backward(g, { retainGraph: true }); // must keep ya's buffers ...
    const yc = causalAttention(c, H); // ... out of the pool this forward draws from
    ya.backward(g); // the last use: ya's buffers go to the pool
    const yd = causalAttention(d, H); // and are reused here
    yb.backward(g);
    yc.backward(g);
    yd.backward(g);
    assertClose(a.grad!, mul(ref(31), 2), { atol: 1e-5 });
    assertClose(b.grad!, ref(32), { atol: 1e-5 });
    assertClose(c.grad!, ref(33), { atol: 1e-5 });
    assertClose(d.grad!, ref(34), { atol: 1e-5 });
    assertClose(ya, composite(randT(shape, 31, false), H), { atol: 1e-6 });
  });
});
