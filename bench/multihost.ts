/**
 * Training across hosts against training on one: the default MLP job's model and the gpt job's
 * model (and, with --models gpt124m, GPT-2 small's shape), 2 hosts × 1 worker (two network
 * namespaces joined by a veth pair, the link limited with tc to each bandwidth) against 1 host ×
 * 2 workers (the same two cores, so the difference is the network path); with --compression, the
 * 2-host runs once per gradientCompression listed, alternating in each round. Per configuration:
 * samples/s, ms per step, ms of forward/backward, ms of the exchange's work and of it the part
 * not hidden behind backward. PyTorch DDP over gloo runs the MLP beside it (bench/torch_ddp_hosts.py,
 * 2 processes on one host against one per namespace). Ratios are medians of per-round ratios
 * (rounds alternate). Then a scaling model fitted to the measurements predicts the efficiency at
 * 4, 16 and 64 hosts on a 10 Gbit/s network. With --host-workers W: 2 hosts × W workers against
 * 1 host × 2W workers (the exchange thread then reduces each bucket over the host's W slots first).
 * Needs root, iproute2 (ip, tc), Open MPI, and for DDP /usr/bin/python3 with PyTorch.
 *
 *   tsx bench/multihost.ts [--steps 100] [--warmup 30] [--rounds 3] [--rates 1gbit,10gbit] [--models mlp,gpt] [--bucket-mib 1]
 *                          [--compression none,bf16,fp16] [--host-workers 1] [--no-ddp]
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { limitBandwidth, removeHosts, simulateHosts, type SimulatedHosts } from "../test/fixtures/simulated-hosts.js";
import { flag, median, repoRoot, runIfMain, table } from "./_util.js";

const RUN = join(repoRoot, "bench/_multihost-run.ts");
const DDP = join(repoRoot, "bench/torch_ddp_hosts.py");
const PYTHON = "/usr/bin/python3";

interface Measure { samplesPerSec: number; stepMs: number; computeMs?: number; hostsMs?: number; exposedMs?: number; gradientMB?: number; parameters?: number; rssMB?: number }

function parse(out: string, status: number | null, err: string, what: string): Measure {
  const line = out.split("\n").find((l) => l.startsWith("{"));
  if (status !== 0 || !line) throw new Error(`multihost: ${what} failed (exit ${status}): ${(err || out).trim().split("\n").slice(-3).join(" | ")}`);
  return JSON.parse(line) as Measure;
}

function measure(cmd: string[], what: string): Measure {
  const r = spawnSync(cmd[0], cmd.slice(1), { cwd: repoRoot, encoding: "utf8", timeout: 900_000 });
  return parse(r.stdout ?? "", r.status, r.stderr ?? "", what);
}

/** Runs the DDP script as `ranks` processes, rank k in namespace ns[k] (with its address as MASTER_ADDR's peer); resolves to rank 0's line. */
async function ddp(ns: string[], master: string, ifnames: string[], batch: number, steps: number, warmup: number, what: string): Promise<Measure> {
  const port = String(29_600 + Math.floor(Math.random() * 300));
  const runs = ns.map((name, rank) => new Promise<Measure | null>((resolve, reject) => {
    const env = { ...process.env, RANK: String(rank), WORLD_SIZE: String(ns.length), MASTER_ADDR: master, MASTER_PORT: port, GLOO_SOCKET_IFNAME: ifnames[rank], OMP_NUM_THREADS: "1" };
    const child: ChildProcess = spawn("ip", ["netns", "exec", name, PYTHON, DDP, String(batch), String(steps), String(warmup)], { cwd: repoRoot, env, stdio: ["ignore", "pipe", "pipe"] });
    let out = "", err = "";
    const timer = setTimeout(() => child.kill("SIGKILL"), 600_000);
    child.stdout!.on("data", (d) => (out += d));
    child.stderr!.on("data", (d) => (err += d));
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      try {
        resolve(rank === 0 ? parse(out, code, err, what) : code === 0 ? null : parse(out, code, err, what));
      } catch (e) {
        reject(e);
      }
    });
  }));
  return (await Promise.all(runs))[0]!;
}

