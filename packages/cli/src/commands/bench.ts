/** chainrule bench [ARGS]: runs the benchmark runner (bench/index.ts at the repository root) through tsx. */
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { CliError } from "../errors.js";

export async function benchCommand(argv: string[]): Promise<number> {
  const runner = fileURLToPath(new URL("../../../../bench/index.ts", import.meta.url));
  if (!existsSync(runner)) throw new CliError(`${runner}: the benchmark runner is not there (bench/ ships with the repository, not the npm package)`);
  const child = spawn(process.execPath, ["--import", import.meta.resolve("tsx"), runner, ...argv], { stdio: "inherit" });
  const forward = (sig: NodeJS.Signals) => child.kill(sig);
  process.on("SIGINT", forward);
  process.on("SIGTERM", forward);
  return await new Promise<number>((resolve) => {
    child.on("exit", (code, signal) => resolve(code ?? (signal ? 130 : 1)));
    child.on("error", (e) => resolve((process.stderr.write(`chainrule: error: cannot start the benchmark (${e.message})\n`), 1)));
  });
}
