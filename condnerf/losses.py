"""Training losses: photometric, interlevel (proposal) and the code prior.

Symbols as in `sampling`: `tdist` edges f32[..., n + 1], `weights` f32[..., n].
Each loss returns a scalar f32[]. Owns no reductions across devices; the
step averages with `lax.pmean` once.
"""

import jax
import jax.numpy as jnp


def photometric(rgb, target, weight):
  """Weighted mean squared error.

  Args:
    rgb: f32[num_rays, 3], rendered colors.
    target: f32[num_rays, 3], ground truth.
    weight: f32[num_rays], per-ray weights (0 for padding rays).
  Returns:
    f32[] sum(weight * mse) / max(sum(weight), 1).
  """
  return weighted_mean(jnp.mean((rgb - target)**2, axis=-1), weight)


def weighted_mean(per_ray, weight):
  """f32[] sum(weight * per_ray) / max(sum(weight), 1) of f32[num_rays]."""
  return jnp.sum(weight * per_ray) / jnp.maximum(jnp.sum(weight), 1.0)


def _searchsorted(a, v):
  """Bracketing indices of `v` in sorted `a` along the last axis.

  Returns idx_lo (largest i with a[i] <= v, else 0) and idx_hi (smallest i
  with a[i] > v, else len - 1), both i32[..., len(v)].
  """
  i = jnp.arange(a.shape[-1])
  v_ge_a = v[..., None, :] >= a[..., :, None]
  idx_lo = jnp.max(jnp.where(v_ge_a, i[..., :, None], i[..., :1, None]), -2)
  idx_hi = jnp.min(jnp.where(~v_ge_a, i[..., :, None], i[..., -1:, None]), -2)
  return idx_lo, idx_hi


def outer_measure(t_target, t_source, w_source):
  """Upper bound on source mass overlapping each target interval.

  Args:
    t_target: f32[..., m + 1], target edges.
    t_source: f32[..., n + 1], source edges.
    w_source: f32[..., n], source weights.
  Returns:
    f32[..., m], for each target interval the total source weight of the
    source intervals that overlap it (mip-NeRF 360's outer measure).
  """
  cw = jnp.concatenate([jnp.zeros_like(w_source[..., :1]),
                        jnp.cumsum(w_source, axis=-1)], axis=-1)
  idx_lo, idx_hi = _searchsorted(t_source, t_target)
  cw_lo = jnp.take_along_axis(cw, idx_lo, axis=-1)
  cw_hi = jnp.take_along_axis(cw, idx_hi, axis=-1)
  return cw_hi[..., 1:] - cw_lo[..., :-1]


def interlevel(final_tdist, final_weights, proposal_levels, weight=None):
  """mip-NeRF 360 proposal loss: proposals must bound the final weights.

  Gradients flow only into the proposal weights.

  Args:
    final_tdist: f32[num_rays, n + 1].
    final_weights: f32[num_rays, n].
    proposal_levels: list of (tdist f32[num_rays, k + 1], weights f32[num_rays,
      k]) of the proposal levels.
    weight: None or f32[num_rays] per-ray weights.
  Returns:
    f32[] loss summed over proposal levels.
  """
  t = jax.lax.stop_gradient(final_tdist)
  w = jax.lax.stop_gradient(final_weights)
  total = 0.0
  for tdist, weights in proposal_levels:
    bound = outer_measure(t, tdist, weights)
    per_ray = jnp.sum(jnp.maximum(0.0, w - bound)**2 / (w + 1e-7), axis=-1)
    if weight is None:
      total += jnp.mean(per_ray)
    else:
      total += jnp.sum(weight * per_ray) / jnp.maximum(jnp.sum(weight), 1.0)
  return total


def palette_usage(usage, weight):
  """How unevenly a batch uses the palette: KL(usage || uniform).

  Keeps a palette head from painting everything with one entry early in
  training, when the weights cannot yet tell the parts apart.

  Args:
    usage: f32[num_rays, K], each ray's composited palette weights.
    weight: f32[num_rays] per-ray weights.
  Returns:
    f32[] sum_k u_k log(K u_k) of the batch's usage u (0 when even).
  """
  total = jnp.sum(weight[:, None] * usage, axis=0)
  u = total / jnp.maximum(jnp.sum(total), 1e-9)
  return jnp.sum(u * jnp.log(jnp.maximum(u * usage.shape[-1], 1e-12)))


