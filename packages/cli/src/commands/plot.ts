/**
 * chainrule plot RUN_DIR: the run's charts as SVG files (drawn by Vega-Lite, see plot.ts) and
 * one self-contained HTML report (the charts inline, a table per epoch, the job): it opens offline.
 */
import { existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { writeFileAtomicSync } from "@chainrule/core";
import { CliError, UsageError } from "../errors.js";
import { type Panel, PANELS, type RunMeta, readRunJson, rowsOfRun, runMeta } from "../metric-rows.js";
import { DEFAULT_SMOOTHING, lossSpansDecade, panelSpecs, panelsWithData, renderSvg } from "../plot.js";
import { JOB_FILE, METRICS_FILE, readMetrics } from "../rundir.js";
import { parseFlags } from "../flags.js";

type Rec = Record<string, any>;

export const PLOT_HELP = `usage: chainrule plot RUN_DIR [--smoothing W]

Writes RUN_DIR/plots/<panel>.svg and RUN_DIR/report.html (the charts inline, a table per
epoch, the job; it opens offline). Panels, each only when the run has its data:
  loss        train loss at each logged step, smoothed (raw faint), and the held-out loss per epoch
  accuracy    held-out accuracy per epoch (classification runs)
  throughput  samples/s (tokens/s for GPT runs)
  lr          the learning rate (when it changes during the run)

options:
  --smoothing W   weight of the train loss's moving average, 0 (none) to 0.99 (default ${DEFAULT_SMOOTHING})
`;

/** --smoothing: a weight in [0, 1). */
export function parseSmoothing(value: string | undefined): number {
  if (value === undefined) return DEFAULT_SMOOTHING;
  const w = Number(value);
  if (value.trim() === "" || !Number.isFinite(w) || w < 0 || w >= 1) throw new UsageError(`--smoothing: expected a number from 0 to below 1, got ${JSON.stringify(value)}`);
  return w;
}

/** A run's name for legends: its directory's name. */
export function runName(runDir: string): string {
  return basename(resolve(runDir));
}

export interface RunCharts {
  panels: { panel: Panel; svg: string }[];
  meta: RunMeta;
}

/** The run's charts, one SVG per panel that has data. */
export async function runCharts(runDir: string, records: Rec[], job: Rec | null, smoothing: number): Promise<RunCharts> {
  const meta = runMeta(runName(runDir), job);
  const { rows, runRows } = rowsOfRun(meta.name, meta, records, smoothing);
  const specs = panelSpecs([{ id: meta.name, meta }], { smoothing, logLoss: lossSpansDecade(rows) });
  const panels: { panel: Panel; svg: string }[] = [];
  for (const panel of panelsWithData(rows, [runRows])) panels.push({ panel, svg: await renderSvg(specs[panel], rows) });
  return { panels, meta };
}

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
const fixed = (v: unknown, digits: number) => (typeof v === "number" ? v.toFixed(digits) : "");
const int = (v: unknown) => (typeof v === "number" ? Math.round(v).toLocaleString("en-US") : "");

/** The report: summary line, charts, a table per epoch (only the columns the run has), the job. */
export function reportHtml(runDir: string, charts: RunCharts, records: Rec[], summary: Rec | null, job: string): string {
  const tokens = charts.meta.tokensPerSample;
  const heldOut = tokens !== null ? "validation" : "held-out";
  const epochs = records.filter((r) => r.kind === "epoch");
  const hasAccuracy = epochs.some((r) => typeof r.heldOutAccuracy === "number");
  const columns: [string, (r: Rec) => string][] = [
    ["epoch", (r) => String(r.epoch)],
    ["step", (r) => int(r.step)],
    ["train loss", (r) => fixed(r.trainLoss, 4)],
    [`${heldOut} loss`, (r) => fixed(r.heldOutLoss, 4)],
    ...(hasAccuracy ? [["accuracy", (r: Rec) => (typeof r.heldOutAccuracy === "number" ? `${(r.heldOutAccuracy * 100).toFixed(2)}%` : "")] as [string, (r: Rec) => string]] : []),
    [tokens !== null ? "tokens/s" : "samples/s", (r) => int(typeof r.samplesPerSec === "number" ? r.samplesPerSec * (tokens ?? 1) : undefined)],
    ["learning rate", (r) => (typeof r.lr === "number" ? Number(r.lr.toPrecision(3)).toString() : "")],
    ["wall s", (r) => fixed(r.wallTime, 1)],
  ];
  const table = epochs.length === 0 ? "<p>No epoch finished yet.</p>" :
    `<table><tr>${columns.map(([h]) => `<th>${esc(h)}</th>`).join("")}</tr>${epochs.map((r) => `<tr>${columns.map(([, f]) => `<td>${esc(f(r))}</td>`).join("")}</tr>`).join("")}</table>`;
  const s = summary;
  const headline = s
    ? `<p><b>${typeof s.heldOutAccuracy === "number" ? `held-out accuracy ${(s.heldOutAccuracy * 100).toFixed(2)}%, ` : ""}${heldOut} loss ${fixed(s.heldOutLoss, 4)}</b> · ` +
      `${s.epochs} epochs, ${int(s.steps)} steps in ${fixed(s.wallSeconds, 1)} s · ` +
      `${tokens !== null ? `${int(s.samplesPerSec * tokens)} tokens/s` : `${int(s.samplesPerSec)} samples/s`} · ${esc(String(s.engine ?? ""))}` +
      `${s.stoppedEarly ? ` · stopped early after epoch ${s.stoppedEarly.epoch}${s.stoppedEarly.reason ? `: ${esc(String(s.stoppedEarly.reason))}` : ""}` : ""}</p>`
    : "<p>The run has not finished (no summary.json): the charts show the records so far.</p>";
  const body = charts.panels.length === 0 ? "<p>No metrics recorded yet.</p>" : `<div class="grid">${charts.panels.map((p) => `<figure id="${p.panel}">${p.svg}</figure>`).join("\n")}</div>`;
  return `<!doctype html><html><head><meta charset="utf-8"><title>chainrule run ${esc(charts.meta.name)}</title>
<style>body{font-family:system-ui,sans-serif;max-width:1280px;margin:24px auto;padding:0 16px;color:#222}.grid{display:flex;flex-wrap:wrap;gap:16px}figure{margin:0}table{border-collapse:collapse;font-variant-numeric:tabular-nums}td,th{border:1px solid #ddd;padding:4px 10px;text-align:right}pre{background:#f6f6f6;padding:12px;overflow:auto}</style></head><body>
<h1>chainrule run <code>${esc(runDir)}</code></h1>
${headline}
${body}
<h2>Epochs</h2>${table}
<h2>Job</h2><pre>${esc(job)}</pre></body></html>
`;
}

export async function plotCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags("plot", argv, { smoothing: { type: "string" }, help: { type: "boolean", short: "h" } });
  if (values.help) {
    process.stdout.write(PLOT_HELP);
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError(`plot takes one RUN_DIR, got ${positionals.length}${positionals.length ? `: ${positionals.join(" ")}` : ""}`);
  const smoothing = parseSmoothing(values.smoothing);
  const runDir = positionals[0];
  const mpath = join(runDir, METRICS_FILE);
  if (!existsSync(mpath)) throw new CliError(`${runDir}: no ${METRICS_FILE} (is it a run directory?)`);
  const records = readMetrics(mpath) as Rec[];
  const job = readRunJson(runDir, JOB_FILE);
  const charts = await runCharts(runDir, records, job, smoothing);
  const plots = join(runDir, "plots");
  mkdirSync(plots, { recursive: true });
  // A panel an earlier plot drew that the run no longer has (the learning rate of a resumed run, say) goes.
  for (const panel of PANELS) if (!charts.panels.some((p) => p.panel === panel)) rmSync(join(plots, `${panel}.svg`), { force: true });
  for (const p of charts.panels) writeFileAtomicSync(join(plots, `${p.panel}.svg`), p.svg);
  const summary = readRunJson(runDir, "summary.json");
  const jobText = existsSync(join(runDir, JOB_FILE)) ? readFileSync(join(runDir, JOB_FILE), "utf8") : "";
  writeFileAtomicSync(join(runDir, "report.html"), reportHtml(runDir, charts, records, summary, jobText));
  const written = charts.panels.map((p) => join(plots, `${p.panel}.svg`));
  process.stdout.write(`${written.length ? `wrote ${written.join(", ")}` : "no metrics to chart yet"}\nreport: ${join(runDir, "report.html")}\n`);
  return 0;
}
