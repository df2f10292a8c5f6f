/**
 * What the rest of the project uses of kernels/: the interface and `kernels()`, the backends and
 * their selection, and the WebAssembly SIMD switch and shared memories (the parallel package's).
 */
export { kernels, setKernels, countMacs, type Kernels, type UnaryOp, type BinaryOp, type AdamScalars, type SgdScalars, type Conv2dGeometry, type Pool2dGeometry } from "./kernels.js";
export { jsKernels } from "./js/index.js";
export { selectBackend, useBackend, backendReport, type BackendName, type BackendReport } from "./select.js";
export { setSimdEnabled, simdEnabled } from "./simd/switch.js";
export { encodeHalf, decodeHalf, type HalfFormat } from "./half.js";
export { registerMemory as registerSimdMemory, sharedMemory, MAX_SHARED_MEMORY_BYTES, simdAvailable, type SimdKernels, type SharedMemory, type WasmMemory } from "./simd/optim.js";
