/**
 * `chainrule serve` under load, beside onnxruntime-node serving the same model, exported
 * with `chainrule export`, behind an equally minimal node:http server (this file, run with
 * --ort-server). Both answer on 127.0.0.1 only.
 *
 * - MLP 784-512-256-10 (the default job's model): requests/s and p50/p99 latency of
 *   POST /v1/predict with one digit-sized row per request, by autocannon at each
 *   concurrency; each run is bounded by a request count and a time limit. The two servers
 *   take turns, the order alternating by round; medians over rounds, and the median of the
 *   per-round ratios (the rounds of a pair run back to back, under the same machine load).
 * - GPT (the gpt job's model): tokens/s of streamed generation (server-sent events, greedy
 *   sampling so both sides produce the same text) with 1 and 4 streams at once.
 *
 * The models are trained briefly first (throughput does not depend on their accuracy), or
 * given with --mlp / --gpt (checkpoint or run directories).
 *
 *   npx tsx bench/serve.ts [--rounds 7] [--requests 2000] [--seconds 20] [--concurrency 1,8,64]
 *                          [--tokens 200] [--streams 1,4] [--workers N] [--mlp DIR] [--gpt DIR] [--quick]
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import autocannon from "autocannon";
import { flag, hasFlag, median, numList, repoRoot, runIfMain, table } from "./_util.js";

const MAIN = join(repoRoot, "packages/cli/src/main.ts");

// ---- the onnxruntime side: a minimal server over node:http ----

/** `--ort-server MODEL.onnx --kind mlp --shape 1,28,28` or `--kind gpt --vocab JSON --block-size T`. */
async function ortServer(args: string[]): Promise<void> {
  const ort = await import("onnxruntime-node");
  const session = await ort.InferenceSession.create(flag(args, "ort-server")!);
  const kind = flag(args, "kind");
  const shape = (flag(args, "shape") ?? "").split(",").map(Number);
  const features = shape.reduce((a, b) => a * b, 1);
  const vocab: string[] = JSON.parse(flag(args, "vocab") ?? "[]");
  const blockSize = Number(flag(args, "block-size") ?? 0);

  const predict = async (body: { inputs: number[][] }): Promise<unknown> => {
    const n = body.inputs.length;
    const x = new Float32Array(n * features);
    body.inputs.forEach((row, i) => {
      if (row.length !== features) throw new Error(`inputs[${i}]: ${row.length} values, expected ${features}`);
      for (let j = 0; j < features; j++) {
        if (typeof row[j] !== "number") throw new Error(`inputs[${i}][${j}]: not a number`);
        x[i * features + j] = row[j];
      }
    });
    const out = await session.run({ input: new ort.Tensor("float32", x, [n, ...shape]) });
    const logits = out.logits.data as Float32Array;
    const C = logits.length / n;
    return {
      predictions: Array.from({ length: n }, (_, i) => {
        const row = logits.subarray(i * C, (i + 1) * C);
        const m = Math.max(...row);
        const e = Array.from(row, (v) => Math.exp(v - m));
        const s = e.reduce((a, b) => a + b, 0);
        const top = e.map((v, c) => ({ class: c, probability: v / s })).sort((a, b) => b.probability - a.probability).slice(0, 3);
        return { ...top[0], top };
      }),
    };
  };

  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", async () => {
      try {
        const body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
        if (kind === "mlp") {
          const json = JSON.stringify(await predict(body));
          res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(json) });
          res.end(json);
          return;
        }
        // GPT: greedy sampling, one server-sent event per token.
        res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
        const ids = Array.from(body.prompt as string, (c) => vocab.indexOf(c));
        let text = "";
        for (let t = 0; t < body.maxTokens; t++) {
          const window = ids.slice(-blockSize);
          const out = await session.run({ idx: new ort.Tensor("int64", BigInt64Array.from(window, BigInt), [1, window.length]) });
          const logits = (out.logits.data as Float32Array).subarray((window.length - 1) * vocab.length);
          let best = 0;
          for (let v = 1; v < vocab.length; v++) if (logits[v] > logits[best]) best = v;
          ids.push(best);
          text += vocab[best];
          res.write(`data: ${JSON.stringify({ token: vocab[best] })}\n\n`);
        }
        res.end(`event: done\ndata: ${JSON.stringify({ prompt: body.prompt, text, tokens: body.maxTokens })}\n\n`);
      } catch (e) {
        if (res.headersSent) return void res.end();
        res.writeHead(400, { "content-type": "application/json" });
        res.end(JSON.stringify({ error: (e as Error).message }));
      }
    });
  });
  server.listen(0, "127.0.0.1", () => {
    const a = server.address() as { port: number };
    process.stdout.write(`listening on http://127.0.0.1:${a.port}\n`);
  });
  process.on("SIGTERM", () => server.close(() => process.exit(0)));
}

