// CLIP scores of the evaluation (SPEC §6, MagicBrush's image_eval.py):
//   CLIP-T = cos(image embedding of the generated image, text embedding of the target's local caption)
//   CLIP-I = cos(image embedding of the generated image, image embedding of the ground truth)
// Embeddings are CLIPModel's projected features (get_image_features / get_text_features), compared
// in float64 on the host (cosine = 1 - scipy's cosine distance, as MagicBrush computes it).
import type { PlanarImage } from "../io/image.ts";
import { clipImageEmbeddings, clipTextEmbeddings, type ClipBundle } from "../nn/clip_model.ts";

/** Cosine similarity of two vectors, in float64. 0-norm vectors give NaN. */
export function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`cosine: lengths differ (${a.length} vs ${b.length})`);
  let ab = 0, aa = 0, bb = 0;
  for (let i = 0; i < a.length; i++) {
    ab += a[i] * b[i];
    aa += a[i] * a[i];
    bb += b[i] * b[i];
  }
  return ab / Math.sqrt(aa * bb);
}

export interface ClipPair {
  generated: PlanarImage;
  /** Ground truth, for CLIP-I. */
  target?: PlanarImage;
  /** Local caption of the target, for CLIP-T. */
  caption?: string;
}

export interface ClipPairScores {
  /** null without a caption. */
  clipT: number | null;
  /** null without a target. */
  clipI: number | null;
  /** The caption was longer than the text model's context and was cut. */
  captionTruncated: boolean;
}

/** Embeds images and texts with one CLIP model; remembers embeddings by key (e.g. a file path). */
export class ClipScorer {
  private readonly images = new Map<string, Float32Array>();
  private readonly texts = new Map<string, { embed: Float32Array; truncated: boolean }>();

  constructor(readonly clip: ClipBundle, readonly batchSize = 8) {}

  /** Image embeddings for `items`; those whose key was seen before are not recomputed. */
  async imageEmbeddings(items: readonly { key: string; image: () => Promise<PlanarImage> | PlanarImage }[]): Promise<Float32Array[]> {
    const todo = [...new Map(items.filter((it) => !this.images.has(it.key)).map((it) => [it.key, it])).values()];
    for (let i = 0; i < todo.length; i += this.batchSize) {
      const chunk = todo.slice(i, i + this.batchSize);
      const imgs = await Promise.all(chunk.map((it) => it.image()));
      const emb = await clipImageEmbeddings(this.clip, imgs, this.batchSize);
      chunk.forEach((it, j) => this.images.set(it.key, emb[j]));
    }
    return items.map((it) => this.images.get(it.key)!);
  }

  /** Text embeddings for `texts` (cached by text). */
  async textEmbeddings(texts: readonly string[]): Promise<{ embed: Float32Array; truncated: boolean }[]> {
    const todo = [...new Set(texts.filter((t) => !this.texts.has(t)))];
    if (todo.length > 0) {
      const r = await clipTextEmbeddings(this.clip, todo, 2 * this.batchSize);
      todo.forEach((t, j) => this.texts.set(t, { embed: r.embeds[j], truncated: r.truncated[j] }));
    }
    return texts.map((t) => this.texts.get(t)!);
  }

  /** CLIP-T and CLIP-I of each pair (images embedded in batches). */
  async score(pairs: readonly ClipPair[]): Promise<ClipPairScores[]> {
    const gen = await clipImageEmbeddings(this.clip, pairs.map((p) => p.generated), this.batchSize);
    const withTarget = pairs.map((p, i) => ({ p, i })).filter(({ p }) => p.target);
    const gt = await clipImageEmbeddings(this.clip, withTarget.map(({ p }) => p.target!), this.batchSize);
    const gtByIndex = new Map(withTarget.map(({ i }, j) => [i, gt[j]]));
    const captioned = pairs.map((p, i) => ({ p, i })).filter(({ p }) => p.caption !== undefined);
    const txt = await this.textEmbeddings(captioned.map(({ p }) => p.caption!));
    const txtByIndex = new Map(captioned.map(({ i }, j) => [i, txt[j]]));
    return pairs.map((_, i) => {
      const t = txtByIndex.get(i);
      const g = gtByIndex.get(i);
      return {
        clipT: t ? cosine(gen[i], t.embed) : null,
        clipI: g ? cosine(gen[i], g) : null,
        captionTruncated: t?.truncated ?? false,
      };
    });
  }
}

/** CLIP-T of each image against its caption. */
export async function clipT(clip: ClipBundle, images: readonly PlanarImage[], captions: readonly string[]): Promise<number[]> {
  if (images.length !== captions.length) throw new Error(`clipT: ${images.length} images and ${captions.length} captions`);
  const s = await new ClipScorer(clip).score(images.map((generated, i) => ({ generated, caption: captions[i] })));
  return s.map((x) => x.clipT!);
}

/** CLIP-I of each generated image against its ground truth. */
export async function clipI(clip: ClipBundle, generated: readonly PlanarImage[], targets: readonly PlanarImage[]): Promise<number[]> {
  if (generated.length !== targets.length) throw new Error(`clipI: ${generated.length} generated and ${targets.length} targets`);
  const s = await new ClipScorer(clip).score(generated.map((g, i) => ({ generated: g, target: targets[i] })));
  return s.map((x) => x.clipI!);
}
