/**
 * Benchmark runner: `npx pnpm@10 bench [section ...] [--json out.json] [section flags]`.
 *
 * A section is a file bench/<name>.ts exporting
 *   `async function main(args: string[]): Promise<Record<string, unknown>>`;
 * every such file (except index.ts and files starting with `_`) is discovered
 * and run, `user-code` first (the models as the README's code writes them, against
 * PyTorch and the tuned sections' builds), then the others in name order; or only the
 * named ones. Results of all sections are written as one JSON file (default
 * .bench/bench-<timestamp>.json). Arguments that are not section names are passed on
 * to every section (e.g. --quick).
 */
import { readdirSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { benchMeta, writeJson } from "./_util.js";

const here = dirname(fileURLToPath(import.meta.url));
/** The section run first: what users' code gets. */
const FIRST = "user-code";

export function discoverSections(dir = here): string[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith(".ts") && !f.endsWith(".d.ts") && !f.endsWith(".test.ts") && f !== "index.ts" && !f.startsWith("_"))
    .map((f) => basename(f, ".ts"))
    .sort((a, b) => Number(b === FIRST) - Number(a === FIRST) || (a < b ? -1 : a > b ? 1 : 0));
}

async function run(argv: string[]): Promise<void> {
  const all = discoverSections();
  let jsonPath: string | undefined;
  const named: string[] = [];
  const passOn: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--json") jsonPath = argv[++i];
    else if (a.startsWith("--json=")) jsonPath = a.slice(7);
    else if (a === "--list") { console.log(all.join("\n")); return; }
    else if (a.startsWith("-")) passOn.push(a);
    // A bare word names a section, or else is the value of the `--flag` before it.
    else if (all.includes(a)) named.push(a);
    else if (i > 0 && argv[i - 1].startsWith("--") && !argv[i - 1].includes("=")) passOn.push(a);
    else throw new Error(`bench: unknown section '${a}' (sections: ${all.join(", ")})`);
  }
  const sections = named.length > 0 ? named : all;
  const results: Record<string, unknown> = {};
  const t0 = Date.now();
  for (const name of sections) {
    const mod = await import(pathToFileURL(join(here, `${name}.ts`)).href);
    if (typeof mod.main !== "function") {
      console.log(`# ${name}: no main() export, skipped`);
      continue;
    }
    console.log(`\n# ${name}`);
    const ts = Date.now();
    try {
      results[name] = await mod.main(passOn);
    } catch (e) {
      console.error(`# ${name} failed: ${(e as Error).stack ?? e}`);
      results[name] = { error: String((e as Error).message ?? e) };
      process.exitCode = 1;
    }
    console.log(`# ${name}: ${((Date.now() - ts) / 1000).toFixed(1)} s`);
    (globalThis as { gc?: () => void }).gc?.();
  }
  const out = writeJson(jsonPath, "bench", { meta: benchMeta(), seconds: (Date.now() - t0) / 1000, results });
  console.log(`\nresults written to ${out}`);
}

run(process.argv.slice(2)).catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
