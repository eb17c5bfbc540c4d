"""Training losses, and the objective that weighs them.

The terms: photometric, interlevel (proposal), the code and light priors and
the palette head's regularizers; each returns a scalar f32[]. The objective:
`LossWeights` (each term's weight and schedule, from the config) and
`make_loss_fn`, one device's loss of a batch, which `train_lib`'s step
differentiates. Symbols as in `sampling`: `tdist` edges f32[..., n + 1],
`weights` f32[..., n]. Owns no reductions across devices; the step averages
with `lax.pmean` once.
"""

import dataclasses

import jax
import jax.numpy as jnp

from condnerf import codes as codes_lib
from condnerf import rendering


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


@dataclasses.dataclass(frozen=True)
class LossWeights:
  """Weights of the loss terms and when the scheduled ones apply.

  Shares (`*_from`, `*_until`) are fractions of training, the step count
  over `train.steps` or the share of a wall-clock budget used. The palette
  entropy ramps in linearly from `palette_entropy_from` to the end (0 =
  constant): sharpening too early lets one entry take every part. The usage
  term decays linearly to 0 by `palette_usage_until` (0 = constant): even
  use breaks the symmetry between entries early, then each part settles on
  the entries that fit it. The assignment term starts at
  `palette_assignment_from`, once palettes mean something.
  """
  # Photometric weight of the non-final colored levels.
  coarse: float = 0.1
  interlevel: float = 1.0  # the proposal loss (proposal sampler).
  code_prior: float = 0.0  # the L2 prior on the codes.
  # Palette head: its residual's squared size; the entropy of its weights
  # (pushes each point towards one entry).
  residual: float = 0.0
  palette_entropy: float = 0.0
  palette_entropy_from: float = 0.0
  # Palette head: `palette_usage` (keeps a batch from using one entry for
  # everything), and `palette_assignment` (pulls each opaque pixel's
  # weights towards the entry whose color fits it).
  palette_usage: float = 0.0
  palette_usage_until: float = 0.0
  palette_assignment: float = 0.0
  palette_assignment_from: float = 0.0
  # Shaded head: the squared gap of predicted normals to the density
  # field's (both are trained), and `light_prior`, the pull of the light
  # codes towards their start.
  normal: float = 0.0
  light_prior: float = 0.0

  @classmethod
  def from_config(cls, config, shaded=False):
    """The weights `config.train` and `config.codes` set (light prior only
    with a shaded head)."""
    tc = config.train
    return cls(
        coarse=tc.coarse_loss_weight, interlevel=tc.interlevel_loss_weight,
        code_prior=config.codes.prior_weight, residual=tc.residual_weight,
        palette_entropy=tc.palette_entropy_weight,
        palette_entropy_from=tc.palette_entropy_from,
        palette_usage=tc.palette_usage_weight,
        palette_usage_until=tc.palette_usage_until,
        palette_assignment=tc.palette_assignment_weight,
        palette_assignment_from=tc.palette_assignment_from,
        normal=tc.normal_weight,
        light_prior=config.codes.light_prior_weight if shaded else 0.0)


