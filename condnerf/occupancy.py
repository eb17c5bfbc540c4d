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

from condnerf import rendering

DECAY = 0.95
THRESHOLD = 0.01
CHUNK = 1 << 16  # points per density evaluation of an update.
# The sampler's settings (`config.model.occupancy`): the grid's resolution,
# marching steps per ray (they span the box's diagonal), the field's budget
# in samples per ray of a training batch and of a render, the pruning pass's
# budget (0: no pruning) and opacity threshold, and the grid's updates:
# every `update_every` steps, of every cell until `warmup_steps`, then of
# `update_cells` cells (half of 128^3, as nerfacc: fewer carve too slowly).
PARAM = 'occupancy_grid'  # the grid's name among the model's parameters.
DEFAULTS = dict(resolution=128, max_steps=1024, samples_per_ray=16,
                render_samples_per_ray=32, prune_samples_per_ray=64,
                min_alpha=0.0, update_every=16, warmup_steps=256,
                update_cells=1 << 20)


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
    num_cells: int n, cells evaluated in this update (in warm-up, n of at
      least R^3 evaluates every cell once).
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
  if warmup and num_cells >= total:
    index = jnp.arange(total)
  elif warmup:
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
  thickness = jax.lax.stop_gradient(_in_chunks(density_fn, points)) * step_size
  flat = grid.reshape(-1)
  fresh = jnp.zeros_like(flat).at[index].max(thickness)
  drawn = jnp.zeros(flat.shape, bool).at[index].set(True)
  flat = jnp.where(drawn, jnp.maximum(flat * decay, fresh), flat)
  return flat.reshape(grid.shape)


def _in_chunks(fn, points, chunk=CHUNK):
  """fn f32[n, 3] -> f32[n], evaluated `chunk` points at a time (a full
  grid's points at once would hold every cell's activations)."""
  num = points.shape[0]
  if num <= chunk:
    return fn(points)
  pad = -num % chunk
  padded = jnp.concatenate([points, jnp.zeros((pad, 3), points.dtype)])
  values = jax.lax.map(fn, padded.reshape(-1, chunk, 3))
  return values.reshape(-1)[:num]


def step_edges(near, far, step_size, max_steps, jitter=None):
  """Edges of a ray's fixed marching steps, cut at its far end.

  Args:
    near: f32[N, 1], where each ray starts (clip it to the box first).
    far: f32[N, 1], where it ends.
    step_size: float, the step along the ray.
    max_steps: int S, steps per ray (S * step_size should cover the
      longest ray through the box).
    jitter: None (steps start at near) or f32[N, 1] in [0, 1), a per-ray
      offset of the steps in units of `step_size` (training).
  Returns:
    f32[N, S + 1]: step k spans [edges[k], edges[k + 1]]; steps past far
    have zero width.
  """
  offset = 0.0 if jitter is None else jitter
  return jnp.minimum(near + (jnp.arange(max_steps + 1) + offset) * step_size,
                     far)


def occupied_steps(origins, directions, edges, grid, half_width):
  """bool[N, S]: steps of non-zero width whose midpoint is in an occupied
  cell (`edges` f32[N, S + 1] from `step_edges`)."""
  middle = 0.5 * (edges[:, 1:] + edges[:, :-1])
  points = origins[:, None, :] + middle[..., None] * directions[:, None, :]
  cell, inside = cell_of(points, half_width, grid.shape[0])
  return (inside & (edges[:, 1:] > edges[:, :-1]) &
          occupied(grid)[cell[..., 0], cell[..., 1], cell[..., 2]])


def pack(keep, budget):
  """The first `budget` kept steps, in ray order.

  Args:
    keep: bool[N, S].
    budget: int B.
  Returns:
    (index i32[B], the flat step (ray * S + step) of each slot, N * S for
    unused slots; valid bool[B]; complete bool[N], the rays whose every
    kept step got a slot, those with none included).
  """
  flat = keep.reshape(-1)
  (index,) = jnp.nonzero(flat, size=budget, fill_value=flat.size)
  counts = jnp.sum(keep, axis=1)
  complete = (jnp.cumsum(counts) <= budget) | (counts == 0)
  return index.astype(jnp.int32), index < flat.size, complete


def gather(values, index):
  """values f32[N, S, ...] at the flat steps `index` i32[B]: f32[B, ...]
  (unused slots read the last step)."""
  flat = values.reshape((-1,) + values.shape[2:])
  return flat[jnp.minimum(index, flat.shape[0] - 1)]


def scatter(packed, index, shape):
  """f32[N, S, ...] of zeros with `packed` f32[B, ...] at the flat steps
  `index` i32[B] (unused slots dropped); `shape` is (N, S)."""
  flat = jnp.zeros((shape[0] * shape[1],) + packed.shape[1:], packed.dtype)
  flat = flat.at[index].set(packed, mode='drop')
  return flat.reshape(tuple(shape) + packed.shape[1:])


