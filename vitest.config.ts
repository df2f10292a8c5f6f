import { configDefaults, defineConfig } from "vitest/config";

/**
 * One `vitest run`, three projects:
 * - core under the js backend (CHAINRULE_BACKEND=js), and core again under the backend the
 *   environment picks (auto when unset: blas where OpenBLAS loads, else js). Ops, kernels,
 *   nn, models, optimizers and autograd are what differs between backends.
 * - integration once, under the environment's backend: the CLI in child processes, DataParallel
 *   with worker threads, and the unit tests of packages/parallel and packages/cli. They run the
 *   same kernels as core, through the layers above them.
 */
const CORE = ["packages/core/src/**/*.test.ts"];

export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: "forks",
    projects: [
      // The WebAssembly kernels' own tests call the kernels directly, whatever the backend: once is enough.
      { extends: true, test: { name: "core-js", include: CORE, exclude: [...configDefaults.exclude, "packages/core/src/kernels/simd/**"], env: { CHAINRULE_BACKEND: "js" } } },
      { extends: true, test: { name: "core-auto", include: CORE } },
      { extends: true, test: { name: "integration", include: ["test/**/*.test.ts", "packages/parallel/src/**/*.test.ts", "packages/cli/src/**/*.test.ts"] } },
    ],
  },
});
