"""Occupancy-grid ray marching with a fixed sample budget (#28, first part).

A bounded scene's box [-half_width, half_width]^3 is split into R^3 cells.
Each cell holds a moving estimate of the optical thickness of one marching
step there (density x step size, the opacity a step would have for small
values), and a cell is occupied while its estimate exceeds a small
threshold. Rays are marched with a fixed step; steps in empty cells are
skipped, and the ones left are packed, in ray order, into a fixed number of
samples so that every shape is static under `jit`. The samples are
rendered per ray with segment sums.

The math follows Instant-NGP (Mueller et al. 2022) and nerfacc's
`OccGridEstimator` (Li et al. 2023): an exponential moving average that
keeps the larger of the decayed estimate and a fresh evaluation at a jittered
point of each updated cell (decay 0.95), the threshold the smaller of 0.01
and the grid's mean, updates drawn from uniform cells plus occupied ones.

Everything here is a pure function of arrays: the grid belongs to the
training state of the caller, and an update computed from the same key and
parameters is the same on every device and process.

Symbols: `R` the grid resolution, `S` the steps per ray (`max_steps`), `B`
the sample budget, `N` the rays.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

DECAY = 0.95
THRESHOLD = 0.01


class Samples(NamedTuple):
  """Marched samples packed into a budget, in ray order.

  Attributes:
    ray: i32[B], the ray of each sample (`num_rays` for unused slots, one
      past the last ray, so that segment sums drop them).
    t_start: f32[B], where each sample's step starts along its unit ray.
    t_end: f32[B], where it ends (a step of `step_size`, cut at the ray's far).
    valid: bool[B], the slot holds a sample.
    count: i32[], samples the rays had in occupied cells before the budget
      cut them (more than B means the budget dropped the rest: fewer rays
      next time).
  """
  ray: jnp.ndarray
  t_start: jnp.ndarray
  t_end: jnp.ndarray
  valid: jnp.ndarray
  count: jnp.ndarray


def init_grid(resolution):
  """f32[R, R, R] of zeros: nothing is occupied until the first `update`
  (a training updates at step 0, with `warmup`)."""
  return jnp.zeros((resolution,) * 3, jnp.float32)


def cell_of(points, half_width, resolution):
  """The cell of each point, and whether the point is inside the box.

  Args:
    points: f32[..., 3].
    half_width: float, the box's half width.
    resolution: int, R.
  Returns:
    (i32[..., 3] cell indices clipped into the grid, bool[...] inside).
  """
  unit = (points + half_width) / (2.0 * half_width)
  inside = jnp.all((unit >= 0.0) & (unit <= 1.0), axis=-1)
  cell = jnp.clip(jnp.floor(unit * resolution).astype(jnp.int32), 0,
                  resolution - 1)
  return cell, inside


def occupied(grid):
  """bool[R, R, R]: cells whose thickness exceeds min(THRESHOLD, mean)."""
  return grid > jnp.minimum(THRESHOLD, jnp.mean(grid))


def update(grid, density_fn, key, step_size, half_width, num_cells,
           warmup=True, decay=DECAY):
  """One moving-average update of the grid from fresh density evaluations.

  Args:
    grid: f32[R, R, R], the current estimate (`init_grid` at first).
    density_fn: f32[n, 3] -> f32[n], the field's density at points.
    key: PRNG key (the same on every device: the result is then the same).
    step_size: float, the marching step the thickness is measured for.
    half_width: float, the box's half width.
    num_cells: int n, cells evaluated in this update.
    warmup: True draws every cell uniformly (the first updates); False
      draws half uniformly and half among the occupied cells.
    decay: the average's decay per update of a cell.
  Returns:
    f32[R, R, R], the grid with each drawn cell set to
    max(decay * old, density * step_size) (a cell drawn twice takes the
    larger of its two evaluations).
  """
  resolution = grid.shape[0]
  total = resolution ** 3
  key_uniform, key_occupied, key_jitter = jax.random.split(key, 3)
  if warmup:
    index = jax.random.randint(key_uniform, (num_cells,), 0, total)
  else:
    half = num_cells // 2
    uniform = jax.random.randint(key_uniform, (num_cells - half,), 0, total)
    mask = occupied(grid).reshape(-1).astype(jnp.float32)
    # With nothing occupied, every cell is as likely.
    weights = jnp.where(jnp.sum(mask) > 0, mask, jnp.ones_like(mask))
    chosen = jax.random.choice(key_occupied, total, (half,),
                               p=weights / jnp.sum(weights))
    index = jnp.concatenate([uniform, chosen])
  cell = jnp.stack(jnp.unravel_index(index, grid.shape), axis=-1)
  jitter = jax.random.uniform(key_jitter, (num_cells, 3))
  points = ((cell + jitter) / resolution * 2.0 - 1.0) * half_width
  thickness = jax.lax.stop_gradient(density_fn(points)) * step_size
  flat = grid.reshape(-1)
  fresh = jnp.zeros_like(flat).at[index].max(thickness)
  drawn = jnp.zeros(flat.shape, bool).at[index].set(True)
  flat = jnp.where(drawn, jnp.maximum(flat * decay, fresh), flat)
  return flat.reshape(grid.shape)


def march(origins, directions, near, far, grid, half_width, step_size,
          max_steps, budget, jitter=None):
  """Fixed-step samples in occupied cells, packed into `budget` slots.

  Args:
    origins: f32[N, 3], ray origins.
    directions: f32[N, 3], unit ray directions.
    near: f32[N, 1], where each ray starts (clip it to the box first).
    far: f32[N, 1], where it ends.
    grid: f32[R, R, R], the thickness estimate.
    half_width: float, the box's half width.
    step_size: float, the step along the ray.
    max_steps: int S, steps tried per ray (S * step_size should cover the
      longest ray through the box).
    budget: int B, the samples kept.
    jitter: None (steps start at near) or f32[N, 1] in [0, 1), a per-ray
      offset of the steps in units of `step_size` (training).
  Returns:
    `Samples`, the first B occupied steps in ray order.
  """
  num_rays = origins.shape[0]
  offset = 0.0 if jitter is None else jitter
  t_start = near + (jnp.arange(max_steps) + offset) * step_size  # [N, S]
  t_end = jnp.minimum(t_start + step_size, far)
  middle = 0.5 * (t_start + t_end)
  points = origins[:, None, :] + middle[..., None] * directions[:, None, :]
  cell, inside = cell_of(points, half_width, grid.shape[0])
  keep = (inside & (t_start < far) &
          occupied(grid)[cell[..., 0], cell[..., 1], cell[..., 2]])
  flat = keep.reshape(-1)
  (index,) = jnp.nonzero(flat, size=budget, fill_value=flat.size)
  valid = index < flat.size
  safe = jnp.minimum(index, flat.size - 1)
  return Samples(
      ray=jnp.where(valid, safe // max_steps, num_rays).astype(jnp.int32),
      t_start=jnp.where(valid, t_start.reshape(-1)[safe], 0.0),
      t_end=jnp.where(valid, t_end.reshape(-1)[safe], 0.0),
      valid=valid, count=jnp.sum(flat).astype(jnp.int32))


def positions(samples, origins, directions):
  """f32[B, 3], each sample's midpoint (unused slots: their ray 0's origin)."""
  ray = jnp.minimum(samples.ray, origins.shape[0] - 1)
  middle = 0.5 * (samples.t_start + samples.t_end)
  return origins[ray] + middle[:, None] * directions[ray]


def composite(samples, density, rgb, num_rays, background):
  """Volume rendering of packed samples, per ray (NeRF quadrature).

  Args:
    samples: `Samples` of `num_rays` rays.
    density: f32[B], non-negative density at each sample.
    rgb: f32[B, 3], color at each sample.
    num_rays: int N.
    background: f32[3], the color behind the scene.
  Returns:
    dict with 'rgb' f32[N, 3], 'acc' f32[N], 'depth' f32[N] (expected
    distance of the samples, normalised by opacity; 0 for a ray that hits
    nothing) and 'weights' f32[B].
  """
  thickness = jnp.where(samples.valid,
                        density * (samples.t_end - samples.t_start), 0.0)
  # Samples are in ray order: a running sum restarted at each ray's first
  # sample, less the sample's own, is the thickness in front of it.
  trans = jnp.exp(-(_segment_cumsum(thickness, samples.ray) - thickness))
  weights = jnp.where(samples.valid, (1.0 - jnp.exp(-thickness)) * trans, 0.0)

  def per_ray(values):
    return jax.ops.segment_sum(values, samples.ray,
                               num_segments=num_rays + 1)[:num_rays]

  acc = per_ray(weights)
  color = per_ray(weights[:, None] * rgb) + (1.0 - acc[:, None]) * background
  middle = 0.5 * (samples.t_start + samples.t_end)
  depth = per_ray(weights * middle) / jnp.maximum(acc, 1e-10)
  return {'rgb': color, 'acc': acc, 'depth': depth, 'weights': weights}


def _segment_cumsum(values, segment):
  """Inclusive running sum of `values` f32[B], restarted where the sorted
  i32[B] `segment` changes (sums stay within a ray: no precision lost to
  the rays before it)."""
  start = jnp.concatenate([jnp.ones((1,), bool), segment[1:] != segment[:-1]])

  def combine(left, right):
    left_sum, left_start = left
    right_sum, right_start = right
    return (right_sum + jnp.where(right_start, 0.0, left_sum),
            left_start | right_start)

  total, _ = jax.lax.associative_scan(combine, (values, start))
  return total
