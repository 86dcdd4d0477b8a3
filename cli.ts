#!/usr/bin/env bun
// rl4pix command line. Bun: `bun cli.ts …`; Deno: `deno run -A cli.ts …`; compiled: `dist/rl4pix …`.
import { main } from "./src/cli/main.ts";

await main(process.argv.slice(2));
