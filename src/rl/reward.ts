// The InstructRL4Pix reward (paper §3.1, SPEC §5): r = cos(a_pred, a_gt) + alpha * L_clip with
// L_clip = MAE(V, O) * [MAE(V, O) > tau], V the input and O the edited image on [0, 1] RGB.

export interface RewardParts {
  reward: number;
  /** cos(a_pred, a_gt). */
  cos: number;
  /** L_clip (0 when MAE <= tau). */
  clip: number;
  /** MAE(V, O) on [0, 1] RGB. */
  mae: number;
}

export function cosineSimilarity(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`cosine: ${a.length} vs ${b.length} values`);
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  const den = Math.sqrt(na) * Math.sqrt(nb);
  return den > 0 ? dot / den : 0;
}

export function meanAbsoluteError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`MAE: ${a.length} vs ${b.length} values`);
  let s = 0;
  for (let i = 0; i < a.length; i++) s += Math.abs(a[i] - b[i]);
  return s / Math.max(a.length, 1);
}

export function instructReward(aPred: ArrayLike<number>, aGt: ArrayLike<number>, input: ArrayLike<number>, output: ArrayLike<number>, alpha: number, tau: number): RewardParts {
  const cos = cosineSimilarity(aPred, aGt);
  const mae = meanAbsoluteError(input, output);
  const clip = mae > tau ? mae : 0;
  return { reward: cos + alpha * clip, cos, clip, mae };
}
