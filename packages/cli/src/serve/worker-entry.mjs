// Thread entry of an inference worker. Registers tsx's ESM loader first (worker threads
// do not inherit the main thread's loader hooks, and a served model may be a TypeScript
// module), then loads the worker: the built inference-worker.js beside this file in an
// installed package, inference-worker.ts (which tsx resolves for ./inference-worker.js)
// in the repository's sources.
import { register } from "tsx/esm/api";

register();
await import("./inference-worker.js");
