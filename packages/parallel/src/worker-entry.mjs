// Worker filename for piscina. Registers tsx's ESM loader first: worker threads do not
// inherit the main thread's loader hooks (vitest's transform, or the one the chainrule
// command registers), and user models or losses may be TypeScript files. Then loads the
// worker: the built worker.js beside this file in an installed package, worker.ts (which
// tsx resolves for ./worker.js) in the repository's sources. Registering again under
// `tsx script.ts`, whose execArgv the thread inherits, is harmless.
import { register } from "tsx/esm/api";

register();
const mod = await import("./worker.js");
export default mod.default;
