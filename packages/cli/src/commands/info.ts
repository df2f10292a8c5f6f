/** chainrule info: cores, kernel backend and why, versions. */
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { availableParallelism, cpus, freemem, totalmem, platform, arch, release } from "node:os";
import { backendReport } from "@chainrule/core";

const require = createRequire(import.meta.url);

function version(pkg: string, from?: string): string {
  try {
    const req = from ? createRequire(from) : require;
    return JSON.parse(readFileSync(req.resolve(`${pkg}/package.json`), "utf8")).version;
  } catch {
    return "not installed";
  }
}

export async function infoCommand(_argv: string[]): Promise<number> {
  const cpu = cpus()[0]?.model ?? "unknown CPU";
  const gib = (b: number) => `${(b / 2 ** 30).toFixed(1)} GiB`;
  const b = backendReport();
  const coreFrom = require.resolve("@chainrule/core/package.json");
  const parFrom = require.resolve("@chainrule/parallel/package.json");
  const lines = [
    `cores: ${availableParallelism()} available (${cpu}); default workers = ${availableParallelism()}`,
    `memory: ${gib(totalmem())} total, ${gib(freemem())} free`,
    `backend: ${b.name} — ${b.reason}${process.env.CHAINRULE_BACKEND ? ` (CHAINRULE_BACKEND=${process.env.CHAINRULE_BACKEND})` : ""}`,
    `node: ${process.version} (${platform()} ${arch()} ${release()}), SharedArrayBuffer ${typeof SharedArrayBuffer === "function" ? "yes" : "no"}`,
    `packages: @chainrule/core ${version("@chainrule/core")}, @chainrule/parallel ${version("@chainrule/parallel")}, @chainrule/cli ${JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")).version}`,
    `libraries: piscina ${version("piscina", parFrom)}, comlink ${version("comlink", parFrom)}, koffi ${version("koffi", coreFrom)}, zod ${version("zod")}, tsx ${version("tsx")}, cli-progress ${version("cli-progress")}, mnist ${version("mnist")}`,
  ];
  process.stdout.write(lines.join("\n") + "\n");
  return 0;
}
