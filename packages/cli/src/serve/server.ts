/**
 * The HTTP JSON API over node:http:
 *   GET  /healthz       {"status": "ok", "workers": N, "inFlight": N, "generating": N, "predict": {requests, batches, rows}} (503 while draining)
 *   GET  /v1/model      what is served (ModelInfo)
 *   POST /v1/predict    {"inputs": [[...], ...], "top": K} → {"predictions": [...]}
 *   POST /v1/generate   {"prompt", "maxTokens", "temperature", "topK", "seed", "stream"} → text, or server-sent events
 * Errors are {"error": "<field>: <problem>", "field": "<field>"} with a 4xx/5xx status.
 */
import { type IncomingMessage, type Server, type ServerResponse, createServer } from "node:http";
import * as Comlink from "comlink";
import type { InferencePool } from "./pool.js";
import type { PredictBatcher } from "./batcher.js";
import type { ModelInfo } from "./protocol.js";
import { HttpError, badRequest, modelFailure, unavailable } from "./errors.js";
import { type PredictRequest, parseGenerate, parsePredict } from "./requests.js";

/** Generations one worker advances in turn; beyond, on every worker, a generate request gets a 503. */
const STREAMS_PER_WORKER = 16;

export interface ServerOptions {
  /** Largest request body accepted, in bytes. */
  maxBodyBytes: number;
  /** Bound on each request: receiving it, waiting for a worker and running the model, in ms. */
  requestTimeoutMs: number;
  /** Most tokens one generate request may ask for. */
  maxTokens: number;
  /** Most rows in one predict request. */
  maxRows: number;
}

export interface ApiServer {
  server: Server;
  /** Requests received and not yet answered. */
  inFlight(): number;
  /** Stops accepting, answers what is in flight; resolves true when all were answered within `timeoutMs`. */
  drain(timeoutMs: number): Promise<boolean>;
}

