/**
 * chainrule serve CHECKPOINT|RUN_DIR: the model over an HTTP JSON API (serve/server.ts),
 * with dynamic batching (serve/batcher.ts) onto a pool of inference worker threads that
 * each hold the model (serve/pool.ts). SIGTERM or Ctrl-C stops accepting, answers the
 * requests in flight and exits 0; a second signal, or a drain past --drain-timeout,
 * exits at once with 143 / 130.
 */
import { availableParallelism } from "node:os";
import { resolve as resolvePath } from "node:path";
import { CliError, UsageError } from "../errors.js";
import { parseFlags } from "../flags.js";
import { resolveCheckpoint } from "../rundir.js";
import { MODULE_FLAGS, MODULE_FLAGS_HELP, moduleConsent } from "../checkpoint-model.js";
import { InferencePool } from "../serve/pool.js";
import { PredictBatcher } from "../serve/batcher.js";
import { createApiServer } from "../serve/server.js";

export const SERVE_HELP = `usage: chainrule serve CHECKPOINT [options]

Serves a checkpoint (or a run directory's latest checkpoint) over HTTP:
  GET  /healthz        {"status": "ok", "workers": N, "inFlight": N, "predict": {...}}
  GET  /v1/model       model type, input shape, classes, vocabulary, checkpoint
  POST /v1/predict     {"inputs": [[v1, v2, ...], ...], "top": K}  (not for GPT models)
  POST /v1/generate    {"prompt", "maxTokens", "temperature", "topK", "seed", "stream"}  (GPT models)
A bad request gets a 4xx status and {"error": "<field>: <problem>", "field": "<field>"}.

options:
  --port P              TCP port (default 8080; 0 picks a free one, printed at start)
  --host H              address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)
  --workers N           inference worker threads, each holding the model (default: one per core)
  --max-batch R         most rows the model runs in one batch (default 64)
  --batch-wait-ms MS    how long a batch may wait for requests still being received (default 2)
  --max-body SIZE       largest request body: bytes, or with k / m (default 1m)
  --timeout S           bound on each request, from arrival to answer (default 60)
  --max-tokens N        most tokens one generate request may ask for (default 1000)
  --drain-timeout S     on SIGTERM / Ctrl-C, how long requests in flight may take (default 30)
${MODULE_FLAGS_HELP.replace(/^(?=.)/gm, "  ")}`;

function positiveInt(flag: string, v: string | undefined, dflt: number, min = 1): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (v.trim() === "" || !Number.isInteger(n) || n < min) throw new UsageError(`--${flag}: expected an integer ≥ ${min}, got ${JSON.stringify(v)}`);
  return n;
}

function seconds(flag: string, v: string | undefined, dflt: number): number {
  if (v === undefined) return dflt * 1000;
  const n = Number(v);
  if (v.trim() === "" || !(n > 0) || !Number.isFinite(n)) throw new UsageError(`--${flag}: expected a number of seconds > 0, got ${JSON.stringify(v)}`);
  return n * 1000;
}

function bytes(flag: string, v: string | undefined, dflt: number): number {
  if (v === undefined) return dflt;
  const m = /^(\d+)\s*([km]?)b?$/i.exec(v.trim());
  if (!m || Number(m[1]) === 0) throw new UsageError(`--${flag}: expected a size such as 65536, 64k or 1m, got ${JSON.stringify(v)}`);
  return Number(m[1]) * { "": 1, k: 1024, m: 1024 * 1024 }[m[2].toLowerCase() as "" | "k" | "m"];
}

