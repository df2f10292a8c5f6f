/**
 * The dashboard page's script (plain browser JavaScript, served inline). It draws each panel with
 * Vega's browser build, from the Vega specifications the server compiled (the same as
 * `chainrule plot`'s), and feeds it the rows the server pushes by server-sent events: a snapshot
 * on connecting, then each run's new rows as its metrics.jsonl grows, and the list of runs (with
 * the specifications for them) again whenever a run is added.
 *
 * window.dashboard exposes the state for tests: chartRows(panel) is the number of rows the panel's
 * chart holds, status(run) the run's last status, runs() the runs shown.
 */
export const CLIENT_SCRIPT = String.raw`
"use strict";
let config = JSON.parse(document.getElementById("config").textContent);
const PANELS = ["loss", "accuracy", "throughput", "lr"];
const rows = { loss: [], accuracy: [], throughput: [], lr: [] };
const views = {};
const runStatus = {};
const runPanels = {};
let logLoss = null;
let queue = Promise.resolve();
let updates = 0;

const el = (id) => document.getElementById(id);

function spansDecade(list) {
  const ys = list.map((r) => r.y).filter((y) => y > 0);
  return ys.length > 1 && Math.max(...ys) / Math.min(...ys) > 10;
}

function specFor(panel) {
  return panel === "loss" && logLoss ? config.specs.lossLog : config.specs[panel];
}

async function makeView(panel) {
  if (views[panel]) views[panel].finalize();
  const box = el("chart-" + panel);
  box.hidden = false;
  const view = new vega.View(vega.parse(specFor(panel)), { renderer: "svg", container: box.querySelector(".plot"), hover: false });
  view.insert("rows", rows[panel].slice());
  views[panel] = view;
  await view.runAsync();
}

async function render(update) {
  if (update.reset) for (const p of PANELS) rows[p] = rows[p].filter((r) => r.run !== update.run);
  const added = { loss: [], accuracy: [], throughput: [], lr: [] };
  for (const r of update.rows) {
    rows[r.panel].push(r);
    added[r.panel].push(r);
  }
  runStatus[update.run] = update.status;
  runPanels[update.run] = update.panels;
  if (logLoss === null && rows.loss.length > 2) {
    logLoss = spansDecade(rows.loss);
    el("log-loss").checked = logLoss;
  }
  const shown = new Set(Object.values(runPanels).flat());
  for (const p of PANELS) {
    if (!shown.has(p)) {
      if (views[p]) { views[p].finalize(); delete views[p]; }
      el("chart-" + p).hidden = true;
    } else if (!views[p]) {
      await makeView(p);
    } else if (update.reset) {
      await views[p].change("rows", vega.changeset().remove((r) => r.run === update.run).insert(rows[p].filter((r) => r.run === update.run))).runAsync();
    } else if (added[p].length) {
      await views[p].insert("rows", added[p]).runAsync();
    }
  }
  updates++;
  renderStatus();
}

const num = (v, digits) => (typeof v === "number" ? v.toFixed(digits) : "–");
const int = (v) => (typeof v === "number" ? Math.round(v).toLocaleString("en-US") : "–");
const g = (v) => (typeof v === "number" ? String(Number(v.toPrecision(3))) : "–");

function duration(s) {
  if (typeof s !== "number" || !isFinite(s)) return "–";
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  if (h > 0) return h + " h " + String(m).padStart(2, "0") + " min";
  if (m > 0) return m + " min " + String(sec).padStart(2, "0") + " s";
  return sec + " s";
}

function renderStatus() {
  const body = el("status-rows");
  body.textContent = "";
  for (const run of config.runs) {
    const s = runStatus[run.id];
    const tr = document.createElement("tr");
    tr.id = "run-" + run.index;
    const cells = s ? [
      ["run", run.id], ["state", s.state],
      ["step", int(s.step) + (s.totalSteps ? " / " + int(s.totalSteps) : "")],
      ["epoch", num(s.epoch, 2) + (s.epochs ? " / " + s.epochs : "")],
      ["eta", s.state === "running" ? duration(s.etaSeconds) : "–"],
      ["loss", num(s.loss, 4)], ["held-out", num(s.heldOutLoss, 4)],
      ["accuracy", typeof s.accuracy === "number" ? (s.accuracy * 100).toFixed(2) + "%" : "–"],
      ["throughput", typeof s.throughput === "number" ? int(s.throughput) + " " + run.throughputUnit : "–"],
      ["lr", g(s.lr)], ["elapsed", duration(s.wallSeconds)],
    ] : [["run", run.id], ["state", "waiting"]];
    for (const [name, text] of cells) {
      const td = document.createElement("td");
      td.className = name;
      td.textContent = text;
      if (name === "run") td.title = run.dir;
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }
}

/** Runs the page's changes one after another, in the order the server sent them. */
function enqueue(task) {
  queue = queue.then(task).catch((e) => { el("connection").textContent = "error: " + e.message; });
}

/** Takes the server's list of runs and their specifications (a run was added): redraws the charts from their rows. */
async function adopt(next) {
  config = next;
  document.title = el("title").textContent = "chainrule dashboard: " + next.title;
  for (const p of PANELS) if (views[p]) await makeView(p);
  renderStatus();
}

el("log-loss").addEventListener("change", (e) => {
  queue = queue.then(() => { logLoss = e.target.checked; return rows.loss.length ? makeView("loss") : undefined; });
});

const events = new EventSource("events");
events.addEventListener("snapshot", (e) => {
  el("connection").textContent = "live";
  const snapshot = JSON.parse(e.data);
  enqueue(() => adopt(snapshot.config));
  for (const u of snapshot.runs) enqueue(() => render(u));
});
events.addEventListener("runs", (e) => {
  const next = JSON.parse(e.data);
  enqueue(() => adopt(next));
});
events.addEventListener("update", (e) => {
  const update = JSON.parse(e.data);
  enqueue(() => render(update));
});
events.addEventListener("closed", () => {
  el("connection").textContent = "the server stopped (training ended): the charts show the final records";
  events.close();
});
events.onerror = () => {
  if (events.readyState !== EventSource.CLOSED) el("connection").textContent = "reconnecting…";
};

window.dashboard = {
  chartRows: (panel) => (views[panel] ? views[panel].data("rows").length : 0),
  status: (run) => runStatus[run] ?? null,
  updates: () => updates,
  runs: () => config.runs.map((r) => r.id),
};
renderStatus();
`;
