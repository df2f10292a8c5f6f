/**
 * The dashboard's HTML page: a status table (one row per run: state, step and epoch of the
 * total, ETA, latest figures), one box per chart panel (shown once it has data), the Vega
 * specifications as inline JSON, and the script that streams rows into them. Nothing is
 * fetched from outside this server: Vega's browser build is served from node_modules.
 */
import type * as vega from "vega";
import type { RunMeta } from "../metric-rows.js";
import { type ChartRun, panelSpecs, toVega } from "../plot.js";
import { CLIENT_SCRIPT } from "./client-script.js";

export interface PageRun {
  id: string;
  dir: string;
  meta: RunMeta;
}

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

/** JSON that is safe inside a <script> element. */
const scriptJson = (v: unknown) => JSON.stringify(v).replace(/</g, "\\u003c");

const PANEL_TITLES = { loss: "loss", accuracy: "held-out accuracy", throughput: "throughput", lr: "learning rate" };

/** The page's title: the run's name, or how many runs it shows. */
function pageTitle(runs: PageRun[]): string {
  return runs.length === 1 ? runs[0].id : runs.length === 0 ? "waiting for runs" : `${runs.length} runs`;
}

/** What the page's script draws from (pageConfig). */
export interface PageConfig {
  title: string;
  runs: { id: string; dir: string; index: number; throughputUnit: string }[];
  specs: Record<"loss" | "lossLog" | "accuracy" | "throughput" | "lr", vega.Spec> | null;
}

/**
 * What the page's script draws from: the runs (in legend order) and each panel's Vega
 * specification for them (null while there is no run). Sent again whenever a run is added.
 */
export function pageConfig(runs: PageRun[], smoothing: number): PageConfig {
  const chartRuns: ChartRun[] = runs.map((r) => ({ id: r.id, meta: r.meta }));
  const linear = runs.length > 0 ? panelSpecs(chartRuns, { smoothing, logLoss: false }) : null;
  const log = runs.length > 0 ? panelSpecs(chartRuns, { smoothing, logLoss: true }) : null;
  return {
    title: pageTitle(runs),
    runs: runs.map((r, index) => ({ id: r.id, dir: r.dir, index, throughputUnit: r.meta.tokensPerSample !== null ? "tokens/s" : "samples/s" })),
    specs: linear && log ? {
      loss: toVega(linear.loss), lossLog: toVega(log.loss), accuracy: toVega(linear.accuracy),
      throughput: toVega(linear.throughput), lr: toVega(linear.lr),
    } : null,
  };
}

export function dashboardPage(runs: PageRun[], smoothing: number): string {
  const config = pageConfig(runs, smoothing);
  const title = config.title;
  const boxes = Object.entries(PANEL_TITLES).map(([panel, name]) =>
    `<section class="chart" id="chart-${panel}" hidden aria-label="${name}">${panel === "loss" ? `<label class="toggle"><input type="checkbox" id="log-loss"> log scale</label>` : ""}<div class="plot"></div></section>`).join("\n");
  return `<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>chainrule dashboard: ${esc(title)}</title>
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:20px 24px;color:#222}
h1{font-size:20px;margin:0 0 4px}#connection{color:#666;font-size:13px;margin-bottom:12px}
table{border-collapse:collapse;font-variant-numeric:tabular-nums;font-size:13px;margin-bottom:16px}
td,th{border:1px solid #ddd;padding:4px 10px;text-align:right;white-space:nowrap}td.run,td.state{text-align:left}th{background:#f6f6f6}
.grid{display:flex;flex-wrap:wrap;gap:16px}.chart{position:relative}.toggle{position:absolute;right:8px;top:2px;font-size:12px;color:#444;z-index:1}
</style></head><body>
<h1 id="title">chainrule dashboard: ${esc(title)}</h1>
<div id="connection">connecting…</div>
<table><thead><tr><th>run</th><th>state</th><th>step</th><th>epoch</th><th>ETA</th><th>train loss (smoothed)</th><th>held-out loss</th><th>accuracy</th><th>throughput</th><th>learning rate</th><th>elapsed</th></tr></thead><tbody id="status-rows"></tbody></table>
<div class="grid">
${boxes}
</div>
<script id="config" type="application/json">${scriptJson(config)}</script>
<script src="vega.min.js"></script>
<script>${CLIENT_SCRIPT}</script>
</body></html>
`;
}
