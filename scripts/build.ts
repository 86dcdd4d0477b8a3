// `npm run build`: one self-contained executable, dist/rl4pix (bun build --compile). Dawn's native
// addon is embedded through the literal require in src/gpu/runtime.ts, kernels through text imports,
// the default model's spec through a JSON import.
import { spawnSync } from "node:child_process";
import { mkdirSync } from "node:fs";

mkdirSync("dist", { recursive: true });
const r = spawnSync(process.execPath, ["build", "--compile", "--minify-syntax", "cli.ts", "--outfile", "dist/rl4pix"], { stdio: "inherit" });
if (r.status !== 0) process.exit(r.status ?? 1);
console.log("dist/rl4pix");
