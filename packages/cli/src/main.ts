/**
 * The chainrule command: `npx -y pnpm@10 chainrule <command> ...` from the
 * repository (this file through tsx), or `chainrule` when the package is installed
 * (bin/chainrule.js runs the built dist/main.js).
 */
import { readFileSync } from "node:fs";
import { CliError, UsageError, oneLine } from "./errors.js";
import { abortMpi, underMpirun } from "@chainrule/parallel";

const HELP = `chainrule: train neural networks in TypeScript on every core

usage: chainrule <command> [options]

commands:
  train [JOB]               train a job (default: an MLP on the embedded MNIST digits, over the cores)
  eval CHECKPOINT           held-out loss and accuracy of a checkpoint (or run directory)
  predict CHECKPOINT INPUT  predictions for INPUT: mnist:N, a CSV file, an IDX file, or "v1,v2,..."
  generate CHECKPOINT       stream text from a GPT checkpoint (--prompt, --tokens, --temperature, --top-k, --seed)
  serve CHECKPOINT          serve a checkpoint over HTTP: POST /v1/predict, /v1/generate (--port, --host, --workers)
  export CHECKPOINT         the model as an ONNX file (--out, --opset, --quantize int8)
  quantize CHECKPOINT       a checkpoint with int8 weights, about 4x smaller (--out DIR)
  import-weights FILE       a checkpoint from GPT-2 weights in Hugging Face's layout (--arch gpt2 --out DIR)
  info                      cores, kernel backend and why, versions
  bench [ARGS]              run the benchmarks (bench/index.ts)
  plot RUN_DIR              SVG charts and an HTML report of a run's metrics
  dashboard RUN_DIR...      a local page following runs live, curves overlaid (also: train --dashboard)

run \`chainrule <command> --help\` for a command's options; \`chainrule --version\` for the version.
exit status: 0 done, 1 a failure while running, 2 bad usage or a bad job, 130/143 interrupted
(Ctrl-C / SIGTERM, after writing a checkpoint).
`;

/** The CLI package's version. */
function version(): string {
  return (JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string }).version;
}

/** Adding a command: a case below, a file commands/<name>.ts exporting `<name>Command(argv): Promise<number>`, a HELP line. */
export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case undefined:
    case "help":
    case "--help":
    case "-h":
      process.stdout.write(HELP);
      return cmd === undefined ? 2 : 0;
    case "--version":
    case "-v":
      process.stdout.write(`chainrule ${version()}\n`);
      return 0;
    case "train":
      return (await import("./commands/train.js")).trainCommand(rest);
    case "eval":
      return (await import("./commands/eval.js")).evalCommand(rest);
    case "predict":
      return (await import("./commands/predict.js")).predictCommand(rest);
    case "generate":
      return (await import("./commands/generate.js")).generateCommand(rest);
    case "export":
      return (await import("./commands/export.js")).exportCommand(rest);
    case "quantize":
      return (await import("./commands/quantize.js")).quantizeCommand(rest);
    case "import-weights":
      return (await import("./commands/import-weights.js")).importWeightsCommand(rest);
    case "serve":
      return (await import("./commands/serve.js")).serveCommand(rest);
    case "info":
      return (await import("./commands/info.js")).infoCommand(rest);
    case "bench":
      return (await import("./commands/bench.js")).benchCommand(rest);
    case "plot":
      return (await import("./commands/plot.js")).plotCommand(rest);
    case "dashboard":
      return (await import("./commands/dashboard.js")).dashboardCommand(rest);
    default:
      throw new UsageError(`unknown command '${cmd}' (expected train, eval, predict, generate, serve, export, quantize, import-weights, info, bench, plot or dashboard; see chainrule --help)`);
  }
}

function isParseArgsError(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException)?.code ?? "";
  return typeof code === "string" && code.startsWith("ERR_PARSE_ARGS");
}

export async function run(): Promise<void> {
  // `pnpm chainrule` runs the script from the workspace root; paths on the command line are the user's.
  if (process.env.npm_lifecycle_event === "chainrule" && process.env.INIT_CWD) process.chdir(process.env.INIT_CWD);
  let code: number;
  try {
    code = await main(process.argv.slice(2));
  } catch (e) {
    const usage = e instanceof UsageError || isParseArgsError(e);
    const host = underMpirun() ? ` (host ${process.env.OMPI_COMM_WORLD_RANK} of ${process.env.OMPI_COMM_WORLD_SIZE})` : "";
    process.stderr.write(`chainrule: error${host}: ${oneLine(e)}\n`);
    if (process.env.CHAINRULE_DEBUG && e instanceof Error) process.stderr.write(`${e.stack}\n`);
    code = usage ? 2 : e instanceof CliError ? e.exitCode : 1;
    // The other hosts would wait for this one in their next exchange: end the whole job now.
    abortMpi(code);
  }
  // Exit explicitly: worker pools or stdin listeners must not keep a finished command alive.
  process.stdout.write("", () => process.exit(code));
}

// Run when executed directly (tsx packages/cli/src/main.ts); bin/chainrule.js calls run() itself.
if (/[\\/]main\.(ts|js)$/.test(process.argv[1] ?? "")) void run();
