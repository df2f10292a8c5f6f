/** Validating a raw job: one line per problem, naming the key path, what was expected and what was given. */
import type { z } from "zod";
import { UsageError } from "../errors.js";
import { didYouMean } from "../flags.js";
import { type Job, JobSchema } from "./schema.js";

function fmtPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const p of path) out += typeof p === "number" ? `[${p}]` : out ? `.${String(p)}` : String(p);
  return out || "(job)";
}

function describeValue(v: unknown): string {
  if (v === undefined) return "nothing";
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 40 ? `${s.slice(0, 37)}...` : s;
}

function getAt(obj: unknown, path: readonly PropertyKey[]): unknown {
  let cur: any = obj;
  for (const p of path) cur = cur == null ? undefined : cur[p as any];
  return cur;
}

/** A zod schema without its default/optional/transform wrappers. */
function unwrap(schema: unknown): any {
  let s: any = schema;
  for (;;) {
    const def = s?._zod?.def;
    if (def && ["default", "optional", "nullable", "prefault"].includes(def.type)) s = def.innerType;
    else if (def?.type === "pipe") s = def.in;
    else return s;
  }
}

/** The object schema at `path` of the job (a union: the branch the input's `type` picks). */
function objectAt(path: readonly PropertyKey[], input: unknown): any {
  let s = unwrap(JobSchema), v: any = input;
  const pick = () => {
    const def = s?._zod?.def;
    if (def?.type !== "union") return;
    s = unwrap(def.options.find((o: any) => unwrap(o)?._zod?.def?.shape?.type?._zod?.def?.values?.includes(v?.type)) ?? def.options[0]);
  };
  for (const p of path) {
    pick();
    const def = s?._zod?.def;
    s = unwrap(def?.type === "object" ? def.shape[p as string] : def?.type === "array" ? def.element : undefined);
    v = v?.[p as any];
  }
  pick();
  return s?._zod?.def?.type === "object" ? s : undefined;
}

/** " (did you mean epochs?)" for a key close to one the job's section at `path` has. */
function keySuggestion(path: readonly PropertyKey[], key: string, input: unknown): string {
  const known = Object.keys(objectAt(path, input)?._zod.def.shape ?? {});
  // The same key in another case or with _ or - (weight_decay for weightDecay), else a near spelling of a longer key.
  const plain = (k: string) => k.toLowerCase().replace(/[_-]/g, "");
  const near = known.find((k) => plain(k) === plain(key)) ?? (key.length >= 4 ? didYouMean(key, known) : undefined);
  return near ? ` (did you mean ${fmtPath([...path, near])}?)` : "";
}

/** One line per zod issue: `key.path: what was expected (got X)`. */
export function formatIssue(issue: z.core.$ZodIssue, input: unknown): string {
  const path = fmtPath(issue.path);
  const got = getAt(input, issue.path);
  switch (issue.code) {
    case "unrecognized_keys":
      return issue.keys.map((k) => `${fmtPath([...issue.path, k])}: unknown key${keySuggestion(issue.path, k, input)}`).join("; ");
    case "invalid_type":
      return `${path}: expected ${issue.expected === "int" ? "an integer" : issue.expected}, got ${describeValue(got)}`;
    case "invalid_union": {
      const options = (issue as any).options as unknown[] | undefined;
      if (options) return `${path}: expected one of ${options.map((o) => JSON.stringify(o)).join(", ")}, got ${describeValue(got)}`;
      return `${path}: ${issue.message} (got ${describeValue(got)})`;
    }
    case "too_small":
    case "too_big": {
      const i = issue as any;
      const op = issue.code === "too_small" ? (i.inclusive ? "≥" : ">") : i.inclusive ? "≤" : "<";
      const what = i.origin === "array" ? "a list with length" : i.origin === "string" ? "a string with length" : "a number";
      return `${path}: expected ${what} ${op} ${i.minimum ?? i.maximum}, got ${describeValue(got)}`;
    }
    case "custom":
      return `${path}: ${issue.message}`;
    case "invalid_value":
      return `${path}: expected one of ${issue.values.map((v) => JSON.stringify(v)).join(", ")}, got ${describeValue(got)}`;
    default:
      return `${path}: ${issue.message.replace(/^Too (small|big): /, "")}${got !== undefined && typeof got !== "object" ? ` (got ${describeValue(got)})` : ""}`;
  }
}

/** Validates a raw job; throws a one-line UsageError naming the first problems. */
export function parseJob(raw: unknown, source: string): Job {
  const r = JobSchema.safeParse(raw);
  if (r.success) return r.data;
  const lines = r.error.issues.map((i) => formatIssue(i, raw));
  const more = lines.length > 3 ? ` (and ${lines.length - 3} more)` : "";
  throw new UsageError(`${source}: ${lines.slice(0, 3).join("; ")}${more}`);
}
