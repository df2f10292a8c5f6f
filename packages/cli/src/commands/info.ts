/** chainrule info: cores, kernel backend and why, versions. */
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";
import { availableParallelism, cpus, freemem, totalmem, platform, arch, release } from "node:os";
import { backendReport } from "@chainrule/core";


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

export async function infoCommand(_argv: string[]): Promise<number> {
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
    `libraries: piscina ${version("piscina", parFrom)}, koffi ${version("koffi", coreFrom)}, zod ${version("zod")}, tsx ${version("tsx")}, cli-progress ${version("cli-progress")}, mnist ${version("mnist")}`,
  ];
  process.stdout.write(lines.join("\n") + "\n");
  return 0;
}
