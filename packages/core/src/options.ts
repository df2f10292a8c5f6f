import { ArgumentError } from "./errors.js";

/**
 * Throws when `opts` has a key outside `allowed`, naming the op and the key, so a misspelled
 * option fails instead of training silently with the default. `undefined` opts pass.
 */
export function checkOptions(op: string, opts: object | undefined | null, allowed: readonly string[]): void {
  if (opts === undefined || opts === null) return;
  if (typeof opts !== "object" || Array.isArray(opts)) throw new ArgumentError(`${op}: options must be an object, got ${JSON.stringify(opts)}`);
  for (const key of Object.keys(opts)) {
    if (!allowed.includes(key)) {
      const near = allowed.find((a) => a.toLowerCase() === key.toLowerCase() || editDistance(a, key) <= 2);
      throw new ArgumentError(`${op}: unknown option '${key}'${near ? ` (did you mean '${near}'?)` : ""}; expected one of ${allowed.join(", ")}`);
    }
  }
}

/** Levenshtein distance, for "did you mean". */
export function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0];
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j];
      row[j] = Math.min(row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = cur;
    }
  }
  return row[b.length];
}