// ---- processes ----

interface Server { name: string; url: string; child: ChildProcess }

/** Starts a server process and resolves with its address once it prints it (60 s at most). */
function startServer(name: string, args: string[]): Promise<Server> {
  const child = spawn(process.execPath, ["--import", "tsx", ...args], { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"] });
  let out = "", err = "";
  child.stderr!.on("data", (d) => (err += d));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name}: did not start within 60 s\n${err}`)), 60_000);
    child.stdout!.on("data", (d) => {
      out += d;
      const m = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({ name, url: m[1], child });
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${name}: exited with ${code}\n${out}${err}`));
    });
  });
}

async function stopServer(s: Server): Promise<void> {
  const exited = new Promise((r) => s.child.once("exit", r));
  s.child.kill("SIGTERM");
  const timer = setTimeout(() => s.child.kill("SIGKILL"), 30_000);
  await exited;
  clearTimeout(timer);
}

/** Runs `chainrule ARGS` to completion (10 minutes at most); throws with its output on failure. */
function chainrule(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", MAIN, ...args], { cwd: repoRoot, env: { ...process.env, CHAINRULE_PLAIN: "1" } });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (out += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), 600_000);
    child.on("close", (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`chainrule ${args.join(" ")}: exit ${code}\n${out}`));
    });
  });
}

// ---- load ----

interface LoadResult { rps: number; p50: number; p99: number; requests: number; errors: number }

/**
 * autocannon at `connections` until `amount` requests are answered or `seconds` pass. Rates and
 * latencies come from each response (autocannon's own summary counts whole seconds and ms).
 */
function load(url: string, body: string, connections: number, amount: number, seconds: number): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const latencies: number[] = [];
    let errors = 0, last = 0;
    const t0 = performance.now();
    const instance = autocannon(
      { url: `${url}/v1/predict`, method: "POST", headers: { "content-type": "application/json" }, body, connections, amount },
      (err) => {
        clearTimeout(timer);
        if (err) return reject(err);
        const sorted = latencies.sort((a, b) => a - b);
        const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
        resolve({ rps: sorted.length / ((last - t0) / 1000), p50: at(0.5), p99: at(0.99), requests: sorted.length, errors });
      },
    );
    instance.on("response", (_client, status: number, _bytes, ms: number) => {
      if (status !== 200) errors++;
      latencies.push(ms);
      last = performance.now();
    });
    instance.on("reqError", () => errors++);
    const timer = setTimeout(() => instance.stop(), seconds * 1000);
  });
}

/** `streams` streamed generations at once of `tokens` tokens each: tokens/s over them all, and the median time to the first token. */
async function streamTokens(url: string, prompt: string, tokens: number, streams: number): Promise<{ tokensPerSecond: number; firstTokenMs: number; text: string }> {
  const t0 = performance.now();
  const runs = await Promise.all(Array.from({ length: streams }, async () => {
    const res = await fetch(`${url}/v1/generate`, {
      method: "POST", body: JSON.stringify({ prompt, maxTokens: tokens, temperature: 0, stream: true }), signal: AbortSignal.timeout(300_000),
    });
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    let all = "", first = NaN;
    for (let r = await reader.read(); !r.done; r = await reader.read()) {
      if (Number.isNaN(first)) first = performance.now() - t0;
      all += decoder.decode(r.value, { stream: true });
    }
    const events = all.trim().split("\n\n");
    const got = events.filter((e) => e.startsWith("data: {\"token\"")).map((e) => JSON.parse(e.slice(6)).token as string);
    if (got.length !== tokens) throw new Error(`${url}: ${got.length} tokens streamed, expected ${tokens}`);
    return { first, text: got.join("") };
  }));
  const seconds = (performance.now() - t0) / 1000;
  return { tokensPerSecond: (streams * tokens) / seconds, firstTokenMs: median(runs.map((r) => r.first)), text: runs[0].text };
}

/** The server's predict counters (GET /healthz). */
async function batchStats(url: string): Promise<{ requests: number; batches: number }> {
  return ((await (await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(10_000) })).json()) as { predict: { requests: number; batches: number } }).predict;
}

/** chainrule's figure over onnxruntime's, round by round. */
const pairedRatios = (ours: number[], theirs: number[]) => ours.map((x, i) => x / theirs[i]);

const fmt = (x: number, digits = 0) => x.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });

// ---- the run ----

export async function main(args: string[]): Promise<Record<string, unknown>> {
  const quick = hasFlag(args, "quick");
  const rounds = Number(flag(args, "rounds", quick ? "1" : "7"));
  const requests = Number(flag(args, "requests", quick ? "500" : "2000"));
  const seconds = Number(flag(args, "seconds", quick ? "10" : "20"));
  const concurrency = numList(args, "concurrency", [1, 8, 64]);
  const tokens = Number(flag(args, "tokens", quick ? "50" : "200"));
  const streamCounts = numList(args, "streams", [1, 4]);
  const workers = flag(args, "workers");
  const tmp = mkdtempSync(join(tmpdir(), "chainrule-bench-serve-"));
  const loadBefore = loadavg()[0];
  try {
    // Models: the default job's MLP and the gpt job's model, briefly trained unless given.
    let mlp = flag(args, "mlp"), gpt = flag(args, "gpt");
    if (!mlp) {
      mlp = join(tmp, "mlp");
      await chainrule(["train", "--epochs", "1", "--set", "data.limitTrain=2000", "--set", "data.limitHeldOut=200", "--out", mlp]);
    }
    if (!gpt) {
      gpt = join(tmp, "gpt");
      await chainrule(["train", "gpt", "--epochs", "1", "--out", gpt]);
    }
    await chainrule(["export", mlp, "--out", join(tmp, "mlp.onnx")]);
    await chainrule(["export", gpt, "--out", join(tmp, "gpt.onnx")]);
    const serveArgs = (ckpt: string) => [MAIN, "serve", ckpt, "--port", "0", ...(workers ? ["--workers", workers] : [])];

    // MLP: one digit-sized row per request.
    let s = 7;
    const row = Array.from({ length: 784 }, () => Math.round(((s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 1000) / 1000);
    const body = JSON.stringify({ inputs: [row] });
    const servers = [
      await startServer("chainrule serve", serveArgs(mlp)),
      await startServer("onnxruntime-node", [join(repoRoot, "bench/serve.ts"), "--ort-server", join(tmp, "mlp.onnx"), "--kind", "mlp", "--shape", "1,28,28"]),
    ];
    const mlpModel = ((await (await fetch(`${servers[0].url}/v1/model`, { signal: AbortSignal.timeout(10_000) })).json()) as { description: string }).description;
    const answers = await Promise.all(servers.map(async (sv) => (await (await fetch(`${sv.url}/v1/predict`, { method: "POST", body, signal: AbortSignal.timeout(10_000) })).json()) as { predictions: { class: number; probability: number }[] }));
    const [a, b] = answers.map((x) => x.predictions[0]);
    const agree = a.class === b.class && Math.abs(a.probability - b.probability) < 1e-4;
    console.log(`same answer from both: ${agree} (class ${a.class}, p ${a.probability.toFixed(5)} / ${b.probability.toFixed(5)})`);
    for (const sv of servers) await load(sv.url, body, 8, Math.min(requests, 1000), seconds); // warm-up
    const mlpRows: Record<string, string | number>[] = [];
    const mlpResults: Record<string, unknown> = {};
    for (const c of concurrency) {
      const runs: Record<string, LoadResult[]> = { "chainrule serve": [], "onnxruntime-node": [] };
      const before = await batchStats(servers[0].url);
      for (let r = 0; r < rounds; r++) {
        for (const sv of r % 2 === 0 ? servers : [...servers].reverse()) runs[sv.name].push(await load(sv.url, body, c, Math.max(requests, c * 20), seconds));
      }
      const after = await batchStats(servers[0].url);
      const perBatch = (after.requests - before.requests) / Math.max(1, after.batches - before.batches);
      const summary = Object.fromEntries(Object.entries(runs).map(([name, rs]) => [name, {
        rps: median(rs.map((x) => x.rps)), p50: median(rs.map((x) => x.p50)), p99: median(rs.map((x) => x.p99)),
        requests: rs.reduce((x, y) => x + y.requests, 0), errors: rs.reduce((x, y) => x + y.errors, 0), rounds: rs.map((x) => Math.round(x.rps)),
      }]));
      const cr = summary["chainrule serve"], ox = summary["onnxruntime-node"];
      const ratios = pairedRatios(runs["chainrule serve"].map((x) => x.rps), runs["onnxruntime-node"].map((x) => x.rps));
      mlpResults[`c${c}`] = { ...summary, ratio: median(ratios), ratios, requestsPerBatch: perBatch };
      mlpRows.push({
        concurrency: c,
        "chainrule req/s": fmt(cr.rps), "p50 ms": fmt(cr.p50, 2), "p99 ms": fmt(cr.p99, 2), "requests/batch": fmt(perBatch, 1),
        "onnxruntime req/s": fmt(ox.rps), "ort p50 ms": fmt(ox.p50, 2), "ort p99 ms": fmt(ox.p99, 2),
        ratio: `${fmt(median(ratios), 2)}× (${fmt(Math.min(...ratios), 2)}–${fmt(Math.max(...ratios), 2)})`, errors: cr.errors + ox.errors,
      });
    }
    await Promise.all(servers.map(stopServer));
    console.log(`\n${mlpModel}, one row per request (medians of ${rounds} rounds; ratio: chainrule / onnxruntime req/s, median and range of the rounds):`);
    table(mlpRows);

    // GPT: streamed, greedy tokens.
    const vocab = JSON.parse(readFileSync(join(await latestCheckpointOf(gpt), "state.json"), "utf8")).extra.tokenizer.vocab as string[];
    const blockSize = JSON.parse(readFileSync(join(await latestCheckpointOf(gpt), "state.json"), "utf8")).config.model.blockSize as number;
    const gptServers = [
      await startServer("chainrule serve", serveArgs(gpt)),
      await startServer("onnxruntime-node", [join(repoRoot, "bench/serve.ts"), "--ort-server", join(tmp, "gpt.onnx"), "--kind", "gpt", "--vocab", JSON.stringify(vocab), "--block-size", String(blockSize)]),
    ];
    const gptModel = ((await (await fetch(`${gptServers[0].url}/v1/model`, { signal: AbortSignal.timeout(10_000) })).json()) as { description: string }).description;
    const prompt = "Ma";
    const texts = await Promise.all(gptServers.map((sv) => streamTokens(sv.url, prompt, Math.min(tokens, 20), 1)));
    console.log(`\nsame greedy text from both: ${texts[0].text === texts[1].text}`);
    const gptRows: Record<string, string | number>[] = [];
    const gptResults: Record<string, unknown> = {};
    for (const n of streamCounts) {
      const runs: Record<string, { tokensPerSecond: number; firstTokenMs: number }[]> = { "chainrule serve": [], "onnxruntime-node": [] };
      for (let r = 0; r < rounds; r++) {
        for (const sv of r % 2 === 0 ? gptServers : [...gptServers].reverse()) runs[sv.name].push(await streamTokens(sv.url, prompt, tokens, n));
      }
      const summary = Object.fromEntries(Object.entries(runs).map(([name, rs]) => [name, {
        tokensPerSecond: median(rs.map((x) => x.tokensPerSecond)), firstTokenMs: median(rs.map((x) => x.firstTokenMs)),
      }]));
      const cr = summary["chainrule serve"], ox = summary["onnxruntime-node"];
      const ratios = pairedRatios(runs["chainrule serve"].map((x) => x.tokensPerSecond), runs["onnxruntime-node"].map((x) => x.tokensPerSecond));
      gptResults[`streams${n}`] = { ...summary, ratio: median(ratios), ratios };
      gptRows.push({
        streams: n, "chainrule tokens/s": fmt(cr.tokensPerSecond), "first token ms": fmt(cr.firstTokenMs, 1),
        "onnxruntime tokens/s": fmt(ox.tokensPerSecond), "ort first token ms": fmt(ox.firstTokenMs, 1), ratio: `${fmt(median(ratios), 2)}× (${fmt(Math.min(...ratios), 2)}–${fmt(Math.max(...ratios), 2)})`,
      });
    }
    await Promise.all(gptServers.map(stopServer));
    console.log(`\n${gptModel}: ${tokens} greedy tokens per stream, server-sent events (medians of ${rounds} rounds):`);
    table(gptRows);
    const loadAfter = loadavg()[0];
    console.log(`\nload average: ${loadBefore.toFixed(2)} before, ${loadAfter.toFixed(2)} after`);
    return { mlpModel, gptModel, mlp: mlpResults, gpt: gptResults, sameAnswer: agree, sameGreedyText: texts[0].text === texts[1].text, loadAverage: [loadBefore, loadAfter], rounds, requests, seconds, tokens };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** The newest checkpoint of a run directory (or the directory itself when it is a checkpoint). */
async function latestCheckpointOf(dir: string): Promise<string> {
  const { resolveCheckpoint } = await import("../packages/cli/src/rundir.js");
  return resolveCheckpoint(dir);
}

if (process.argv.includes("--ort-server")) void ortServer(process.argv.slice(2));
else runIfMain(import.meta.url, "serve", main);
