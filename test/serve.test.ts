/**
 * chainrule serve through the real command: small models are trained, each served on
 * an ephemeral port of 127.0.0.1 (the bound port read from the server's stdout), and
 * real HTTP requests checked: answers equal `chainrule predict` / `generate`, bad
 * requests get 4xx naming the field, concurrent requests are batched and each answered
 * with its own rows, a failing model fails only its request, SIGTERM drains.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ChildProcess, spawn } from "node:child_process";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { MAIN, REPO, type Result, cli, tempDir, writeJobIn } from "./cli-helpers.ts";

const TMP = tempDir("chainrule-serve-");
const FIX = join(REPO, "test/fixtures");

// ---- the served process ----

interface Served {
  url: string;
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const running: ChildProcess[] = [];

/** Starts `chainrule serve CHECKPOINT --port 0 ...` and resolves once it prints the address it listens on. */
function serve(checkpoint: string, flags: string[] = []): Promise<Served> {
  const child = spawn(process.execPath, ["--import", "tsx", MAIN, "serve", checkpoint, "--port", "0", ...flags], {
    cwd: REPO, env: { ...process.env, CHAINRULE_PLAIN: "1" }, stdio: ["ignore", "pipe", "pipe"],
  });
  running.push(child);
  let out = "", err = "";
  child.stdout!.on("data", (d) => (out += d));
  child.stderr!.on("data", (d) => (err += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on("close", (code, signal) => resolve({ code, signal })));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`serve did not start in 30 s\n${out}\n${err}`)), 30_000);
    const onData = () => {
      const m = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(out);
      if (!m) return;
      clearTimeout(timer);
      child.stdout!.off("data", onData);
      resolve({ url: m[1], child, stdout: () => out, stderr: () => err, exited });
    };
    child.stdout!.on("data", onData);
    void exited.then(({ code }) => {
      clearTimeout(timer);
      reject(new Error(`serve exited with ${code} before listening\n${out}\n${err}`));
    });
  });
}

afterAll(() => {
  for (const c of running) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  rmSync(TMP, { recursive: true, force: true });
});

async function post(url: string, body: unknown): Promise<{ status: number; json: any }> {
  const res = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: typeof body === "string" ? body : JSON.stringify(body) });
  return { status: res.status, json: await res.json() };
}

async function get(url: string): Promise<{ status: number; json: any }> {
  const res = await fetch(url);
  return { status: res.status, json: await res.json() };
}

/** Polls /healthz until `n` other requests are in flight (10 s at most). */
async function untilInFlight(url: string, n: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if ((await get(`${url}/healthz`)).json.inFlight >= n) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${url}: never ${n} requests in flight`);
}

/** Tries new connections until one is refused (10 s at most). */
async function untilRefused(url: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const refused = await fetch(`${url}/healthz`, { headers: { connection: "close" } }).then(() => false, () => true);
    if (refused) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${url}: still accepting connections`);
}

