import { readFileSync } from "node:fs";

/**
 * Reads a whole file; a failure becomes the caller's error type with one line naming the
 * file: `data.csv: cannot read (no such file)`.
 */
export function readFileNamed(path: string, toError: (message: string) => Error): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw toError(`${path}: cannot read (${err.code === "ENOENT" ? "no such file" : err.message})`);
  }
}
