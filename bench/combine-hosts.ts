/**
 * The combine of the hosts' gradients (packages/parallel reduce.ts combineHosts) alone, per bucket
 * of N floats from H hosts: the JavaScript loop, the SIMD kernel in place on the WebAssembly memory
 * that holds the operands (what the exchange runs), and the same kernel fed by copying each host's
 * values into that memory in chunks of 4,096 floats (what the exchange would do with plain receive
 * buffers). With 16-bit gradients (gradientCompression bf16): core's decodeHalf then the loop, decodeHalf
 * then the SIMD combine in place, and the fused pass (combineHostHalves: widen, weigh and sum at
 * once). The variants alternate in each round; medians. Every variant's bits are checked against the loop first.
 *
 *   tsx bench/combine-hosts.ts [--floats 524288] [--hosts 2,3] [--rounds 41]
 */
import { loadavg } from "node:os";
import { registerSimdMemory, sharedMemory } from "../packages/core/src/internal.js";
import { decodeHalf, encodeHalf } from "../packages/core/src/index.js";
import { type CombineKernels, combineHostHalves, combineHosts } from "../packages/parallel/src/reduce.js";
import { alternatingMedians, flag, numList, runIfMain, table } from "./_util.js";

const CHUNK = 4096;

function measure(n: number, H: number, rounds: number): Record<string, string | number> {
  const outAt = 0, allAt = 4 * n, chunkAt = allAt + 4 * H * n, halvesAt = chunkAt + 4 * H * CHUNK, wAt = halvesAt + 2 * H * n;
  const mem = sharedMemory(wAt + 8 * H);
  const kernels = registerSimdMemory(mem);
  if (kernels === null) throw new Error("WebAssembly SIMD is off or missing");
  const simd: CombineKernels = { kernels, weights: new Float64Array(mem.buffer, wAt, H) };
  const out = new Float32Array(mem.buffer, outAt, n), allInside = new Float32Array(mem.buffer, allAt, H * n);
  const chunk = new Float32Array(mem.buffer, chunkAt, H * CHUNK), all = new Float32Array(H * n);
  for (let i = 0; i < all.length; i++) all[i] = Math.sin(i) * 1e-3;
  const halves = new Uint16Array(mem.buffer, halvesAt, H * n), plainHalves = new Uint16Array(H * n);
  encodeHalf("bf16", plainHalves, all);
  halves.set(plainHalves);
  decodeHalf("bf16", all, plainHalves); // every variant sums the same values
  allInside.set(all);
  const w = Array.from({ length: H }, (_, h) => (h + 1) / ((H * (H + 1)) / 2));
  const variants: [string, () => void][] = [
    ["loop", () => combineHosts(out, 0, all, n, 0, n, w)],
    ["SIMD in place", () => combineHosts(out, 0, allInside, n, 0, n, w, simd)],
    ["SIMD, copied in chunks", () => {
      for (let a = 0; a < n; a += CHUNK) {
        const m = Math.min(CHUNK, n - a);
        for (let h = 0; h < H; h++) chunk.set(all.subarray(h * n + a, h * n + a + m), h * CHUNK);
        combineHosts(out, a, chunk, CHUNK, 0, m, w, simd);
      }
    }],
    ["bf16: decode, loop", () => {
      decodeHalf("bf16", all, plainHalves);
      combineHosts(out, 0, all, n, 0, n, w);
    }],
    ["bf16: decode, SIMD in place", () => {
      decodeHalf("bf16", allInside, plainHalves);
      combineHosts(out, 0, allInside, n, 0, n, w, simd);
    }],
    ["bf16: fused SIMD", () => combineHostHalves("bf16", out, 0, halves, n, 0, n, w, simd)],
  ];
  const want = new Float32Array(n);
  variants[0][1]();
  want.set(out);
  for (const [name, run] of variants) {
    out.fill(0);
    run();
    for (let i = 0; i < n; i++) if (!Object.is(out[i], want[i])) throw new Error(`${name}: element ${i} differs from the loop`);
  }
  const medians = alternatingMedians(variants, rounds);
  const row: Record<string, string | number> = { hosts: H, floats: n };
  variants.forEach(([name], v) => (row[`${name} ms`] = medians[v].toFixed(3)));
  return row;
}

runIfMain(import.meta.url, "combine-hosts", async (args) => {
  const n = Number(flag(args, "floats", "524288")), rounds = Number(flag(args, "rounds", "41"));
  const rows = numList(args, "hosts", [2, 3]).map((H) => measure(n, H, rounds));
  table(rows);
  const load = loadavg()[0].toFixed(2);
  console.log(`load average ${load}`);
  return { rows, load };
});
