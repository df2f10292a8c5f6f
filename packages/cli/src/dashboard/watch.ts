/**
 * Follows one run directory's metrics.jsonl while it grows: each poll reads the bytes appended
 * since the last, turns the complete lines into chart rows, and says when the file was replaced
 * (a resume or a restart rewrites it without the records after its checkpoint), so the charts
 * start again from its new contents.
 */
import { closeSync, existsSync, fstatSync, openSync, readSync, statSync } from "node:fs";
import { join } from "node:path";
import { type ChartRow, type Panel, type RunStatus, RunRows, readRunJson, runMeta } from "../metric-rows.js";
import { panelsWithData } from "../plot.js";
import { JOB_FILE, METRICS_FILE } from "../rundir.js";
import { trainerRunning } from "../run-lock.js";

/** What changed in a run since the last poll. */
export interface RunUpdate {
  run: string;
  /** The file was replaced: `rows` are all its rows, not an addition. */
  reset: boolean;
  rows: ChartRow[];
  status: RunStatus;
  /** The panels with data in this run. */
  panels: Panel[];
}

/** The largest read of one poll; a longer backlog is read over the following polls. */
const MAX_READ_BYTES = 4 << 20;

export class RunWatcher {
  private offset = 0;
  private inode = -1;
  private partial = Buffer.alloc(0);
  private lineNo = 0;
  private rows: ChartRow[] = [];
  private runRows: RunRows;
  private lastState = "";

  /**
   * @param id     the run's name in legends (unique among the runs shown)
   * @param dir    its run directory
   * @param warn   told of a line that is not a JSON record (then skipped)
   */
  constructor(readonly id: string, readonly dir: string, private readonly smoothing: number, private readonly warn: (line: string) => void) {
    this.runRows = this.freshRows();
  }

  private freshRows(): RunRows {
    return new RunRows(this.id, runMeta(this.id, readRunJson(this.dir, JOB_FILE)), this.smoothing);
  }

  get meta() {
    return this.runRows.meta;
  }

  /** Everything so far: what a page that just connected is sent. */
  snapshot(): RunUpdate {
    return { run: this.id, reset: true, rows: this.rows, status: this.status(), panels: this.panels() };
  }

  /** Reads what was appended (or the whole file, if it was replaced); null when nothing changed. */
  poll(): RunUpdate | null {
    const path = join(this.dir, METRICS_FILE);
    let reset = false;
    let fd: number;
    try {
      fd = openSync(path, "r");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
      return this.update(false, []);
    }
    const added: ChartRow[] = [];
    try {
      const st = fstatSync(fd);
      if (st.ino !== this.inode || st.size < this.offset) {
        reset = this.inode !== -1 || this.offset > 0;
        this.inode = st.ino;
        this.offset = 0;
        this.partial = Buffer.alloc(0);
        this.lineNo = 0;
        this.rows = [];
        this.runRows = this.freshRows(); // the job may have changed too (a resume with more epochs)
      }
      const length = Math.min(st.size - this.offset, MAX_READ_BYTES);
      if (length > 0) {
        const chunk = Buffer.alloc(length);
        const got = readSync(fd, chunk, 0, length, this.offset);
        this.offset += got;
        added.push(...this.takeLines(Buffer.concat([this.partial, chunk.subarray(0, got)])));
      }
    } finally {
      closeSync(fd);
    }
    this.rows.push(...added);
    return this.update(reset, added);
  }

  /** The update to send, or null when there is nothing new: no rows, no reset, the same state. */
  private update(reset: boolean, added: ChartRow[]): RunUpdate | null {
    const status = this.status();
    const stateChanged = status.state !== this.lastState;
    this.lastState = status.state;
    if (!reset && added.length === 0 && !stateChanged) return null;
    return { run: this.id, reset, rows: reset ? this.rows : added, status, panels: this.panels() };
  }

  /** Parses the complete lines of `buf`, keeps an unfinished last line for the next poll. */
  private takeLines(buf: Buffer): ChartRow[] {
    const rows: ChartRow[] = [];
    let start = 0;
    for (let nl = buf.indexOf(10, start); nl !== -1; nl = buf.indexOf(10, start)) {
      const line = buf.subarray(start, nl).toString("utf8");
      start = nl + 1;
      this.lineNo++;
      if (!line.trim()) continue;
      let record: Record<string, unknown>;
      try {
        record = JSON.parse(line);
      } catch {
        this.warn(`${join(this.dir, METRICS_FILE)}:${this.lineNo}: not a JSON record (skipped)`);
        continue;
      }
      rows.push(...this.runRows.add(record));
    }
    this.partial = Buffer.from(buf.subarray(start));
    return rows;
  }

  /** The run's status; a run that has not ended and that no trainer holds is "stopped". */
  status(): RunStatus {
    const s = this.runRows.status;
    if ((s.state === "running" || s.state === "waiting") && !trainerRunning(this.dir)) return { ...s, state: "stopped", etaSeconds: null };
    return { ...s };
  }

  private panels(): Panel[] {
    return panelsWithData(this.rows, [this.runRows]);
  }
}

/** Whether `dir` looks like a run directory (it has a job.json or a metrics.jsonl). */
export function isRunDir(dir: string): boolean {
  return existsSync(join(dir, JOB_FILE)) || existsSync(join(dir, METRICS_FILE));
}

/** Whether `dir` is a directory. */
export function isDir(dir: string): boolean {
  try {
    return statSync(dir).isDirectory();
  } catch {
    return false;
  }
}
