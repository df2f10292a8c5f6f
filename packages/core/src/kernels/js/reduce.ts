export function sumAxis(out: Float32Array, x: Float32Array, outer: number, n: number, inner: number): void {
  if (inner === 1) {
    for (let o = 0; o < outer; o++) {
      let s = 0;
      const base = o * n;
      for (let i = 0; i < n; i++) s += x[base + i];
      out[o] = s;
    }
    return;
  }
  out.fill(0, 0, outer * inner);
  for (let o = 0; o < outer; o++) {
    const ob = o * inner;
    for (let i = 0; i < n; i++) {
      const xb = (o * n + i) * inner;
      for (let j = 0; j < inner; j++) out[ob + j] += x[xb + j];
    }
  }
}

export function maxAxis(out: Float32Array, argmax: Int32Array, x: Float32Array, outer: number, n: number, inner: number): void {
  for (let o = 0; o < outer; o++) {
    for (let j = 0; j < inner; j++) {
      let best = -Infinity, bi = 0;
      for (let i = 0; i < n; i++) {
        const v = x[(o * n + i) * inner + j];
        if (v > best || v !== v) { best = v; bi = i; if (v !== v) break; }
      }
      out[o * inner + j] = best;
      argmax[o * inner + j] = bi;
    }
  }
}
