export { gradcheck, type GradcheckOptions, type GradcheckResult } from "./gradcheck.js";
export { assertClose, maxAbsDiff } from "./assert.js";
