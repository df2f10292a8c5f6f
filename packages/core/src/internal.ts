/**
 * @chainrule/core/internal: what chainrule's own packages need beyond the public API — the
 * arena's buffer helpers, stale-gradient marking (the data-parallel replicas' no-zeroing
 * backward), the shared WebAssembly memory and SIMD kernels over it, number packing for
 * state files. Not a stable API for users.
 */
export { outputBuffer, zeroedOutputBuffer, isArenaArray } from "./tensor/arena.js";
export { markGradsStale, zeroStaleGrads, setLeafGradHook } from "./autograd/engine.js";
export { registerSimdMemory, sharedMemory, MAX_SHARED_MEMORY_BYTES, type SimdKernels, type SharedMemory, type WasmMemory } from "./kernels/index.js";
export { packNumbers, unpackNumbers } from "./io/checkpoint.js";
export { editDistance } from "./options.js";
