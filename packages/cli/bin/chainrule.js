#!/usr/bin/env node
// The installed `chainrule` command: registers tsx's loader, then runs the
// TypeScript CLI in this process (no build step). Worker threads register tsx
// themselves (see @chainrule/parallel's worker entry).
import { register } from "tsx/esm/api";

register();
const { run } = await import("../src/main.ts");
await run();
