/**
 * A small image classifier: two conv blocks and an MLP head. With the defaults it is the
 * anchor's MNIST CNN (../shared/anchors/torch_cnn.py), layer for layer and with the same
 * state-dict names (0.weight, 3.weight, 7.weight, 9.weight):
 *   conv 1→32 3×3 pad 1, ReLU, max-pool 2 → conv 32→64 3×3 pad 1, ReLU, max-pool 2
 *   → flatten → Linear 3136→128, ReLU → Linear 128→10.
 * Each block runs max-pool before ReLU: the same function and gradients (they commute), cheaper.
 */
import { ArgumentError, ShapeError, fmtShape } from "../errors.js";
import type { Tensor } from "../tensor/tensor.js";
import { reshape } from "../ops/shape.js";
import { Dropout, Flatten, Linear, ReLU, Sequential } from "../nn/layers.js";
import { type Module, registerOwnModules } from "../nn/module.js";
import { BatchNorm2d, Conv2d, MaxPool2d } from "../nn/conv.js";

export interface CnnConfig {
  /** Image channels (1 for grey). */
  inChannels: number;
  /** Image height and width; inputs may come flat (N, C·H·W) and are reshaped. */
  height: number;
  width: number;
  /** Output channels of each conv block (each block: 3×3 conv pad 1, [BN], 2×2 max-pool, ReLU). */
  channels: number[];
  /** Width of the hidden fully connected layer. */
  hidden: number;
  numClasses: number;
  /** BatchNorm2d after each conv (the conv then has no bias, as usual). */
  batchNorm: boolean;
  /** Dropout probability before each Linear (0: none). */
  dropout: number;
}

/** The anchor's MNIST CNN. */
export const mnistCnnDefaults: CnnConfig = {
  inChannels: 1,
  height: 28,
  width: 28,
  channels: [32, 64],
  hidden: 128,
  numClasses: 10,
  batchNorm: false,
  dropout: 0,
};

/**
 * A Sequential whose forward also takes flat rows (N, C·H·W), the MLP datasets' format. Like any
 * Sequential it runs each Conv2d → MaxPool2d(2) → ReLU as the fused conv2dMaxPoolRelu and each
 * BatchNorm2d → MaxPool2d(2) → ReLU as batchNorm2dMaxPoolRelu (same functions and gradients, to rounding).
 */
export class ImageClassifier extends Sequential {
  readonly config: CnnConfig;
  constructor(config: CnnConfig, layers: Module[]) {
    super(...layers);
    this.config = config;
  }
  override forward(x: Tensor): Tensor {
    const { inChannels: C, height: H, width: W } = this.config;
    if (x.ndim === 2) {
      if (x.shape[1] !== C * H * W) throw new ShapeError(`ImageClassifier: flat input ${fmtShape(x.shape)} must have ${C * H * W} = ${C}x${H}x${W} features per row`);
      x = reshape(x, [x.shape[0], C, H, W]); // (N, C·H·W) → (N, C, H, W)
    } else if (x.ndim !== 4 || x.shape[1] !== C || x.shape[2] !== H || x.shape[3] !== W) {
      throw new ShapeError(`ImageClassifier: input ${fmtShape(x.shape)} must be (N, ${C}, ${H}, ${W}) or (N, ${C * H * W})`);
    }
    return super.forward(x); // (N, numClasses) logits
  }
}

registerOwnModules(ImageClassifier);

/** Builds the CNN; any field left out takes the anchor's value. */
export function createCnn(options: Partial<CnnConfig> = {}): ImageClassifier {
  const cfg: CnnConfig = { ...mnistCnnDefaults, ...options };
  for (const k of ["inChannels", "height", "width", "hidden", "numClasses"] as const) {
    if (!Number.isInteger(cfg[k]) || cfg[k] <= 0) throw new ArgumentError(`createCnn: ${k} must be a positive integer, got ${cfg[k]}`);
  }
  if (cfg.channels.length === 0 || cfg.channels.some((c) => !Number.isInteger(c) || c <= 0)) {
    throw new ArgumentError(`createCnn: channels must be a non-empty list of positive integers, got [${cfg.channels.join(",")}]`);
  }
  if (!(cfg.dropout >= 0 && cfg.dropout < 1)) throw new ArgumentError(`createCnn: dropout must be in [0, 1), got ${cfg.dropout}`);
  const layers: Module[] = [];
  let c = cfg.inChannels, h = cfg.height, w = cfg.width;
  for (const out of cfg.channels) {
    if (h < 2 || w < 2) throw new ArgumentError(`createCnn: ${cfg.channels.length} pooling blocks shrink a ${cfg.height}x${cfg.width} image below 1x1`);
    layers.push(new Conv2d(c, out, 3, { padding: 1, bias: !cfg.batchNorm }));
    if (cfg.batchNorm) layers.push(new BatchNorm2d(out));
    // Max-pooling and ReLU commute (max(relu(a), relu(b)) = relu(max(a, b)), and the gradient
    // reaches the same element), so pooling first is the anchor's function with ReLU on 4x fewer values.
    layers.push(new MaxPool2d(2), new ReLU());
    c = out;
    h = Math.floor(h / 2);
    w = Math.floor(w / 2);
  }
  layers.push(new Flatten());
  if (cfg.dropout > 0) layers.push(new Dropout(cfg.dropout));
  layers.push(new Linear(c * h * w, cfg.hidden), new ReLU());
  if (cfg.dropout > 0) layers.push(new Dropout(cfg.dropout));
  layers.push(new Linear(cfg.hidden, cfg.numClasses));
  return new ImageClassifier(cfg, layers);
}

/** The MNIST CNN (28×28 grey, 10 classes), taking flat (N, 784) rows or (N, 1, 28, 28). */
export function createMnistCnn(options: Partial<CnnConfig> = {}): ImageClassifier {
  return createCnn({ ...mnistCnnDefaults, ...options });
}
