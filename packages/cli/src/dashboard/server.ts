/**
 * The dashboard's HTTP server: GET / (the page), /vega.min.js (Vega's browser build, from
 * node_modules), /events (server-sent events: a snapshot of every run on connecting, then each
 * run's new rows as its metrics.jsonl grows; the list of runs again when one is added). It polls
 * the runs' files a few times a second, and the directories of runs it was given every second for
 * new run directories; metrics.jsonl stays the one source of truth, whoever writes it.
 */
import { readFileSync, readdirSync } from "node:fs";
import { type IncomingMessage, type ServerResponse, createServer } from "node:http";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { CliError } from "../errors.js";
import { DEFAULT_SMOOTHING } from "../plot.js";
import { dashboardPage, pageConfig } from "./page.js";
import { RunWatcher, type RunUpdate, isDir, isRunDir } from "./watch.js";

export interface DashboardOptions {
  host: string;
  port: number;
  /** Weight of the train loss's moving average (default DEFAULT_SMOOTHING). */
  smoothing?: number;
  /** How often the runs' files are read (ms). */
  pollMs?: number;
  /** Directories of runs (runs/) in which run directories created later are shown too. */
  runRoots?: string[];
  /** How often `runRoots` are listed for new run directories (ms). */
  discoverMs?: number;
  /** Told of lines of metrics.jsonl that are not JSON records. */
  warn?: (line: string) => void;
}

export interface Dashboard {
  url: string;
  /** Reads the runs one last time, pushes what is new, tells the pages, closes every connection. */
  close(): Promise<void>;
}

/** A page that reads too slowly is dropped past this much unsent data (it reconnects to a fresh snapshot). */
const MAX_BUFFERED_BYTES = 16 << 20;
/** A comment line this often keeps idle connections (and proxies) open. */
const HEARTBEAT_MS = 15_000;
/** close() waits at most this long for connections to finish. */
const CLOSE_TIMEOUT_MS = 2_000;

/** Legend names for the runs: their directories' names, or their paths where two share a name. */
export function runIds(dirs: string[]): string[] {
  const names = dirs.map((d) => basename(resolve(d)));
  return names.map((n, i) => (names.indexOf(n) !== names.lastIndexOf(n) ? dirs[i] : n));
}

/** The legend name of a run added later: its directory's name, or its path when a run shown already has that name. */
function laterRunId(dir: string, taken: string[]): string {
  const name = basename(resolve(dir));
  return taken.includes(name) ? dir : name;
}

/** The run directories directly inside `root`, in name order (none when it cannot be read). */
export function runDirsIn(root: string): string[] {
  let names: string[];
  try {
    names = readdirSync(root);
  } catch {
    return [];
  }
  return names.sort().map((n) => join(root, n)).filter((d) => isDir(d) && isRunDir(d));
}

/** Vega's browser build: its package exports only the module entry, the file sits beside it. */
function vegaBrowserBuild(): Buffer {
  const entry = fileURLToPath(import.meta.resolve("vega"));
  return readFileSync(join(dirname(entry), "vega.min.js"));
}

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|localhost|::1|\[::1\])$/;

