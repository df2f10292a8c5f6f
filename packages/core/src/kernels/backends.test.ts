import { afterAll, describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { F, backendReport, kernels, manualSeed, nn, optim, rand, useBackend } from "../index.js";
import { coreTypeAdvice, cpuFlags, loadBlas, tryLoadBlas } from "./blas/loader.js";

const blasFound = loadBlas().ok;
const initial = backendReport().name;
afterAll(() => useBackend(initial));

/** One seeded MLP (784-64-32-10 keeps it quick), a few Adam steps; returns losses, parameters and gradients. */
function trainOn(backend: "js" | "blas", steps = 3) {
  useBackend(backend);
  expect(kernels().name).toBe(backend);
  manualSeed(11);
  const model = new nn.Sequential(new nn.Linear(784, 64), new nn.ReLU(), new nn.Linear(64, 32), new nn.ReLU(), new nn.Linear(32, 10));
  nn.flattenParameters(model, { shared: true });
  const opt = new optim.Adam(model.parameters(), { lr: 1e-3 });
  const x = rand([37, 784]);
  const y = Array.from({ length: 37 }, (_, i) => (i * 7) % 10);
  const losses: number[] = [];
  let grads: number[] = [];
  for (let s = 0; s < steps; s++) {
    opt.zeroGrad();
    const loss = F.crossEntropy(model.forward(x), y);
    loss.backward();
    if (s === 0) grads = model.parameters().flatMap((p) => Array.from(p.grad!.data));
    opt.step();
    losses.push(loss.item());
  }
  return { losses, grads, params: model.parameters().flatMap((p) => Array.from(p.data)) };
}

function maxRelDiff(a: number[], b: number[]): number {
  let scale = 0, worst = 0;
  for (const v of b) scale = Math.max(scale, Math.abs(v));
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst / Math.max(scale, 1e-30);
}

describe("backend selection", () => {
  it("reports what was picked and why, in one line", () => {
    const r = useBackend("auto");
    expect(r.name).toBe(blasFound ? "blas" : "js");
    expect(r.reason).not.toContain("\n");
    expect(r.reason).toMatch(blasFound ? /cblas_sgemm from/ : /no BLAS|koffi/);
    expect(useBackend("js")).toMatchObject({ name: "js" });
    expect(backendReport().name).toBe("js");
  });

  it("rejects an unknown backend name", () => {
    expect(() => useBackend("cuda" as "js")).toThrow(/unknown backend/);
  });

  it("names every library it tried when none loads", () => {
    const r = tryLoadBlas(["libdoesnotexist-a.so.1", "libdoesnotexist-b.so.2"]);
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.error).toContain("libdoesnotexist-a.so.1");
      expect(r.error).toContain("libdoesnotexist-b.so.2");
    }
  });

  it("CHAINRULE_BACKEND=blas with no BLAS available throws an error naming the library tried", () => {
    const index = fileURLToPath(new URL("../index.ts", import.meta.url));
    const script = `import(${JSON.stringify(index)}).then((c) => { try { c.kernels(); console.log("no error"); } catch (e) { console.log(e.message); } })`;
    const out = execFileSync(process.execPath, ["--import", "tsx", "-e", script], {
      env: { ...process.env, CHAINRULE_BACKEND: "blas", CHAINRULE_BLAS_LIB: "libchainrule-missing.so.7" },
      encoding: "utf8",
    });
    expect(out).toMatch(/blas was requested but is unavailable/);
    expect(out).toContain("libchainrule-missing.so.7");
  });

  it.skipIf(!blasFound)("CHAINRULE_BACKEND=js forces js even where BLAS exists", () => {
    const index = fileURLToPath(new URL("../index.ts", import.meta.url));
    const script = `import(${JSON.stringify(index)}).then((c) => console.log(c.kernels().name, "|", c.backendReport().reason))`;
    const out = execFileSync(process.execPath, ["--import", "tsx", "-e", script], { env: { ...process.env, CHAINRULE_BACKEND: "js" }, encoding: "utf8" });
    expect(out.trim()).toMatch(/^js \| js: forced/);
  });
});

