"""Per-ray volume rendering: density -> alpha -> weights -> composited outputs.

Symbols as in `sampling`: `tdist` f32[..., num_samples + 1] interval edges,
`density` f32[..., num_samples], `weights` f32[..., num_samples]. Owns the
quadrature only; sampling and networks live elsewhere.
"""

import jax.numpy as jnp

from condnerf import structs


def compute_alpha_weights(density, tdist):
  """Compositing weights of piecewise-constant density (NeRF quadrature).

  Args:
    density: f32[..., num_samples], non-negative volume density.
    tdist: f32[..., num_samples + 1], interval edges along unit rays.
  Returns:
    weights: f32[..., num_samples], alpha_i * T_i; sums to <= 1 per ray.
    alpha: f32[..., num_samples], opacity of each interval.
    trans: f32[..., num_samples], transmittance reaching each interval.
  """
  delta = jnp.diff(tdist, axis=-1)
  density_delta = density * delta
  alpha = 1.0 - jnp.exp(-density_delta)
  # Exclusive cumulative sum: T_i = exp(-sum_{j<i} sigma_j delta_j).
  trans = jnp.exp(-jnp.concatenate([
      jnp.zeros_like(density_delta[..., :1]),
      jnp.cumsum(density_delta[..., :-1], axis=-1)], axis=-1))
  return alpha * trans, alpha, trans


def swap_background(rgb, acc, old, new):
  """Color composited on `old` re-composited on `new`.

  Args:
    rgb: f32[..., 3], color composited over background `old`.
    acc: f32[...], opacity the color was composited with.
    old: f32[3] (or broadcastable f32[..., 3]) background of `rgb`.
    new: f32[3] (or broadcastable f32[..., 3]) background to use instead.
  Returns:
    f32[..., 3], the same foreground over `new`.
  """
  return rgb + (new - old) * (1.0 - acc[..., None])


def composite(rgb, weights, tdist, background):
  """Integrates sample colors into pixel color, depth and opacity.

  Args:
    rgb: f32[..., num_samples, 3], sample colors in [0, 1].
    weights: f32[..., num_samples], compositing weights.
    tdist: f32[..., num_samples + 1], interval edges.
    background: f32[3] (or broadcastable f32[..., 3]) color behind the scene.
  Returns:
    `structs.RenderOutput`. `depth` is the weights-normalised expected
    distance, clipped to the ray's [near, far]; rays that hit nothing get far.
  """
  acc = jnp.sum(weights, axis=-1)
  color = jnp.sum(weights[..., None] * rgb, axis=-2)
  color = color + (1.0 - acc[..., None]) * background
  return structs.RenderOutput(
      rgb=color, depth=expected_depth(weights, tdist), acc=acc,
      weights=weights, tdist=tdist)


def composite_level(rgb, level, background):
  """`composite` of one level of `models.ConditionalNeRF.geometry`.

  Args:
    rgb: f32[num_rays, num_samples, 3] sample colors of the level.
    level: dict with f32 `weights` [num_rays, n] and `tdist` [num_rays,
      n + 1], and for an NDC model `world_tdist` (the edges' world
      distances), from which depth is then taken.
    background: f32[3] color behind the scene.
  Returns:
    `structs.RenderOutput`; depth in world units.
  """
  out = composite(rgb, level['weights'], level['tdist'], background)
  if 'world_tdist' in level:
    out = out.replace(depth=expected_depth(level['weights'],
                                           level['world_tdist']))
  return out


def expected_depth(weights, tdist):
  """f32[...]: the weights-normalised expected distance of the interval
  midpoints of `tdist` f32[..., n + 1] under `weights` f32[..., n],
  clipped to [tdist[0], tdist[-1]]; rays that hit nothing get tdist[-1]."""
  acc = jnp.sum(weights, axis=-1)
  t_mid = 0.5 * (tdist[..., 1:] + tdist[..., :-1])
  depth = jnp.sum(weights * t_mid, axis=-1) / jnp.maximum(acc, 1e-10)
  depth = jnp.where(acc > 1e-10, depth, tdist[..., -1])
  return jnp.clip(depth, tdist[..., 0], tdist[..., -1])
