// Typed access to one JSON config file: every accessor checks the value's type, applies the library's
// default when the key is absent (or null, where the library treats null as "use the default"), and
// reports problems as UserErrors that name the file and the key.
import { readFileSync } from "node:fs";
import { UserError } from "../errors.ts";

/** Read and parse a JSON file; a missing file or bad JSON is a UserError naming the file. */
export function readJsonFile(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === "ENOENT") throw new UserError(`${path}: file not found`);
    if (code === "EISDIR") throw new UserError(`${path}: is a folder, not a file`);
    throw new UserError(`${path}: cannot read: ${(e as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new UserError(`${path}: not valid JSON (${(e as Error).message})`);
  }
}

const ABSENT = Symbol("absent");

export class ConfigReader {
  readonly json: Record<string, unknown>;

  constructor(readonly file: string, json: unknown) {
    if (json === null || typeof json !== "object" || Array.isArray(json)) {
      throw new UserError(`${file}: expected a JSON object`);
    }
    this.json = json as Record<string, unknown>;
  }

  static fromFile(path: string): ConfigReader {
    return new ConfigReader(path, readJsonFile(path));
  }

  fail(key: string, problem: string): never {
    throw new UserError(`${this.file}: "${key}" ${problem}`);
  }

  has(key: string): boolean {
    return Object.hasOwn(this.json, key);
  }

  private get(key: string, def: unknown): unknown {
    if (!this.has(key)) {
      if (def === ABSENT) this.fail(key, "is missing");
      return def;
    }
    return this.json[key];
  }

  num(key: string, def: number | typeof ABSENT = ABSENT): number {
    const v = this.get(key, def);
    if (typeof v !== "number" || !Number.isFinite(v)) this.fail(key, `must be a number, got ${JSON.stringify(v)}`);
    return v;
  }

  /** A positive (or, with `min: 0`, non-negative) integer. */
  int(key: string, def: number | typeof ABSENT = ABSENT, min = 1): number {
    const v = this.num(key, def);
    if (!Number.isInteger(v) || v < min) this.fail(key, `must be an integer >= ${min}, got ${v}`);
    return v;
  }

  /** A number, or null (absent keys give `def`). */
  numOrNull(key: string, def: number | null): number | null {
    const v = this.get(key, def);
    if (v === null) return null;
    if (typeof v !== "number" || !Number.isFinite(v)) this.fail(key, `must be a number or null, got ${JSON.stringify(v)}`);
    return v;
  }

  bool(key: string, def: boolean | typeof ABSENT = ABSENT): boolean {
    const v = this.get(key, def);
    if (typeof v !== "boolean") this.fail(key, `must be true or false, got ${JSON.stringify(v)}`);
    return v;
  }

  str(key: string, def: string | typeof ABSENT = ABSENT): string {
    const v = this.get(key, def);
    if (typeof v !== "string") this.fail(key, `must be a string, got ${JSON.stringify(v)}`);
    return v;
  }

  strOrNull(key: string, def: string | null): string | null {
    const v = this.get(key, def);
    if (v !== null && typeof v !== "string") this.fail(key, `must be a string or null, got ${JSON.stringify(v)}`);
    return v;
  }

  /** A string from a fixed set of values we implement; anything else is reported as unsupported. */
  oneOf<T extends string>(key: string, allowed: readonly T[], def: T | typeof ABSENT = ABSENT): T {
    const v = this.str(key, def);
    if (!(allowed as readonly string[]).includes(v)) {
      this.fail(key, `is ${JSON.stringify(v)}, which is not supported (supported: ${allowed.map((a) => JSON.stringify(a)).join(", ")})`);
    }
    return v as T;
  }

  /** A key that must hold exactly the default (an option we do not implement); absent is fine. */
  require(key: string, value: unknown, why = "is not supported"): void {
    if (!this.has(key)) return;
    const v = this.json[key];
    if (JSON.stringify(v) !== JSON.stringify(value)) this.fail(key, `is ${JSON.stringify(v)}: ${why} (only ${JSON.stringify(value)})`);
  }

  strList(key: string, def: readonly string[] | typeof ABSENT = ABSENT): string[] {
    const v = this.get(key, def);
    if (!Array.isArray(v) || !v.every((s) => typeof s === "string")) this.fail(key, `must be a list of strings, got ${JSON.stringify(v)}`);
    return [...v];
  }

  intList(key: string, def: readonly number[] | typeof ABSENT = ABSENT, min = 1): number[] {
    const v = this.get(key, def);
    if (!Array.isArray(v) || v.length === 0 || !v.every((d) => Number.isInteger(d) && d >= min)) {
      this.fail(key, `must be a non-empty list of integers >= ${min}, got ${JSON.stringify(v)}`);
    }
    return [...v];
  }

  /** A number applying to every block, or one number per block: returned as one value per block. */
  perBlockInts(key: string, blocks: number, def: number | readonly number[] | typeof ABSENT = ABSENT, min = 1): number[] {
    const v = this.get(key, def);
    if (Number.isInteger(v) && (v as number) >= min) return new Array(blocks).fill(v);
    if (Array.isArray(v) && v.every((d) => Number.isInteger(d) && d >= min)) {
      if (v.length !== blocks) this.fail(key, `has ${v.length} entries but there are ${blocks} down blocks`);
      return [...v];
    }
    return this.fail(key, `must be an integer >= ${min} or a list of them, got ${JSON.stringify(v)}`);
  }

  /** A boolean applying to every block, or one boolean per block. */
  perBlockBools(key: string, blocks: number, def: boolean): boolean[] {
    const v = this.get(key, def);
    if (typeof v === "boolean") return new Array(blocks).fill(v);
    if (Array.isArray(v) && v.every((d) => typeof d === "boolean")) {
      if (v.length !== blocks) this.fail(key, `has ${v.length} entries but there are ${blocks} down blocks`);
      return [...v];
    }
    return this.fail(key, `must be true/false or a list of them, got ${JSON.stringify(v)}`);
  }
}
