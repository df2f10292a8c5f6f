/**
 * Training across hosts against training on one: the default MLP job's model and the gpt job's
 * model, 2 hosts × 1 worker (two network namespaces joined by a veth pair, the link limited with
 * tc to each bandwidth) against 1 host × 2 workers (the same two cores, so the difference is the
 * network path). Per configuration: samples/s, ms per step, ms of forward/backward, ms of the
 * exchange with the other host; the ratio is the median of per-round ratios (rounds alternate).
 * Needs root, iproute2 (ip, tc) and Open MPI.
 *
 *   tsx bench/multihost.ts [--steps 100] [--warmup 30] [--rounds 3] [--rates 1gbit,10gbit] [--models mlp,gpt]
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { limitBandwidth, removeHosts, simulateHosts, type SimulatedHosts } from "../test/fixtures/simulated-hosts.js";
import { flag, median, repoRoot, runIfMain, table } from "./_util.js";

const RUN = join(repoRoot, "bench/_multihost-run.ts");

interface Measure { samplesPerSec: number; stepMs: number; computeMs: number; hostsMs: number; gradientMB: number }

function measure(cmd: string[], what: string): Measure {
  const r = spawnSync(cmd[0], cmd.slice(1), { cwd: repoRoot, encoding: "utf8", timeout: 600_000 });
  const line = r.stdout?.split("\n").find((l) => l.startsWith("{"));
  if (r.status !== 0 || !line) throw new Error(`multihost: ${what} failed (exit ${r.status}): ${(r.stderr || r.stdout).trim().split("\n").slice(-3).join(" | ")}`);
  return JSON.parse(line) as Measure;
}

export async function main(args: string[]): Promise<Record<string, unknown>> {
  const steps = Number(flag(args, "steps", "100")), warmup = Number(flag(args, "warmup", "30")), rounds = Number(flag(args, "rounds", "3"));
  const rates = (flag(args, "rates", "1gbit,10gbit") ?? "").split(",");
  const models = (flag(args, "models", "mlp,gpt") ?? "").split(",");
  const missing = process.getuid?.() !== 0 ? "root (network namespaces)" : spawnSync("mpirun", ["--version"]).status !== 0 ? "Open MPI's mpirun" : spawnSync("tc", ["-V"]).status !== 0 ? "tc (iproute2)" : null;
  if (missing) {
    console.log(`multihost: skipped, needs ${missing}`);
    return { skipped: `needs ${missing}` };
  }
  const node = [process.execPath, "--import", "tsx", RUN];
  let net: SimulatedHosts | null = null;
  const rows: Record<string, string | number>[] = [];
  const results: Record<string, unknown>[] = [];
  try {
    net = simulateHosts(mkdtempSync(join(tmpdir(), "chainrule-multihost-")));
    for (const rate of rates) {
      limitBandwidth(net, rate);
      for (const kind of models) {
        const one: Measure[] = [], two: Measure[] = [];
        for (let i = 0; i < rounds; i++) {
          one.push(measure([...node, kind, "2", String(steps), String(warmup)], `${kind} 1 host × 2 workers`));
          two.push(measure(["ip", "netns", "exec", net.names[0], "mpirun", "--allow-run-as-root", "-np", "2", ...net.mpirunArgs, ...node, kind, "1", String(steps), String(warmup)], `${kind} 2 hosts × 1 worker at ${rate}`));
        }
        const ratio = median(two.map((t, i) => t.samplesPerSec / one[i].samplesPerSec));
        const m = (xs: Measure[], k: keyof Measure) => median(xs.map((x) => x[k]));
        const hidden = 0; // the exchange runs after backward: nothing of it is hidden yet
        for (const [label, xs] of [["1 host × 2 workers", one], ["2 hosts × 1 worker", two]] as const) {
          rows.push({
            link: rate, model: kind, config: label, "samples/s": Math.round(m(xs, "samplesPerSec")), "ms/step": m(xs, "stepMs").toFixed(2),
            "fwd+bwd ms": m(xs, "computeMs").toFixed(2), "exchange ms": m(xs, "hostsMs").toFixed(2), "x 1 host": label.startsWith("2") ? ratio.toFixed(2) : "",
          });
        }
        results.push({ rate, model: kind, gradientMB: one[0].gradientMB, oneHost: one, twoHosts: two, ratio, hiddenShare: hidden });
      }
    }
  } finally {
    removeHosts(net);
  }
  table(rows);
  console.log(`load average ${loadavg().map((l) => l.toFixed(1)).join(" ")}; the exchange (MPI_Allgather of each host's gradient, host-order sum) runs after backward, so none of it is hidden`);
  return { steps, warmup, rounds, results };
}

runIfMain(import.meta.url, "multihost", main);