export async function serveCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags("serve", argv, {
    port: { type: "string" }, host: { type: "string" }, workers: { type: "string" }, "max-batch": { type: "string" },
    "batch-wait-ms": { type: "string" }, "max-body": { type: "string" }, timeout: { type: "string" },
    "max-tokens": { type: "string" }, "drain-timeout": { type: "string" }, ...MODULE_FLAGS, help: { type: "boolean", short: "h" },
  });
  if (values.help) {
    process.stdout.write(SERVE_HELP);
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError(`serve takes one CHECKPOINT (a checkpoint or run directory), got ${positionals.length}`);
  const port = positiveInt("port", values.port, 8080, 0);
  if (port > 65535) throw new UsageError(`--port: expected 0..65535, got ${port}`);
  const host = values.host ?? "127.0.0.1";
  const workers = positiveInt("workers", values.workers, availableParallelism());
  const maxBatch = positiveInt("max-batch", values["max-batch"], 64);
  const waitMs = positiveInt("batch-wait-ms", values["batch-wait-ms"], 2, 0);
  const maxBodyBytes = bytes("max-body", values["max-body"], 1024 * 1024);
  const requestTimeoutMs = seconds("timeout", values.timeout, 60);
  const maxTokens = positiveInt("max-tokens", values["max-tokens"], 1000);
  const drainMs = seconds("drain-timeout", values["drain-timeout"], 30);
  const consent = moduleConsent(values);

  const checkpoint = resolvePath(resolveCheckpoint(positionals[0]));
  const log = (line: string) => process.stderr.write(`chainrule serve: ${line}\n`);
  const { pool, info } = await InferencePool.start(checkpoint, consent, workers, log).catch((e: Error) => {
    // Errors cross from the worker as plain Errors that keep their name.
    const message = e.message.includes(checkpoint) ? e.message : `${checkpoint}: ${e.message}`;
    throw e.name === "UsageError" ? new UsageError(message) : new CliError(message);
  });
  const features = info.inputShape.reduce((a, b) => a * b, 1);
  const batcher = new PredictBatcher(pool, { maxBatch, waitMs, maxQueueRows: Math.max(4096, maxBatch * workers * 4), features, outputs: info.outputs });
  const api = createApiServer(info, pool, batcher, { maxBodyBytes, requestTimeoutMs, maxTokens, maxRows: Math.max(maxBatch, 1024) });

  try {
    await new Promise<void>((resolve, reject) => {
      api.server.once("error", reject);
      api.server.listen(port, host, () => resolve());
    });
  } catch (e) {
    await pool.close();
    const code = (e as NodeJS.ErrnoException).code;
    throw new CliError(`--port ${port} --host ${host}: ${code === "EADDRINUSE" ? "address already in use" : code === "EACCES" ? "permission denied" : (e as Error).message}`);
  }
  const bound = api.server.address();
  const url = typeof bound === "object" && bound ? `http://${bound.family === "IPv6" ? `[${bound.address}]` : bound.address}:${bound.port}` : String(bound);
  process.stdout.write(`serving ${info.description} from ${checkpoint}\n`);
  process.stdout.write(`listening on ${url} (${workers} inference worker${workers === 1 ? "" : "s"}; ${info.task === "text" ? "POST /v1/generate" : `POST /v1/predict, batches of up to ${maxBatch} rows within ${waitMs} ms`})\n`);

  return new Promise<number>((done) => {
    let stopping = false;
    const onSignal = (signal: NodeJS.Signals) => {
      const interrupted = signal === "SIGINT" ? 130 : 143;
      if (stopping) {
        log(`${signal} again: exiting without waiting for ${api.inFlight()} requests in flight`);
        done(interrupted);
        return;
      }
      stopping = true;
      log(`${signal}: no new requests; answering ${api.inFlight()} in flight (at most ${drainMs / 1000} s)`);
      void api.drain(drainMs).then(async (drained) => {
        if (!drained) log(`${api.inFlight()} requests still in flight after ${drainMs / 1000} s; exiting`);
        await pool.close();
        const s = batcher.stats;
        log(info.task === "text" ? "stopped" : `stopped (answered ${s.requests} predict requests in ${s.batches} batches)`);
        done(drained ? 0 : interrupted);
      });
    };
    process.on("SIGTERM", onSignal);
    process.on("SIGINT", onSignal);
  });
}