def make_loss_fn(model, weights, total_steps=1, light_anchor=None):
  """`loss_fn(trainable, batch, noise, background, step) -> (loss, metrics)`.

  The loss of one device's share of the batch.

  Args:
    model: unbound `models.ConditionalNeRF`.
    weights: `LossWeights`.
    total_steps: the run's steps (training progress when no wall-clock
      budget gives it).
    light_anchor: shaded head: f32[num_codes, 9, 3] the light codes' start,
      which `weights.light_prior` pulls them towards.
  Returns:
    The loss function `loss_fn(trainable, batch, noise, background=None,
    step=0, progress=None)`; `trainable` is {'params', 'codes'}, `batch` a
    `structs.Batch`, `step` i32[] the step count, `progress` None or f32[]
    the share of training done (see `optim.make_schedule`), `noise` None or
    f32[num_rays, noise_dim], and `background` None (the scene's
    background) or f32[num_rays, 3]: each ray's target and rendering are
    both re-composited on this color, using `batch.alpha` and the rendered
    opacity. A background the model cannot predict leaves it no way to
    paint it into empty space. `metrics` holds f32[] loss and mse.
  """
  colored = model.colored_levels()
  scene_bg = model.background

  def loss_fn(trainable, batch, noise, background=None, step=0,
              progress=None):
    ray_codes = codes_lib.lookup(trainable['codes'], batch.rays.code_ids)
    outputs = model.apply({'params': trainable['params']}, batch.rays,
                          ray_codes, noise)
    extras, sampled = outputs[-1].extras or {}, {}
    if 'complete' in extras:  # occupancy: rays the sample budget cut.
      batch = batch.replace(weight=batch.weight * extras['complete'])
      num_rays = extras['complete'].shape[0]
      sampled = {'rays_used': jnp.mean(extras['complete']),
                 'samples_per_ray': extras['samples'] / num_rays,
                 'needed_per_ray': extras['needed'] / num_rays}
    mse, loss = _render_terms(outputs, colored, batch, background, scene_bg,
                              weights)
    loss = _add_code_terms(loss, trainable['codes'], batch, weights,
                           light_anchor)
    done = step / total_steps if progress is None else progress
    loss = _add_head_terms(loss, outputs, colored, batch, ray_codes, done,
                           weights)
    return loss, {'loss': loss, 'mse': mse, **sampled}

  return loss_fn


def _render_terms(outputs, colored, batch, background, scene_bg, weights):
  """(mse of the final level, photometric + interlevel loss), f32[] each."""
  scene_bg = jnp.asarray(scene_bg, jnp.float32)

  def on_background(rgb, acc):
    if background is None:
      return rgb
    return rendering.swap_background(rgb, acc, scene_bg, background)

  target = on_background(batch.rgb, batch.alpha)
  final = outputs[-1]
  mse = photometric(on_background(final.rgb, final.acc), target,
                           batch.weight)
  loss = mse
  for i in colored[:-1]:
    loss += weights.coarse * photometric(
        on_background(outputs[i].rgb, outputs[i].acc), target, batch.weight)
  proposals = [(o.tdist, o.weights) for i, o in enumerate(outputs)
               if i not in colored]
  if proposals:
    loss += weights.interlevel * interlevel(
        final.tdist, final.weights, proposals, batch.weight)
  return mse, loss


def _add_code_terms(loss, codes, batch, weights, light_anchor):
  """`loss` + the priors on the codes the batch uses."""
  if weights.code_prior:
    loss += weights.code_prior * code_prior(
        codes, batch.rays.code_ids, batch.weight)
  if weights.light_prior and light_anchor is not None:
    loss += weights.light_prior * light_prior(
        codes, light_anchor, batch.rays.code_ids, batch.weight)
  return loss


def _add_head_terms(loss, outputs, colored, batch, ray_codes, done, weights):
  """`loss` + the palette and shading heads' regularizers at progress
  `done`."""
  w = weights
  usage_scale = (jnp.maximum(0.0, 1.0 - done / w.palette_usage_until)
                 if w.palette_usage_until else 1.0)
  entropy_scale = (jnp.clip((done - w.palette_entropy_from) /
                            (1.0 - w.palette_entropy_from), 0.0, 1.0)
                   if w.palette_entropy_from else 1.0)
  for i in colored:
    extras = outputs[i].extras or {}
    for name, weight, scale in (('residual', w.residual, 1.0),
                                ('entropy', w.palette_entropy, entropy_scale),
                                ('normal_error', w.normal, 1.0)):
      if name in extras and weight:
        loss += weight * scale * weighted_mean(extras[name],
                                                      batch.weight)
    if 'usage' in extras and w.palette_usage:
      loss += w.palette_usage * usage_scale * palette_usage(
          extras['usage'], batch.weight)
    if 'log_weights' in extras and w.palette_assignment:
      acc = jax.lax.stop_gradient(outputs[i].acc)
      opaque = batch.weight * ((batch.alpha > 0.99) & (acc > 0.99))
      loss += w.palette_assignment * (
          done >= w.palette_assignment_from) * palette_assignment(
              extras['log_weights'], outputs[i].weights, extras['usage'],
              ray_codes['palette'], batch.rgb, opaque)
  return loss
