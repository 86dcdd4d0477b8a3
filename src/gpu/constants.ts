// WebGPU flag values (fixed by the spec). Used instead of the GPUBufferUsage/GPUShaderStage/GPUMapMode
// globals, which Dawn's bindings only install once the runtime has been loaded.
export const BufferUsage = {
  MAP_READ: 0x0001,
  MAP_WRITE: 0x0002,
  COPY_SRC: 0x0004,
  COPY_DST: 0x0008,
  UNIFORM: 0x0040,
  STORAGE: 0x0080,
  QUERY_RESOLVE: 0x0200,
} as const;
export const SHADER_STAGE_COMPUTE = 0x4;
export const MAP_MODE_READ = 0x1;
