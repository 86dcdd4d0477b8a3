// Moving images between files and the pipeline: sizing to the VAE factor, [-1, 1] tensors, and the
// attention-map overlay picture.
import { Tensor } from "../tensor/tensor.ts";
import { UserError } from "../errors.ts";
import { type PlanarImage, type RgbImage, resize, toMinusOneOne } from "../io/image.ts";

/**
 * The size an input image is edited at: optionally scaled so its longer side is `resolution`, then
 * rounded down to a multiple of the VAE factor (diffusers' rule).
 */
export function editSize(width: number, height: number, factor: number, resolution?: number): [number, number] {
  let w = width, h = height;
  if (resolution) {
    const s = resolution / Math.max(width, height);
    w = Math.round(width * s);
    h = Math.round(height * s);
  }
  w -= w % factor;
  h -= h % factor;
  if (w <= 0 || h <= 0) throw new UserError(`image of ${width}x${height} is smaller than the VAE factor ${factor}`);
  return [w, h];
}

/** An RGB image as a [1, 3, H, W] tensor in [-1, 1], resized (bilinear) to `width` x `height`. */
export function imageToTensor(img: RgbImage | PlanarImage, width: number, height: number): Tensor {
  const rgb: PlanarImage = { width: img.width, height: img.height, channels: 3, data: img.data.subarray(0, 3 * img.width * img.height) };
  const sized = rgb.width === width && rgb.height === height ? rgb : resize(rgb, width, height, "bilinear");
  return Tensor.from(toMinusOneOne(sized.data), [1, 3, height, width], "f32", "image");
}

/** Row b of a [B, 3, H, W] tensor in [0, 1] as a planar image. */
export async function tensorToImage(t: Tensor, b = 0): Promise<PlanarImage> {
  const [, C, H, W] = t.shape;
  const all = await t.readF32();
  return { width: W, height: H, channels: C, data: all.slice(b * C * H * W, (b + 1) * C * H * W) };
}

/** A perceptually ordered colormap (dark blue -> cyan -> yellow -> red) for v in [0, 1]. */
function heat(v: number): [number, number, number] {
  const stops: [number, number, number, number][] = [
    [0, 0.05, 0.05, 0.35],
    [0.35, 0.0, 0.6, 0.85],
    [0.65, 0.95, 0.9, 0.2],
    [1, 0.85, 0.1, 0.05],
  ];
  for (let i = 1; i < stops.length; i++) {
    if (v <= stops[i][0]) {
      const [a, b] = [stops[i - 1], stops[i]];
      const t = (v - a[0]) / (b[0] - a[0]);
      return [a[1] + t * (b[1] - a[1]), a[2] + t * (b[2] - a[2]), a[3] + t * (b[3] - a[3])];
    }
  }
  return [stops[3][1], stops[3][2], stops[3][3]];
}

/**
 * The attention map (mapW x mapH, any scale) normalised to its maximum, upsampled (bilinear) to the
 * image and blended over it: what `--attention-map` writes and the report shows.
 */
export function attentionOverlay(image: PlanarImage, map: Float32Array, mapW: number, mapH: number, opacity = 0.6): PlanarImage {
  const { width: W, height: H } = image;
  let max = 0;
  for (const v of map) max = Math.max(max, v);
  const norm = map.map((v) => (max > 0 ? v / max : 0));
  const up = resize({ width: mapW, height: mapH, channels: 1, data: norm }, W, H, "bilinear");
  const out = new Float32Array(3 * W * H);
  const n = W * H;
  for (let i = 0; i < n; i++) {
    const [r, g, b] = heat(Math.min(1, Math.max(0, up.data[i])));
    out[i] = (1 - opacity) * image.data[i] + opacity * r;
    out[n + i] = (1 - opacity) * image.data[n + i] + opacity * g;
    out[2 * n + i] = (1 - opacity) * image.data[2 * n + i] + opacity * b;
  }
  return { width: W, height: H, channels: 3, data: out };
}
