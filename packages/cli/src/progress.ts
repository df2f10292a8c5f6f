/**
 * Progress: a cli-progress bar per epoch (loss, samples/s, ETA) on a terminal;
 * plain periodic lines when stdout is not a TTY (CI logs, pipes).
 */
import cliProgress from "cli-progress";

export interface StepProgress {
  step: number;
  loss: number;
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

export class Progress {
  private bar: cliProgress.SingleBar | null = null;
  private readonly tty: boolean;
  private lastLine = 0;
  private epochLabel = "";
  private total = 0;
  private t0 = 0;
  private done0 = 0;

  constructor(private readonly out: NodeJS.WriteStream = process.stdout, opts: { plainEverySec?: number } = {}) {
    this.tty = Boolean(out.isTTY) && process.env.CHAINRULE_PLAIN !== "1";
    this.plainEvery = (opts.plainEverySec ?? 2) * 1000;
  }
  private readonly plainEvery: number;

  /** A new epoch of `total` steps, `done` of them already done (resume). */
  startEpoch(epoch: number, epochs: number, total: number, done = 0): void {
    this.epochLabel = `epoch ${epoch + 1}/${epochs}`;
    this.total = total;
    this.t0 = performance.now();
    this.done0 = done;
    this.lastLine = performance.now();
    if (this.tty) {
      this.bar = new cliProgress.SingleBar(
        {
          format: `${this.epochLabel} {bar} {percentage}% | {value}/{total} steps | loss {loss} | {sps} samples/s | ETA {eta_s}`,
          stream: this.out,
          hideCursor: true,
          clearOnComplete: true,
          etaBuffer: 50,
          fps: 10,
        },
        cliProgress.Presets.shades_classic,
      );
      this.bar.start(total, done, { loss: "-", sps: "-", eta_s: "?" });
    }
  }

  update(done: number, p: StepProgress): void {
    const elapsed = (performance.now() - this.t0) / 1000;
    const rate = (done - this.done0) / Math.max(elapsed, 1e-9);
    const eta = (this.total - done) / rate;
    if (this.bar) {
      this.bar.update(done, { loss: p.loss.toFixed(4), sps: fmtInt(p.samplesPerSec), eta_s: fmtDuration(eta) });
      return;
    }
    const now = performance.now();
    if (now - this.lastLine >= this.plainEvery) {
      this.lastLine = now;
      this.out.write(`${this.epochLabel} step ${done}/${this.total} loss ${p.loss.toFixed(4)} ${fmtInt(p.samplesPerSec)} samples/s ETA ${fmtDuration(eta)}\n`);
    }
  }

  /**
   * While a step is overdue: `text` (e.g. "waiting for worker 1 (grad): 30 s") in the bar's ETA
   * slot, or a plain line every 10 s; null when the step has completed.
   */
  waiting(text: string | null): void {
    if (this.bar) {
      if (text !== null) this.bar.update({ eta_s: text });
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
