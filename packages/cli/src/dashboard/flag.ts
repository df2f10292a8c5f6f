/**
 * `chainrule train ... --dashboard [PORT]`: the flag's value is optional, which node's parseArgs
 * cannot express, so train takes it out of argv first. A PORT is a number right after the flag
 * (or `--dashboard=PORT`); anything else after it is the next argument (the JOB, another flag).
 */
import { UsageError } from "../errors.js";

/** The dashboard's port when none is given. */
export const DEFAULT_DASHBOARD_PORT = 6060;

/** A TCP port 0..65535 (0: any free port), from `flag`'s value. */
export function parsePort(flag: string, value: string): number {
  const port = Number(value);
  if (!/^\d+$/.test(value) || port > 65535) throw new UsageError(`${flag}: expected a port 0..65535 (0: any free port), got ${JSON.stringify(value)}`);
  return port;
}

/** argv without --dashboard [PORT], and the port asked for (undefined: no dashboard). */
export function takeDashboardFlag(argv: string[]): { argv: string[]; port: number | undefined } {
  const rest: string[] = [];
  let port: number | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--") {
      rest.push(...argv.slice(i));
      break;
    }
    if (a === "--dashboard") {
      const next = argv[i + 1];
      port = next !== undefined && /^\d+$/.test(next) ? parsePort("--dashboard", argv[++i]) : DEFAULT_DASHBOARD_PORT;
    } else if (a.startsWith("--dashboard=")) {
      port = parsePort("--dashboard", a.slice("--dashboard=".length));
    } else {
      rest.push(a);
    }
  }
  return { argv: rest, port };
}
