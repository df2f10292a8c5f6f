/** chainrule plot RUN_DIR: loss, accuracy and throughput charts (SVG) and one self-contained HTML report. */
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { writeFileAtomicSync } from "@chainrule/core";
import { CliError, UsageError } from "../errors.js";
import { lineChart, type Series } from "../plot.js";
import { JOB_FILE, METRICS_FILE, readMetrics } from "../rundir.js";
import { parseFlags } from "../flags.js";

type Rec = Record<string, any>;

export function charts(records: Rec[]): { name: string; title: string; svg: string }[] {
  const steps = records.filter((r) => r.kind === "step");
  const epochs = records.filter((r) => r.kind === "epoch");
  const loss: Series[] = [
    { name: "train loss (step)", points: steps.map((r) => [r.step, r.loss]) },
    { name: "train loss (epoch)", points: epochs.map((r) => [r.step, r.trainLoss]), markers: true },
    { name: "held-out loss", points: epochs.map((r) => [r.step, r.heldOutLoss]), markers: true },
  ];
  const acc: Series[] = [{ name: "held-out accuracy", points: epochs.filter((r) => r.heldOutAccuracy != null).map((r) => [r.epoch, r.heldOutAccuracy * 100]), markers: true }];
  const thr: Series[] = [
    { name: "samples/s (step)", points: steps.map((r) => [r.step, r.samplesPerSec]) },
    { name: "samples/s (epoch)", points: epochs.map((r) => [r.step, r.samplesPerSec]), markers: true },
  ];
  const out = [
    { name: "loss", title: "Loss", svg: lineChart(loss, { title: "Loss", xLabel: "step", yLabel: "loss", logY: true }) },
    { name: "accuracy", title: "Held-out accuracy", svg: lineChart(acc, { title: "Held-out accuracy", xLabel: "epoch", yLabel: "accuracy (%)", yFormat: (v) => `${Number(v.toPrecision(4))}%` }) },
    { name: "throughput", title: "Throughput", svg: lineChart(thr, { title: "Throughput", xLabel: "step", yLabel: "samples/s" }) },
  ];
  const lr: Series[] = [{ name: "learning rate", points: steps.map((r) => [r.step, r.lr]) }];
  if (new Set(steps.map((r) => r.lr)).size > 1) out.push({ name: "lr", title: "Learning rate", svg: lineChart(lr, { title: "Learning rate", xLabel: "step", yLabel: "lr" }) });
  return out;
}

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

export async function plotCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags("plot", argv, { help: { type: "boolean", short: "h" } });
  if (values.help || positionals.length !== 1) {
    if (!values.help) throw new UsageError("plot takes one RUN_DIR");
    process.stdout.write("usage: chainrule plot RUN_DIR\n\nWrites RUN_DIR/plots/{loss,accuracy,throughput}.svg (and lr.svg when the learning rate changes) and RUN_DIR/report.html.\n");
    return 0;
  }
  const runDir = positionals[0];
  const mpath = join(runDir, METRICS_FILE);
  if (!existsSync(mpath)) throw new CliError(`${runDir}: no ${METRICS_FILE} (is it a run directory?)`);
  const records = readMetrics(mpath) as Rec[];
  const cs = charts(records);
  const plots = join(runDir, "plots");
  mkdirSync(plots, { recursive: true });
  for (const c of cs) writeFileAtomicSync(join(plots, `${c.name}.svg`), c.svg);
  const summaryPath = join(runDir, "summary.json");
  const summary = existsSync(summaryPath) ? JSON.parse(readFileSync(summaryPath, "utf8")) : null;
  const job = existsSync(join(runDir, JOB_FILE)) ? readFileSync(join(runDir, JOB_FILE), "utf8") : "";
  const epochs = records.filter((r) => r.kind === "epoch");
  const rows = epochs.map((r) => `<tr><td>${r.epoch}</td><td>${r.step}</td><td>${r.trainLoss?.toFixed(4) ?? ""}</td><td>${r.heldOutLoss?.toFixed(4) ?? ""}</td><td>${r.heldOutAccuracy != null ? (r.heldOutAccuracy * 100).toFixed(2) + "%" : ""}</td><td>${Math.round(r.samplesPerSec ?? 0)}</td><td>${r.wallTime?.toFixed(1) ?? ""}</td></tr>`).join("");
  const html = `<!doctype html><html><head><meta charset="utf-8"><title>chainrule run ${esc(runDir)}</title>
<style>body{font-family:system-ui,sans-serif;max-width:1340px;margin:24px auto;padding:0 16px;color:#222}.grid{display:flex;flex-wrap:wrap;gap:12px}table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:4px 10px;text-align:right}pre{background:#f6f6f6;padding:12px;overflow:auto}</style></head><body>
<h1>chainrule run <code>${esc(runDir)}</code></h1>
${summary ? `<p><b>${summary.heldOutAccuracy != null ? `held-out accuracy ${(summary.heldOutAccuracy * 100).toFixed(2)}%, ` : ""}held-out loss ${summary.heldOutLoss?.toFixed(4)}</b> · ${summary.epochs} epochs, ${summary.steps} steps in ${summary.wallSeconds?.toFixed(1)} s · ${Math.round(summary.samplesPerSec)} samples/s · ${esc(String(summary.engine))}</p>` : "<p>(run not finished: no summary.json)</p>"}
<div class="grid">${cs.map((c) => c.svg).join("\n")}</div>
<h2>Epochs</h2><table><tr><th>epoch</th><th>step</th><th>train loss</th><th>held-out loss</th><th>accuracy</th><th>samples/s</th><th>wall s</th></tr>${rows}</table>
<h2>Job</h2><pre>${esc(job)}</pre></body></html>
`;
  writeFileAtomicSync(join(runDir, "report.html"), html);
  process.stdout.write(`wrote ${cs.map((c) => join(plots, `${c.name}.svg`)).join(", ")}\nreport: ${join(runDir, "report.html")}\n`);
  return 0;
}
