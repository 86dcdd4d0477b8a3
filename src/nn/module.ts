// Module trees whose parameter paths equal diffusers'/transformers' state-dict keys, so a checkpoint
// loads by name with no mapping table. Parameters are declared with their shapes and filled by a
// loader (or a random initialiser); forward code reads them through `.t`.
import type { Tensor } from "../tensor/tensor.ts";

/** How a parameter is used, which decides whether it may stay f16 on the GPU. */
export type ParamRole = "matmul" | "conv" | "vector" | "embedding";

export class Param {
  tensor: Tensor | null = null;
  constructor(readonly shape: readonly number[], readonly role: ParamRole) {}

  /** The loaded tensor (throws when the parameter was never loaded). */
  get t(): Tensor {
    if (!this.tensor) throw new Error(`parameter ${this.path || "(unnamed)"} ${JSON.stringify(this.shape)} is not loaded`);
    return this.tensor;
  }

  /** Full dotted path, set when the tree is walked. */
  path = "";
}

export class Module {
  private readonly paramList: [string, Param][] = [];
  private readonly childList: [string, Module][] = [];

  protected param(name: string, shape: readonly number[], role: ParamRole = "vector"): Param {
    const p = new Param(shape, role);
    this.paramList.push([name, p]);
    return p;
  }

  protected child<M extends Module>(name: string, m: M): M {
    this.childList.push([name, m]);
    return m;
  }

  children(): readonly [string, Module][] {
    return this.childList;
  }

  /** Every parameter with its state-dict key, in declaration order. */
  namedParameters(prefix = ""): [string, Param][] {
    const out: [string, Param][] = [];
    for (const [n, p] of this.paramList) {
      p.path = prefix + n;
      out.push([p.path, p]);
    }
    for (const [n, c] of this.childList) out.push(...c.namedParameters(`${prefix}${n}.`));
    return out;
  }

  /** Every module with its dotted path ("" for this one). */
  namedModules(prefix = ""): [string, Module][] {
    const out: [string, Module][] = [[prefix.replace(/\.$/, ""), this]];
    for (const [n, c] of this.childList) out.push(...c.namedModules(`${prefix}${n}.`));
    return out;
  }

  /** The sub-module at a dotted path, e.g. `up_blocks.1.attentions.0.transformer_blocks.0.attn2`. */
  module(path: string): Module {
    let m: Module = this;
    if (path === "") return m;
    for (const part of path.split(".")) {
      const next = m.childList.find(([n]) => n === part);
      if (!next) throw new Error(`no module '${path}' (stopped at '${part}')`);
      m = next[1];
    }
    return m;
  }

  /** Free every loaded parameter's GPU memory. */
  disposeParameters(): void {
    for (const [, p] of this.namedParameters()) {
      p.tensor?.dispose();
      p.tensor = null;
    }
  }
}

/** A numbered list of modules (state-dict keys `name.0.…`, `name.1.…`). */
export class ModuleList<M extends Module> extends Module {
  readonly items: M[];
  constructor(items: M[]) {
    super();
    this.items = items;
    items.forEach((m, i) => this.child(String(i), m));
  }
  get length(): number {
    return this.items.length;
  }
}
