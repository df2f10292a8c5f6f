/**
 * The charts of runs' metrics, as Vega-Lite specifications: `chainrule plot` renders them to SVG
 * in Node, the dashboard draws the same specifications in the browser and streams rows into them.
 *
 * Why Vega-Lite: one declarative JSON specification renders both ways (Vega's `toSVG()` in Node
 * needs no DOM or canvas; its browser build takes new rows through `view.insert()` without
 * redrawing the page), and it does what hand-written charts get wrong: readable ticks with
 * overlap removal, log scales with labels inside one decade, legends laid out beside the plot.
 */
import * as vega from "vega";
import { compile, type TopLevelSpec } from "vega-lite";
import { type ChartRow, type Panel, PANELS, type RunMeta, type RunRows, SERIES } from "./metric-rows.js";

/** The default weight of the loss's moving average (TensorBoard's smoothing slider, and its default). */
export const DEFAULT_SMOOTHING = 0.6;

/** The name of the data set the specifications read (rows are inserted into it). */
export const ROWS = "rows";

export interface ChartRun {
  id: string;
  meta: RunMeta;
}

export interface ChartOptions {
  smoothing: number;
  /** A log-scale loss axis (for losses that fall over more than a decade). */
  logLoss: boolean;
  width?: number;
  height?: number;
}

const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
const TRAIN_COLOR = PALETTE[0], HELD_OUT_COLOR = PALETTE[1];

const LOSS_UNITS: Record<string, string> = {
  crossEntropy: "cross-entropy (nats)",
  mseLoss: "mean squared error",
  l1Loss: "mean absolute error",
  binaryCrossEntropyWithLogits: "binary cross-entropy (nats)",
};

/** The loss axis's title: the loss function and its unit when every run uses the same. */
function lossTitle(runs: ChartRun[]): string {
  const losses = new Set(runs.map((r) => r.meta.loss));
  const texts = new Set(runs.map((r) => r.meta.tokensPerSample !== null));
  if (losses.size !== 1 || texts.size !== 1) return "loss";
  const [loss] = losses;
  const unit = loss !== null ? LOSS_UNITS[loss] : undefined;
  if (!unit) return loss ?? "loss";
  return runs[0].meta.tokensPerSample !== null ? unit.replace("(nats)", "(nats/token)") : unit;
}

/** The throughput axis's title: tokens/s for GPT runs, samples/s for others. */
function throughputTitle(runs: ChartRun[]): string {
  const text = runs.filter((r) => r.meta.tokensPerSample !== null).length;
  if (text === 0) return "samples/s";
  return text === runs.length ? "tokens/s" : "samples/s (tokens/s for text runs)";
}

/** Whether the loss spans more than a decade (then a log axis shows its tail). */
export function lossSpansDecade(rows: ChartRow[]): boolean {
  const ys = rows.filter((r) => r.panel === "loss" && r.y > 0).map((r) => r.y);
  return ys.length > 1 && Math.max(...ys) / Math.min(...ys) > 10;
}

/** The panels that have something to show: a learning rate only when it changes. */
export function panelsWithData(rows: ChartRow[], runs: RunRows[]): Panel[] {
  const has = new Set(rows.map((r) => r.panel));
  if (!runs.some((r) => r.lrVaries)) has.delete("lr");
  return PANELS.filter((p) => has.has(p));
}

const filter = (expr: string) => ({ filter: expr });
const isPanel = (p: Panel) => filter(`datum.panel === '${p}'`);
const isSeries = (...names: string[]) => filter(names.map((n) => `datum.series === '${n}'`).join(" || "));

/**
 * One Vega-Lite specification per panel, for these runs. One run: colour tells the series apart;
 * several: colour tells the runs apart and the dash the series, as TensorBoard overlays runs.
 */