export function createApiServer(info: ModelInfo, pool: InferencePool, batcher: PredictBatcher, o: ServerOptions): ApiServer {
  let inFlight = 0;
  let draining = false;
  let onIdle: (() => void) | null = null;
  const isText = info.task === "text";

  const server = createServer(async (req, res) => {
    inFlight++;
    res.once("close", () => {
      inFlight--;
      if (draining) server.closeIdleConnections();
      if (inFlight === 0) onIdle?.();
    });
    if (draining) res.setHeader("connection", "close");
    try {
      await route(req, res);
    } catch (e) {
      const err = e instanceof HttpError ? e : modelFailure(e);
      if (!res.headersSent) sendError(res, err);
      else if (!res.writableEnded) res.end();
    }
  });
  // Node's own bounds on a slow client: headers, then the whole request.
  server.headersTimeout = Math.min(o.requestTimeoutMs, 60_000);
  server.requestTimeout = o.requestTimeoutMs;
  server.keepAliveTimeout = 5_000;

  type Handler = (req: IncomingMessage, res: ServerResponse) => Promise<void> | void;
  const routes: Record<string, { method: string; handle: Handler }> = {
    "/healthz": {
      method: "GET",
      // inFlight: the requests being answered besides this one.
      handle: (_, res) => sendJson(res, draining ? 503 : 200, { status: draining ? "draining" : "ok", workers: pool.size, inFlight: inFlight - 1, generating: pool.generating, predict: batcher.stats }),
    },
    "/v1/model": { method: "GET", handle: (_, res) => sendJson(res, 200, info) },
    "/v1/predict": { method: "POST", handle: predict },
    "/v1/generate": { method: "POST", handle: generate },
  };

  async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? "/").split("?")[0];
    const method = req.method ?? "GET";
    const r = Object.hasOwn(routes, path) ? routes[path] : undefined;
    if (!r) throw new HttpError(404, `no such route: ${method} ${path} (routes: ${Object.entries(routes).map(([p, x]) => `${x.method} ${p}`).join(", ")})`);
    if (r.method !== method) {
      res.setHeader("allow", r.method);
      throw new HttpError(405, `${path} takes ${r.method}, not ${method}`);
    }
    if (draining && r.method === "POST") throw unavailable("server is shutting down");
    await r.handle(req, res);
  }

  async function predict(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (isText) throw new HttpError(404, `/v1/predict: the served model is a GPT text model; use POST /v1/generate`);
    const deadline = Date.now() + o.requestTimeoutMs;
    // While this request is being received, a batch about to leave may wait for it.
    const received = batcher.receiving();
    let p: PredictRequest, answer: Promise<Float32Array>;
    try {
      p = parsePredict(await readJson(req, res, o.maxBodyBytes), info, o.maxRows);
      answer = batcher.submit(p.rows, p.n, deadline);
    } finally {
      received();
    }
    const y = await answer; // (n, outputs)
    sendJson(res, 200, { predictions: predictions(y, p.n, p.top) });
  }

  /** Per row: the class, its probability and the top K (classification), or the output values (regression). */
  function predictions(y: Float32Array, n: number, top: number): unknown[] {
    const C = info.outputs;
    const out: unknown[] = [];
    for (let i = 0; i < n; i++) {
      const row = y.subarray(i * C, (i + 1) * C);
      if (info.task === "regression") {
        out.push({ values: Array.from(row) });
        continue;
      }
      const order = Array.from(row, (p, c) => [p, c] as const).sort((a, b) => b[0] - a[0]).slice(0, top);
      const entry = (c: number, p: number) => (info.classNames ? { class: c, name: info.classNames[c], probability: p } : { class: c, probability: p });
      out.push({ ...entry(order[0][1], order[0][0]), top: order.map(([p, c]) => entry(c, p)) });
    }
    return out;
  }

  async function generate(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (!isText) throw new HttpError(404, `/v1/generate: the served model is not a GPT text model (${info.type}); use POST /v1/predict`);
    const deadline = Date.now() + o.requestTimeoutMs;
    const body = await readJson(req, res, o.maxBodyBytes);
    const g = parseGenerate(body, info, o.maxTokens);
    const lease = pool.share(STREAMS_PER_WORKER);
    // The worker checks this flag at every token: the client left, or the time limit passed.
    const cancel = new Int32Array(new SharedArrayBuffer(4));
    const stop = () => Atomics.store(cancel, 0, 1);
    res.once("close", stop);
    const softLimit = setTimeout(stop, Math.max(0, deadline - Date.now()));
    try {
      if (g.stream) {
        res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache" });
        res.flushHeaders();
      }
      const onToken = g.stream ? (token: string) => void (res.destroyed || res.write(`data: ${JSON.stringify({ token })}\n\n`)) : () => {};
      // A grace second past the deadline for the worker to notice the flag; after that the pool stops it.
      const r = await lease.run((api) => api.generate(
        { prompt: g.prompt, maxTokens: g.maxTokens, temperature: g.temperature, topK: g.topK, seed: g.seed },
        Comlink.proxy(onToken), cancel), deadline + 1000);
      const result = { prompt: g.prompt, text: r.text, tokens: r.tokens, finished: !r.cancelled };
      if (g.stream) {
        res.end(`event: done\ndata: ${JSON.stringify(result)}\n\n`);
      } else if (r.cancelled) {
        throw new HttpError(504, `generate: stopped after ${r.tokens} of ${g.maxTokens} tokens at the request's time limit`);
      } else sendJson(res, 200, result);
    } catch (e) {
      if (!g.stream) throw e;
      res.end(`event: error\ndata: ${JSON.stringify({ error: modelFailure(e).message })}\n\n`);
    } finally {
      clearTimeout(softLimit);
      res.off("close", stop);
      lease.release();
    }
  }

  return {
    server,
    inFlight: () => inFlight,
    drain(timeoutMs: number): Promise<boolean> {
      draining = true;
      server.close();
      server.closeIdleConnections();
      return new Promise<boolean>((resolve) => {
        const finish = (ok: boolean) => {
          clearTimeout(timer);
          onIdle = null;
          server.closeAllConnections();
          resolve(ok);
        };
        const timer = setTimeout(() => finish(false), timeoutMs);
        onIdle = () => finish(true);
        if (inFlight === 0) finish(true);
      });
    },
  };
}

function sendJson(res: ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value);
  res.writeHead(status, { "content-type": "application/json; charset=utf-8", "content-length": Buffer.byteLength(body) });
  res.end(body);
}

function sendError(res: ServerResponse, e: HttpError): void {
  sendJson(res, e.status, e.field ? { error: e.message, field: e.field } : { error: e.message });
}

/**
 * The request body as JSON. More than `limit` bytes is a 413: the rest of the body
 * is read and dropped (the server's request timeout bounds that), and the connection
 * closes after the answer.
 */
function readJson(req: IncomingMessage, res: ServerResponse, limit: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0, refused = false;
    const refuse = (what: string) => {
      refused = true;
      chunks.length = 0;
      res.setHeader("connection", "close");
      reject(new HttpError(413, `body: ${what} the limit of ${limit} bytes (--max-body)`, "body"));
    };
    const declared = Number(req.headers["content-length"]);
    if (declared > limit) refuse(`${declared} bytes, over`);
    req.on("data", (chunk: Buffer) => {
      if (refused) return;
      size += chunk.length;
      if (size > limit) refuse("over");
      else chunks.push(chunk);
    });
    req.once("error", (e) => reject(badRequest("body", `could not be read (${e.message})`)));
    req.once("end", () => {
      if (refused) return;
      const text = Buffer.concat(chunks).toString("utf8");
      if (text.trim() === "") return reject(badRequest("body", "empty; expected a JSON object"));
      try {
        resolve(JSON.parse(text));
      } catch (e) {
        reject(badRequest("body", `malformed JSON (${(e as Error).message})`));
      }
    });
  });
}
