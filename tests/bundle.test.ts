// Model bundles (src/models/bundle.ts): a folder written back from its bundle is byte-identical, the
// hash follows content, and paths that escape the folder are refused.
import { describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { writeTinyCheckpoint } from "../src/models/tiny.ts";
import { bundleFolder, bundleHash, writeBundle } from "../src/models/bundle.ts";
import { cachedBundle } from "../src/models/default_model.ts";
import { checkModelFolder } from "../src/diffusion/model_folder.ts";

describe("model bundles", () => {
  test("a folder round-trips byte for byte; the hash changes with any byte; README is left out when asked", () => {
    const work = mkdtempSync(join(tmpdir(), "rl4pix-bundle-"));
    try {
      const src = join(work, "src");
      writeTinyCheckpoint(src, {});
      writeFileSync(join(src, "README.md"), "card");
      const b = bundleFolder(src, ["README.md"]);
      expect(Object.keys(b.files)).not.toContain("README.md");
      expect(b.files["unet/config.json"]).toHaveProperty("text");
      expect(b.files["unet/diffusion_pytorch_model.safetensors"]).toHaveProperty("base64");
      const back = join(work, "back");
      writeBundle(JSON.parse(JSON.stringify(b)), back);
      for (const rel of Object.keys(b.files)) expect(Buffer.compare(readFileSync(join(src, rel)), readFileSync(join(back, rel)))).toBe(0);
      const h = bundleHash(b);
      const changed = bundleFolder(back);
      const bytes = Buffer.from((changed.files["vae/diffusion_pytorch_model.safetensors"] as { base64: string }).base64, "base64");
      bytes[bytes.length - 1] ^= 1;
      changed.files["vae/diffusion_pytorch_model.safetensors"] = { base64: bytes.toString("base64") };
      expect(bundleHash(changed)).not.toBe(h);
      expect(bundleHash(bundleFolder(back))).toBe(h);
      expect(() => writeBundle({ format: "rl4pix-bundle/1", files: { "../x": { text: "" } } }, join(work, "bad"))).toThrow(/bad path/);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });

  test("a shipped bundle becomes a cache folder once: it loads strictly, is reused, and a damaged one is rebuilt", () => {
    const work = mkdtempSync(join(tmpdir(), "rl4pix-bundle-"));
    try {
      const src = join(work, "src");
      writeTinyCheckpoint(src, {});
      const b = bundleFolder(src);
      const root = join(work, "cache");
      const dir = cachedBundle(root, "shipped", b);
      expect(dir).toBe(join(root, `shipped-${bundleHash(b)}`));
      checkModelFolder(dir); // every config and weight header as the loader wants them
      const stamp = statSync(join(dir, "unet", "config.json")).mtimeMs;
      expect(cachedBundle(root, "shipped", b)).toBe(dir);
      expect(statSync(join(dir, "unet", "config.json")).mtimeMs).toBe(stamp); // reused, not rewritten
      rmSync(join(dir, "vae", "diffusion_pytorch_model.safetensors"));
      expect(cachedBundle(root, "shipped", b)).toBe(dir);
      expect(existsSync(join(dir, "vae", "diffusion_pytorch_model.safetensors"))).toBe(true);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });
});