/**
 * The scaling model: an exchange of H hosts costs, per step, a latency per bucket and message
 * round (L) plus the gradient's bytes over the link (G / β), for reduce-scatter + all-gather
 * 2(H−1)·nb·L + 2·(H−1)/H · G/β (with 2 hosts one all-gather: nb·L + G/β). Backward hides up to
 * the window measured with 2 hosts (exchange work minus what rank 0 waited for), so
 * efficiency(H) = step₁ / (step₁ + max(0, exchange(H) − window)), step₁ the step without hosts.
 * L and β are fitted (least squares) to all-gathers of 4 KB to 4 MB timed between the two hosts at
 * that rate (`_multihost-run.ts link`).
 */
function fitLink(points: { nb: number; mb: number; ms: number }[]): { latencyMs: number; msPerMB: number } {
  // Fits ms = nb·L + mb·c.
  let a11 = 0, a12 = 0, a22 = 0, b1 = 0, b2 = 0;
  for (const p of points) { a11 += p.nb * p.nb; a12 += p.nb * p.mb; a22 += p.mb * p.mb; b1 += p.nb * p.ms; b2 += p.mb * p.ms; }
  const det = a11 * a22 - a12 * a12;
  if (Math.abs(det) < 1e-12) return { latencyMs: 0, msPerMB: b2 / a22 };
  return { latencyMs: Math.max(0, (b1 * a22 - b2 * a12) / det), msPerMB: Math.max(0, (a11 * b2 - a12 * b1) / det) };
}

function efficiency(H: number, o: { stepMs: number; windowMs: number; nb: number; mb: number; latencyMs: number; msPerMB: number }): number {
  const exchange = H === 2 ? o.nb * o.latencyMs + o.mb * o.msPerMB : 2 * (H - 1) * o.nb * o.latencyMs + (2 * (H - 1) / H) * o.mb * o.msPerMB;
  return o.stepMs / (o.stepMs + Math.max(0, exchange - o.windowMs));
}

