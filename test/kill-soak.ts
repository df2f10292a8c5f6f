/**
 * kill -9 soak (not part of the default suite: it takes minutes):
 *
 *   npx -y pnpm@10 exec tsx test/kill-soak.ts [KILLS (30)] [SEED (1)]
 *
 * Trains a 2-worker run with a checkpoint every 3 steps and SIGKILLs the trainer at random
 * moments (start-up, mid-step, mid-checkpoint) KILLS times; after each kill, `chainrule eval`
 * must load the run's latest checkpoint, and `train --resume` continues. Then the run is
 * resumed to its end and its final tensors compared, byte for byte, with an uninterrupted run.
 * Prints the kills, unloadable checkpoints, temporaries left after the last resume, and whether
 * the final parameters are bit-identical; exits 1 if any of the three is not as it must be.
 */
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Generator, loadSafetensors } from "@chainrule/core";

const REPO = join(dirname(fileURLToPath(import.meta.url)), "..");
const MAIN = join(REPO, "packages/cli/src/main.ts");

const kills = Number(process.argv[2] ?? 30);
const rng = new Generator(Number(process.argv[3] ?? 1));
const tmp = mkdtempSync(join(tmpdir(), "chainrule-soak-"));
const job = join(tmp, "soak.json");
writeFileSync(job, JSON.stringify({
  model: { type: "mlp", hidden: [64] }, data: { type: "mnist", limitTrain: 2000, limitHeldOut: 100 },
  optimizer: { type: "adam", lr: 0.002 }, epochs: 25, batchSize: 40, workers: 2, seed: 1,
  checkpoint: { everySteps: 3, keep: 3 }, log: { everySteps: 1 },
}));

/** Runs the CLI to its end: exit code and stderr. */
function cli(args: string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ["--import", "tsx", MAIN, ...args], { cwd: REPO, env: { ...process.env, CHAINRULE_PLAIN: "1" }, stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (d) => (stderr += d));
    child.on("close", (code) => resolve({ code, stderr }));
  });
}

/** The tensors of a run's newest checkpoint, as bytes by name. */
function finalTensors(run: string): Map<string, Buffer> {
  const names = readdirSync(join(run, "checkpoints")).filter((n) => n.startsWith("step-")).sort();
  const { tensors } = loadSafetensors(join(run, "checkpoints", names[names.length - 1], "model.safetensors"));
  return new Map(Object.entries(tensors).map(([k, t]) => [k, Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength)]));
}

/**
 * Starts the trainer (the node process itself, so the kill reaches it) and SIGKILLs it: during
 * start-up (a quarter of the kills, 0-2 s after the start), else 0-1.5 s after it began training
 * (its start or resume record in metrics.jsonl), so the kills land in steps and checkpoint writes
 * however loaded the machine is. Resolves with its exit code (null when killed).
 */
function trainAndKill(args: string[], run: string): Promise<number | null> {
  const metrics = join(run, "metrics.jsonl");
  const records = () => (existsSync(metrics) ? readFileSync(metrics, "utf8").split("\n").length : 0);
  const before = records();
  const duringStartUp = rng.random() < 0.25;
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ["--import", "tsx", MAIN, ...args], { cwd: REPO, env: { ...process.env, CHAINRULE_PLAIN: "1" }, stdio: "ignore" });
    let timer = duringStartUp ? setTimeout(() => child.kill("SIGKILL"), rng.random() * 2000) : undefined;
    const poll = duringStartUp ? undefined : setInterval(() => {
      if (records() <= before) return;
      clearInterval(poll);
      timer = setTimeout(() => child.kill("SIGKILL"), rng.random() * 1500);
    }, 20);
    child.on("close", (code) => {
      clearTimeout(timer);
      clearInterval(poll);
      resolve(code);
    });
  });
}

const checkpoints = (run: string) => (existsSync(join(run, "checkpoints")) ? readdirSync(join(run, "checkpoints")) : []);

const reference = join(tmp, "reference");
const full = await cli(["train", job, "--out", reference]);
if (full.code !== 0) throw new Error(`the uninterrupted run failed: ${full.stderr}`);

const run = join(tmp, "killed");
let done = 0, unloadable = 0, finishedEarly = false;
for (let k = 0; k < kills; k++) {
  const fresh = !checkpoints(run).some((n) => n.startsWith("step-"));
  if (fresh) rmSync(run, { recursive: true, force: true }); // killed before its first checkpoint: start again, as a supervisor would
  const code = await trainAndKill(fresh ? ["train", job, "--out", run] : ["train", "--resume", "--out", run], run);
  if (code === 0) {
    finishedEarly = true;
    break;
  }
  done++;
  if (checkpoints(run).some((n) => n.startsWith("step-"))) {
    const ev = await cli(["eval", run]);
    if (ev.code !== 0) {
      unloadable++;
      process.stderr.write(`kill ${k + 1}: eval failed: ${ev.stderr}`);
    }
  }
  process.stdout.write(`kill ${k + 1}: ${checkpoints(run).join(" ")}\n`);
}
const started = checkpoints(run).some((n) => n.startsWith("step-"));
if (!started) rmSync(run, { recursive: true, force: true });
const last = await cli(started ? ["train", "--resume", "--out", run] : ["train", job, "--out", run]);
if (last.code !== 0) throw new Error(`the final resume failed: ${last.stderr}`);
const leftovers = checkpoints(run).filter((n) => n.startsWith(".")).length + readdirSync(run).filter((n) => n.endsWith(".tmp") || n === ".lock").length;
const want = finalTensors(reference), got = finalTensors(run);
const identical = want.size === got.size && [...want].every(([k, bytes]) => got.get(k)?.equals(bytes) === true);
process.stdout.write(`${done} kills${finishedEarly ? " (the run finished before the rest)" : ""} · ${unloadable} unloadable checkpoints · ${leftovers} temporaries left · final parameters ${identical ? "bit-identical" : "DIFFERENT"} to an uninterrupted run\n`);
rmSync(tmp, { recursive: true, force: true });
process.exit(unloadable === 0 && leftovers === 0 && identical ? 0 : 1);
