/** Reference model factories that workers can build by name (`{ module: MODELS, export: "mlp", options }`). */
import { nn } from "@chainrule/core";

export interface MlpOptions {
  /** Layer widths, input first: [784, 512, 256, 10]. */
  sizes: number[];
  /** Activation between layers. Default "relu". */
  activation?: "relu" | "gelu" | "tanh" | "sigmoid";
  /** Dropout probability after each hidden activation. Default 0. */
  dropout?: number;
}

/** Linear → activation (→ dropout) → ... → Linear. */
export function mlp(o: MlpOptions): nn.Module {
  const act = { relu: nn.ReLU, gelu: nn.GELU, tanh: nn.Tanh, sigmoid: nn.Sigmoid }[o.activation ?? "relu"];
  const layers: nn.Module[] = [];
  for (let i = 0; i + 1 < o.sizes.length; i++) {
    layers.push(new nn.Linear(o.sizes[i], o.sizes[i + 1]));
    if (i + 2 < o.sizes.length) {
      layers.push(new act());
      if (o.dropout) layers.push(new nn.Dropout(o.dropout));
    }
  }
  return new nn.Sequential(...layers);
}

/** The module path of this file, for ModelSpec.module. */
export const MODELS = new URL(import.meta.url).href;
