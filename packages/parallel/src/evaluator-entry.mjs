// Thread entry for the comlink evaluator: register tsx (see worker-entry.mjs), then load the .ts worker.
import { register } from "tsx/esm/api";

register();
await import("./evaluator-worker.ts");
