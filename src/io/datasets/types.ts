// The common shape of an editing sample, whatever dataset it comes from.

/** An image file or an embedded image: read lazily, decoded by the consumer. */
export interface ImageRef {
  /** Where it comes from, for messages: a path, or "file.parquet row 12 source_img". */
  name: string;
  /** The encoded image (PNG, JPEG, …). */
  bytes(): Promise<Uint8Array>;
}

/**
 * One editing turn.
 *
 * Single-turn ("independent") evaluation edits `source` for every turn; for MagicBrush, the source
 * of turn k > 1 is the ground truth of turn k − 1. Multi-turn ("iterative") evaluation edits
 * `sessionSource` at turn 1 and the model's own previous output afterwards; the turns of one
 * session come one after another, in order, and `turn === turns` marks the final turn.
 */
export interface EditSample {
  /** Unique within the dataset. */
  id: string;
  /** The session (source image) this turn belongs to. */
  imgId: string;
  /** 1-based turn within the session. */
  turn: number;
  /** Number of turns of the session. */
  turns: number;
  /** 0-based position in the dataset. */
  index: number;
  instruction: string;
  /** Local caption of the target, where the dataset has one. */
  caption?: string;
  source: ImageRef;
  /** The session's first input image (turn 1's source). */
  sessionSource: ImageRef;
  mask: ImageRef;
  target?: ImageRef;
}

export type DatasetKind = "manifest" | "magicbrush-folder" | "magicbrush-parquet";

/** A dataset: re-iterable, with a known size. */
export interface EditDataset extends AsyncIterable<EditSample> {
  kind: DatasetKind;
  /** The file or folder it was opened from. */
  path: string;
  /** Number of samples. */
  size: number;
  samples(): AsyncGenerator<EditSample>;
}
