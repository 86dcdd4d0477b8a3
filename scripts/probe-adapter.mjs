// Exit 0 and print the adapter's description when Dawn finds a WebGPU adapter, exit 1 otherwise.
// Run with Node by scripts/setup.sh before anything else is known to work.
import { create, globals } from "webgpu";
if (!process.env.XDG_RUNTIME_DIR) process.env.XDG_RUNTIME_DIR = "/tmp";
Object.assign(globalThis, globals);
const gpu = create([]);
let code = 1;
try {
  const adapter = await gpu.requestAdapter();
  if (adapter) {
    const info = adapter.info ?? {};
    console.log(`${info.vendor ?? "?"} ${info.architecture ?? ""} ${info.description ?? ""}`.trim());
    code = 0;
  }
} catch (e) {
  console.error(String(e?.message ?? e));
}
process.exit(code);
