/**
 * The packages outside this repository, as a user gets them: `pnpm pack` builds
 * @chainrule/core, /parallel and /cli (prepack: tsc → dist/) and writes tarballs whose
 * package.json points at dist/ (publishConfig) and names real versions instead of
 * workspace:*; npm installs them into a new ES module project in the OS temp dir; there,
 * plain node runs the README's API tour and data-parallel example, tsc checks a TypeScript
 * file against the declarations, and `npx chainrule train` runs the default job and jobs
 * with the user's own model in .js, .mjs and .ts on 1 and 2 workers.
 *
 * Needs the npm registry (the packages' dependencies install from it). Packaging does not
 * depend on the kernel backend, so the suite's js-backend pass (CHAINRULE_BACKEND=js) skips
 * this file and the other pass runs it once.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawn } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const REPO = join(dirname(fileURLToPath(import.meta.url)), "..");
const FIX = join(REPO, "test/fixtures/package-install");
const PACKAGES = ["core", "parallel", "cli"];

interface Result { code: number | null; stdout: string; stderr: string }

/** Runs `cmd args` in `cwd` (no shell) and collects its output; a user's environment, plain progress lines. */
function run(cmd: string, args: string[], cwd: string, env: Record<string, string> = {}): Promise<Result> {
  const base: NodeJS.ProcessEnv = { ...process.env, CHAINRULE_PLAIN: "1", ...env };
  delete base.NODE_OPTIONS;
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd, env: base, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "", stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

/** Expects exit status 0, showing the command's output otherwise. */
function ok(r: Result): Result {
  expect(r.code, `exit ${r.code}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`).toBe(0);
  return r;
}

/** The held-out accuracy (%) a training run or the example prints. */
function heldOutAccuracy(out: string): number {
  const m = /held-out accuracy:? ([\d.]+)%/.exec(out);
  expect(m, out).not.toBeNull();
  return Number(m![1]);
}

/** The newest checkpoint directory of a run. */
function latestCheckpoint(run: string): string {
  const names = readdirSync(join(run, "checkpoints")).filter((n) => n.startsWith("step-")).sort();
  expect(names.length).toBeGreaterThan(0);
  return join(run, "checkpoints", names[names.length - 1]);
}

const skip = process.env.CHAINRULE_BACKEND === "js";
const WORK = skip ? "" : mkdtempSync(join(tmpdir(), "chainrule-install-"));
const PACKS = join(WORK, "tarballs");
const APP = join(WORK, "app");

describe.skipIf(skip)("the packed packages installed into a new project outside the repository", () => {
  beforeAll(async () => {
    expect(WORK.startsWith(REPO)).toBe(false);
    mkdirSync(PACKS);
    mkdirSync(APP);
    ok(await run("npx", ["-y", "pnpm@10", "-r", "--filter", "./packages/*", "pack", "--pack-destination", PACKS], REPO));
    const tarballs = readdirSync(PACKS).filter((n) => n.endsWith(".tgz"));
    expect(tarballs.sort()).toEqual(PACKAGES.map((p) => `chainrule-${p}-0.1.0.tgz`).sort());

    ok(await run("npm", ["init", "-y"], APP));
    ok(await run("npm", ["pkg", "set", "type=module"], APP));
    const dev = JSON.parse(readFileSync(join(REPO, "package.json"), "utf8")).devDependencies ?? {};
    const tools = [`typescript@${dev.typescript ?? "~5.9.0"}`, `@types/node@${dev["@types/node"] ?? "^20.19.0"}`];
    ok(await run("npm", ["install", "--no-audit", "--no-fund", ...tarballs.map((t) => join(PACKS, t)), ...tools], APP));
    for (const f of readdirSync(FIX)) cpSync(join(FIX, f), join(APP, f));
  }, 600_000);

  afterAll(() => {
    if (WORK) rmSync(WORK, { recursive: true, force: true });
  });

  it("each installed package is its built JavaScript and declarations, depending on the others by version", () => {
    for (const p of PACKAGES) {
      const dir = join(APP, "node_modules/@chainrule", p);
      const pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));
      expect(existsSync(join(dir, "src")), `${p} ships src/`).toBe(false);
      expect(pkg.types).toBe("./dist/index.d.ts");
      for (const [sub, target] of Object.entries(pkg.exports as Record<string, { types: string; default: string }>)) {
        expect(target.default, `${p} exports ${sub}`).toMatch(/^\.\/dist\/.*\.js$/);
        expect(existsSync(join(dir, target.default)), `${p}: ${target.default}`).toBe(true);
        expect(existsSync(join(dir, target.types)), `${p}: ${target.types}`).toBe(true);
      }
      for (const [dep, range] of Object.entries(pkg.dependencies as Record<string, string>)) {
        expect(range, `${p} → ${dep}`).not.toMatch(/^workspace:/);
      }
    }
    expect(existsSync(join(APP, "node_modules/@chainrule/parallel/dist/worker-entry.mjs"))).toBe(true);
  });

  it("node app.mjs runs the README's API tour: gradients, a training step, a checkpoint", async () => {
    const r = ok(await run("node", ["app.mjs"], APP));
    expect(r.stdout).toContain("grad [[7,11],[9,13]]");
    expect(r.stdout).toContain("output [64,10]");
    expect(Number(/loss ([\d.]+)/.exec(r.stdout)![1])).toBeGreaterThan(0);
    expect(existsSync(join(APP, "ckpt/model.safetensors"))).toBe(true);
    expect(existsSync(join(APP, "ckpt/state.json"))).toBe(true);
  }, 120_000);

  it("node dp.mjs trains data-parallel over 2 worker threads (the built worker entry)", async () => {
    const r = ok(await run("node", ["dp.mjs"], APP));
    expect(heldOutAccuracy(r.stdout)).toBeGreaterThan(50);
  }, 120_000);

  it("tsc --noEmit type-checks a TypeScript user of the three packages against the declarations", async () => {
    ok(await run("npx", ["tsc", "-p", "tsconfig.json"], APP));
  }, 120_000);

  it("npx chainrule info names the installed packages", async () => {
    const r = ok(await run("npx", ["chainrule", "info"], APP));
    expect(r.stdout).toMatch(/@chainrule\/core 0\.1\.0, @chainrule\/parallel 0\.1\.0, @chainrule\/cli 0\.1\.0/);
  }, 120_000);

  it("npx chainrule train runs the default job on the embedded digits and writes a checkpoint", async () => {
    const r = ok(await run("npx", ["chainrule", "train", "--epochs", "1", "--set", "data.limitTrain=500", "--out", "runs/default"], APP));
    expect(heldOutAccuracy(r.stdout)).toBeGreaterThan(15);
    expect(existsSync(join(latestCheckpoint(join(APP, "runs/default")), "model.safetensors"))).toBe(true);
  }, 120_000);

  it("jobs with the user's own model in .js, .mjs and .ts train on 1 and 2 workers (the same model, the same result)", async () => {
    for (const workers of [1, 2]) {
      const accuracies: number[] = [];
      for (const ext of ["js", "mjs", "ts"]) {
        const job = { name: `net-${ext}`, model: { type: "module", module: `./net.${ext}`, export: "create", options: { hidden: 32 } }, epochs: 1, data: { type: "mnist", limitTrain: 500 } };
        writeFileSync(join(APP, `job-${ext}.json`), JSON.stringify(job));
        const out = `runs/${ext}-${workers}`;
        const r = ok(await run("npx", ["chainrule", "train", `job-${ext}.json`, "--workers", String(workers), "--out", out], APP));
        expect(r.stdout).toMatch(workers === 1 ? /\b1 worker\b/ : /\b2 worker threads\b/);
        accuracies.push(heldOutAccuracy(r.stdout));
        expect(existsSync(join(latestCheckpoint(join(APP, out)), "model.safetensors"))).toBe(true);
      }
      expect(new Set(accuracies).size, `accuracies ${accuracies}`).toBe(1);
    }
  }, 240_000);

  it("a .ts model in a CommonJS package fails with a one-line error that says what to change", async () => {
    mkdirSync(join(APP, "cjs"));
    writeFileSync(join(APP, "cjs/package.json"), JSON.stringify({ type: "commonjs" }));
    cpSync(join(FIX, "net.ts"), join(APP, "cjs/net.ts"));
    writeFileSync(join(APP, "job-cjs.json"), JSON.stringify({ model: { type: "module", module: "./cjs/net.ts", export: "create" }, epochs: 1, data: { type: "mnist", limitTrain: 100 } }));
    const r = await run("npx", ["chainrule", "train", "job-cjs.json", "--workers", "1", "--out", "runs/cjs"], APP);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`"type": "module"`);
  }, 120_000);
});
