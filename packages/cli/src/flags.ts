/** Command-line flags: node's parseArgs, with its errors as one line in the house style ("did you mean"). */
import { type ParseArgsConfig, parseArgs } from "node:util";
import { editDistance } from "@chainrule/core/internal";
import { UsageError } from "./errors.js";

type Options = NonNullable<ParseArgsConfig["options"]>;

/** The closest of `known` to `word` when it is close enough to be a typo. */
export function didYouMean(word: string, known: readonly string[]): string | undefined {
  let best: string | undefined, bestD = Infinity;
  for (const k of known) {
    const d = editDistance(word, k);
    if (d < bestD) [best, bestD] = [k, d];
  }
  return best !== undefined && bestD <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined;
}

/** What parseFlags returns: the flags' values by name, and the positional arguments. */
export type ParsedFlags<O extends Options> = ReturnType<typeof parseArgs<{ args: string[]; allowPositionals: true; strict: true; options: O }>>;

/** parseArgs(argv) for `command`; an unknown or malformed flag is a UsageError naming it. */
export function parseFlags<O extends Options>(command: string, argv: string[], options: O): ParsedFlags<O> {
  try {
    return parseArgs({ args: argv, allowPositionals: true, strict: true, options });
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const flag = /'(-{1,2}[^' ]+)/.exec(err.message)?.[1] ?? "";
    const known = Object.keys(options).map((k) => `--${k}`);
    if (err.code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") {
      const near = didYouMean(flag.replace(/=.*$/, ""), known);
      throw new UsageError(`${command}: ${flag}: unknown option${near ? ` (did you mean ${near}?)` : ""}; see chainrule ${command} --help`);
    }
    if (err.code === "ERR_PARSE_ARGS_INVALID_OPTION_VALUE") {
      throw new UsageError(`${command}: ${flag || "an option"}: ${/argument missing|ambiguous/.test(err.message) ? "needs a value" : "takes no value"}; see chainrule ${command} --help`);
    }
    throw new UsageError(`${command}: ${err.message.split(/[.\n]/)[0]}`);
  }
}
