/**
 * The one switch for every WebAssembly SIMD kernel of this folder: the GEMM, the elementwise, image
 * and attention kernels, and the optimizer and reduce passes. `CHAINRULE_SIMD=0` starts with it off;
 * `setSimdEnabled` flips it at run time. Off, each SIMD entry point declines (returns false or null)
 * and its caller runs the TypeScript loop.
 */
let enabled = process.env.CHAINRULE_SIMD !== "0";

/** Whether the SIMD kernels may run (they may still be unavailable: no WebAssembly SIMD here). */
export function simdEnabled(): boolean {
  return enabled;
}

/** Turns every SIMD kernel off (the TypeScript loops run) or back on; the initial value comes from CHAINRULE_SIMD. */
export function setSimdEnabled(on: boolean): void {
  enabled = on;
}
