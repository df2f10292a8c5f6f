import { AnomalyError, AutogradError, ShapeError, fmtShape } from "../errors.js";
import { Tensor } from "../tensor/tensor.js";
import { isArenaArray, isIntermediate, outputBuffer, recycledBuffer, releaseBuffer, releaseIfIntermediate } from "../tensor/arena.js";
import { kernels } from "../kernels/kernels.js";

/**
 * The node an op leaves on its output: which op, which inputs, and how to turn
 * the output's gradient into one gradient per input (null where an input needs none).
 * Backward closures may return the incoming gradient array itself (no copy);
 * the engine never writes into an array it did not allocate.
 */
export interface GradFn {
  op: string;
  inputs: Tensor[];
  backward: ((gradOut: Float32Array) => (Float32Array | null)[]) | null;
}

let gradEnabled = true;
let anomalyMode = false;

export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Runs `fn` without building a graph (inference, optimizer updates). */
export function noGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

export function setGradEnabled(flag: boolean): void {
  gradEnabled = flag;
}

/** Opt-in anomaly mode: every op checks its output (and backward its gradients) for NaN/Infinity. */
export function setAnomalyDetection(flag: boolean): void {
  anomalyMode = flag;
}

export function isAnomalyDetectionEnabled(): boolean {
  return anomalyMode;
}

export function detectAnomaly<T>(fn: () => T): T {
  const prev = anomalyMode;
  anomalyMode = true;
  try {
    return fn();
  } finally {
    anomalyMode = prev;
  }
}

export function checkFinite(op: string, what: string, data: Float32Array): void {
  for (let i = 0; i < data.length; i++) {
    const v = data[i];
    if (v !== v || v === Infinity || v === -Infinity) {
      throw new AnomalyError(`anomaly: ${op} produced ${v} in its ${what} at flat index ${i}`);
    }
  }
}

/** Iterative topological order (inputs before outputs) of the graph above `root`. */
function topoSort(root: Tensor): Tensor[] {
  const order: Tensor[] = [];
  const visited = new Set<Tensor>();
  // Explicit stack of [tensor, nextInputIndex]: a 10,000-op chain must not overflow the JS stack.
  const stack: [Tensor, number][] = [[root, 0]];
  visited.add(root);
  while (stack.length > 0) {
    const top = stack[stack.length - 1];
    const [t, i] = top;
    const inputs = t.gradFn?.inputs ?? [];
    if (i < inputs.length) {
      top[1] = i + 1;
      const child = inputs[i];
      if (child.requiresGrad && !visited.has(child)) {
        visited.add(child);
        stack.push([child, 0]);
      }
    } else {
      stack.pop();
      order.push(t);
    }
  }
  return order;
}

// Whether the backward now running frees the graph as it goes (no retainGraph): see graphFreedAfterBackward.
let freeingGraph = false;

// Called for each leaf of a backward once its gradient is final (see setLeafGradHook).
let leafGradHook: ((leaf: Tensor) => void) | null = null;

/**
 * Sets a function the backward engine calls for each leaf that needs a gradient, as soon as no
 * op left to run can add to it (every consumer's backward has run; PyTorch's post-accumulate-grad
 * hook): data-parallel training starts reducing a parameter's gradient while backward goes on.
 * The leaf's .grad may still be stale (see markGradsStale) if no op wrote it. Null removes it.
 */
export function setLeafGradHook(hook: ((leaf: Tensor) => void) | null): void {
  leafGradHook = hook;
}

/**
 * True inside an op's backward when the engine drops that node's closure right after it
 * (a backward without retainGraph): buffers the closure alone holds (saved for backward in
 * the forward) are then dead once it returns, so it may overwrite them or hand them to the
 * pool with releaseGradBuffer. False when the graph is retained (a second backward will
 * read them again) and outside backward.
 */
export function graphFreedAfterBackward(): boolean {
  return freeingGraph;
}

