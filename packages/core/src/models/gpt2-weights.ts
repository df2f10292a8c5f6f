/**
 * GPT-2 weights in Hugging Face's layout (`wte`, `wpe`, `h.N.ln_1`, `h.N.attn.c_attn`,
 * `h.N.attn.c_proj`, `h.N.ln_2`, `h.N.mlp.c_fc`, `h.N.mlp.c_proj`, `ln_f`, with or without the
 * `transformer.` prefix of GPT2LMHeadModel) → a GPT config and a state dict with chainrule's
 * names. GPT-2's projections are Conv1D layers whose weights are stored (in, out), the transpose
 * of Linear's (out, in); they are transposed here. The head is tied to wte, the MLP's GELU is
 * the tanh approximation (GPT-2's "gelu_new").
 */
import { ArgumentError } from "../errors.js";
import { Tensor } from "../tensor/tensor.js";
import type { GPTConfig } from "./gpt.js";

/** What a safetensors file holds (as loadSafetensors returns it). */
export interface NamedArrays {
  [name: string]: { data: Float32Array; shape: number[] };
}

export interface Gpt2Options {
  /** Attention heads (config.json's n_head: the weights do not tell). */
  nHead: number;
  /** LayerNorm epsilon (config.json's layer_norm_epsilon). Default 1e-5. */
  normEps?: number;
}

const CONV1D = /^h\.\d+\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight$/;
/** Non-parameter buffers some GPT-2 files carry (the causal mask): skipped. */
const BUFFERS = /^h\.\d+\.attn\.(bias|masked_bias)$/;

/** The GPT config a GPT-2 file gives (the rest of GPTConfig at its defaults). */
export type Gpt2Config = Pick<GPTConfig, "vocabSize" | "blockSize" | "nLayer" | "nHead" | "nEmbd" | "ffnHidden" | "arch" | "bias" | "tieWeights" | "geluApproximate" | "normEps">;

export function gpt2StateDict(arrays: NamedArrays, opts: Gpt2Options): { config: Gpt2Config; stateDict: Record<string, Tensor> } {
  const byName = new Map<string, { data: Float32Array; shape: number[] }>();
  for (const [key, t] of Object.entries(arrays)) {
    const name = key.startsWith("transformer.") ? key.slice("transformer.".length) : key;
    if (BUFFERS.test(name)) continue;
    byName.set(name, t);
  }
  const need = (name: string, ndim: number) => {
    const t = byName.get(name);
    if (!t) throw new ArgumentError(`GPT-2 weights: no tensor '${name}' (nor 'transformer.${name}')`);
    if (t.shape.length !== ndim) throw new ArgumentError(`GPT-2 weights: '${name}' has shape [${t.shape.join(", ")}], expected ${ndim} dimensions`);
    return t;
  };
  const wte = need("wte.weight", 2), wpe = need("wpe.weight", 2);
  const [vocabSize, nEmbd] = wte.shape, blockSize = wpe.shape[0];
  let nLayer = 0;
  while (byName.has(`h.${nLayer}.attn.c_attn.weight`)) nLayer++;
  if (nLayer === 0) throw new ArgumentError("GPT-2 weights: no layer 'h.0.attn.c_attn.weight'");
  const ffnHidden = need("h.0.mlp.c_fc.weight", 2).shape[1];
  const { nHead } = opts;
  if (!Number.isInteger(nHead) || nHead <= 0 || nEmbd % nHead !== 0) throw new ArgumentError(`GPT-2 weights: nHead ${nHead} does not divide the width ${nEmbd}`);

  const head = byName.get("lm_head.weight");
  if (head) {
    // GPT-2 ties its head to wte; a file may repeat it. A different head is another model.
    if (head.data.length !== wte.data.length || head.data.some((v, i) => v !== wte.data[i])) throw new ArgumentError("GPT-2 weights: 'lm_head.weight' differs from 'wte.weight'; GPT-2's head is tied to its token embedding");
    byName.delete("lm_head.weight");
  }
  const stateDict: Record<string, Tensor> = {};
  for (const [name, t] of byName) {
    if (!/^(wte|wpe|ln_f|h\.\d+\.(ln_1|ln_2|attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj))\.(weight|bias)$/.test(name)) {
      throw new ArgumentError(`GPT-2 weights: unexpected tensor '${name}' (not a GPT-2 parameter)`);
    }
    const tensor = CONV1D.test(name) ? transpose(t, name) : new Tensor(t.data, t.shape);
    stateDict[`transformer.${name}`] = tensor;
  }
  const config: Gpt2Config = { vocabSize, blockSize, nLayer, nHead, nEmbd, ffnHidden, arch: "gpt2", bias: true, tieWeights: true, geluApproximate: "tanh", normEps: opts.normEps ?? 1e-5 };
  return { config, stateDict };
}

/** A Conv1D weight (in, out) as Linear's (out, in). */
function transpose(t: { data: Float32Array; shape: number[] }, name: string): Tensor {
  if (t.shape.length !== 2) throw new ArgumentError(`GPT-2 weights: '${name}' has shape [${t.shape.join(", ")}], expected (in, out)`);
  const [rows, cols] = t.shape;
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = t.data[r * cols + c];
  return new Tensor(out, [cols, rows]);
}
