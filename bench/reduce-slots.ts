/**
 * The reduce of a host's gradient slots (packages/parallel reduce.ts reduceRange: Σ_k w_k·slot_k
 * in rank order) alone, over N floats from W slots: the JavaScript loop against core's SIMD
 * kernels in place on the WebAssembly memory that holds the slots, the gradient and the weights
 * (what the ranks' reduce and the exchange thread run). The variants alternate in each round;
 * medians. The SIMD result's bits are checked against the loop's first.
 *
 *   tsx bench/reduce-slots.ts [--floats 524288] [--slots 2,3,4] [--rounds 41]
 */
import { loadavg } from "node:os";
import { registerSimdMemory, sharedMemory } from "../packages/core/src/internal.js";
import { reduceRange } from "../packages/parallel/src/reduce.js";
import { alternatingMedians, flag, numList, runIfMain, table } from "./_util.js";

function measure(n: number, W: number, rounds: number): Record<string, string | number> {
  const region = Math.ceil((4 * n) / 64) * 64, slotsAt = region, wAt = slotsAt + W * region;
  const mem = sharedMemory(wAt + 8 * W);
  const kernels = registerSimdMemory(mem);
  if (kernels === null) throw new Error("WebAssembly SIMD is off or missing");
  const g = new Float32Array(mem.buffer, 0, n);
  const slots = Array.from({ length: W }, (_, k) => new Float32Array(mem.buffer, slotsAt + k * region, n));
  slots.forEach((s, k) => { for (let i = 0; i < n; i++) s[i] = Math.sin(i + k) * 1e-3; });
  const w = new Float64Array(mem.buffer, wAt, W);
  for (let k = 0; k < W; k++) w[k] = (k + 1) / ((W * (W + 1)) / 2);
  const variants: [string, () => void][] = [
    ["loop", () => reduceRange(g, slots, w, 0, n, false)],
    ["SIMD in place", () => reduceRange(g, slots, w, 0, n, false, kernels)],
  ];
  variants[0][1]();
  const want = g.slice();
  g.fill(0);
  variants[1][1]();
  for (let i = 0; i < n; i++) if (!Object.is(g[i], want[i])) throw new Error(`SIMD: element ${i} differs from the loop`);
  const medians = alternatingMedians(variants, rounds);
  const row: Record<string, string | number> = { slots: W, floats: n };
  variants.forEach(([name], v) => (row[`${name} ms`] = medians[v].toFixed(3)));
  return row;
}

runIfMain(import.meta.url, "reduce-slots", async (args) => {
  const n = Number(flag(args, "floats", "524288")), rounds = Number(flag(args, "rounds", "41"));
  const rows = numList(args, "slots", [2, 3, 4]).map((W) => measure(n, W, rounds));
  table(rows);
  const load = loadavg()[0].toFixed(2);
  console.log(`load average ${load}`);
  return { rows, load };
});
