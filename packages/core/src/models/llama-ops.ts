/**
 * Fused ops of the llama blocks' hot path (as gpt-ops.ts is the GPT's). Composed from
 * primitives, RMSNorm is five broadcasting ops and SwiGLU's gate three, whose general strided
 * loops and broadcast reductions in backward were half of a llama training step (a 4-layer,
 * 64-wide model: 81 ms against the gpt2 arch's 20 ms). Each op here is one forward loop and one
 * backward loop, equal to the composite to float32 rounding (llama.test.ts checks both ways).
 *
 * rmsNormRows: y = x / √(mean(x²) + eps) · w over the last dimension; saves 1/√(mean(x²) + eps)
 * per row for backward.
 * siluMul: silu(a) · b, SwiGLU's gate (a = gate_proj(x), b = up_proj(x)).
 * packGroupedQkv: [q | k repeated | v repeated], the packed (B, T, 3C) layout of the fused
 * causal attention, each key/value head copied for its group of query heads (a broadcast
 * expand, reshape and concat before, whose strided copy loops cost 8% of a step).
 */
import { ShapeError, fmtShape } from "../errors.js";
import { Tensor } from "../tensor/tensor.js";
import { outputBuffer } from "../tensor/arena.js";
import { gradBuffer, graphFreedAfterBackward, isGradEnabled, releaseGradBuffer } from "../autograd/engine.js";
import { result } from "../ops/op.js";

/** RMSNorm over the last dimension of x (..., C) with weight (C): PyTorch's F.rms_norm(x, (C,), w, eps). */
export function rmsNormRows(x: Tensor, weight: Tensor, eps: number): Tensor {
  const C = x.shape[x.ndim - 1];
  if (weight.ndim !== 1 || weight.shape[0] !== C) throw new ShapeError(`rmsNormRows: weight ${fmtShape(weight.shape)} must be [${C}] for input ${fmtShape(x.shape)}`);
  const rows = x.size / C, xd = x.data, w = weight.data;
  const y = outputBuffer(x.size);
  const rstd = new Float32Array(rows); // 1/√(mean(x²) + eps) per row, for backward
  for (let r = 0; r < rows; r++) {
    const o = r * C;
    let ss = 0;
    for (let c = 0; c < C; c++) ss += xd[o + c] * xd[o + c];
    const s = 1 / Math.sqrt(ss / C + eps);
    rstd[r] = s;
    for (let c = 0; c < C; c++) y[o + c] = xd[o + c] * s * w[c];
  }
  return result("rmsNormRows", y, x.shape, [x, weight], (g) => {
    const dx = x.requiresGrad ? gradBuffer(x.size) : null;
    const dw = weight.requiresGrad ? new Float32Array(C) : null;
    for (let r = 0; r < rows; r++) {
      const o = r * C, s = rstd[r];
      // dx_j = s·(g_j w_j − x_j s² · mean(g ⊙ w ⊙ x)); dw_j += g_j x_j s
      let dot = 0;
      for (let c = 0; c < C; c++) dot += g[o + c] * w[c] * xd[o + c];
      const k = (s * s * dot) / C;
      if (dx) for (let c = 0; c < C; c++) dx[o + c] = s * (g[o + c] * w[c] - xd[o + c] * k);
      if (dw) for (let c = 0; c < C; c++) dw[c] += g[o + c] * xd[o + c] * s;
    }
    return [dx, dw];
  });
}

/** silu(a) · b elementwise, a and b of one shape. Saves σ(a) for backward (exp is most of the op's cost). */
export function siluMul(a: Tensor, b: Tensor): Tensor {
  if (a.size !== b.size || a.shape.some((d, i) => d !== b.shape[i])) throw new ShapeError(`siluMul: shapes ${fmtShape(a.shape)} and ${fmtShape(b.shape)} differ`);
  const n = a.size, ad = a.data, bd = b.data;
  const y = outputBuffer(n);
  const needGrad = isGradEnabled() && (a.requiresGrad || b.requiresGrad);
  const sig = needGrad ? gradBuffer(n) : null; // σ(a), for backward only
  for (let i = 0; i < n; i++) {
    const s = 1 / (1 + Math.exp(-ad[i]));
    if (sig) sig[i] = s;
    y[i] = ad[i] * s * bd[i];
  }
  return result("siluMul", y, a.shape, [a, b], (g) => {
    const da = a.requiresGrad ? gradBuffer(n) : null;
    const db = b.requiresGrad ? gradBuffer(n) : null;
    const sg = sig!;
    for (let i = 0; i < n; i++) {
      const s = sg[i];
      if (da) da[i] = g[i] * bd[i] * s * (1 + ad[i] * (1 - s));
      if (db) db[i] = g[i] * ad[i] * s;
    }
    if (graphFreedAfterBackward()) releaseGradBuffer(sg);
    return [da, db];
  });
}

/**
 * q (B, T, H·hs), k and v (B, T, Hkv·hs) → (B, T, 3·H·hs): per position q, then k with key/value
 * head g in the slots of query heads g·G .. g·G + G − 1 (G = H / Hkv), then v the same way.
 * The gradient of a key/value head is the sum over its G slots.
 */
export function packGroupedQkv(q: Tensor, k: Tensor, v: Tensor, nHead: number, nKvHead: number): Tensor {
  const [B, T, C] = q.shape;
  const Ckv = k.shape[2], hs = C / nHead, G = nHead / nKvHead;
  if (q.ndim !== 3 || k.ndim !== 3 || v.ndim !== 3 || k.shape[0] !== B || k.shape[1] !== T || v.shape.some((d, i) => d !== k.shape[i]) || Ckv !== nKvHead * hs || !Number.isInteger(G)) {
    throw new ShapeError(`packGroupedQkv: q ${fmtShape(q.shape)}, k ${fmtShape(k.shape)}, v ${fmtShape(v.shape)} do not fit ${nHead} query and ${nKvHead} key/value heads`);
  }
  const rows = B * T, C3 = 3 * C, qd = q.data, kd = k.data, vd = v.data;
  const out = outputBuffer(rows * C3);
  for (let r = 0; r < rows; r++) {
    const o = r * C3, kvo = r * Ckv;
    out.set(qd.subarray(r * C, r * C + C), o);
    for (let h = 0; h < nHead; h++) {
      const src = kvo + Math.floor(h / G) * hs;
      out.set(kd.subarray(src, src + hs), o + C + h * hs);
      out.set(vd.subarray(src, src + hs), o + 2 * C + h * hs);
    }
  }
  return result("packGroupedQkv", out, [B, T, C3], [q, k, v], (g) => {
    const dq = q.requiresGrad ? gradBuffer(q.size) : null;
    const dk = k.requiresGrad ? new Float32Array(k.size) : null; // summed into: starts at zero
    const dv = v.requiresGrad ? new Float32Array(v.size) : null;
    for (let r = 0; r < rows; r++) {
      const o = r * C3, kvo = r * Ckv;
      if (dq) dq.set(g.subarray(o, o + C), r * C);
      for (let h = 0; h < nHead; h++) {
        const dst = kvo + Math.floor(h / G) * hs, gk = o + C + h * hs, gv = o + 2 * C + h * hs;
        if (dk) for (let i = 0; i < hs; i++) dk[dst + i] += g[gk + i];
        if (dv) for (let i = 0; i < hs; i++) dv[dst + i] += g[gv + i];
      }
    }
    return [dq, dk, dv];
  });
}
