// Kernel sources are imported as text: `import src from "../../wgsl/x.wgsl" with { type: "text" }`.
declare module "*.wgsl" {
  const source: string;
  export default source;
}
