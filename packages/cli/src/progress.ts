/**
 * Progress: a cli-progress bar per epoch on a terminal, fitted to its width (fields the width
 * cannot hold are left out, least useful first); plain periodic lines when stdout is not a TTY
 * (CI logs, pipes). Both show the epoch's running-mean loss, the step's loss, samples/s (a GPT:
 * tokens/s and the perplexity of the mean loss) and the ETA.
 */
import cliProgress from "cli-progress";

export interface StepProgress {
  step: number;
  /** The step's loss. */
  loss: number;
  /** Mean loss of the epoch so far (rows weighted). */
  meanLoss: number;
  samplesPerSec: number;
}

export function fmtDuration(s: number): string {
  if (!Number.isFinite(s)) return "?";
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(Math.round(s - m * 60)).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, "0")}m`;
}

export const fmtInt = (n: number) => Math.round(n).toLocaleString("en-US");

/** Perplexity of a mean cross-entropy (nats): exp(loss), shown to 3 significant digits or as an integer. */
export function fmtPerplexity(loss: number): string {
  const p = Math.exp(loss);
  return !Number.isFinite(p) ? "∞" : p >= 1000 ? fmtInt(p) : p.toPrecision(3);
}

/** What one redraw of the bar shows. */
export interface BarFields {
  label: string;
  done: number;
  total: number;
  /** Running-mean and step loss; undefined before the first step. */
  meanLoss?: number;
  loss?: number;
  /** Rows per second; shown as tokens/s when `tokensPerRow` is set. */
  samplesPerSec?: number;
  tokensPerRow?: number;
  eta: string;
  /** What an overdue step waits for ("waiting for worker 1 (grad): 30 s"), shown instead of the ETA. */
  waiting?: string;
}

const BAR_MIN = 10, BAR_MAX = 30;

/**
 * One bar line of at most `width - 1` columns (the last column would wrap on some terminals).
 * The label, the percentage, the mean loss and the ETA always show; with less room go, in this
 * order, the step's loss, the step count, the bar, the perplexity and the throughput. The bar
 * takes the room left, BAR_MIN to BAR_MAX columns.
 */
export function renderBar(f: BarFields, width: number): string {
  const room = Math.max(20, width - 1);
  const fraction = f.total > 0 ? Math.min(1, f.done / f.total) : 0;
  const num = (v: number | undefined) => (v === undefined ? "-" : v.toFixed(4));
  const rate = f.samplesPerSec === undefined ? "-" : fmtInt(f.tokensPerRow ? f.samplesPerSec * f.tokensPerRow : f.samplesPerSec);
  const BAR = "\0bar";
  // [text, drop order (0: always shown)], in line order.
  const segments: [string, number][] = [
    [f.label, 0],
    [BAR, 3],
    [`${Math.floor(fraction * 100)}%`, 0],
    [`${f.done}/${f.total}`, 2],
    [`· mean loss ${num(f.meanLoss)}`, 0],
    [`· step loss ${num(f.loss)}`, 1],
    ...(f.tokensPerRow ? [[`· ppl ${f.meanLoss === undefined ? "-" : fmtPerplexity(f.meanLoss)}`, 4] as [string, number]] : []),
    [`· ${rate} ${f.tokensPerRow ? "tokens" : "samples"}/s`, 5],
    [`· ${f.waiting ?? `ETA ${f.eta}`}`, 0],
  ];
  const line = (kept: [string, number][], bar: number) => kept.map(([text]) => {
    if (text !== BAR) return text;
    const fill = Math.round(fraction * bar);
    return "█".repeat(fill) + "░".repeat(bar - fill);
  }).join(" ");
  let kept = segments;
  for (let drop = 1; drop <= 5 && line(kept, BAR_MIN).length > room; drop++) kept = kept.filter((s) => s[1] !== drop);
  const bar = Math.min(BAR_MAX, BAR_MIN + room - line(kept, BAR_MIN).length);
  const text = line(kept, bar);
  return text.length <= room ? text : text.slice(0, room - 1) + "…";
}

export class Progress {
  private bar: cliProgress.SingleBar | null = null;
  private readonly tty: boolean;
  private lastLine = 0;
  private epochLabel = "";
  private total = 0;
  private t0 = 0;
  private done0 = 0;
  private readonly plainEvery: number;
  /** A GPT's window length: throughput in tokens/s, and the perplexity. */
  private readonly tokensPerRow: number | undefined;
  /** What the bar shows; each update changes some fields. */
  private fields: BarFields = { label: "", done: 0, total: 0, eta: "?" };

  constructor(private readonly out: NodeJS.WriteStream = process.stdout, opts: { plainEverySec?: number; tokensPerRow?: number; tty?: boolean } = {}) {
    this.tty = opts.tty ?? (Boolean(out.isTTY) && process.env.CHAINRULE_PLAIN !== "1");
    this.plainEvery = (opts.plainEverySec ?? 2) * 1000;
    this.tokensPerRow = opts.tokensPerRow;
  }

  /** A new epoch of `total` steps, `done` of them already done (resume). */
  startEpoch(epoch: number, epochs: number, total: number, done = 0): void {
    this.epochLabel = `epoch ${epoch + 1}/${epochs}`;
    this.total = total;
    this.t0 = performance.now();
    this.done0 = done;
    this.lastLine = performance.now();
    this.fields = { label: this.epochLabel, done, total, tokensPerRow: this.tokensPerRow, eta: "?" };
    if (this.tty) {
      this.bar = new cliProgress.SingleBar(
        {
          // Drawn to the terminal's width at each redraw (cli-progress passes it as maxWidth).
          format: (_options, params) => renderBar({ ...this.fields, done: params.value }, params.maxWidth),
          stream: this.out,
          hideCursor: true,
          clearOnComplete: true,
          fps: 10,
        },
        cliProgress.Presets.shades_classic,
      );
      this.bar.start(total, done);
    }
  }

  update(done: number, p: StepProgress): void {
    const elapsed = (performance.now() - this.t0) / 1000;
    const rate = (done - this.done0) / Math.max(elapsed, 1e-9);
    const eta = fmtDuration((this.total - done) / rate);
    this.fields = { ...this.fields, done, loss: p.loss, meanLoss: p.meanLoss, samplesPerSec: p.samplesPerSec, eta, waiting: undefined };
    if (this.bar) {
      this.bar.update(done);
      return;
    }
    const now = performance.now();
    if (now - this.lastLine >= this.plainEvery) {
      this.lastLine = now;
      this.out.write(`${this.plainLine(done, p)} · ETA ${eta}\n`);
    }
  }

  /** A plain progress line (CI logs): every field, no width limit. */
  private plainLine(done: number, p: StepProgress): string {
    const rate = this.tokensPerRow ? `${fmtInt(p.samplesPerSec * this.tokensPerRow)} tokens/s` : `${fmtInt(p.samplesPerSec)} samples/s`;
    const ppl = this.tokensPerRow ? ` · ppl ${fmtPerplexity(p.meanLoss)}` : "";
    return `${this.epochLabel} step ${done}/${this.total} · mean loss ${p.meanLoss.toFixed(4)} · step loss ${p.loss.toFixed(4)}${ppl} · ${rate}`;
  }

  /**
   * While a step is overdue: `text` (e.g. "waiting for worker 1 (grad): 30 s") in the bar's ETA
   * slot, or a plain line every 10 s; null when the step has completed.
   */
  waiting(text: string | null): void {
    if (this.bar) {
      this.fields = { ...this.fields, waiting: text ?? undefined }; // drawn at the bar's next redraw (10 a second)
      return;
    }
    const now = performance.now();
    if (text !== null && now - this.lastWaitLine >= 10_000) {
      this.lastWaitLine = now;
      this.out.write(`${this.epochLabel}: ${text}\n`);
    }
  }
  private lastWaitLine = 0;

  /** Ends the epoch's bar and prints its summary line. */
  endEpoch(line: string): void {
    this.stopBar();
    this.out.write(line + "\n");
  }

  log(line: string): void {
    if (this.bar) {
      this.bar.stop();
      this.out.write(line + "\n");
      return;
    }
    this.out.write(line + "\n");
  }

  stopBar(): void {
    if (this.bar) {
      this.bar.stop();
      this.bar = null;
    }
  }
}
