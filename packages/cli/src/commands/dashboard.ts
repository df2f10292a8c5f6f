/**
 * chainrule dashboard RUN_DIR...: a local page that follows runs live (finished or running),
 * their curves overlaid; `chainrule train ... --dashboard` starts the same server beside a run.
 */
import { UsageError } from "../errors.js";
import { parseFlags } from "../flags.js";
import { DEFAULT_DASHBOARD_PORT, parsePort } from "../dashboard/flag.js";
import { isDir, isRunDir } from "../dashboard/watch.js";
import { runDirsIn, startDashboard } from "../dashboard/server.js";
import { parseSmoothing } from "./plot.js";
import { DEFAULT_SMOOTHING } from "../plot.js";

export const DASHBOARD_HELP = `usage: chainrule dashboard RUN_DIR... [--port ${DEFAULT_DASHBOARD_PORT}] [--host 127.0.0.1] [--smoothing W]

Serves a page that follows the runs as their metrics.jsonl grows (pushed by server-sent
events): loss (each logged step, smoothed, and held-out), held-out accuracy, throughput and
learning rate, with every run's curves overlaid; above them each run's state, step and epoch
of the total, ETA and latest figures. A RUN_DIR that holds run directories (runs/) stands for
the runs in it, those created while the dashboard runs included (looked for every second).
Runs until Ctrl-C.

options:
  --port P        port (default ${DEFAULT_DASHBOARD_PORT}; 0: any free port)
  --host H        address to listen on (default 127.0.0.1: this machine only)
  --smoothing W   weight of the train loss's moving average, 0 to 0.99 (default ${DEFAULT_SMOOTHING})

During training: chainrule train JOB --dashboard [PORT] serves the run being trained.
`;

/**
 * The run directories named: each RUN_DIR itself, or the run directories directly inside it;
 * and the directories of runs (`roots`) to look in for runs created later.
 */
export function expandRunDirs(paths: string[]): { runDirs: string[]; roots: string[] } {
  const dirs: string[] = [], roots: string[] = [];
  for (const p of paths) {
    if (!isDir(p)) throw new UsageError(`dashboard: ${p}: no such directory`);
    if (isRunDir(p)) {
      dirs.push(p);
      continue;
    }
    roots.push(p);
    dirs.push(...runDirsIn(p));
  }
  return { runDirs: [...new Set(dirs)], roots };
}

export async function dashboardCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags("dashboard", argv, {
    port: { type: "string" }, host: { type: "string" }, smoothing: { type: "string" }, help: { type: "boolean", short: "h" },
  });
  if (values.help) {
    process.stdout.write(DASHBOARD_HELP);
    return 0;
  }
  if (positionals.length === 0) throw new UsageError("dashboard takes one or more RUN_DIRs (or a directory of runs, such as runs/)");
  const port = values.port === undefined ? DEFAULT_DASHBOARD_PORT : parsePort("--port", values.port);
  const host = values.host ?? "127.0.0.1";
  const smoothing = parseSmoothing(values.smoothing);
  const { runDirs, roots } = expandRunDirs(positionals);
  const dashboard = await startDashboard(runDirs, { host, port, smoothing, runRoots: roots });
  const runs = runDirs.length === 0 ? "no runs yet" : runDirs.length === 1 ? runDirs[0] : `${runDirs.length} runs (${runDirs.join(", ")})`;
  const later = roots.length > 0 ? `, and the runs created in ${roots.join(", ")}` : "";
  process.stdout.write(`dashboard of ${runs}${later}: ${dashboard.url}\n(Ctrl-C to stop)\n`);
  return new Promise<number>((done) => {
    const stop = () => void dashboard.close().then(() => done(0));
    process.once("SIGINT", stop);
    process.once("SIGTERM", stop);
  });
}