/** Deterministic pseudo-random rows in [0, 1), written to 3 decimals (so a CSV holds exactly the values sent). */
function rows(n: number, d: number, seed: number): number[][] {
  let s = seed;
  const next = () => ((s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  return Array.from({ length: n }, () => Array.from({ length: d }, () => Math.round(next() * 1000) / 1000));
}

function writeCsv(name: string, data: number[][]): string {
  const p = join(TMP, name);
  writeFileSync(p, data.map((r) => r.join(",")).join("\n") + "\n");
  return p;
}

// ---- models ----

const MLP = join(TMP, "mlp"), LINEAR = join(TMP, "linear"), GPT = join(TMP, "gpt"), FAULTY = join(TMP, "faulty");

beforeAll(async () => {
  const regression = [["x1", "x2", "x3", "y"].join(","), ...rows(200, 3, 5).map(([a, b, c]) => [a, b, c, 2 * a - b + 0.5 * c + 0.1].join(","))];
  writeFileSync(join(TMP, "regression.csv"), regression.join("\n") + "\n");
  const jobs: [string, string, unknown][] = [
    [MLP, "mlp", { model: { type: "mlp", hidden: [32] }, data: { type: "mnist", limitTrain: 600, limitHeldOut: 200 }, epochs: 1, batchSize: 50, workers: 1 }],
    [LINEAR, "linear", { model: { type: "linear" }, data: { type: "csv", path: join(TMP, "regression.csv"), label: "y", task: "regression" }, epochs: 5, batchSize: 16, workers: 1, optimizer: { type: "sgd", lr: 0.1 } }],
    [GPT, "gpt", { model: { type: "gpt", blockSize: 16, nLayer: 1, nHead: 2, nEmbd: 16 }, data: { type: "text", corpus: "female-names", stride: 16 }, optimizer: { type: "adamw", lr: 0.01 }, epochs: 1, batchSize: 32, workers: 1, sample: { tokens: 30, prompt: "\n" } }],
    // Misbehaves on sentinel inputs: 666 throws, 777 ends its worker thread, 555 takes 1.5 s.
    [FAULTY, "faulty", {
      model: { type: "module", module: join(FIX, "parallel-models.ts"), export: "Faulty", options: { sizes: [3, 8, 2], throwOn: 666, exitOn: 777, slowOn: 555, slowMs: 1500 } },
      data: { type: "csv", path: join(FIX, "cli-blobs.csv"), label: "label" }, epochs: 1, batchSize: 32, workers: 1,
    }],
  ];
  const results = await Promise.all(jobs.map(([out, name, job]) => cli(["train", writeJobIn(TMP, name, job), "--out", out])));
  results.forEach((r: Result, i) => expect(r.code, `${jobs[i][1]}: ${r.stdout}${r.stderr}`).toBe(0));
}, 120_000);

// ---- MLP: predict ----

describe("chainrule serve: a classifier", () => {
  let s: Served;
  beforeAll(async () => {
    s = await serve(MLP, ["--workers", "2"]);
  }, 40_000);

  it("answers /healthz and /v1/model", async () => {
    const h = await get(`${s.url}/healthz`);
    expect(h.status).toBe(200);
    expect(h.json).toMatchObject({ status: "ok", workers: 2, inFlight: 0 });
    const m = await get(`${s.url}/v1/model`);
    expect(m.status).toBe(200);
    expect(m.json).toMatchObject({ type: "mlp", task: "classification", inputShape: [1, 28, 28], classes: 10, outputs: 10, description: "MLP 784-32-10 (25,450 parameters)" });
    expect(m.json.checkpoint).toMatch(/mlp\/checkpoints\/step-\d+$/);
  });

  it("predicts what `chainrule predict` prints for the same rows: classes and top-3 probabilities", async () => {
    const inputs = rows(5, 784, 1);
    const [r, cliOut] = await Promise.all([post(`${s.url}/v1/predict`, { inputs }), cli(["predict", MLP, writeCsv("mlp-rows.csv", inputs), "--top", "3"])]);
    expect(cliOut.code, cliOut.stderr).toBe(0);
    expect(r.status).toBe(200);
    const lines = cliOut.stdout.trim().split("\n");
    expect(r.json.predictions).toHaveLength(5);
    r.json.predictions.forEach((p: any, i: number) => {
      // row 1: 3 · p(3: 0.412, 7: 0.101, 1: 0.090)
      const m = /^row \d+: (\d+) · p\((.*)\)$/.exec(lines[i])!;
      expect(m, lines[i]).not.toBeNull();
      expect(p.class).toBe(Number(m[1]));
      const top = m[2].split(", ").map((t) => t.split(": ").map(Number));
      expect(p.top.map((t: any) => t.class)).toEqual(top.map(([c]) => c));
      p.top.forEach((t: any, k: number) => expect(Math.abs(t.probability - top[k][1])).toBeLessThanOrEqual(0.0005 + 1e-6));
      expect(p.probability).toBe(p.top[0].probability);
    });
  });

  it("takes rows nested to the input shape (1, 28, 28) as well as flat, and `top`", async () => {
    const [flat] = rows(1, 784, 2);
    const nested = [Array.from({ length: 28 }, (_, i) => flat.slice(i * 28, (i + 1) * 28))];
    const [a, b] = await Promise.all([post(`${s.url}/v1/predict`, { inputs: [flat], top: 10 }), post(`${s.url}/v1/predict`, { inputs: [nested], top: 10 })]);
    expect(a.status).toBe(200);
    expect(b.json).toEqual(a.json);
    const probs = a.json.predictions[0].top.map((t: any) => t.probability);
    expect(probs).toHaveLength(10);
    expect(probs.reduce((x: number, y: number) => x + y, 0)).toBeCloseTo(1, 5);
    for (let i = 1; i < 10; i++) expect(probs[i]).toBeLessThanOrEqual(probs[i - 1]);
  });

  it("bad requests get 4xx and a JSON error naming the field", async () => {
    const u = `${s.url}/v1/predict`;
    const cases: [unknown, number, string, RegExp][] = [
      [{ inputs: [[1, 2, 3]] }, 400, "inputs[0]", /3 values but the model takes 784/],
      [{ inputs: [[...rows(1, 783, 3)[0], "x"]] }, 400, "inputs[0][783]", /expected a number, got "x"/],
      [{ inputs: [rows(1, 784, 3)[0], [...rows(1, 783, 3)[0], null]] }, 400, "inputs[1][783]", /expected a number, got null/],
      [{ inputs: [] }, 400, "inputs", /expected a list with length ≥ 1/],
      [{ input: [[1]] }, 400, "input", /unknown key \(did you mean inputs\?\); expected inputs, top/],
      [{ inputs: [rows(1, 784, 3)[0]], top: 0 }, 400, "top", /≥ 1/],
      ["{\"inputs\": [[1, 2", 400, "body", /malformed JSON/],
      ["[1, 2]", 400, "body", /expected a JSON object, got an array/],
      ["", 400, "body", /empty/],
    ];
    const answers = await Promise.all(cases.map(([body]) => post(u, body)));
    answers.forEach((a, i) => {
      const [, status, field, re] = cases[i];
      expect(a.status, JSON.stringify(a.json)).toBe(status);
      expect(a.json.field).toBe(field);
      expect(a.json.error).toMatch(new RegExp(`^${field.replace(/[[\]]/g, "\\$&")}: `));
      expect(a.json.error).toMatch(re);
    });
    const gen = await post(`${s.url}/v1/generate`, { prompt: "a" });
    expect(gen.status).toBe(404);
    expect(gen.json.error).toMatch(/not a GPT text model \(mlp\); use POST \/v1\/predict/);
    const wrongMethod = await get(u);
    expect(wrongMethod.status).toBe(405);
    expect((await get(`${s.url}/v2/nothing`)).status).toBe(404);
    // Still serving after all that.
    expect((await post(u, { inputs: rows(1, 784, 4) })).status).toBe(200);
  });

  it("batches concurrent requests and answers each with its own rows", async () => {
    const inputs = Array.from({ length: 16 }, (_, i) => rows(1 + (i % 3), 784, 100 + i));
    const alone = await Promise.all(inputs.slice(0, 4).map((x) => post(`${s.url}/v1/predict`, { inputs: x, top: 10 })));
    const before = (await get(`${s.url}/healthz`)).json.predict;
    const together = await Promise.all(inputs.map((x) => post(`${s.url}/v1/predict`, { inputs: x, top: 10 })));
    const after = (await get(`${s.url}/healthz`)).json.predict;
    together.forEach((r, i) => {
      expect(r.status).toBe(200);
      expect(r.json.predictions).toHaveLength(inputs[i].length);
    });
    // The same rows alone and inside a batch: the same classes, probabilities equal to float32 rounding.
    for (let i = 0; i < 4; i++) {
      together[i].json.predictions.forEach((p: any, j: number) => {
        const q = alone[i].json.predictions[j];
        expect(p.top.map((t: any) => t.class)).toEqual(q.top.map((t: any) => t.class));
        p.top.forEach((t: any, k: number) => expect(t.probability).toBeCloseTo(q.top[k].probability, 6));
      });
    }
    expect(after.requests - before.requests).toBe(16);
    expect(after.rows - before.rows).toBe(inputs.reduce((a, x) => a + x.length, 0));
    expect(after.batches - before.batches).toBeLessThan(16);
  });

  it("an int8 checkpoint: each worker answers over the weights the first dequantized, as `chainrule predict` does", async () => {
    const q = join(TMP, "mlp-int8");
    const made = await cli(["quantize", MLP, "--out", q]);
    expect(made.code, made.stderr).toBe(0);
    // Batches of one row: requests sent together run on several workers at once.
    const int8 = await serve(q, ["--workers", "3", "--max-batch", "1"]);
    const inputs = rows(6, 784, 11);
    const [answers, cliOut] = await Promise.all([
      Promise.all(inputs.map((row) => post(`${int8.url}/v1/predict`, { inputs: [row] }))),
      cli(["predict", q, writeCsv("int8-rows.csv", inputs), "--top", "3"]),
    ]);
    expect(cliOut.code, cliOut.stderr).toBe(0);
    expect((await get(`${int8.url}/healthz`)).json.workers).toBe(3);
    const printed = cliOut.stdout.trim().split("\n").map((l) => Number(/^row \d+: (\d+)/.exec(l)![1]));
    expect(answers.map((a) => a.json.predictions[0].class)).toEqual(printed);
    const again = await post(`${int8.url}/v1/predict`, { inputs });
    again.json.predictions.forEach((p: any, i: number) => {
      expect(p.class).toBe(printed[i]);
      expect(Math.abs(p.probability - answers[i].json.predictions[0].probability)).toBeLessThanOrEqual(1e-6);
    });
    int8.child.kill("SIGTERM");
    expect((await int8.exited).code).toBe(0);
  }, 60_000);

  it("refuses a body over --max-body with 413 naming the body", async () => {
    const small = await serve(MLP, ["--workers", "1", "--max-body", "4k"]);
    const r = await post(`${small.url}/v1/predict`, { inputs: rows(1, 784, 5) });
    expect(r.status).toBe(413);
    expect(r.json).toEqual({ error: expect.stringMatching(/^body: \d+ bytes, over the limit of 4096 bytes/), field: "body" });
    expect((await get(`${small.url}/healthz`)).status).toBe(200);
    small.child.kill("SIGTERM");
    expect((await small.exited).code).toBe(0);
  }, 40_000);
});

// ---- regression ----

describe("chainrule serve: a regression model", () => {
  it("answers the values `chainrule predict` prints", async () => {
    const s = await serve(LINEAR, ["--workers", "1"]);
    const inputs = rows(4, 3, 9);
    const [r, cliOut] = await Promise.all([post(`${s.url}/v1/predict`, { inputs }), cli(["predict", LINEAR, writeCsv("linear-rows.csv", inputs)])]);
    expect(cliOut.code, cliOut.stderr).toBe(0);
    expect(r.status).toBe(200);
    const printed = cliOut.stdout.trim().split("\n").map((l) => Number(/^row \d+: (\S+)$/.exec(l)![1]));
    expect(r.json.predictions.map((p: any) => p.values.length)).toEqual([1, 1, 1, 1]);
    r.json.predictions.forEach((p: any, i: number) => expect(Math.abs(p.values[0] - printed[i])).toBeLessThanOrEqual(1e-5 * Math.max(1, Math.abs(printed[i]))));
    expect((await get(`${s.url}/v1/model`)).json).toMatchObject({ type: "linear", task: "regression", inputShape: [3], outputs: 1 });
    s.child.kill("SIGTERM");
    expect((await s.exited).code).toBe(0);
  }, 40_000);
});

// ---- GPT: generate ----

describe("chainrule serve: a GPT", () => {
  let s: Served;
  beforeAll(async () => {
    s = await serve(GPT, ["--workers", "2", "--max-tokens", "1000000"]);
  }, 40_000);

  it("/v1/model reports the vocabulary; /v1/predict is not for text models", async () => {
    const m = await get(`${s.url}/v1/model`);
    expect(m.json).toMatchObject({ type: "gpt", task: "text", vocabSize: 54, blockSize: 16 });
    expect(m.json.vocab).toHaveLength(54);
    const p = await post(`${s.url}/v1/predict`, { inputs: [[1]] });
    expect(p.status).toBe(404);
    expect(p.json.error).toMatch(/GPT text model; use POST \/v1\/generate/);
  });

  it("generates what `chainrule generate` prints for the same prompt and seed, whole or streamed", async () => {
    const req = { prompt: "Ma", maxTokens: 60, temperature: 1, topK: 20, seed: 7 };
    const [whole, streamed, cliOut] = await Promise.all([
      post(`${s.url}/v1/generate`, req),
      fetch(`${s.url}/v1/generate`, { method: "POST", body: JSON.stringify({ ...req, stream: true }) }),
      cli(["generate", GPT, "--prompt", "Ma", "--tokens", "60", "--temperature", "1", "--top-k", "20", "--seed", "7"]),
    ]);
    expect(cliOut.code, cliOut.stderr).toBe(0);
    expect(whole.status).toBe(200);
    expect(whole.json).toEqual({ prompt: "Ma", text: cliOut.stdout.slice(2, -1), tokens: 60, finished: true });
    expect(streamed.headers.get("content-type")).toMatch(/^text\/event-stream/);
    const events = (await streamed.text()).trim().split("\n\n");
    expect(events).toHaveLength(61);
    const tokens = events.slice(0, 60).map((e) => JSON.parse(/^data: (.*)$/.exec(e)![1]).token);
    expect(tokens.join("")).toBe(whole.json.text);
    expect(events[60]).toBe(`event: done\ndata: ${JSON.stringify(whole.json)}`);
  });

  it("streams tokens as they are sampled, not all at the end", async () => {
    const res = await fetch(`${s.url}/v1/generate`, { method: "POST", body: JSON.stringify({ prompt: "A", maxTokens: 400, stream: true }) });
    const reader = res.body!.getReader();
    const first = new TextDecoder().decode((await reader.read()).value);
    expect(first).toMatch(/^data: \{"token":/);
    expect(first).not.toMatch(/event: done/); // the first token came before the last
    let rest = "";
    for (let r = await reader.read(); !r.done; r = await reader.read()) rest += new TextDecoder().decode(r.value);
    expect(rest).toMatch(/event: done\ndata: \{"prompt":"A","text":".*","tokens":400,"finished":true\}\n\n$/s);
  });

  it("generations on one worker advance in turn: a short one is not held up by a long one, nor changed by it", async () => {
    const u = `${s.url}/v1/generate`;
    const short = { prompt: "Em", maxTokens: 8, temperature: 1, seed: 3 };
    const alone = await post(u, short);
    const finished: string[] = [];
    const track = (name: string, p: Promise<unknown>) => p.then((r) => (finished.push(name), r));
    // Two long generations, one per worker; the short one then shares a worker with one of them.
    const longs = [track("long", post(u, { prompt: "A", maxTokens: 3000 })), track("long", post(u, { prompt: "B", maxTokens: 3000 }))];
    await new Promise((r) => setTimeout(r, 100));
    const together = await track("short", post(u, short));
    await Promise.all(longs);
    expect(finished).toEqual(["short", "long", "long"]);
    expect(together).toEqual(alone);
  });

  it("a client that leaves mid-stream stops its generation", async () => {
    const leaving = new AbortController();
    // A million tokens: minutes of sampling unless the server stops when the client goes.
    const res = await fetch(`${s.url}/v1/generate`, { method: "POST", body: JSON.stringify({ prompt: "A", maxTokens: 1_000_000, stream: true }), signal: leaving.signal });
    await res.body!.getReader().read();
    expect((await get(`${s.url}/healthz`)).json.generating).toBe(1);
    leaving.abort();
    let generating = 1;
    for (let i = 0; i < 200 && generating > 0; i++) {
      await new Promise((r) => setTimeout(r, 50));
      generating = (await get(`${s.url}/healthz`)).json.generating;
    }
    expect(generating).toBe(0);
  });

  it("bad generate requests get 400 naming the field", async () => {
    const u = `${s.url}/v1/generate`;
    const [chars, tooMany, temp, seed, type] = await Promise.all([
      post(u, { prompt: "Zoë#" }), post(u, { maxTokens: 1000001 }), post(u, { temperature: -1 }), post(u, { seed: 1.5 }), post(u, { prompt: 3 }),
    ]);
    expect(chars).toEqual({ status: 400, json: { field: "prompt", error: expect.stringMatching(/^prompt: characters "ë", "#" are not in the model's vocabulary \(54 characters/) } });
    expect(tooMany).toEqual({ status: 400, json: { field: "maxTokens", error: "maxTokens: 1000001 is more than this server's limit of 1000000" } });
    expect(temp.json.field).toBe("temperature");
    expect(seed.json).toEqual({ field: "seed", error: "seed: expected an integer, got 1.5" });
    expect(type.json).toEqual({ field: "prompt", error: "prompt: expected string, got 3" });
  });
});

// ---- failures and shutdown ----

describe("chainrule serve: a failing model, SIGTERM", () => {
  let s: Served;
  beforeAll(async () => {
    s = await serve(FAULTY, ["--workers", "1", "--trust-job-module"]);
  }, 40_000);

  it("a model error fails only its request (also inside a batch); a dead worker is replaced", async () => {
    const u = `${s.url}/v1/predict`;
    const good = [[0.9, 0.9, -0.5], [-0.5, 0.1, 0.2]];
    const expected = await post(u, { inputs: good, top: 2 });
    expect(expected.status).toBe(200);
    // Queued while the one worker is busy with a slow request, the three leave as one batch, which
    // fails and is retried request by request.
    const before = (await get(`${s.url}/healthz`)).json.predict;
    const slow = post(u, { inputs: [[555, 0, 0]] });
    await untilInFlight(s.url, 1);
    await new Promise((r) => setTimeout(r, 100)); // past the batch window: in the model
    const [a, bad, b] = await Promise.all([post(u, { inputs: [good[0]], top: 2 }), post(u, { inputs: [[1, 666, 1]] }), post(u, { inputs: [good[1]], top: 2 })]);
    expect((await slow).status).toBe(200);
    const after = (await get(`${s.url}/healthz`)).json.predict;
    expect(after.batches - before.batches).toBe(5); // the slow one, the three together, each of them again
    expect(bad.status).toBe(500);
    expect(bad.json.error).toMatch(/^model: .*sentinel 666 in the input/);
    expect(a.json.predictions[0]).toEqual(expected.json.predictions[0]);
    expect(b.json.predictions[0]).toEqual(expected.json.predictions[1]);
    const died = await post(u, { inputs: [[777, 0, 0]] });
    expect(died.status).toBe(500);
    expect(died.json.error).toMatch(/inference worker \d+ exited \(code 7\)/);
    const again = await post(u, { inputs: good, top: 2 });
    expect(again).toEqual(expected);
    expect(s.stderr()).toMatch(/inference worker \d+ exited \(code 7\); starting another/);
    expect(s.child.exitCode).toBeNull();
  });

  it("SIGTERM answers the requests in flight, refuses new connections and exits 0", async () => {
    const slow = post(`${s.url}/v1/predict`, { inputs: [[555, 0, 0]] }); // 1.5 s in the model
    await untilInFlight(s.url, 1);
    s.child.kill("SIGTERM");
    await untilRefused(s.url);
    const answer = await slow;
    expect(answer.status).toBe(200);
    expect(answer.json.predictions).toHaveLength(1);
    expect(await s.exited).toEqual({ code: 0, signal: null });
    expect(s.stderr()).toMatch(/SIGTERM: no new requests; answering 1 in flight/);
  });

  it("a drain longer than --drain-timeout exits 143", async () => {
    const t = await serve(FAULTY, ["--workers", "1", "--drain-timeout", "0.3", "--trust-job-module"]);
    const slow = fetch(`${t.url}/v1/predict`, { method: "POST", body: JSON.stringify({ inputs: [[555, 0, 0]] }) }).catch((e: Error) => e);
    await untilInFlight(t.url, 1);
    t.child.kill("SIGTERM");
    expect(await t.exited).toEqual({ code: 143, signal: null });
    expect(await slow).toBeInstanceOf(Error);
    expect(t.stderr()).toMatch(/1 requests still in flight after 0.3 s; exiting/);
  }, 40_000);
});

describe("chainrule serve: usage", () => {
  it("bad flags and checkpoints are one-line errors", async () => {
    const [port, none, help, code] = await Promise.all([
      cli(["serve", MLP, "--port", "70000"]), cli(["serve", join(TMP, "nope")]), cli(["serve", "--help"]), cli(["serve", FAULTY, "--port", "0"]),
    ]);
    expect(port.code).toBe(2);
    expect(port.stderr).toBe("chainrule: error: --port: expected 0..65535, got 70000\n");
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/^chainrule: error: .*nope: no such checkpoint or run directory\n$/);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/POST \/v1\/predict/);
    // A checkpoint of user code serves only with the user's consent, like predict.
    expect(code.code).toBe(2);
    expect(code.stderr).toMatch(/^chainrule: error: .*its model is your own code .*--trust-job-module/);
  });
});
