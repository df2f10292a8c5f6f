/** chainrule info: cores, kernel backend and why, versions. */
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";
import { availableParallelism, cpus, freemem, totalmem, platform, arch, release } from "node:os";
import { backendReport } from "@chainrule/core";
import { UsageError } from "../errors.js";
import { mpiLibrary, mpiWorld, underMpirun } from "@chainrule/parallel";


/** Version of `pkg` as resolved from `from` (walks up from its entry point to its package.json). */
function version(pkg: string, from: string = import.meta.url): string {
  try {
    let entry: string;
    try {
      entry = createRequire(from).resolve(pkg);
    } catch {
      entry = fileURLToPath(import.meta.resolve(pkg));
    }
    for (let d = dirname(entry); d !== dirname(d); d = dirname(d)) {
      const p = join(d, "package.json");
      if (existsSync(p)) {
        const j = JSON.parse(readFileSync(p, "utf8"));
        if (j.name === pkg) return j.version;
      }
    }
    return "unknown";
  } catch {
    return "not installed";
  }
}

export async function infoCommand(argv: string[]): Promise<number> {
  if (argv.includes("--help") || argv.includes("-h")) {
    process.stdout.write("usage: chainrule info\n\nPrints the cores, the kernel backend and why it was chosen, the MPI library and world, memory and versions.\n");
    return 0;
  }
  if (argv.length > 0) throw new UsageError(`info takes no arguments, got ${argv.join(" ")}`);
  const cpu = cpus()[0]?.model ?? "unknown CPU";
  const gib = (b: number) => `${(b / 2 ** 30).toFixed(1)} GiB`;
  const b = backendReport();
  const coreFrom = import.meta.resolve("@chainrule/core");
  const parFrom = import.meta.resolve("@chainrule/parallel");
  const lines = [
    `cores: ${availableParallelism()} available (${cpu}); default workers = ${availableParallelism()}`,
    `memory: ${gib(totalmem())} total, ${gib(freemem())} free`,
    `backend: ${b.name} — ${b.reason}${process.env.CHAINRULE_BACKEND ? ` (CHAINRULE_BACKEND=${process.env.CHAINRULE_BACKEND})` : ""}`,
    `node: ${process.version} (${platform()} ${arch()} ${release()}), SharedArrayBuffer ${typeof SharedArrayBuffer === "function" ? "yes" : "no"}`,
    `packages: @chainrule/core ${version("@chainrule/core")}, @chainrule/parallel ${version("@chainrule/parallel")}, @chainrule/cli ${JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")).version}`,
    `mpi: ${mpiLine()}`,
    `libraries: piscina ${version("piscina", parFrom)}, koffi ${version("koffi", coreFrom)}, zod ${version("zod")}, tsx ${version("tsx")}, cli-progress ${version("cli-progress")}, mnist ${version("mnist")}`,
  ];
  // Under mpirun every process answers; the first one speaks for the job.
  if (!underMpirun() || mpiWorld().rank === 0) process.stdout.write(lines.join("\n") + "\n");
  return 0;
}

/** The MPI library found, and the world when running under mpirun (hosts × default workers). */
function mpiLine(): string {
  const lib = mpiLibrary();
  if (!lib.ok) return `not available (${lib.error})`;
  if (!underMpirun()) return `${lib.version} (${lib.path}); run under mpirun for several hosts`;
  const w = mpiWorld(), local = Number(process.env.OMPI_COMM_WORLD_LOCAL_SIZE ?? 1);
  return `${lib.version} (${lib.path}); world: ${w.size} hosts × ${Math.max(1, Math.floor(availableParallelism() / local))} workers (${local} on this machine)`;
}