export function runBackward(root: Tensor, rootGrad: Float32Array, retainGraph: boolean): void {
  const prevFreeing = freeingGraph;
  freeingGraph = !retainGraph;
  try {
    backwardPass(root, rootGrad, retainGraph);
  } finally {
    freeingGraph = prevFreeing;
  }
}

function backwardPass(root: Tensor, rootGrad: Float32Array, retainGraph: boolean): void {
  const order = topoSort(root);
  const grads = new Map<Tensor, Float32Array>();
  // Tensors whose pending gradient is a sum the engine allocated for that tensor alone, so it may add
  // into it in place. Tracked per tensor, not per array: a backward may pass one array on to several
  // inputs (add returns [g, g]), and adding into it for one input would corrupt the others.
  const owned = new Set<Tensor>();
  grads.set(root, rootGrad);

  for (let k = order.length - 1; k >= 0; k--) {
    const t = order[k];
    const g = grads.get(t);
    if (g === undefined) {
      // A leaf the ops wrote directly (leafGradSink), or that got no gradient: its consumers are all done.
      if (t.gradFn === null && leafGradHook !== null) leafGradHook(t);
      continue;
    }
    grads.delete(t);
    const fn = t.gradFn;
    if (fn === null) {
      if (owned.has(t) && t.grad === null && !isArenaArray(g) && !isIntermediate(g)) t.grad = new Tensor(g, t.shape, false); // adopt, no copy
      else {
        accumulateLeaf(t, g);
        if (owned.has(t)) releaseGradBuffer(g);
      }
      leafGradHook?.(t);
      continue;
    }
    if (fn.backward === null) {
      throw new AutogradError(
        `backward: trying to backward through the graph a second time (op ${fn.op}): its buffers were freed; pass { retainGraph: true } to the first backward`,
      );
    }
    const inputGrads = fn.backward(g);
    if (owned.has(t)) {
      // g was this tensor's alone (an op's fresh array or an engine sum) and is dead unless handed on.
      let handedOn = false;
      for (const ig of inputGrads) if (ig && ig.buffer === g.buffer) handedOn = true;
      if (!handedOn) releaseGradBuffer(g);
    }
    if (anomalyMode) for (const ig of inputGrads) if (ig) checkFinite(fn.op, "gradient", ig);
    for (let i = 0; i < fn.inputs.length; i++) {
      const input = fn.inputs[i];
      const ig = inputGrads[i];
      if (!input.requiresGrad || ig === null || ig === undefined) continue;
      if (ig.length !== input.data.length) {
        throw new ShapeError(`backward of ${fn.op}: gradient for input ${i} has ${ig.length} elements, input has shape ${fmtShape(input.shape)}`);
      }
      const prev = grads.get(input);
      if (prev === undefined) {
        grads.set(input, ig);
        if (exclusive(ig, g, inputGrads, i)) owned.add(input);
      } else if (owned.has(input)) {
        kernels().accumulate(prev, ig);
      } else if (exclusive(ig, g, inputGrads, i)) {
        // The op's fresh array: add the pending gradient into it instead of allocating a sum.
        kernels().accumulate(ig, prev);
        owned.add(input);
        grads.set(input, ig);
      } else {
        const sum = gradBuffer(prev.length);
        sum.set(prev);
        kernels().accumulate(sum, ig);
        owned.add(input);
        grads.set(input, sum);
      }
    }
    if (!retainGraph) fn.backward = null;
  }
  // The graph is freed: intermediate activations of chainrule's modules whose nodes ran are dead.
  if (!retainGraph) for (const t of order) if (t.gradFn !== null && t.gradFn.backward === null) releaseIfIntermediate(t.data);
}

// Leaf .grad arrays whose contents are stale (markGradsStale): the next gradient written into
// each overwrites it instead of adding to it, so nobody has to zero it first (one pass over
// memory less per step; PyTorch's zero_grad(set_to_none=True) gets the same by dropping the array).
const staleGrads = new WeakSet<Float32Array>();