def march(origins, directions, near, far, grid, half_width, step_size,
          max_steps, budget, jitter=None):
  """Fixed-step samples in occupied cells, packed into `budget` slots.

  Args:
    origins: f32[N, 3], ray origins.
    directions: f32[N, 3], unit ray directions.
    near, far, step_size, max_steps, jitter: as for `step_edges`.
    grid: f32[R, R, R], the thickness estimate.
    half_width: float, the box's half width.
    budget: int B, the samples kept.
  Returns:
    `Samples`, the first B occupied steps in ray order.
  """
  num_rays = origins.shape[0]
  edges = step_edges(near, far, step_size, max_steps, jitter)
  keep = occupied_steps(origins, directions, edges, grid, half_width)
  index, valid, _ = pack(keep, budget)
  return Samples(
      ray=jnp.where(valid, index // max_steps, num_rays).astype(jnp.int32),
      t_start=jnp.where(valid, gather(edges[:, :-1], index), 0.0),
      t_end=jnp.where(valid, gather(edges[:, 1:], index), 0.0),
      valid=valid, count=jnp.sum(keep).astype(jnp.int32))


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


EARLY_STOP = 1e-4  # transmittance below which a ray's later steps are cut.


def step_size(half_width, max_steps):
  """The marching step: `max_steps` steps span the box's diagonal."""
  return 2.0 * 3.0**0.5 * half_width / max_steps


def first_steps(keep, count):
  """i32[N, count]: the flat steps (ray * S + step) of each ray's first
  `count` kept steps, in order (N * S where a ray has fewer).

  Args:
    keep: bool[N, S].
    count: int.
  """
  num_rays, num_steps = keep.shape
  rank = jnp.cumsum(keep, axis=1) - 1
  slot = jnp.where(keep & (rank < count),
                   jnp.arange(num_rays)[:, None] * count + rank,
                   num_rays * count)
  flat = (jnp.arange(num_rays)[:, None] * num_steps +
          jnp.arange(num_steps)).astype(jnp.int32)
  index = jnp.full((num_rays * count,), num_rays * num_steps, jnp.int32)
  index = index.at[slot.reshape(-1)].set(flat.reshape(-1), mode='drop')
  return index.reshape(num_rays, count)


def sample_level(evaluate, density_fn, origins, directions, near, far, grid,
                 half_width, max_steps, budget, prune_steps=0, min_alpha=0.0,
                 jitter=None):
  """One rendering level of fixed steps, the field evaluated on a budget.

  Steps in empty cells are skipped. With `prune_steps`, the density of each
  ray's first `prune_steps` occupied steps is first evaluated without
  gradients and the steps behind a transmittance of `EARLY_STOP` are
  dropped, as Instant-NGP stops a ray (later steps of a ray still clear
  after them stay); what is left is packed into `budget` samples,
  evaluated by `evaluate` and put back in place, so the level has the
  layout of every other sampler (the quadrature over steps that were
  skipped adds nothing: their density is 0).

  Args:
    evaluate: f32[B, 1, 3] -> (density f32[B, 1], feature f32[B, 1, f],
      normals f32[B, 1, 3] or None), the field at sample points.
    density_fn: f32[B, 3] -> f32[B], its density (for pruning).
    origins, directions: f32[N, 3], unit rays.
    near, far: f32[N, 1], each ray cut to the box.
    grid: f32[R, R, R], the thickness estimate (not trained through).
    half_width: float, the box's half width.
    max_steps: int S, steps per ray (`step_size` apart).
    budget: int B, samples the field is evaluated on.
    prune_steps: int, occupied steps per ray evaluated for pruning (0: no
      pruning).
    min_alpha: float, the pruning pass also drops the steps it evaluated
      whose opacity is at most this (nerfacc's `alpha_thre`; 0 keeps all).
    jitter: None or f32[N, 1] in [0, 1), a per-ray offset of the steps.
  Returns:
    dict: tdist f32[N, S + 1], density and weights f32[N, S], feature
    f32[B, 1, f], points f32[B, 1, 3] (world), normals (if any), pack
    {'index': i32[B] flat steps, 'ray': i32[B]}, complete f32[N] (1 for a
    ray whose steps all fitted the budget), samples f32[] (slots used) and
    needed f32[] (samples the rays had after pruning).
  """
  num_rays = origins.shape[0]
  grid = jax.lax.stop_gradient(grid)
  edges = step_edges(near, far, step_size(half_width, max_steps), max_steps,
                     jitter)
  keep = occupied_steps(origins, directions, edges, grid, half_width)
  middle = 0.5 * (edges[:, 1:] + edges[:, :-1])

  def points_of(index):
    ray = jnp.minimum(index // max_steps, num_rays - 1)
    return ray, origins[ray] + gather(middle, index)[:, None] * directions[ray]

  if prune_steps:
    index = first_steps(keep, prune_steps).reshape(-1)
    density = jax.lax.stop_gradient(density_fn(points_of(index)[1]))
    _, alpha, trans = rendering.compute_alpha_weights(
        scatter(density, index, keep.shape), edges)
    seen = scatter(jnp.ones_like(density, bool), index, keep.shape)
    keep = keep & (trans > EARLY_STOP) & (~seen | (alpha > min_alpha))
  index, valid, complete = pack(keep, budget)
  ray, points = points_of(index)
  density, feature, normals = evaluate(points[:, None, :])
  dense = scatter(density[:, 0], index, keep.shape)
  level = dict(tdist=edges, density=dense,
               weights=rendering.compute_alpha_weights(dense, edges)[0],
               feature=feature,
               points=points[:, None, :], pack={'index': index, 'ray': ray},
               complete=complete.astype(jnp.float32),
               samples=jnp.sum(valid).astype(jnp.float32),
               needed=jnp.sum(keep).astype(jnp.float32))
  if normals is not None:
    level['normals'] = normals
  return level
