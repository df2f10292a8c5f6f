/**
 * A hung worker under `chainrule train`: the step timeout names it; while a step is overdue the
 * progress line says which worker holds it up; the first Ctrl-C aborts a step that does not
 * finish within the grace period, writes nothing and exits 130 with the last checkpoint intact.
 */
import { describe, expect, it } from "vitest";
import { spawn } from "node:child_process";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { MAIN, REPO, cli, expectOneLineError, tempDir, writeJobIn } from "./cli-helpers.ts";

const TMP = tempDir("chainrule-hang-");
const FIX = join(REPO, "test/fixtures");

/** A 2-worker job whose model hangs in the workers at their `hangAtCall`-th forward, checkpointing every 2 steps. */
function hangingJob(name: string, hangAtCall: number, stepTimeout: number | "auto"): string {
  return writeJobIn(TMP, name, {
    model: { type: "module", module: join(FIX, "cli-model.ts"), export: "hangsAt", options: { hangAtCall } },
    data: { type: "mnist", limitTrain: 400, limitHeldOut: 50 }, epochs: 1, batchSize: 40, workers: 2, seed: 1,
    checkpoint: { everySteps: 2 }, stepTimeout,
  });
}

describe("a hung worker", () => {
  it("is reported after the step timeout, naming the worker, the step and the phase", async () => {
    const run = join(TMP, "timeout");
    const t0 = performance.now();
    const r = await cli(["train", hangingJob("timeout", 4, 3), "--out", run]);
    expectOneLineError(r, /step 4: workers? [01](, 1)? timed out in grad after 3000 ms; threads terminated \(parameters unchanged\)/, 1);
    expect(performance.now() - t0).toBeLessThan(40_000);
  }, 60_000);

  it("shows on the progress line while overdue; the first Ctrl-C aborts it after the grace period: exit 130, nothing written", async () => {
    const run = join(TMP, "sigint");
    const child = spawn(process.execPath, ["--import", "tsx", MAIN, "train", hangingJob("sigint", 4, 120), "--out", run], {
      cwd: REPO, env: { ...process.env, CHAINRULE_PLAIN: "1" }, stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "", stderr = "", sentAt = 0;
    child.stdout.on("data", (d) => {
      stdout += d;
      if (!sentAt && /waiting for workers? [01].* \(grad\): \d+ s/.test(stdout)) {
        sentAt = performance.now();
        child.kill("SIGINT");
      }
    });
    child.stderr.on("data", (d) => (stderr += d));
    const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
    expect(sentAt, stdout + stderr).toBeGreaterThan(0);
    expect(code, stdout + stderr).toBe(130);
    expect(performance.now() - sentAt).toBeLessThan(20_000);
    expect(stdout).toMatch(/interrupted \(SIGINT\): step 4: aborted \(SIGINT\) while waiting for workers? .*in grad; threads terminated \(parameters unchanged\); nothing written, the last checkpoint \(.*step-0*2\) is intact/);
    expect(stdout).toContain(`resume with: npx -y pnpm@10 chainrule train --resume --out ${run}`);
    expect(readdirSync(join(run, "checkpoints")).filter((d) => !d.startsWith("."))).toEqual([expect.stringMatching(/step-0*2$/)]);
  }, 90_000);
});