export async function main(args: string[]): Promise<Record<string, unknown>> {
  const steps = Number(flag(args, "steps", "100")), warmup = Number(flag(args, "warmup", "30")), rounds = Number(flag(args, "rounds", "3"));
  const rates = (flag(args, "rates", "1gbit,10gbit") ?? "").split(",");
  const models = (flag(args, "models", "mlp,gpt") ?? "").split(",");
  const bucketMiB = flag(args, "bucket-mib", "1")!;
  const compressions = (flag(args, "compression", "none") ?? "none").split(",");
  const hw = Number(flag(args, "host-workers", "1"));
  const missing = process.getuid?.() !== 0 ? "root (network namespaces)" : spawnSync("mpirun", ["--version"]).status !== 0 ? "Open MPI's mpirun" : spawnSync("tc", ["-V"]).status !== 0 ? "tc (iproute2)" : null;
  if (missing) {
    console.log(`multihost: skipped, needs ${missing}`);
    return { skipped: `needs ${missing}` };
  }
  const withDdp = !args.includes("--no-ddp") && spawnSync(PYTHON, ["-c", "import torch.distributed"]).status === 0;
  const node = [process.execPath, "--import", "tsx", RUN];
  let net: SimulatedHosts | null = null;
  const rows: Record<string, string | number>[] = [];
  const links: Record<string, { mb: number; ms: number }[]> = {};
  const results: { rate: string; model: string; compression: string; ratio: number; hiddenShare: number; one: Measure[]; two: Measure[]; ddpRatio?: number; ddpOne?: Measure[]; ddpTwo?: Measure[] }[] = [];
  try {
    net = simulateHosts(mkdtempSync(join(tmpdir(), "chainrule-multihost-")));
    const n = net;
    for (const rate of rates) {
      limitBandwidth(n, rate);
      const lk = measure(["ip", "netns", "exec", n.names[0], "mpirun", "--allow-run-as-root", "-np", "2", ...n.mpirunArgs, ...node, "link"], `all-gathers at ${rate}`) as unknown as { points: { mb: number; ms: number }[] };
      links[rate] = lk.points;
      for (const kind of models) {
        const one: Measure[] = [], ddpOne: Measure[] = [], ddpTwo: Measure[] = [];
        const two: Record<string, Measure[]> = Object.fromEntries(compressions.map((c) => [c, []]));
        const s = kind === "gpt124m" ? Math.min(steps, 3) : steps, w = kind === "gpt124m" ? Math.min(warmup, 1) : warmup;
        for (let i = 0; i < rounds; i++) {
          one.push(measure([...node, kind, String(2 * hw), String(s), String(w), bucketMiB], `${kind} 1 host × ${2 * hw} workers`));
          // The compressions alternate: reversed every other round.
          for (const c of i % 2 === 0 ? compressions : [...compressions].reverse()) {
            two[c].push(measure(["ip", "netns", "exec", n.names[0], "mpirun", "--allow-run-as-root", "-np", "2", ...n.mpirunArgs, ...node, kind, String(hw), String(s), String(w), bucketMiB, c], `${kind} 2 hosts × ${hw} at ${rate} (${c})`));
          }
          if (withDdp && kind === "mlp" && hw === 1) { // DDP runs one process per host
            ddpOne.push(await ddp([n.names[0], n.names[0]], "127.0.0.1", ["lo", "lo"], 64, steps, warmup, "DDP 1 host × 2"));
            ddpTwo.push(await ddp([n.names[0], n.names[1]], n.addresses[0], n.links, 64, steps, warmup, `DDP 2 hosts × 1 at ${rate}`));
          }
        }
        const m = (xs: Measure[], k: keyof Measure) => median(xs.map((x) => (x[k] as number | undefined) ?? 0));
        rows.push({ link: rate, model: kind, config: `1 host × ${2 * hw} workers`, "samples/s": Math.round(m(one, "samplesPerSec")), "ms/step": m(one, "stepMs").toFixed(2), "fwd+bwd ms": m(one, "computeMs").toFixed(2),
          "exchange ms": "", "not hidden ms": "", "hidden": "", "x 1 host": "", "RSS MB": Math.round(m(one, "rssMB")) });
        for (const c of compressions) {
          const xs = two[c];
          const ratio = median(xs.map((t, i) => t.samplesPerSec / one[i].samplesPerSec));
          // What backward hid of the exchange's work; rank 0's wait also holds the other host's lag, so it can exceed the work (0% hidden then).
          const hiddenShare = median(xs.map((t) => (t.hostsMs! > 0 ? Math.max(0, 1 - t.exposedMs! / t.hostsMs!) : 0)));
          rows.push({
            link: rate, model: kind, config: `2 hosts × ${hw} worker${hw > 1 ? "s" : ""}${c === "none" ? "" : `, ${c}`}`, "samples/s": Math.round(m(xs, "samplesPerSec")), "ms/step": m(xs, "stepMs").toFixed(2),
            "fwd+bwd ms": m(xs, "computeMs").toFixed(2), "exchange ms": m(xs, "hostsMs").toFixed(2), "not hidden ms": m(xs, "exposedMs").toFixed(2),
            "hidden": `${Math.round(hiddenShare * 100)}%`, "x 1 host": ratio.toFixed(2), "RSS MB": Math.round(m(xs, "rssMB")),
          });
          results.push({ rate, model: kind, compression: c, ratio, hiddenShare, one, two: xs });
        }
        let ddpRatio: number | undefined;
        if (ddpOne.length > 0) {
          ddpRatio = median(ddpTwo.map((t, i) => t.samplesPerSec / ddpOne[i].samplesPerSec));
          rows.push({ link: rate, model: kind, config: "PyTorch DDP gloo 1 host × 2", "samples/s": Math.round(m(ddpOne, "samplesPerSec")), "ms/step": m(ddpOne, "stepMs").toFixed(2) });
          rows.push({ link: rate, model: kind, config: "PyTorch DDP gloo 2 hosts × 1", "samples/s": Math.round(m(ddpTwo, "samplesPerSec")), "ms/step": m(ddpTwo, "stepMs").toFixed(2), "x 1 host": ddpRatio.toFixed(2) });
          Object.assign(results[results.length - compressions.length], { ddpRatio, ddpOne, ddpTwo });
        }
      }
    }
  } finally {
    removeHosts(net);
  }
  table(rows);
  // The scaling model fits float32 exchanges (the first compression listed, "none" by default).
  const predictions = compressions[0] === "none" ? scalingModel(results.filter((r) => r.compression === "none"), links, Number(bucketMiB)) : {};
  console.log(`load average ${loadavg().map((l) => l.toFixed(1)).join(" ")}; bucket ${bucketMiB} MiB`);
  return { steps, warmup, rounds, bucketMiB: Number(bucketMiB), compressions, links, results, predictions };
}

