/** Building models and losses from their descriptions, identically in the main thread and every worker. */
import { isAbsolute, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { F, Tensor, getRngState, manualSeed, nn, setRngState } from "@chainrule/core";
import { ParallelError } from "./errors.js";
import type { LossRef, LossSpec, ModelSpec } from "./types.js";

/** A module reference as a file: URL string (relative paths are relative to the current directory). */
export function moduleHref(m: string | URL): string {
  if (m instanceof URL) return m.href;
  if (/^[a-z][a-z0-9+.-]*:/i.test(m) && !/^[a-z]:[\\/]/i.test(m)) return m; // already a URL (file:, data:)
  return pathToFileURL(isAbsolute(m) ? m : resolve(process.cwd(), m)).href;
}

export function normalizeModel(spec: ModelSpec): { module: string; export: string; options: unknown } {
  return { module: moduleHref(spec.module), export: spec.export ?? "default", options: spec.options ?? {} };
}

export function normalizeLoss(spec: LossSpec): LossRef {
  if (typeof spec === "object" && "name" in spec) {
    if (spec.name !== "crossEntropy" || !Number.isInteger(spec.ignoreIndex)) {
      throw new ParallelError(`DataParallel: a loss given by name with options must be { name: "crossEntropy", ignoreIndex: <integer> }`);
    }
    return { name: "crossEntropy", ignoreIndex: spec.ignoreIndex };
  }
  if (typeof spec === "string") {
    if (typeof (F as any)[spec] !== "function") throw new ParallelError(`DataParallel: unknown loss '${spec}' (expected one of core's F losses, e.g. crossEntropy, mseLoss, binaryCrossEntropyWithLogits)`);
    return spec;
  }
  return { module: moduleHref(spec.module), export: spec.export };
}

function isClass(f: unknown): f is new (o: unknown) => nn.Module {
  return typeof f === "function" && (f.prototype instanceof nn.Module || /^class[\s{]/.test(Function.prototype.toString.call(f)));
}

/** The export `name` of the module at `href` (a file: URL), which must be a function or class; `what` names it in errors. */
export async function importExport(href: string, name: string, what: string): Promise<(...args: never[]) => unknown> {
  let mod: Record<string, unknown>;
  try {
    mod = await import(href);
  } catch (e) {
    const msg = (e as Error).message;
    // Outside an ES module package, Node reads a .js file (and tsx a .ts file) as CommonJS.
    const hint = /\.[jt]s$/.test(href) && /outside a module|require\(\) ES Module/.test(msg)
      ? ` (import and export in a .js or .ts file need "type": "module" in the nearest package.json; or name the file .mjs or .mts)`
      : "";
    throw new ParallelError(`${what}: cannot import ${href}: ${msg}${hint}`);
  }
  const f = mod[name];
  if (typeof f !== "function") throw new ParallelError(`${what}: ${href} has no function or class export '${name}'`);
  return f as (...args: never[]) => unknown;
}

/** Calls a model factory (may be async) or constructs a Module class with `options`; the result must be an nn.Module. */
export async function instantiate(f: (...args: never[]) => unknown, options: unknown, what: string): Promise<nn.Module> {
  const m = isClass(f) ? new f(options) : await (f as (o: unknown) => unknown)(options);
  if (!(m instanceof nn.Module)) {
    throw new ParallelError(`${what} returned ${Object.prototype.toString.call(m)}, not an nn.Module (or the module imports another copy of @chainrule/core)`);
  }
  return m;
}

/**
 * Builds the model with the global generator seeded by `seed` (so init is the
 * same in every thread), restoring the caller's generator state afterwards.
 */
export async function buildModel(spec: { module: string; export: string; options: unknown }, seed: number): Promise<nn.Module> {
  const what = `model ${spec.module}#${spec.export}`;
  const f = await importExport(spec.module, spec.export, what);
  const saved = getRngState();
  manualSeed(seed);
  try {
    return await instantiate(f, spec.options, what);
  } finally {
    setRngState(saved);
  }
}

export type LossFn = (output: Tensor, target: Tensor | Int32Array) => Tensor;

/** Core's crossEntropy ignores targets equal to -100 unless told otherwise. */
export const CORE_IGNORE_INDEX = -100;

/**
 * The loss function, its name, and — for cross-entropy — the ignoreIndex: its mean is over
 * the targets that are not ignoreIndex, so shards are weighted by that count, not by rows.
 */
export async function resolveLoss(spec: LossRef): Promise<{ fn: LossFn; name: string; ignoreIndex: number | null }> {
  if (typeof spec === "object" && "name" in spec) {
    const ignoreIndex = spec.ignoreIndex;
    return { fn: (o, t) => F.crossEntropy(o, t, { ignoreIndex }), name: "crossEntropy", ignoreIndex };
  }
  if (typeof spec === "string") return { fn: (F as any)[spec] as LossFn, name: spec, ignoreIndex: spec === "crossEntropy" ? CORE_IGNORE_INDEX : null };
  const fn = await importExport(spec.module, spec.export, `loss ${spec.module}#${spec.export}`);
  return { fn: fn as unknown as LossFn, name: spec.export, ignoreIndex: null };
}

/** Compares two layouts; returns a description of the first difference, or null. */
export function layoutDiff(a: nn.ParamLayoutEntry[], b: nn.ParamLayoutEntry[]): string | null {
  if (a.length !== b.length) return `${a.length} parameters vs ${b.length}`;
  for (let i = 0; i < a.length; i++) {
    const x = a[i], y = b[i];
    if (x.name !== y.name || x.offset !== y.offset || x.size !== y.size || x.shape.join(",") !== y.shape.join(",")) {
      return `parameter ${i}: ${x.name} [${x.shape}] @${x.offset} vs ${y.name} [${y.shape}] @${y.offset}`;
    }
  }
  return null;
}
