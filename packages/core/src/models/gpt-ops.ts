/**
 * Fused ops of the GPT hot path (see bench/gpt.ts for why each exists).
 *
 * linearGelu: y = gelu(x Wᵀ + b), the MLP's expansion layer, as one op. It exists
 * because the composite (linear, then the exact-erf gelu op) was a third of a
 * training step: the gelu op evaluates erf (with its own exp) in forward and
 * erf plus another exp again in backward. Here the forward evaluates gelu and
 * gelu' together in one kernel pass (kernels().geluInPlaceWithGrad) and stores gelu'(h), so the
 * backward is a multiply plus the linear layer's two GEMMs. The pre-activation
 * h is not kept.
 *
 * tokenPositionEmbedding: wte[ids] + wpe[t], the GPT's input, as one op instead of two
 * lookups and a broadcast add (whose general strided path, and the broadcast's reduction
 * in backward, cost more than the lookups).
 */
import { Tensor } from "../tensor/tensor.js";
import { outputBuffer } from "../tensor/arena.js";
import { result } from "../ops/op.js";
import { linearBackward, linearForward } from "../ops/matmul.js";
import { gradBuffer, graphFreedAfterBackward, isGradEnabled, leafGradAddSink, releaseGradBuffer } from "../autograd/engine.js";
import { toIndices } from "../ops/indexing.js";
import { ShapeError, fmtShape } from "../errors.js";
import { kernels } from "../kernels/kernels.js";

/** gelu(x Wᵀ + b) with W (out, in), b (out); x (..., in) → (..., out). */
export function linearGelu(x: Tensor, weight: Tensor, bias: Tensor | null = null): Tensor {
  const f = linearForward("linearGelu", x, weight, bias); // h (rows, out), GELU applied in place below
  const { out } = f;
  const n = out.length;
  const inputs = bias ? [x, weight, bias] : [x, weight];
  const k = kernels();
  if (!isGradEnabled() || !inputs.some((t) => t.requiresGrad)) {
    k.geluInPlace(out, n);
    return result("linearGelu", out, f.shape, inputs, () => []); // no graph: the closure is dropped
  }
  const dgelu = gradBuffer(n); // gelu'(h), saved for backward only
  k.geluInPlaceWithGrad(out, dgelu, n);
  return result("linearGelu", out, f.shape, inputs, (g) => {
    // dh = g ⊙ gelu'(h): into dgelu itself when this is its last use, else into a scratch buffer.
    const last = graphFreedAfterBackward();
    const gh = last ? dgelu : gradBuffer(n);
    kernels().mul(gh, g, dgelu, n);
    const grads = linearBackward(gh, x, weight, bias, f);
    releaseGradBuffer(gh);
    return grads;
  });
}

/**
 * out (B, T, C) = wte[ids[b, t]] + wpe[t] for token ids (B·T, row-major) and tables wte (V, C),
 * wpe (≥ T, C). Gradients are scatter-added straight into the tables' .grad when they are leaves.
 */
export function tokenPositionEmbedding(ids: Int32Array, B: number, T: number, wte: Tensor, wpe: Tensor): Tensor {
  if (wte.ndim !== 2 || wpe.ndim !== 2 || wpe.shape[1] !== wte.shape[1] || wpe.shape[0] < T) {
    throw new ShapeError(`tokenPositionEmbedding: tables ${fmtShape(wte.shape)} and ${fmtShape(wpe.shape)} do not fit (V, C), (≥ ${T}, C)`);
  }
  if (ids.length !== B * T) throw new ShapeError(`tokenPositionEmbedding: ${ids.length} ids for (B, T) = (${B}, ${T})`);
  const [V, C] = wte.shape;
  toIndices(ids, V, "embedding");
  const out = outputBuffer(B * T * C);
  embedForward(out, ids, B, T, C, wte.data, wpe.data);
  return result("tokenPositionEmbedding", out, [B, T, C], [wte, wpe], (g) => {
    let dte: Float32Array | null = null, dpe: Float32Array | null = null;
    if (wte.requiresGrad) {
      const sink = leafGradAddSink(wte);
      embedTokenBackward(sink ?? (dte = new Float32Array(wte.size)), g, ids, C);
    }
    if (wpe.requiresGrad) {
      const sink = leafGradAddSink(wpe);
      embedPositionBackward(sink ?? (dpe = new Float32Array(wpe.size)), g, B, T, C);
    }
    return [dte, dpe];
  });
}

/** out[b, t, :] = wte[ids[b·T + t], :] + wpe[t, :]. */
function embedForward(out: Float32Array, ids: Int32Array, B: number, T: number, C: number, wte: Float32Array, wpe: Float32Array): void {
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const o = (b * T + t) * C, e = ids[b * T + t] * C, p = t * C;
      for (let c = 0; c < C; c++) out[o + c] = wte[e + c] + wpe[p + c];
    }
  }
}

/** dwte[ids[r], :] += g[r, :] over all B·T rows. */
function embedTokenBackward(dwte: Float32Array, g: Float32Array, ids: Int32Array, C: number): void {
  for (let r = 0; r < ids.length; r++) {
    const o = ids[r] * C, gr = r * C;
    for (let c = 0; c < C; c++) dwte[o + c] += g[gr + c];
  }
}

/** dwpe[t, :] += Σ_b g[b, t, :]. */
function embedPositionBackward(dwpe: Float32Array, g: Float32Array, B: number, T: number, C: number): void {
  for (let b = 0; b < B; b++) {
    const gb = b * T * C;
    for (let i = 0; i < T * C; i++) dwpe[i] += g[gb + i];
  }
}
