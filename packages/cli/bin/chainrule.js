#!/usr/bin/env node
// The `chainrule` command. Registers tsx's loader, so that jobs and models written in
// TypeScript (.ts) import as they are, then runs the CLI: the built JavaScript (dist/)
// in an installed package, the TypeScript sources in a clone of the repository (no build
// step there). Worker threads register tsx themselves (@chainrule/parallel's worker entry).
import { existsSync } from "node:fs";
import { register } from "tsx/esm/api";

register();
const source = new URL("../src/main.ts", import.meta.url);
const { run } = await import(existsSync(source) ? source.href : "../dist/main.js");
await run();
