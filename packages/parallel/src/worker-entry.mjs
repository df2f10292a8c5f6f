// Worker filename for piscina. Worker threads do not inherit vitest's in-process
// TypeScript transform, so register tsx's ESM loader here, then load the .ts worker.
// (Under `tsx script.ts` the thread already has tsx from execArgv; registering again is harmless.)
import { register } from "tsx/esm/api";

register();
const mod = await import("./worker.ts");
export default mod.default;
