export function softmax(out: Float32Array, x: Float32Array, rows: number, n: number): void {
  for (let r = 0; r < rows; r++) {
    const b = r * n;
    let m = -Infinity;
    for (let i = 0; i < n; i++) if (x[b + i] > m) m = x[b + i];
    if (m === -Infinity) m = 0; // a fully masked row gives NaN (0/0) below, like PyTorch
    let s = 0;
    for (let i = 0; i < n; i++) { const e = Math.exp(x[b + i] - m); out[b + i] = e; s += e; }
    const inv = 1 / s;
    for (let i = 0; i < n; i++) out[b + i] *= inv;
  }
}

export function softmaxBackward(dx: Float32Array, dy: Float32Array, y: Float32Array, rows: number, n: number): void {
  for (let r = 0; r < rows; r++) {
    const b = r * n;
    let dot = 0;
    for (let i = 0; i < n; i++) dot += dy[b + i] * y[b + i];
    for (let i = 0; i < n; i++) dx[b + i] = y[b + i] * (dy[b + i] - dot);
  }
}

export function logSoftmax(out: Float32Array, x: Float32Array, rows: number, n: number): void {
  for (let r = 0; r < rows; r++) {
    const b = r * n;
    let m = -Infinity;
    for (let i = 0; i < n; i++) if (x[b + i] > m) m = x[b + i];
    let s = 0;
    for (let i = 0; i < n; i++) s += Math.exp(x[b + i] - m);
    const lse = m + Math.log(s);
    for (let i = 0; i < n; i++) out[b + i] = x[b + i] - lse;
  }
}

export function logSoftmaxBackward(dx: Float32Array, dy: Float32Array, y: Float32Array, rows: number, n: number): void {
  for (let r = 0; r < rows; r++) {
    const b = r * n;
    let s = 0;
    for (let i = 0; i < n; i++) s += dy[b + i];
    for (let i = 0; i < n; i++) dx[b + i] = dy[b + i] - Math.exp(y[b + i]) * s;
  }
}

export function layerNorm(
  out: Float32Array, mean: Float32Array, rstd: Float32Array, x: Float32Array,
  weight: Float32Array | null, bias: Float32Array | null, rows: number, n: number, eps: number,
): void {
  for (let r = 0; r < rows; r++) {
    const b = r * n;
    let m = 0;
    for (let i = 0; i < n; i++) m += x[b + i];
    m /= n;
    let v = 0;
    for (let i = 0; i < n; i++) { const d = x[b + i] - m; v += d * d; }
    v /= n;
    const rs = 1 / Math.sqrt(v + eps);
    mean[r] = m;
    rstd[r] = rs;
    for (let i = 0; i < n; i++) {
      let y = (x[b + i] - m) * rs;
      if (weight) y *= weight[i];
      if (bias) y += bias[i];
      out[b + i] = y;
    }
  }
}

export function layerNormBackward(
  dx: Float32Array | null, dweight: Float32Array | null, dbias: Float32Array | null,
  dout: Float32Array, x: Float32Array, mean: Float32Array, rstd: Float32Array,
  weight: Float32Array | null, rows: number, n: number,
): void {
  if (dweight) dweight.fill(0);
  if (dbias) dbias.fill(0);
  for (let r = 0; r < rows; r++) {
    const b = r * n;
    const m = mean[r], rs = rstd[r];
    // dnorm = dout * weight; dx = rs * (dnorm - mean(dnorm) - xhat * mean(dnorm * xhat))
    let sumD = 0, sumDX = 0;
    for (let i = 0; i < n; i++) {
      const xhat = (x[b + i] - m) * rs;
      const d = weight ? dout[b + i] * weight[i] : dout[b + i];
      sumD += d;
      sumDX += d * xhat;
      if (dweight) dweight[i] += dout[b + i] * xhat;
      if (dbias) dbias[i] += dout[b + i];
    }
    if (dx) {
      const meanD = sumD / n, meanDX = sumDX / n;
      for (let i = 0; i < n; i++) {
        const xhat = (x[b + i] - m) * rs;
        const d = weight ? dout[b + i] * weight[i] : dout[b + i];
        dx[b + i] = rs * (d - meanD - xhat * meanDX);
      }
    }
  }
}

export function crossEntropy(
  logits: Float32Array, targets: Int32Array, rows: number, classes: number,
  dlogits: Float32Array | null, ignoreIndex: number,
): number {
  let loss = 0;
  for (let r = 0; r < rows; r++) {
    const b = r * classes;
    const t = targets[r];
    if (t === ignoreIndex) {
      if (dlogits) dlogits.fill(0, b, b + classes);
      continue;
    }
    let m = -Infinity;
    for (let i = 0; i < classes; i++) if (logits[b + i] > m) m = logits[b + i];
    let s = 0;
    for (let i = 0; i < classes; i++) s += Math.exp(logits[b + i] - m);
    const lse = m + Math.log(s);
    loss += lse - logits[b + t];
    if (dlogits) {
      const inv = 1 / s;
      for (let i = 0; i < classes; i++) dlogits[b + i] = Math.exp(logits[b + i] - m) * inv;
      dlogits[b + t] -= 1;
    }
  }
  return loss;
}
