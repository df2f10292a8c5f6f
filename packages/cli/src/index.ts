/** @chainrule/cli as a library: the job schema and helpers for typed .ts jobs, and ONNX export of a model. */
export { defineJob, JobSchema, type Job, type JobInput, type ModelConfig, type DataConfig } from "./job/schema.js";
export { parseJob } from "./job/parse.js";
export { buildJobModel, MODEL_HELP, type ModelContext } from "./models.js";
export { main, run } from "./main.js";
export { exportOnnx, ExportError, DEFAULT_OPSET, SUPPORTED_OPSETS, type OnnxExport, type OnnxExportOptions } from "./onnx/export.js";
