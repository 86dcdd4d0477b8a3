// Image-quality metrics of the evaluation (SPEC §6), on the CPU, for planar RGB images
// (Float32Array laid out [3, H, W], values in [0, 1]).
//
// - l1:   mean |a − b| over every channel and pixel (torch.nn.L1Loss on ToTensor images, as MagicBrush).
// - l2:   mean (a − b)² (the MSE, not its root, as MagicBrush's nn.MSELoss).
// - psnr: 10·log10(1 / mse) with data range 1. Identical images give mse 0 and PSNR = Infinity
//         (the value scikit-image returns; no cap). Averaging code must decide what to do with it;
//         JSON.stringify turns Infinity into null.
// - ssim: Wang et al. 2004 exactly as scikit-image 0.19
//         `structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
//         data_range=1, channel_axis=…)`: separable Gaussian window σ 1.5 truncated at 3.5σ
//         (radius 5, 11 taps, normalised to sum 1), K1 0.01, K2 0.03, biased (population)
//         covariances, the map's mean after cropping 5 px at every border, per channel, channels
//         averaged. Computed in float64. scikit-image filters with scipy 'reflect' borders, but
//         the 5 px crop equals the window's radius, so no kept pixel's window leaves the image:
//         we compute only the kept region, which gives the same numbers.
//
// `pairMetrics(generated, target)` first resizes the generated image to the target's size when the
// sizes differ, with a bilinear (triangle) filter whose support widens by the scale factor when
// shrinking, as PIL's `Image.resize(size, BILINEAR)` does (antialiased downscaling, exact
// bilinear interpolation when enlarging; windows are truncated and renormalised at the borders).

/** A planar RGB image: `data` is [3, height, width], values in [0, 1]. */
export interface PlanarRgb {
  width: number;
  height: number;
  data: Float32Array;
}

export interface PairMetrics {
  l1: number;
  l2: number;
  /** Infinity when the images are identical. */
  psnr: number;
  ssim: number;
}

function checkImage(img: PlanarRgb, what: string): void {
  if (!(img.width > 0 && img.height > 0) || !Number.isInteger(img.width) || !Number.isInteger(img.height)) {
    throw new Error(`${what}: bad image size ${img.width}x${img.height}`);
  }
  if (img.data.length !== 3 * img.width * img.height) {
    throw new Error(
      `${what}: data has ${img.data.length} values, expected 3x${img.height}x${img.width} = ${3 * img.width * img.height}`,
    );
  }
}

function checkSameSize(a: PlanarRgb, b: PlanarRgb, op: string): void {
  checkImage(a, op);
  checkImage(b, op);
  if (a.width !== b.width || a.height !== b.height) {
    throw new Error(`${op}: image sizes differ (${a.width}x${a.height} vs ${b.width}x${b.height})`);
  }
}

/** Mean absolute difference over every value. */
export function l1(a: PlanarRgb, b: PlanarRgb): number {
  checkSameSize(a, b, "l1");
  const x = a.data;
  const y = b.data;
  let s = 0;
  for (let i = 0; i < x.length; i++) s += Math.abs(x[i]! - y[i]!);
  return s / x.length;
}

/** Mean squared difference over every value (MSE). */
export function l2(a: PlanarRgb, b: PlanarRgb): number {
  checkSameSize(a, b, "l2");
  const x = a.data;
  const y = b.data;
  let s = 0;
  for (let i = 0; i < x.length; i++) {
    const d = x[i]! - y[i]!;
    s += d * d;
  }
  return s / x.length;
}

/** PSNR in dB with data range 1; Infinity for identical images. */
export function psnr(a: PlanarRgb, b: PlanarRgb): number {
  const mse = l2(a, b);
  return mse === 0 ? Infinity : 10 * Math.log10(1 / mse);
}

/** The normalised 1-D Gaussian of scipy.ndimage.gaussian_filter (radius = int(truncate·σ + 0.5)). */
export function gaussianKernel1d(sigma: number, truncate: number): Float64Array {
  const radius = Math.trunc(truncate * sigma + 0.5);
  const k = new Float64Array(2 * radius + 1);
  let sum = 0;
  for (let i = -radius; i <= radius; i++) {
    const v = Math.exp((-0.5 / (sigma * sigma)) * i * i);
    k[i + radius] = v;
    sum += v;
  }
  for (let i = 0; i < k.length; i++) k[i]! /= sum;
  return k;
}