describe.skipIf(!blasFound)("js and blas backends agree on an MLP training step", () => {
  it("losses, first-step gradients and parameters after 3 Adam steps match within float32 tolerance", () => {
    const a = trainOn("js"), b = trainOn("blas");
    for (let i = 0; i < a.losses.length; i++) expect(b.losses[i]).toBeCloseTo(a.losses[i], 5);
    expect(maxRelDiff(b.grads, a.grads)).toBeLessThan(1e-5);
    // Adam divides by sqrt(v), which amplifies rounding differences in tiny gradients; seen here: ~1e-5.
    let worst = 0;
    for (let i = 0; i < a.params.length; i++) worst = Math.max(worst, Math.abs(a.params[i] - b.params[i]));
    expect(worst).toBeLessThan(1e-4);
  });
});

describe.skipIf(!blasFound)("blas addRowVector (a K = 1 GEMM)", () => {
  it("is bit-identical to the js loop, small and large, and leaves other rows alone", () => {
    for (const [rows, cols] of [[3, 5], [768, 128], [33, 257]]) {
      const out = rand([rows * cols + 7]).data, bias = rand([cols]).data;
      const a = out.slice(), b = out.slice();
      useBackend("js");
      kernels().addRowVector(a.subarray(0, rows * cols), bias, rows, cols);
      useBackend("blas");
      kernels().addRowVector(b.subarray(0, rows * cols), bias, rows, cols);
      expect(b).toEqual(a);
      for (let i = rows * cols; i < out.length; i++) expect(b[i]).toBe(out[i]); // past the end: untouched
      expect(a[rows * cols - 1]).toBe(Math.fround(out[rows * cols - 1] + bias[cols - 1]));
    }
  });
});

describe("OpenBLAS kernel target check", () => {
  const haswellFlags = new Set(["sse3", "avx", "avx2", "fma"]);
  const avx512Flags = new Set([...haswellFlags, "avx512f", "avx512bw", "avx512vl", "avx512dq"]);

  it("advises a target when OpenBLAS fell back to a pre-AVX2 one on an AVX2 CPU", () => {
    expect(coreTypeAdvice("Prescott", haswellFlags, undefined)).toMatch(/Prescott kernels.*OPENBLAS_CORETYPE=Haswell/);
    // As seen on a 16-core Xeon VM with AVX-512 (OpenBLAS 0.3.21).
    expect(coreTypeAdvice("Prescott", avx512Flags, undefined)).toMatch(/AVX-512.*OPENBLAS_CORETYPE=SkylakeX/);
    expect(coreTypeAdvice("sandybridge", haswellFlags, "")).toMatch(/OPENBLAS_CORETYPE=Haswell/);
  });

  it("stays silent when the target fits, the CPU lacks AVX2, the user chose one, or the library is not OpenBLAS", () => {
    expect(coreTypeAdvice("Haswell", avx512Flags, undefined)).toBeNull();
    expect(coreTypeAdvice("Zen", haswellFlags, undefined)).toBeNull();
    expect(coreTypeAdvice("Prescott", new Set(["sse3", "avx"]), undefined)).toBeNull();
    expect(coreTypeAdvice("Prescott", avx512Flags, "Prescott")).toBeNull();
    expect(coreTypeAdvice(null, avx512Flags, undefined)).toBeNull();
  });

  it("reads the flags line of /proc/cpuinfo, and nothing when it cannot", () => {
    const text = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse3 avx2 fma avx512f\nbugs\t\t: spectre_v1\nprocessor\t: 1\nflags\t\t: fpu\n";
    expect([...cpuFlags(() => text)]).toEqual(["fpu", "sse3", "avx2", "fma", "avx512f"]);
    expect(cpuFlags(() => { throw new Error("ENOENT"); }).size).toBe(0);
  });

  it.skipIf(!blasFound)("names OpenBLAS's kernel target when the library is OpenBLAS", () => {
    const r = loadBlas();
    if (!r.ok) return;
    if (/OpenBLAS/.test(r.lib.description)) expect(r.lib.core).toMatch(/^\w+$/);
    else expect(r.lib.core).toBeNull();
  });
});
