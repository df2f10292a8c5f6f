// Entry of the exchange thread (exchange-thread.ts): registers tsx's loader first, as
// worker-entry.mjs does, so the repository's TypeScript sources load; the built package loads
// exchange-thread.js.
import { register } from "tsx/esm/api";

register();
await import("./exchange-thread.js");
