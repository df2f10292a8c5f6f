/**
 * A served model's weights in one SharedArrayBuffer, so that every inference worker runs over
 * the same bytes instead of holding its own copy (memory: one model, not one per worker). The
 * worker that loads the checkpoint moves its parameters and buffers there; the others build the
 * same model and point its tensors at the shared bytes. Workers only read them: a served model
 * runs in eval mode, without gradients or an optimizer.
 */
import type { Tensor, nn } from "@chainrule/core";

/** Where each tensor of the state dict lies in `buffer` (float32 elements from `offset`). */
export interface SharedWeights {
  buffer: SharedArrayBuffer;
  entries: { name: string; shape: number[]; offset: number }[];
}

/** Copies `model`'s parameters and buffers into one SharedArrayBuffer and makes each tensor a view of it. */
export function shareWeights(model: nn.Module): SharedWeights {
  const tensors = Object.entries(model.stateDict());
  const total = tensors.reduce((n, [, t]) => n + t.size, 0);
  const buffer = new SharedArrayBuffer(total * 4);
  const entries: SharedWeights["entries"] = [];
  let offset = 0;
  for (const [name, t] of tensors) {
    const view = new Float32Array(buffer, offset * 4, t.size);
    view.set(t.data);
    t.data = view;
    entries.push({ name, shape: [...t.shape], offset });
    offset += t.size;
  }
  return { buffer, entries };
}

/**
 * Points the parameters and buffers of `model` (built as the shared model was) at `shared`,
 * without copying; throws naming the first tensor whose name or shape differs.
 */
export function bindSharedWeights(model: nn.Module, shared: SharedWeights): void {
  const own: Record<string, Tensor> = model.stateDict();
  const names = Object.keys(own);
  if (names.length !== shared.entries.length) {
    throw new Error(`shared weights: the model has ${names.length} tensors, the shared weights ${shared.entries.length}`);
  }
  for (const { name, shape, offset } of shared.entries) {
    const t = own[name];
    if (!t) throw new Error(`shared weights: the model has no tensor ${name}`);
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw new Error(`shared weights: ${name} has shape [${t.shape.join(", ")}] in the model, [${shape.join(", ")}] shared`);
    }
    t.data = new Float32Array(shared.buffer, offset * 4, t.size);
  }
}
