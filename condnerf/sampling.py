"""Sample placement along rays: stratified samples and PDF resampling.

Conventions (as in step-function code such as multinerf's `stepfun.py`):
  tdist: f32[..., num_samples + 1], sorted interval edges along each ray, in
    world units (distance from the ray origin, directions are unit vectors).
  weights: f32[..., num_samples], non-negative mass of each interval.
Samples are intervals: sample i covers [tdist[i], tdist[i+1]] and is evaluated
at its midpoint. Owns no network code.
"""

import jax
import jax.numpy as jnp


def stratified(near, far, num_samples, lindisp=False, jitter=None):
  """Evenly spaced interval edges, optionally jittered within each interval.

  Args:
    near: f32[..., 1], start of each ray.
    far: f32[..., 1], end of each ray.
    num_samples: intervals per ray.
    lindisp: space the edges linearly in inverse depth instead of depth.
    jitter: None (deterministic), or f32[..., num_samples + 1] uniform numbers
      in [0, 1); entries 0 and -1 are unused.
  Returns:
    tdist: f32[..., num_samples + 1], sorted edges with tdist[0] = near and
      tdist[-1] = far.
  """
  batch_shape = near.shape[:-1]
  u = jnp.linspace(0.0, 1.0, num_samples + 1, dtype=near.dtype)
  u = jnp.broadcast_to(u, batch_shape + (num_samples + 1,))
  if jitter is not None:
    # Move interior edges by up to half an interval each way; edges stay
    # sorted because neighbours move within disjoint half-intervals.
    inner = u[..., 1:-1] + (jitter[..., 1:-1] - 0.5) / num_samples
    u = jnp.concatenate([u[..., :1], inner, u[..., -1:]], axis=-1)
  if lindisp:
    return 1.0 / (1.0 / near * (1.0 - u) + 1.0 / far * u)
  return near * (1.0 - u) + far * u


def clip_to_box(origins, directions, near, far, half_width):
  """Clips each ray's [near, far] to an origin-centred axis-aligned box.

  A bounded field (a hash grid without contraction) clamps positions outside
  its box onto the box faces, so samples there are wasted. Slab test, as in
  Instant-NGP's ray/AABB clipping.

  Args:
    origins: f32[..., 3], ray origins.
    directions: f32[..., 3], unit ray directions.
    near: f32[..., 1], start of each ray.
    far: f32[..., 1], end of each ray.
    half_width: float, the box is [-half_width, half_width]^3.
  Returns:
    (near, far), f32[..., 1] each: the part of [near, far] inside the box. A
    ray that misses the box gets an empty range (near = far), so it renders
    the background.
  """
  eps = 1e-9
  safe = jnp.where(directions >= 0, jnp.maximum(directions, eps),
                   jnp.minimum(directions, -eps))
  t1 = (-half_width - origins) / safe
  t2 = (half_width - origins) / safe
  t_enter = jnp.max(jnp.minimum(t1, t2), axis=-1, keepdims=True)
  t_exit = jnp.min(jnp.maximum(t1, t2), axis=-1, keepdims=True)
  new_near = jnp.clip(t_enter, near, far)
  new_far = jnp.clip(t_exit, new_near, far)
  return new_near, new_far


def sample_pdf(tdist, weights, num_samples, padding=0.01, jitter=None):
  """Draws new interval edges from the piecewise-constant PDF of `weights`.

  Inverse-CDF sampling of a histogram, as in NeRF's and mip-NeRF's
  hierarchical sampling. A little uniform mass (`padding`) keeps empty space
  reachable. No gradient flows through the new edges.

  Args:
    tdist: f32[..., n + 1], edges of the histogram.
    weights: f32[..., n], histogram mass (need not be normalised).
    num_samples: intervals of the new sampling.
    padding: fraction of mass spread uniformly over [tdist[0], tdist[-1]].
    jitter: None for evenly spaced quantiles, or f32[..., num_samples + 1]
      uniform numbers in [0, 1) for stratified random quantiles.
  Returns:
    f32[..., num_samples + 1], sorted new edges; with padding > 0 they span
    the same range as `tdist`.
  """
  weights = jax.lax.stop_gradient(weights)
  tdist = jax.lax.stop_gradient(tdist)
  widths = jnp.diff(tdist, axis=-1)
  total = jnp.sum(weights, axis=-1, keepdims=True)
  span = jnp.maximum(tdist[..., -1:] - tdist[..., :1], 1e-10)
  mass = ((1.0 - padding) * weights / jnp.maximum(total, 1e-10) +
          padding * widths / span)
  mass = jnp.where(total > 1e-10, mass, widths / span)
  cdf = jnp.concatenate(
      [jnp.zeros_like(mass[..., :1]),
       jnp.minimum(1.0, jnp.cumsum(mass, axis=-1))], axis=-1)
  cdf = cdf.at[..., -1].set(1.0)
  count = num_samples + 1
  if jitter is None:
    u = jnp.linspace(0.0, 1.0, count, dtype=tdist.dtype)
    u = jnp.broadcast_to(u, tdist.shape[:-1] + (count,))
  else:
    # One quantile per stratum of [0, 1]: sorted by construction. The end
    # quantiles are pinned so the new edges span the same range.
    u = (jnp.arange(count, dtype=tdist.dtype) + jitter) / count
    u = u.at[..., 0].set(0.0).at[..., -1].set(1.0)
  return invert_cdf(u, tdist, cdf)


def invert_cdf(u, tdist, cdf):
  """Piecewise-linear inverse of a CDF sampled at edges.

  Args:
    u: f32[..., m], sorted quantiles in [0, 1].
    tdist: f32[..., n + 1], edges.
    cdf: f32[..., n + 1], non-decreasing CDF at the edges, 0 first, 1 last.
  Returns:
    f32[..., m], positions t with CDF(t) = u, sorted.
  """
  # Index of the last edge whose CDF is <= u (vectorised searchsorted).
  idx = jnp.sum(cdf[..., None, :] <= u[..., :, None], axis=-1) - 1
  idx = jnp.clip(idx, 0, cdf.shape[-1] - 2)
  cdf0 = jnp.take_along_axis(cdf, idx, axis=-1)
  cdf1 = jnp.take_along_axis(cdf, idx + 1, axis=-1)
  t0 = jnp.take_along_axis(tdist, idx, axis=-1)
  t1 = jnp.take_along_axis(tdist, idx + 1, axis=-1)
  frac = jnp.clip((u - cdf0) / jnp.maximum(cdf1 - cdf0, 1e-10), 0.0, 1.0)
  return t0 + frac * (t1 - t0)


def midpoints(tdist):
  """f32[..., n] interval midpoints of edges f32[..., n + 1]."""
  return 0.5 * (tdist[..., 1:] + tdist[..., :-1])


def positions(rays_origins, rays_directions, tdist):
  """World positions of interval midpoints.

  Args:
    rays_origins: f32[..., 3].
    rays_directions: f32[..., 3], unit.
    tdist: f32[..., n + 1].
  Returns:
    f32[..., n, 3].
  """
  t = midpoints(tdist)
  return rays_origins[..., None, :] + t[..., None] * rays_directions[..., None, :]