export function panelSpecs(runs: ChartRun[], o: ChartOptions): Record<Panel, TopLevelSpec> {
  const several = runs.length > 1;
  const width = o.width ?? 500, height = o.height ?? 250;
  const heldOut = runs.every((r) => r.meta.tokensPerSample !== null) ? SERIES.validationLoss : SERIES.heldOutLoss;
  const heldOutNames = [SERIES.heldOutLoss, SERIES.validationLoss];
  const runColor = {
    field: "run", type: "nominal", title: "run",
    scale: { domain: runs.map((r) => r.id), range: PALETTE },
  } as const;
  const stepAxis = { field: "x", type: "quantitative", title: "step (optimizer updates)", axis: { tickCount: 6, labelFlush: true, labelOverlap: true, format: "~s" } } as const;
  const base = (title: string, subtitle?: string) => ({
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    width, height,
    title: { text: title, anchor: "start", ...(subtitle ? { subtitle, subtitleColor: "#666" } : {}) },
    data: { name: ROWS },
    config: {
      font: "system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif",
      axis: { labelFontSize: 11, titleFontSize: 12, titleFontWeight: "normal", gridColor: "#eee" },
      // Legends below the plot: never over a line.
      legend: { orient: "bottom", direction: "horizontal", labelFontSize: 11, titleFontSize: 11, symbolType: "stroke", symbolStrokeWidth: 2, symbolOpacity: 1 },
      title: { fontSize: 14, subtitleFontSize: 11 },
      view: { stroke: "#ccc" },
    },
  });

  const lossY = {
    field: "y", type: "quantitative", title: lossTitle(runs),
    scale: o.logLoss ? { type: "log" } : { zero: false },
    axis: { tickCount: 6, labelOverlap: true, format: "~g" },
  } as const;
  const lossColor = several
    ? runColor
    : { field: "series", type: "nominal", title: null, scale: { domain: [SERIES.smoothLoss, heldOut, SERIES.rawLoss], range: [TRAIN_COLOR, HELD_OUT_COLOR, TRAIN_COLOR] }, legend: { values: [SERIES.smoothLoss, heldOut] } };
  const dash = several
    ? { strokeDash: { field: "series", type: "nominal", title: null, scale: { domain: [SERIES.smoothLoss, heldOut], range: [[1, 0], [5, 3]] }, legend: null } }
    : {};
  const loss = {
    ...base("Loss", several
      ? `solid: train, logged steps, EMA ${o.smoothing} (raw faint); dashed: ${heldOut}, per epoch`
      : `train: logged steps, EMA ${o.smoothing} (raw faint); ${heldOut}: per epoch`),
    transform: [isPanel("loss")],
    encoding: { x: stepAxis, y: lossY },
    layer: [
      { transform: [isSeries(SERIES.rawLoss)], mark: { type: "line", strokeWidth: 1, opacity: 0.3 }, encoding: { color: lossColor, detail: { field: "run" } } },
      { transform: [isSeries(SERIES.smoothLoss)], mark: { type: "line", strokeWidth: 2 }, encoding: { color: lossColor, ...dash } },
      {
        transform: [isSeries(...heldOutNames), { calculate: `'${heldOut}'`, as: "series" }],
        mark: { type: "line", strokeWidth: 2, point: { size: 30, filled: true } },
        encoding: { color: lossColor, ...dash },
      },
    ],
  };

  const lineColor = several ? { color: runColor } : { color: { value: TRAIN_COLOR } };
  const accuracy = {
    ...base("Held-out accuracy", "after each epoch"),
    transform: [isPanel("accuracy")],
    mark: { type: "line", strokeWidth: 2, point: { size: 30, filled: true } },
    encoding: {
      x: { field: "x", type: "quantitative", title: "epoch", axis: { tickMinStep: 1, format: "d", labelFlush: true } },
      y: { field: "y", type: "quantitative", title: "accuracy (%)", scale: { zero: false }, axis: { tickCount: 6, format: "~g" } },
      ...lineColor,
    },
  };
  const throughput = {
    ...base("Throughput", "mean of the epoch so far"),
    transform: [isPanel("throughput")],
    mark: { type: "line", strokeWidth: 2 },
    encoding: {
      x: stepAxis,
      y: { field: "y", type: "quantitative", title: throughputTitle(runs), axis: { tickCount: 6, format: "~s" } },
      ...lineColor,
    },
  };
  const lr = {
    ...base("Learning rate"),
    transform: [isPanel("lr")],
    mark: { type: "line", strokeWidth: 2 },
    encoding: {
      x: stepAxis,
      y: { field: "y", type: "quantitative", title: "learning rate", axis: { tickCount: 6, format: "~g" } },
      ...lineColor,
    },
  };
  return { loss, accuracy, throughput, lr } as unknown as Record<Panel, TopLevelSpec>;
}

/** Compiles a Vega-Lite specification to Vega's (what the browser build of Vega draws). */
export function toVega(spec: TopLevelSpec): vega.Spec {
  return compile(spec).spec as vega.Spec;
}

/** Renders a specification with these rows to a standalone SVG document. */
export async function renderSvg(spec: TopLevelSpec, rows: ChartRow[]): Promise<string> {
  const view = new vega.View(vega.parse(toVega(spec)), { renderer: "none" });
  view.insert(ROWS, rows);
  const svg = await view.toSVG();
  view.finalize();
  return svg;
}