/**
 * Marks the .grad of each tensor stale: the next backward overwrites it rather than adding to it.
 * What that backward does not reach keeps its old values until zeroStaleGrads: call that after it.
 * For callers that own the gradient arrays (data-parallel workers' slots); Optimizer.zeroGrad zeroes.
 */
export function markGradsStale(tensors: Iterable<Tensor>): void {
  for (const t of tensors) if (t.grad !== null) staleGrads.add(t.grad.data);
}

/** Zeroes the .grad of each tensor still stale (no backward wrote it since markGradsStale). */
export function zeroStaleGrads(tensors: Iterable<Tensor>): void {
  for (const t of tensors) if (t.grad !== null && staleGrads.delete(t.grad.data)) t.grad.data.fill(0);
}

/** A leaf's .grad array for an op's backward to write into, and how: beta 1 adds, beta 0 overwrites (it was stale). */
export interface GradSink {
  data: Float32Array;
  beta: 0 | 1;
}

/**
 * Where an op's backward may write a gradient for input `t` directly, as PyTorch's
 * AccumulateGrad does: the `.grad` buffer of a leaf that needs a gradient (created
 * zeroed if absent). The op then writes with `beta` (e.g. GEMM with beta = 1 adds, 0
 * overwrites a stale array) and returns null for that input, saving a temporary array
 * and a second pass. Null for non-leaves, and in anomaly mode (where the engine checks every gradient).
 */
export function leafGradSink(t: Tensor): GradSink | null {
  if (!t.requiresGrad || t.gradFn !== null || anomalyMode) return null;
  if (t.grad === null) t.grad = new Tensor(new Float32Array(t.data.length), t.shape, false);
  const data = t.grad.data;
  return { data, beta: staleGrads.delete(data) ? 0 : 1 };
}

/** leafGradSink for a backward that can only add into the array (+=): a stale one is zeroed first. */
export function leafGradAddSink(t: Tensor): Float32Array | null {
  const sink = leafGradSink(t);
  if (sink?.beta === 0) sink.data.fill(0);
  return sink?.data ?? null;
}

/** Hands an array nobody references any more to the pool of dead arrays (see gradBuffer). */
export function releaseGradBuffer(a: Float32Array): void {
  releaseBuffer(a);
}

/**
 * A Float32Array of length n for an op to fill COMPLETELY (its contents are arbitrary): a
 * recycled dead array when one of that length is pooled, else a new one (from the BufferArena
 * when one is running: arena arrays are never pooled nor adopted as a .grad). Backward closures
 * take their gradients from here; forward passes take buffers they save for backward only
 * (never a tensor's data, which user code may keep), and hand them back from the backward
 * when graphFreedAfterBackward() says nothing will read them again.
 */
export function gradBuffer(n: number): Float32Array {
  return recycledBuffer(n) ?? outputBuffer(n);
}

/**
 * Whether input gradient `ig` (entry i of an op's backward result for output gradient g) is an
 * array the op made for that input alone, so the engine may add into it: not (a view of) g,
 * which pass-through ops (reshape, add) hand on and others may still hold, and not returned
 * for another input too.
 */
function exclusive(ig: Float32Array, g: Float32Array, all: readonly (Float32Array | null | undefined)[], i: number): boolean {
  if (ig.buffer === g.buffer) return false;
  for (let j = 0; j < all.length; j++) if (j !== i && all[j] != null && all[j]!.buffer === ig.buffer) return false;
  return true;
}

/** Adds into a leaf's `.grad` in place, so gradients bound to a flat (shared) buffer stay bound. */
function accumulateLeaf(t: Tensor, g: Float32Array): void {
  if (t.grad === null) {
    t.grad = new Tensor(g.slice(), t.shape, false);
    return;
  }
  if (staleGrads.delete(t.grad.data)) t.grad.data.set(g);
  else kernels().accumulate(t.grad.data, g);
}
