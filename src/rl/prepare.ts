// Turning a dataset row into what training needs: the input at the training resolution, the
// ground-truth attention map a_gt at the map resolution, and the per-prompt statistics key.
import { loadImage, loadMask, type EditSample } from "../io/datasets/index.ts";
import { areaAverage, resizeMaskTo } from "../io/mask.ts";
import { resize } from "../io/image.ts";
import { maskShapeProblem } from "../io/image_header.ts";
import { sampleKey } from "../rl/stat_tracker.ts";
import { UserError } from "../errors.ts";

export interface PreparedSample {
  id: string;
  key: string;
  instruction: string;
  /** Planar RGB in [0, 1], size x size. */
  source: Float32Array;
  size: number;
  /** a_gt [mapSide * mapSide]: the binarised mask, area-averaged to the attention map. */
  aGt: Float32Array;
  /** The binarised mask at the image size (for pictures). */
  mask: Float32Array;
}

export async function prepareSample(s: EditSample, size: number, mapSide: number): Promise<PreparedSample> {
  if (!s.instruction.trim()) throw new UserError(`${s.source.name}: empty instruction (sample ${s.id})`);
  const img = await loadImage(s.source);
  const rgb = { width: img.width, height: img.height, channels: 3, data: img.data.subarray(0, 3 * img.width * img.height) };
  const source = img.width === size && img.height === size ? rgb.data.slice() : resize(rgb, size, size, "bilinear").data;
  const mask = await loadMask(s.mask);
  const problem = maskShapeProblem(mask, img);
  if (problem) throw new UserError(`${s.mask.name}: ${problem} (${s.source.name}, sample ${s.id})`);
  // masks may come at another size than the image (MagicBrush): nearest to the image, then area-average
  const atImage = resizeMaskTo(mask, size, size);
  const aGt = areaAverage(atImage, mapSide, mapSide).data;
  return { id: s.id, key: sampleKey(s.imgId, s.turn, s.instruction), instruction: s.instruction, source, size, aGt: Float32Array.from(aGt), mask: Float32Array.from(atImage.data) };
}