export interface SsimOptions {
  /** Gaussian σ (default 1.5). */
  sigma?: number;
  /** Gaussian truncation in σ (default 3.5 → an 11-tap window at σ 1.5). */
  truncate?: number;
  k1?: number;
  k2?: number;
  dataRange?: number;
}

/**
 * Mean SSIM of one [h, w] channel pair (`offset` into each array), in float64.
 *
 * scikit-image filters with 'reflect' borders and then crops (win_size − 1) / 2 = r pixels at every
 * border, where r is also the Gaussian's radius; so every kept pixel's window lies inside the
 * image and the border extension never reaches the mean. We therefore filter only the kept
 * region ("valid" correlation), which gives the same numbers with less work.
 */
function ssimChannel(
  a: Float32Array,
  b: Float32Array,
  offset: number,
  w: number,
  h: number,
  k: Float64Array,
  c1: number,
  c2: number,
): number {
  const r = (k.length - 1) >> 1;
  const ow = w - 2 * r; // kept columns
  const oh = h - 2 * r; // kept rows
  // The five signals (x, y, x², y², xy) of one row, then their horizontal filtering for the kept
  // columns into five [h, ow] planes stored one after the other in `hor`.
  const kr = k[r]!;
  const plane = h * ow;
  const hor = new Float64Array(5 * plane);
  const sig = new Float64Array(5 * w);
  for (let y = 0; y < h; y++) {
    const src = offset + y * w;
    for (let x = 0; x < w; x++) {
      const vx = a[src + x]!;
      const vy = b[src + x]!;
      sig[x] = vx;
      sig[w + x] = vy;
      sig[2 * w + x] = vx * vx;
      sig[3 * w + x] = vy * vy;
      sig[4 * w + x] = vx * vy;
    }
    for (let q = 0; q < 5; q++) {
      const s0 = q * w + r; // centre of output column 0
      const d = q * plane + y * ow;
      for (let x = 0; x < ow; x++) {
        const c = s0 + x;
        let acc = kr * sig[c]!;
        for (let j = 1; j <= r; j++) acc += k[r - j]! * (sig[c - j]! + sig[c + j]!);
        hor[d + x] = acc;
      }
    }
  }
  // Vertical filtering of the kept rows: five [oh, ow] planes.
  const out = oh * ow;
  const ver = new Float64Array(5 * out);
  for (let q = 0; q < 5; q++) {
    for (let i = 0; i < oh; i++) {
      const c = q * plane + (i + r) * ow; // centre row
      const d = q * out + i * ow;
      for (let x = 0; x < ow; x++) ver[d + x] = kr * hor[c + x]!;
      for (let j = 1; j <= r; j++) {
        const kj = k[r - j]!;
        const up = c - j * ow;
        const dn = c + j * ow;
        for (let x = 0; x < ow; x++) ver[d + x]! += kj * (hor[up + x]! + hor[dn + x]!);
      }
    }
  }
  let sum = 0;
  for (let i = 0; i < out; i++) {
    const ux = ver[i]!;
    const uy = ver[out + i]!;
    const vx = ver[2 * out + i]! - ux * ux;
    const vy = ver[3 * out + i]! - uy * uy;
    const vxy = ver[4 * out + i]! - ux * uy;
    sum += ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2));
  }
  return sum / out;
}

/**
 * SSIM of two same-size planar RGB images (scikit-image 0.19 semantics, see the file header).
 * Images must be at least 11x11 (the window), as scikit-image requires.
 */
