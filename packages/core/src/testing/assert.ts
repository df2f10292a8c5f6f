import type { Tensor } from "../tensor/tensor.js";

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`maxAbsDiff: lengths ${a.length} and ${b.length} differ`);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (d > m || d !== d) m = d !== d ? Infinity : d;
  }
  return m;
}

/** Throws unless |a - b| ≤ atol + rtol·|b| elementwise (NaN matches NaN). */
export function assertClose(a: Tensor | ArrayLike<number>, b: Tensor | ArrayLike<number> | number, opts: { atol?: number; rtol?: number } = {}): void {
  const atol = opts.atol ?? 1e-5, rtol = opts.rtol ?? 1e-4;
  const av: ArrayLike<number> = "data" in (a as any) ? (a as Tensor).data : (a as ArrayLike<number>);
  const bv: ArrayLike<number> = typeof b === "number" ? [b] : "data" in (b as any) ? (b as Tensor).data : (b as ArrayLike<number>);
  if (av.length !== bv.length) throw new Error(`assertClose: ${av.length} values vs ${bv.length}`);
  for (let i = 0; i < av.length; i++) {
    const x = av[i], y = bv[i];
    if (x !== x && y !== y) continue;
    if (!(Math.abs(x - y) <= atol + rtol * Math.abs(y))) throw new Error(`assertClose: element ${i}: ${x} vs ${y} (atol ${atol}, rtol ${rtol})`);
  }
}