def palette_assignment(log_weights, sample_weights, usage, palette, target,
                       weight, min_share=0.02):
  """Cross-entropy of the palette weights against the entry that fits best.

  The photometric loss moves a point's palette weights by gradients that
  scale with the weights themselves, so a point that sharpened onto the
  wrong entry (a part's small face painted with a neighbouring part's
  entry) has no way back. This loss names, for every ray, the entry whose
  color best explains the target up to brightness (the least error of
  `t - s P_k` over s >= 0, among entries that paint at least `min_share`
  of the batch) and pulls every sample of the ray towards it, with a
  gradient on the logits that does not vanish. The target entry and the
  samples' compositing weights are constants: the loss moves the palette
  weights only, never density or the palette.

  Args:
    log_weights: f32[num_rays, num_samples, K], log w of every sample.
    sample_weights: f32[num_rays, num_samples], compositing weights.
    usage: f32[num_rays, K], each ray's composited palette weights.
    palette: f32[num_rays, K, 3], each ray's palette.
    target: f32[num_rays, 3], target colors of opaque pixels.
    weight: f32[num_rays], per-ray weights; 0 for rays to skip
      (background, partial coverage, padding).
    min_share: entries that paint less of the batch are no target.
  Returns:
    f32[] the weighted mean over rays of -sum_s w_s log w_s[k*] / sum_s w_s.
  """
  palette, target = jax.lax.stop_gradient((palette, target))
  total = jnp.sum(jax.lax.stop_gradient(weight[:, None] * usage), axis=0)
  active = total >= min_share * jnp.maximum(jnp.sum(total), 1e-9)
  dot = jnp.einsum('rkc,rc->rk', palette, target)
  scale = jnp.maximum(dot, 0.0) / jnp.maximum(jnp.sum(palette**2, -1), 1e-9)
  error = jnp.sum((target[:, None] - scale[..., None] * palette)**2, -1)
  best = jnp.argmin(jnp.where(active, error, jnp.inf), axis=-1)
  chosen = jnp.take_along_axis(log_weights, best[:, None, None], axis=-1)
  along = jax.lax.stop_gradient(sample_weights)
  per_ray = -jnp.sum(along * chosen[..., 0], axis=-1) / jnp.maximum(
      jnp.sum(along, axis=-1), 1e-6)
  return weighted_mean(per_ray, weight)


def light_prior(codes, anchor, ids, weight):
  """L2 pull of the light codes used in a batch towards where they started.

  Order-2 SH have 9 coefficients per channel, and a scene of few normal
  directions (the chair's boxes have six) pins only their values on those
  normals, and only up to a factor the palette can take back: unpulled,
  the codes drift into ones that light the training views right but stand
  for no physical light, and a light set from a direction no longer
  matches them. Started at each frame's recorded light
  (`experiment.initial_lights`), the pull keeps them in its units.

  Args:
    codes: the code table; its 'light' f32[num_codes, 9, 3] is used.
    anchor: f32[num_codes, 9, 3], the lights they are pulled towards.
    ids: i32[num_rays] code rows of the batch rays (-1 rays are ignored).
    weight: f32[num_rays] per-ray weights.
  Returns:
    f32[] mean squared distance of the rays' light codes to their anchors.
  """
  rows = jnp.maximum(ids, 0)
  gap = (jnp.take(codes['light'], rows, axis=0) -
         jnp.take(anchor, rows, axis=0))
  return weighted_mean(jnp.sum(gap**2, axis=(-2, -1)) * (ids >= 0), weight)


def code_prior(codes, ids, weight):
  """L2 prior on the latent codes used in a batch (NeRF-W style).

  Only the latent entry is pulled towards 0; a palette is a color, not a
  latent, and has no prior.

  Args:
    codes: the code table; its 'appearance' f32[num_codes, code_dim] is used.
    ids: i32[num_rays] code rows of the batch rays (-1 rays are ignored).
    weight: f32[num_rays] per-ray weights.
  Returns:
    f32[] mean squared norm of the rays' codes.
  """
  rows = jnp.take(codes['appearance'], jnp.maximum(ids, 0), axis=0)
  return weighted_mean(jnp.sum(rows**2, axis=-1) * (ids >= 0), weight)