export function ssim(a: PlanarRgb, b: PlanarRgb, opts: SsimOptions = {}): number {
  checkSameSize(a, b, "ssim");
  const sigma = opts.sigma ?? 1.5;
  const truncate = opts.truncate ?? 3.5;
  const range = opts.dataRange ?? 1;
  const c1 = ((opts.k1 ?? 0.01) * range) ** 2;
  const c2 = ((opts.k2 ?? 0.03) * range) ** 2;
  const k = gaussianKernel1d(sigma, truncate);
  const { width: w, height: h } = a;
  if (w < k.length || h < k.length) {
    throw new Error(`ssim: image ${w}x${h} is smaller than the ${k.length}x${k.length} window`);
  }
  let total = 0;
  for (let c = 0; c < 3; c++) total += ssimChannel(a.data, b.data, c * w * h, w, h, k, c1, c2);
  return total / 3;
}

/** Per-axis resampling weights of PIL's BILINEAR filter (triangle, support 1 scaled when shrinking). */
function bilinearWeights(inSize: number, outSize: number): { start: Int32Array; count: Int32Array; weights: Float64Array; maxTaps: number } {
  const scale = inSize / outSize;
  const fscale = Math.max(scale, 1);
  const support = fscale; // triangle support 1.0 × fscale
  const maxTaps = Math.ceil(support) * 2 + 1;
  const start = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const weights = new Float64Array(outSize * maxTaps);
  for (let o = 0; o < outSize; o++) {
    const center = (o + 0.5) * scale;
    const lo = Math.max(0, Math.trunc(center - support + 0.5));
    const hi = Math.min(inSize, Math.trunc(center + support + 0.5));
    let total = 0;
    const n = hi - lo;
    for (let j = 0; j < n; j++) {
      const t = Math.abs((j + lo - center + 0.5) / fscale);
      const v = t < 1 ? 1 - t : 0;
      weights[o * maxTaps + j] = v;
      total += v;
    }
    if (total > 0) for (let j = 0; j < n; j++) weights[o * maxTaps + j]! /= total;
    start[o] = lo;
    count[o] = n;
  }
  return { start, count, weights, maxTaps };
}

/**
 * Resize a planar RGB image with PIL-style bilinear filtering (see the file header). Values stay
 * in float (no quantisation to 8 bits).
 */
export function resizeBilinear(img: PlanarRgb, width: number, height: number): PlanarRgb {
  checkImage(img, "resizeBilinear");
  if (!(width > 0 && height > 0)) throw new Error(`resizeBilinear: bad target size ${width}x${height}`);
  if (width === img.width && height === img.height) return { width, height, data: img.data.slice() };
  const { width: iw, height: ih } = img;
  const wx = bilinearWeights(iw, width);
  const wy = bilinearWeights(ih, height);
  const out = new Float32Array(3 * width * height);
  const tmp = new Float64Array(ih * width);
  for (let c = 0; c < 3; c++) {
    const src = c * iw * ih;
    for (let y = 0; y < ih; y++) {
      for (let x = 0; x < width; x++) {
        const s0 = wx.start[x]!;
        const n = wx.count[x]!;
        let s = 0;
        for (let j = 0; j < n; j++) s += wx.weights[x * wx.maxTaps + j]! * img.data[src + y * iw + s0 + j]!;
        tmp[y * width + x] = s;
      }
    }
    const dst = c * width * height;
    for (let y = 0; y < height; y++) {
      const s0 = wy.start[y]!;
      const n = wy.count[y]!;
      for (let x = 0; x < width; x++) {
        let s = 0;
        for (let j = 0; j < n; j++) s += wy.weights[y * wy.maxTaps + j]! * tmp[(s0 + j) * width + x]!;
        out[dst + y * width + x] = s;
      }
    }
  }
  return { width, height, data: out };
}

/**
 * L1, L2 (MSE), PSNR and SSIM of a generated image against its ground truth, the generated image
 * first resized to the target's size (PIL-style bilinear) when the sizes differ.
 */
export function pairMetrics(generated: PlanarRgb, target: PlanarRgb): PairMetrics {
  checkImage(generated, "pairMetrics (generated)");
  checkImage(target, "pairMetrics (target)");
  const g =
    generated.width === target.width && generated.height === target.height
      ? generated
      : resizeBilinear(generated, target.width, target.height);
  const mse = l2(g, target);
  return {
    l1: l1(g, target),
    l2: mse,
    psnr: mse === 0 ? Infinity : 10 * Math.log10(1 / mse),
    ssim: ssim(g, target),
  };
}
