/** chainrule bench [ARGS]: runs the benchmark runner (bench/index.ts at the repository root) through tsx. */
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { CliError } from "../errors.js";

const BENCH_HELP = `usage: chainrule bench [SECTION ...] [--json FILE] [--quick] [section flags]

Runs the benchmarks (bench/<section>.ts at the repository root), all of them or the named
sections, and writes their results as JSON (default .bench/bench-<time>.json). Sections: gemm,
mlp, cnn, gpt, parallel, multihost (needs root, Open MPI and tc), ...; \`chainrule bench --list\`
lists them. Flags other than section names go to every section (e.g. --quick, --rounds N).
Current figures and the commands behind them: bench/RESULTS.md.
`;

export async function benchCommand(argv: string[]): Promise<number> {
  if (argv.includes("--help") || argv.includes("-h")) {
    process.stdout.write(BENCH_HELP);
    return 0;
  }
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
