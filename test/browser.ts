/**
 * Headless Chromium for the tests that look at pages as a person would (the plot report, the
 * dashboard): Debian's `chromium` (installed by .ci/run), driven by puppeteer-core; no browser
 * download. CHROMIUM_PATH overrides where it is.
 */
import { existsSync } from "node:fs";
import puppeteer, { type Browser, type Page } from "puppeteer-core";

export const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

export async function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM}: install Debian's chromium (apt-get install chromium, as .ci/run does) or set CHROMIUM_PATH`);
  return puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    // Root in a container: no sandbox; /dev/shm may be small.
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
    timeout: 30_000,
  });
}

export interface Rect { left: number; top: number; right: number; bottom: number }

/** Whether two rectangles overlap by more than `slack` pixels each way. */
export function overlaps(a: Rect, b: Rect, slack = 0.5): boolean {
  return a.left < b.right - slack && b.left < a.right - slack && a.top < b.bottom - slack && b.top < a.bottom - slack;
}

export interface AxisLayout { labels: Rect[]; labelTexts: string[]; title: Rect | null; titleText: string }
export interface ChartLayout { id: string; marks: Rect | null; legend: Rect | null; axes: AxisLayout[] }

/** Runs in the page (a string: the project's TypeScript has no DOM types). */
const CHART_LAYOUTS = `(() => {
  const rect = (e) => { const r = e.getBoundingClientRect(); return { left: r.left, top: r.top, right: r.right, bottom: r.bottom }; };
  const union = (els) => {
    const rs = els.map(rect).filter((r) => r.right > r.left || r.bottom > r.top);
    if (rs.length === 0) return null;
    return { left: Math.min(...rs.map((r) => r.left)), top: Math.min(...rs.map((r) => r.top)), right: Math.max(...rs.map((r) => r.right)), bottom: Math.max(...rs.map((r) => r.bottom)) };
  };
  return [...document.querySelectorAll("svg.marks")].map((svg, i) => ({
    id: svg.closest("[id]") ? svg.closest("[id]").id : String(i),
    marks: union([...svg.querySelectorAll(".role-mark path")]),
    legend: union([...svg.querySelectorAll(".role-legend")]),
    axes: [...svg.querySelectorAll("g.role-axis")].filter((g) => g.querySelector(".role-axis-title text")).map((g) => ({
      labels: [...g.querySelectorAll(".role-axis-label text")].filter((t) => t.textContent !== "").map(rect),
      labelTexts: [...g.querySelectorAll(".role-axis-label text")].map((t) => t.textContent),
      title: rect(g.querySelector(".role-axis-title text")),
      titleText: g.querySelector(".role-axis-title text").textContent,
    })),
  }));
})()`;

/**
 * The layout of each Vega chart (an <svg class="marks">) on the page: the rectangles of its
 * lines and points, its legend, and each axis's tick labels and title, for overlap checks.
 */
export async function chartLayouts(page: Page): Promise<ChartLayout[]> {
  return (await page.evaluate(CHART_LAYOUTS)) as ChartLayout[];
}

/** Checks a chart is legible: no two tick labels of an axis overlap, no label overlaps the axis title, the legend is clear of the lines. */
export function legibilityProblems(c: ChartLayout): string[] {
  const problems: string[] = [];
  for (const a of c.axes) {
    for (let i = 0; i < a.labels.length; i++) {
      for (let j = i + 1; j < a.labels.length; j++) if (overlaps(a.labels[i], a.labels[j])) problems.push(`${c.id}: ${a.titleText}: tick labels overlap`);
      if (a.title && overlaps(a.labels[i], a.title)) problems.push(`${c.id}: ${a.titleText}: a tick label overlaps the axis title`);
    }
  }
  if (c.legend && c.marks && overlaps(c.legend, c.marks)) problems.push(`${c.id}: the legend covers the lines`);
  return problems;
}