export async function startDashboard(runDirs: string[], o: DashboardOptions): Promise<Dashboard> {
  const warn = o.warn ?? ((line: string) => process.stderr.write(`chainrule dashboard: ${line}\n`));
  const smoothing = o.smoothing ?? DEFAULT_SMOOTHING;
  const ids = runIds(runDirs);
  const watchers = runDirs.map((dir, i) => new RunWatcher(ids[i], dir, smoothing, warn));
  for (const w of watchers) w.poll();
  const pageRuns = () => watchers.map((w) => ({ id: w.id, dir: w.dir, meta: w.meta }));
  const page = () => dashboardPage(pageRuns(), smoothing);
  const shown = new Set(runDirs.map((d) => resolve(d)));
  const vegaJs = vegaBrowserBuild();
  const clients = new Set<ServerResponse>();

  const send = (res: ServerResponse, event: string, data: unknown) => {
    if (res.writableLength > MAX_BUFFERED_BYTES) {
      clients.delete(res);
      res.destroy();
      return;
    }
    res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  };
  const broadcast = (updates: RunUpdate[]) => {
    for (const u of updates) for (const c of clients) send(c, "update", u);
  };
  const pollAll = () => {
    const updates: RunUpdate[] = [];
    for (const w of watchers) {
      try {
        const u = w.poll();
        if (u) updates.push(u);
      } catch (e) {
        warn(`${w.dir}: ${(e as Error).message}`);
      }
    }
    broadcast(updates);
  };
  // Runs created after the start: shown as they appear (the pages get the new list, then the run).
  const refused = new Set<string>();
  const discover = () => {
    const added: RunWatcher[] = [];
    for (const root of o.runRoots ?? []) {
      for (const dir of runDirsIn(root)) {
        if (shown.has(resolve(dir))) continue;
        try {
          const w = new RunWatcher(laterRunId(dir, watchers.map((x) => x.id)), dir, smoothing, warn);
          w.poll();
          shown.add(resolve(dir));
          watchers.push(w);
          added.push(w);
        } catch (e) {
          // Tried again at the next look; said once per reason.
          const why = `${dir}: ${(e as Error).message}`;
          if (!refused.has(why)) warn(why);
          refused.add(why);
        }
      }
    }
    if (added.length === 0) return;
    const config = pageConfig(pageRuns(), smoothing);
    for (const c of clients) send(c, "runs", config);
    broadcast(added.map((w) => w.snapshot()));
  };

  // Bound to the loopback interface, the server also refuses other Host names: a web page
  // elsewhere cannot read the metrics through a DNS name that points at 127.0.0.1.
  const loopback = LOOPBACK.test(o.host);
  const hostAllowed = (req: IncomingMessage) => {
    if (!loopback) return true;
    const host = (req.headers.host ?? "").replace(/:\d+$/, "");
    return LOOPBACK.test(host);
  };

  const server = createServer((req, res) => {
    if (!hostAllowed(req)) {
      res.writeHead(403, { "content-type": "text/plain" }).end("chainrule dashboard: this server answers only to localhost / 127.0.0.1\n");
      return;
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD", "content-type": "text/plain" }).end(`chainrule dashboard: ${req.method} not allowed\n`);
      return;
    }
    const path = new URL(req.url ?? "/", "http://localhost").pathname;
    if (path === "/") {
      res.writeHead(200, { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" }).end(page());
    } else if (path === "/vega.min.js") {
      res.writeHead(200, { "content-type": "text/javascript; charset=utf-8", "cache-control": "max-age=3600" }).end(vegaJs);
    } else if (path === "/events") {
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-store", connection: "keep-alive" });
      res.write("retry: 2000\n\n");
      clients.add(res);
      req.on("close", () => clients.delete(res));
      send(res, "snapshot", { config: pageConfig(pageRuns(), smoothing), runs: watchers.map((w) => w.snapshot()) });
    } else {
      res.writeHead(404, { "content-type": "text/plain" }).end(`chainrule dashboard: no ${path} here (the page is /)\n`);
    }
  });

  try {
    await new Promise<void>((done, fail) => {
      server.once("error", fail);
      server.listen(o.port, o.host, () => done());
    });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === "EADDRINUSE" ? "address already in use (choose another port, or 0 for any free one)" : code === "EACCES" ? "permission denied" : (e as Error).message;
    throw new CliError(`dashboard: cannot listen on ${o.host}:${o.port}: ${why}`);
  }
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : o.port;
  const url = `http://${o.host.includes(":") ? `[${o.host}]` : o.host}:${port}/`;

  const poller = setInterval(pollAll, o.pollMs ?? 250);
  const discoverer = setInterval(discover, o.discoverMs ?? 1000);
  discoverer.unref();
  const heartbeat = setInterval(() => {
    for (const c of clients) c.write(": keep-alive\n\n");
  }, HEARTBEAT_MS);
  poller.unref();
  heartbeat.unref();

  let closed: Promise<void> | null = null;
  const close = () => {
    closed ??= (async () => {
      clearInterval(poller);
      clearInterval(discoverer);
      clearInterval(heartbeat);
      pollAll();
      for (const c of clients) {
        send(c, "closed", {});
        c.end();
      }
      clients.clear();
      await new Promise<void>((done) => {
        const timer = setTimeout(() => {
          server.closeAllConnections();
          done();
        }, CLOSE_TIMEOUT_MS);
        server.close(() => {
          clearTimeout(timer);
          done();
        });
        server.closeIdleConnections();
      });
    })();
    return closed;
  };
  return { url, close };
}
