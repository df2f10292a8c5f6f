/**
 * A module resolve hook (node:module register) for bench/user-code.ts: resolves `@chainrule/core`
 * as a user's program would, to this checkout's package (its package.json "exports"), so the
 * programs in bench/user-code/ import it by its public name.
 */
import { pathToFileURL } from "node:url";

const corePackage = pathToFileURL(new URL("../packages/core/package.json", import.meta.url).pathname).href;

export async function resolve(specifier, context, next) {
  // Resolved from inside the package: Node's self-reference by name follows its "exports" map.
  if (specifier === "@chainrule/core" || specifier.startsWith("@chainrule/core/")) return next(specifier, { ...context, parentURL: corePackage });
  return next(specifier, context);
}
