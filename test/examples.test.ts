import { describe, it, expect } from "vitest";
import { spawn } from "node:child_process";
import ts from "typescript";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { createRequire } from "node:module";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { REPO } from "./cli-helpers.ts";
import * as linear from "../examples/linear-regression.js";
import * as logistic from "../examples/logistic-regression.js";

/** Least squares y ≈ w·x + b over the example's own data, in closed form (float64). */
function leastSquares(x: Float32Array, y: Float32Array): { w: number; b: number } {
  const n = x.length;
  let mx = 0, my = 0;
  for (let i = 0; i < n; i++) { mx += x[i]; my += y[i]; }
  mx /= n; my /= n;
  let sxy = 0, sxx = 0;
  for (let i = 0; i < n; i++) { sxy += (x[i] - mx) * (y[i] - my); sxx += (x[i] - mx) ** 2; }
  const w = sxy / sxx;
  return { w, b: my - w * mx };
}

describe("examples/linear-regression", () => {
  const { x, y } = linear.makeData();
  const ls = leastSquares(x.data, y.data);

  it("the data is y = 2x + 1 + noise (least squares lands near the truth)", () => {
    expect(x.shape).toEqual([100, 1]);
    expect(Math.abs(ls.w - 2)).toBeLessThan(0.05);
    expect(Math.abs(ls.b - 1)).toBeLessThan(0.05);
  });

  it("run for 1000 epochs, lands on the closed-form least-squares solution within 1e-3", () => {
    const { w, b } = linear.train(1000, 0.01);
    expect(Math.abs(w - ls.w)).toBeLessThan(1e-3);
    expect(Math.abs(b - ls.b)).toBeLessThan(1e-3);
  });

  it("with the textbook 100 epochs at lr 0.01 it is still on its way, and the loss falls every epoch", () => {
    const { w, b, losses } = linear.train(100, 0.01);
    expect(w).toBeGreaterThan(1.7);
    expect(w).toBeLessThan(1.9); // well short of ~2
    expect(Math.abs(w - ls.w)).toBeGreaterThan(0.1);
    expect(Math.abs(b - ls.b)).toBeGreaterThan(1e-3);
    expect(losses).toHaveLength(100);
    for (let i = 1; i < losses.length; i++) expect(losses[i]).toBeLessThan(losses[i - 1]);
  });

  it("is reproducible: two runs give bit-identical weights", () => {
    const a = linear.train(20, 0.01), b = linear.train(20, 0.01);
    expect(b.w).toBe(a.w);
    expect(b.b).toBe(a.b);
  });
});

describe("examples/logistic-regression", () => {
  it("separates the two blobs (accuracy ≥ 0.9) and the loss goes down", () => {
    const { x, y } = logistic.makeData();
    expect(x.shape).toEqual([200, 2]);
    expect(y.data.reduce((a, v) => a + v, 0)).toBe(100);
    const { accuracy, losses, weight } = logistic.train();
    expect(accuracy).toBeGreaterThanOrEqual(0.9);
    expect(losses[losses.length - 1]).toBeLessThan(0.5 * losses[0]);
    // The boundary is roughly the diagonal x1 + x2 = 0: both weights positive and similar.
    expect(weight[0]).toBeGreaterThan(0);
    expect(weight[1]).toBeGreaterThan(0);
  });

  it("accuracy() counts σ(logit) > 0.5 as class 1", async () => {
    const { tensor } = await import("@chainrule/core");
    expect(logistic.accuracy(tensor([[2], [-1], [0.5], [-3]]), tensor([[1], [0], [0], [0]]))).toBe(0.75);
  });
});

/** The code of an example file, without its header comment. */
function exampleCode(file: string): string {
  return readFileSync(join(REPO, file), "utf8").replace(/^\/\*\*[\s\S]*?\*\/\n/, "").trim();
}

/** The README's ```ts block after `heading`. */
function readmeBlock(heading: string): string {
  const s = readFileSync(join(REPO, "README.md"), "utf8");
  const at = s.indexOf(heading);
  expect(at, heading).toBeGreaterThanOrEqual(0);
  const m = /```ts\n([\s\S]*?)```/.exec(s.slice(at));
  return m![1].trim();
}

/** Runs an example with tsx in `cwd`; resolves to its stdout. */
function runExample(file: string, args: string[], cwd: string): Promise<string> {
  return new Promise((resolve, reject) => {
    // tsx by its own path: `cwd` may be outside the repository.
    const tsx = pathToFileURL(createRequire(join(REPO, "package.json")).resolve("tsx")).href;
    const c = spawn(process.execPath, ["--import", tsx, join(REPO, file), ...args], { cwd, stdio: ["ignore", "pipe", "pipe"] });
    let out = "", err = "";
    c.stdout.on("data", (d) => (out += d));
    c.stderr.on("data", (d) => (err += d));
    c.on("close", (code) => (code === 0 ? resolve(out) : reject(new Error(`${file} exited ${code}: ${err}`))));
  });
}

describe("the README's code is the examples' code, and it type-checks and runs", () => {
  it("the API tour (examples/api-tour.ts): the gradient, a training step, a checkpoint", async () => {
    expect(readmeBlock("## Library API tour")).toBe(exampleCode("examples/api-tour.ts"));
    const dir = mkdtempSync(join(tmpdir(), "chainrule-tour-"));
    const out = await runExample("examples/api-tour.ts", [], dir);
    expect(out).toContain("[ [ 7, 11 ], [ 9, 13 ] ]");
    expect(Number(/loss (\d+\.\d+)/.exec(out)![1])).toBeGreaterThan(0);
    expect(existsSync(join(dir, "ckpt", "model.safetensors"))).toBe(true);
  }, 60_000);

  it("data-parallel training from code (examples/data-parallel-mnist.ts, 2 workers, 1 epoch) learns the digits", async () => {
    expect(readmeBlock("## Data-parallel training from code")).toBe(exampleCode("examples/data-parallel-mnist.ts"));
    const out = await runExample("examples/data-parallel-mnist.ts", ["2", "1"], REPO);
    expect(Number(/accuracy (\d+\.\d+)%/.exec(out)![1])).toBeGreaterThan(80);
    expect(out).toMatch(/two more steps: loss \d/);
  }, 120_000);

  it("both type-check under the project's strict settings", () => {
    // The project's compiler options (tsconfig.json), these two files and what they import.
    const config = ts.getParsedCommandLineOfConfigFile(join(REPO, "tsconfig.json"), {}, { ...ts.sys, onUnRecoverableConfigFileDiagnostic: () => {} })!;
    const files = ["examples/api-tour.ts", "examples/data-parallel-mnist.ts"].map((f) => join(REPO, f));
    const program = ts.createProgram(files, { ...config.options, noEmit: true });
    const errors = ts.getPreEmitDiagnostics(program).map((d) => ts.flattenDiagnosticMessageText(d.messageText, "\n"));
    expect(errors).toEqual([]);
  }, 120_000);
});
