// MagicBrush as published on the Hugging Face Hub (SPEC §7): parquet files with columns
// img_id (string), turn_index (int32, 1-based), source_img / mask_img / target_img (image structs
// {bytes, path}) and instruction (string). One file, or a folder of *.parquet files (sorted by
// name; `split` keeps only files named "<split>-…" or "<split>_…", e.g. "train" or "dev").
//
// Streaming: only the small img_id and turn_index columns are read in full (to know each
// session's number of turns); the image columns are read one row group at a time, through
// ranged reads of the file, so a 25 GB split never sits in memory.
// Samples come in file order; MagicBrush stores a session's turns together and in order, which
// multi-turn evaluation relies on (`turn`, `turns` and `sessionSource` are correct regardless).
import { open, readdir, stat } from "node:fs/promises";
import { basename, join } from "node:path";
import { parquetMetadataAsync, parquetReadObjects, parquetSchema } from "hyparquet";
import type { AsyncBuffer, FileMetaData } from "hyparquet";
import { UserError } from "../../errors.ts";
import type { EditDataset, EditSample, ImageRef } from "./types.ts";

const COLUMNS = ["img_id", "turn_index", "source_img", "mask_img", "target_img", "instruction"] as const;
const IMAGE_COLUMNS = new Set(["source_img", "mask_img", "target_img"]);

interface OpenFile {
  path: string;
  buffer: AsyncBuffer;
  close(): Promise<void>;
}

/** An AsyncBuffer over ranged reads of a local file. */
async function openFile(path: string): Promise<OpenFile> {
  let handle;
  try {
    handle = await open(path, "r");
  } catch (e) {
    throw new UserError(`${path}: cannot open: ${(e as Error).message}`);
  }
  const size = (await handle.stat()).size;
  const h = handle;
  return {
    path,
    buffer: {
      byteLength: size,
      async slice(start: number, end?: number): Promise<ArrayBuffer> {
        const stop = Math.min(end ?? size, size);
        const n = Math.max(0, stop - start);
        const out = new Uint8Array(n);
        let off = 0;
        while (off < n) {
          const { bytesRead } = await h.read(out, off, n - off, start + off);
          if (bytesRead === 0) throw new Error(`${path}: unexpected end of file`);
          off += bytesRead;
        }
        return out.buffer;
      },
    },
    close: () => h.close(),
  };
}

/** The *.parquet files of a path (a file, or a folder's files sorted by name). */
export async function parquetFiles(path: string, split?: string): Promise<string[]> {
  let st;
  try {
    st = await stat(path);
  } catch {
    throw new UserError(`${path}: no such file or folder`);
  }
  if (st.isFile()) return [path];
  const names = (await readdir(path))
    .filter((n) => n.endsWith(".parquet"))
    .filter((n) => split === undefined || n.startsWith(`${split}-`) || n.startsWith(`${split}_`))
    .sort();
  if (names.length === 0) {
    throw new UserError(`${path}: no ${split === undefined ? "" : `"${split}" `}parquet files in this folder`);
  }
  return names.map((n) => join(path, n));
}

function checkColumns(path: string, md: FileMetaData): void {
  const tree = parquetSchema(md);
  const have = new Map(tree.children.map((c) => [c.element.name, c]));
  const missing = COLUMNS.filter((c) => !have.has(c));
  if (missing.length > 0) {
    throw new UserError(
      `${path}: not a MagicBrush parquet file: missing column(s) ${missing.join(", ")} (has ${[...have.keys()].join(", ")})`,
    );
  }
  for (const c of IMAGE_COLUMNS) {
    const node = have.get(c)!;
    if (!node.children.some((ch) => ch.element.name === "bytes")) {
      throw new UserError(`${path}: column ${c} is not an image struct with a "bytes" field`);
    }
  }
}

function imageRef(value: unknown, name: string): ImageRef {
  const bytes = (value as { bytes?: unknown } | null)?.bytes;
  if (!(bytes instanceof Uint8Array) || bytes.length === 0) {
    throw new UserError(`${name}: no image bytes`);
  }
  return { name, bytes: async () => bytes };
}

/** Open a MagicBrush parquet file or folder as a dataset. */
export async function openMagicBrushParquet(path: string, opts: { split?: string } = {}): Promise<EditDataset> {
  const files = await parquetFiles(path, opts.split);
  // Pass 1: metadata and the session columns of every file.
  const turns = new Map<string, number>();
  let size = 0;
  const metas: FileMetaData[] = [];
  for (const f of files) {
    const file = await openFile(f);
    try {
      let md: FileMetaData;
      try {
        md = await parquetMetadataAsync(file.buffer);
      } catch (e) {
        throw new UserError(`${f}: not a readable parquet file (${(e as Error).message})`);
      }
      checkColumns(f, md);
      const rows = await parquetReadObjects({ file: file.buffer, metadata: md, columns: ["img_id", "turn_index"] });
      rows.forEach((r, i) => {
        const id = r.img_id;
        const turn = Number(r.turn_index);
        if ((typeof id !== "string" && typeof id !== "number") || !Number.isInteger(turn) || turn < 1) {
          throw new UserError(`${f}: row ${i}: bad img_id ${JSON.stringify(id)} or turn_index ${String(r.turn_index)}`);
        }
        turns.set(String(id), Math.max(turns.get(String(id)) ?? 0, turn));
      });
      size += rows.length;
      metas.push(md);
    } finally {
      await file.close();
    }
  }

  async function* samples(): AsyncGenerator<EditSample> {
    let index = 0;
    // The turn-1 source of each session, kept (as its bytes) until the session's last turn.
    const sessionFirst = new Map<string, ImageRef>();
    for (let fi = 0; fi < files.length; fi++) {
      const f = files[fi]!;
      const md = metas[fi]!;
      const file = await openFile(f);
      try {
        let rowStart = 0;
        for (const group of md.row_groups) {
          const rowEnd = rowStart + Number(group.num_rows);
          const rows = await parquetReadObjects({
            file: file.buffer,
            metadata: md,
            rowStart,
            rowEnd,
            columns: [...COLUMNS],
            utf8: false, // image bytes stay binary; string columns are annotated UTF8
          });
          for (let i = 0; i < rows.length; i++) {
            const r = rows[i]!;
            const row = rowStart + i;
            const where = `${basename(f)} row ${row}`;
            const imgId = String(r.img_id);
            const turn = Number(r.turn_index);
            const instruction = typeof r.instruction === "string" ? r.instruction.trim() : "";
            if (instruction === "") throw new UserError(`${f}: row ${row}: empty instruction`);
            const source = imageRef(r.source_img, `${where} source_img`);
            if (turn === 1 || !sessionFirst.has(imgId)) sessionFirst.set(imgId, source);
            const total = turns.get(imgId)!;
            const first = sessionFirst.get(imgId)!;
            if (turn >= total) sessionFirst.delete(imgId);
            yield {
              id: `${imgId}_${turn}`,
              imgId,
              turn,
              turns: total,
              index: index++,
              instruction,
              source,
              sessionSource: first,
              mask: imageRef(r.mask_img, `${where} mask_img`),
              target: r.target_img == null ? undefined : imageRef(r.target_img, `${where} target_img`),
            };
          }
          rowStart = rowEnd;
        }
      } finally {
        await file.close();
      }
    }
  }
  return { kind: "magicbrush-parquet", path, size, samples, [Symbol.asyncIterator]: samples };
}