/** Fits the link at 10 Gbit/s (or the fastest rate measured) and prints predicted efficiencies; returns them. */
function scalingModel(results: { rate: string; model: string; two: Measure[] }[], links: Record<string, { mb: number; ms: number }[]>, bucketMiB: number): Record<string, unknown> {
  const rate = results.some((r) => r.rate === "10gbit") ? "10gbit" : results[results.length - 1]?.rate;
  const at = results.filter((r) => r.rate === rate);
  if (at.length === 0) return {};
  const med = (xs: Measure[], k: keyof Measure) => median(xs.map((x) => (x[k] as number | undefined) ?? 0));
  const models = at.map((r) => {
    const mb = med(r.two, "gradientMB"), nb = Math.max(1, Math.ceil(mb / bucketMiB));
    const hostsMs = med(r.two, "hostsMs"), exposed = med(r.two, "exposedMs");
    // The step without hosts: the measured step less what the exchange added.
    return { model: r.model, mb, nb, hostsMs, windowMs: hostsMs - exposed, stepMs: med(r.two, "stepMs") - exposed };
  });
  const link = fitLink(links[rate].map((p) => ({ nb: 1, mb: p.mb, ms: p.ms })));
  table(links[rate].map((p) => ({ [`all-gather at ${rate}, MB per host`]: p.mb.toFixed(3), ms: p.ms.toFixed(3) })));
  const rows: Record<string, string | number>[] = [];
  const out: Record<string, unknown> = { rate, link, models: {} };
  for (const m of models) {
    const e = Object.fromEntries([2, 4, 16, 64].map((H) => [H, efficiency(H, { ...m, ...link })]));
    (out.models as Record<string, unknown>)[m.model] = e;
    rows.push({ model: m.model, "gradient MB": m.mb.toFixed(2), "step ms": m.stepMs.toFixed(2), "hidden window ms": m.windowMs.toFixed(2), ...Object.fromEntries(Object.entries(e).map(([H, v]) => [`${H} hosts`, `${Math.round(v * 100)}%`])) });
  }
  // Horovod's published ~90% (ResNet-101 on 128 servers): its ratio of compute to gradient, ~0.64 s
  // per step (batch 64 at ~100 images/s on a P100) for 170 MB of gradient, on the same fitted link;
  // backward is about two thirds of a step and 25 MB buckets overlap it.
  const resnet = { stepMs: 640, windowMs: (2 / 3) * 640, nb: Math.ceil(170 / 25), mb: 170 };
  const horovod = efficiency(128, { ...resnet, ...link });
  out.resnet101At128 = horovod;
  console.log(`scaling model at ${rate}: ${link.latencyMs.toFixed(3)} ms per bucket round, ${link.msPerMB.toFixed(3)} ms per MB`);
  table(rows);
  console.log(`ResNet-101's ratio of compute to gradient (640 ms, 170 MB; Horovod publishes ~90% on 128 servers) on this link at 128 hosts: ${Math.round(horovod * 100)}%`);
  return out;
}

runIfMain(import.meta.url, "multihost", main);
