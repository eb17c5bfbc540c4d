"""Appearance editing on a trained checkpoint: swap, blend, fit and recolor.

Owns the edit operations and the optimizer that drives them:
  `make_edit_step`   one data-parallel step that optimizes a code table with
                     the field frozen by construction (gradients are taken
                     w.r.t. the codes only) on cached geometry: each step runs
                     only the color head.
  `optimize_codes`   caches geometry, compiles, runs the steps, times them.
  `recolor`, `fit`   scribble recoloring and NeRF-W style inversion on top.
  `render_with_code`, `interpolation_sweep`   swap and blend renders.
Scribble parsing and drawing (`parse_color`, `brush_mask`, `scribble_batch`)
live here too. The weight-level baselines are in `edit_baselines.py`, behind
the same call.

Symbols: `num_rays` scribbled or fitted rays, `num_codes` rows of the table
being optimized, `code_dim` code width.
"""

import dataclasses
import re
import time
from typing import Any

from flax import struct
import jax
from jax import lax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import numpy as np
import optax

from condnerf import codes as codes_lib
from condnerf import errors
from condnerf import inference
from condnerf import losses
from condnerf import parallel
from condnerf.data import sampler as sampler_lib


class EditError(errors.UserError, ValueError):
  """Bad edit input; the message names the problem and the fix."""


@struct.dataclass
class EditBatch:
  """Rays to edit with their targets (numpy on the host).

  Attributes:
    rays: `structs.Rays` [num_rays]; `code_ids` index the optimized table.
    target: f32[num_rays, 3] target colors.
    weight: f32[num_rays] loss weight (0 = padding).
  """
  rays: Any
  target: Any
  weight: Any


def parse_color(text):
  """Parses '#RRGGBB', 'R,G,B' (0-255) or 'r,g,b' (0-1 floats) to f32[3].

  Raises:
    EditError: when the text is none of these.
  """
  text = str(text).strip()
  if re.fullmatch(r'#?[0-9a-fA-F]{6}', text):
    text = text.lstrip('#')
    return np.array([int(text[i:i + 2], 16) for i in (0, 2, 4)],
                    np.float32) / 255.0
  parts = [p.strip() for p in text.split(',')]
  try:
    values = np.array([float(p) for p in parts], np.float32)
  except ValueError:
    values = None
  if values is None or values.shape != (3,) or np.any(values < 0):
    raise EditError(f'Cannot parse color {text!r}; use #RRGGBB, R,G,B with '
                    'integers 0-255, or r,g,b with floats in [0, 1].')
  is_float = any('.' in p for p in parts)
  if is_float:
    if np.any(values > 1):
      raise EditError(f'Color {text!r} has float components above 1; use '
                      'floats in [0, 1] or integers 0-255.')
    return values
  if np.any(values > 255):
    raise EditError(f'Color {text!r} has components above 255.')
  return values / 255.0


def brush_mask(height, width, points, radius=1.5):
  """bool[H, W]: a brush stroke through points, as drawn in a paint program.

  Args:
    height, width: image size in pixels.
    points: f32[n, 2] (row, col) of the stroke's vertices (n >= 1), joined
      by straight segments.
    radius: brush radius in pixels; a pixel is painted when its center is
      within `radius` of the stroke.
  Returns:
    bool[height, width].
  """
  points = np.asarray(points, np.float32).reshape(-1, 2)
  if not len(points):
    raise EditError('A brush stroke needs at least one point.')
  grid = np.stack(np.meshgrid(np.arange(height), np.arange(width),
                              indexing='ij'), -1).astype(np.float32)
  starts = points[:-1] if len(points) > 1 else points
  ends = points[1:] if len(points) > 1 else points
  mask = np.zeros((height, width), bool)
  for a, b in zip(starts, ends):
    seg = b - a
    length2 = float(seg @ seg)
    t = (np.zeros((height, width)) if length2 == 0.0
         else np.clip(((grid - a) @ seg) / length2, 0.0, 1.0))
    nearest = a + t[..., None] * seg
    mask |= np.sum((grid - nearest)**2, -1) <= radius**2
  return mask


def mask_to_pixels(mask):
  """i32[n, 2] (row, col) of the True pixels of bool[H, W]."""
  return np.argwhere(np.asarray(mask, bool)).astype(np.int32)


def scribble_batch(frames, views, pixels, colors, code_id=0):
  """Builds the rays and targets of a scribble edit.

  Args:
    frames: `data.base.Frames` the views index.
    views: list of view indices.
    pixels: list (one per view) of i32[n_v, 2] (row, col) pixels, or
      bool[H, W] masks.
    colors: list (one per view) of f32[3] (one color) or f32[n_v, 3]
      (per pixel) target colors in [0, 1].
    code_id: row of the optimized table the rays read.
  Returns:
    `EditBatch` of numpy arrays.
  Raises:
    EditError: a view out of range, a mask of the wrong size, pixels out of
      the image, or no pixels at all.
  """
  if len(views) != len(pixels) or len(views) != len(colors):
    raise EditError('views, pixels and colors need one entry per view.')
  all_rays, targets = [], []
  for view, pix, color in zip(views, pixels, colors):
    if not 0 <= int(view) < len(frames):
      raise EditError(f'View {view} is out of range: the split has '
                      f'{len(frames)} views (0..{len(frames) - 1}).')
    height, width = frames.images[int(view)].shape[:2]
    pix = np.asarray(pix)
    if pix.dtype == bool:
      if pix.shape != (height, width):
        raise EditError(f'Scribble mask of view {view} is {pix.shape[:2]} '
                        f'but the view is {(height, width)}; draw the mask '
                        'at the view\'s resolution.')
      pix = mask_to_pixels(pix)
    pix = pix.reshape(-1, 2).astype(np.int64)
    if np.any(pix < 0) or np.any(pix[:, 0] >= height) or np.any(
        pix[:, 1] >= width):
      raise EditError(f'Scribble pixels of view {view} fall outside its '
                      f'{height}x{width} image.')
    color = np.asarray(color, np.float32)
    color = np.broadcast_to(color, (len(pix), 3)) if color.ndim == 1 else color
    if color.shape != (len(pix), 3):
      raise EditError(f'View {view}: {len(pix)} pixels but colors of shape '
                      f'{color.shape}.')
    frame = np.full((len(pix),), int(view))
    all_rays.append(sampler_lib.frame_rays(frames, frame,
                                           pix.astype(np.float32)))
    targets.append(color)
  if sum(len(t) for t in targets) == 0:
    raise EditError('The scribble is empty: give at least one pixel.')
  rays = jax.tree.map(lambda *xs: np.concatenate(xs), *all_rays)
  rays = rays.replace(code_ids=np.full(rays.code_ids.shape, code_id,
                                       np.int32))
  target = np.concatenate(targets).astype(np.float32)
  return EditBatch(rays=rays, target=target,
                   weight=np.ones((len(target),), np.float32))


def concat_batches(*batches):
  """One `EditBatch` of several (e.g. scribbles plus keep pixels)."""
  return jax.tree.map(lambda *xs: np.concatenate(xs), *batches)


def make_geometry_step(model, mesh):
  """Jitted `geometry_step(params, rays) -> final level` (cached by edits)."""

  def per_device(params, rays):
    level = model.apply({'params': params}, rays, method='geometry')[-1]
    return {k: level[k] for k in ('tdist', 'weights', 'feature')}

  return jax.jit(jax.shard_map(
      per_device, mesh=mesh, in_specs=(P(), P(parallel.AXIS)),
      out_specs=P(parallel.AXIS)))


def cache_geometry(experiment, params, batch):
  """Pads an edit batch to the mesh, places it and computes its geometry.

  Args:
    experiment: `experiment_lib.Experiment`.
    params: frozen field parameters (replicated).
    batch: `EditBatch` of numpy arrays.
  Returns:
    (placed `EditBatch`, cached final level dict), both sharded over 'data'.
  """
  mesh = experiment.mesh
  padded, n = parallel.pad_to_multiple(batch, mesh.devices.size)
  weight = np.asarray(padded.weight).copy()
  weight[n:] = 0.0
  padded = padded.replace(weight=weight)
  placed = parallel.shard_batch(parallel.process_rows(padded), mesh)
  level = make_geometry_step(experiment.model, mesh)(params, placed.rays)
  return placed, level


def make_step(loss_fn, optimizer, mesh):
  """Jitted data-parallel optimizer step for any edit loss.

  Args:
    loss_fn: `loss_fn(trainable, frozen, batch, level) -> f32[]` on one
      device's share of the rays.
    optimizer: optax transform over `trainable`.
    mesh: the data mesh.
  Returns:
    `step(trainable, opt_state, frozen, batch, level) -> (trainable,
    opt_state, {'loss'})`; trainable and opt_state are donated.
  """

  def per_device(trainable, opt_state, frozen, batch, level):
    local = lax.pcast(trainable, parallel.AXIS, to='varying')
    loss, grads = jax.value_and_grad(loss_fn)(local, frozen, batch, level)
    grads, loss = lax.pmean((grads, loss), parallel.AXIS)
    updates, opt_state = optimizer.update(grads, opt_state, trainable)
    return optax.apply_updates(trainable, updates), opt_state, {'loss': loss}

  return jax.jit(jax.shard_map(
      per_device, mesh=mesh,
      in_specs=(P(), P(), P(), P(parallel.AXIS), P(parallel.AXIS)),
      out_specs=(P(), P(), P())), donate_argnums=(0, 1))


def make_code_loss(model):
  """Loss of a code table on cached geometry; the field is frozen input."""

  def loss_fn(codes, params, batch, level):
    code_vecs = codes_lib.lookup(codes, batch.rays.code_ids)
    out = inference.shade(model, params, level, batch.rays.directions,
                          code_vecs)
    return losses.photometric(out.rgb, batch.target, batch.weight)

  return loss_fn


def make_edit_step(model, optimizer, mesh):
  """Jitted `edit_step(codes, opt_state, frozen_params, batch, level)`.

  Optimizes the table `codes = {'appearance': f32[num_codes, code_dim]}` so
  the cached rays match their targets. Only the color head runs; gradients
  are taken w.r.t. the codes, so the field cannot change.
  """
  return make_step(make_code_loss(model), optimizer, mesh)


@dataclasses.dataclass
class EditInfo:
  """How an optimization went.

  Attributes:
    steps: optimization steps taken.
    seconds: wall time of the steps (compilation excluded).
    compile_seconds: time to compile the step.
    loss_start: loss of the starting point.
    loss_end: loss after the last update.
  """
  steps: int
  seconds: float
  compile_seconds: float
  loss_start: float
  loss_end: float


def run_optimizer(experiment, loss_fn, trainable, frozen, placed, level,
                  steps, learning_rate):
  """Compiles and runs `steps` Adam steps of an edit loss.

  Args:
    experiment: `experiment_lib.Experiment`.
    loss_fn: see `make_step`.
    trainable: pytree being optimized.
    frozen: pytree read but not optimized.
    placed: `EditBatch` placed over the mesh (from `cache_geometry`).
    level: cached geometry (from `cache_geometry`), or None.
    steps: Adam steps.
    learning_rate: Adam learning rate.
  Returns:
    (optimized trainable on the host, `EditInfo`).
  """
  mesh = experiment.mesh
  optimizer = optax.adam(learning_rate)
  # A fresh copy: the step donates its trainable buffers, and callers pass
  # arrays they keep (the trained params, the code table).
  trainable = jax.jit(lambda t: jax.tree.map(jnp.copy, t),
                      out_shardings=parallel.replicated(mesh))(trainable)
  opt_state = parallel.replicate(optimizer.init(trainable), mesh)
  step_fn = make_step(loss_fn, optimizer, mesh)
  start = time.perf_counter()
  compiled = step_fn.lower(trainable, opt_state, frozen, placed,
                           level).compile()
  compile_seconds = time.perf_counter() - start
  # The loss evaluations are outside the timed loop (one compiled jit each).
  evaluate = jax.jit(loss_fn)
  loss_start = float(evaluate(trainable, frozen, placed, level))
  start = time.perf_counter()
  for _ in range(steps):
    trainable, opt_state, _ = compiled(trainable, opt_state, frozen, placed,
                                       level)
    # One step in flight: see train_lib (XLA:CPU collective deadlocks).
    trainable = jax.block_until_ready(trainable)
  seconds = time.perf_counter() - start
  loss_end = float(evaluate(trainable, frozen, placed, level))
  return jax.device_get(trainable), EditInfo(
      steps=steps, seconds=seconds, compile_seconds=compile_seconds,
      loss_start=loss_start, loss_end=loss_end)


def optimize_codes(experiment, params, batch, init_table, steps=200,
                   learning_rate=0.1):
  """Fits a code table to an edit batch with the field frozen.

  Args:
    experiment: `experiment_lib.Experiment`.
    params: frozen field parameters (replicated).
    batch: `EditBatch` whose `rays.code_ids` index `init_table`.
    init_table: f32[num_codes, code_dim] starting codes.
    steps: Adam steps.
    learning_rate: Adam learning rate.
  Returns:
    (f32[num_codes, code_dim] optimized table as numpy, `EditInfo`).
  """
  placed, level = cache_geometry(experiment, params, batch)
  codes, info = run_optimizer(
      experiment, make_code_loss(experiment.model),
      {'appearance': jnp.asarray(init_table, jnp.float32)}, params, placed,
      level, steps, learning_rate)
  return np.asarray(codes['appearance']), info


def recolor(experiment, state, batch, init_code=None, steps=200,
            learning_rate=0.1):
  """Finds one appearance code that makes scribbled pixels match targets.

  Args:
    experiment: `experiment_lib.Experiment`.
    state: trained `TrainState` (params frozen, codes read).
    batch: `EditBatch` from `scribble_batch` (code_ids all 0).
    init_code: f32[code_dim] start (default: the mean code).
    steps: Adam steps.
    learning_rate: Adam learning rate.
  Returns:
    (f32[code_dim] new code, `EditInfo`).
  """
  if init_code is None:
    init_code = codes_lib.mean_code(jax.device_get(state.codes))
  table, info = optimize_codes(experiment, state.params,
                               batch.replace(rays=batch.rays.replace(
                                   code_ids=np.zeros_like(
                                       batch.rays.code_ids))),
                               np.asarray(init_code)[None], steps,
                               learning_rate)
  return table[0], info


def half_mask(height, width, half):
  """bool[H, W]: the 'left' or 'right' half of an image (NeRF-W protocol)."""
  mask = np.zeros((height, width), bool)
  if half == 'left':
    mask[:, :width // 2] = True
  elif half == 'right':
    mask[:, width // 2:] = True
  else:
    raise EditError(f"half must be 'left' or 'right', got {half!r}.")
  return mask


def fit(experiment, state, frames, views, masks=None, images=None,
        steps=300, learning_rate=5e-2, max_pixels=1024, seed=0):
  """Inverts images: one fresh code per view, all fitted in one computation.

  Args:
    experiment: `experiment_lib.Experiment`.
    state: trained `TrainState`.
    frames: `data.base.Frames` holding the images and poses.
    views: list of view indices to fit.
    masks: None (whole images) or a list of bool[H, W] pixels to fit on
      (e.g. `half_mask(h, w, 'left')`).
    images: None (the frames' own images) or a list of f32[H, W, 3], one per
      view, to fit instead (new photos taken from those poses).
    steps: Adam steps.
    learning_rate: Adam learning rate.
    max_pixels: fit each view on at most this many of its masked pixels,
      drawn once with `seed` (a 32-number code needs far fewer than an
      image's worth; 0 = use them all).
    seed: seed of that draw.
  Returns:
    (f32[len(views), code_dim] codes, `EditInfo`).
  """
  rng = np.random.default_rng(seed)
  pixels, colors = [], []
  for i, view in enumerate(views):
    image = (frames.images[int(view)] if images is None
             else np.asarray(images[i], np.float32))
    mask = (np.ones(image.shape[:2], bool) if masks is None
            else np.asarray(masks[i], bool))
    chosen = mask_to_pixels(mask)
    if max_pixels and len(chosen) > max_pixels:
      chosen = chosen[np.sort(rng.choice(len(chosen), max_pixels,
                                         replace=False))]
    pixels.append(chosen)
    colors.append(image[chosen[:, 0], chosen[:, 1]])
  batches = [scribble_batch(frames, [v], [p], [c], code_id=i)
             for i, (v, p, c) in enumerate(zip(views, pixels, colors))]
  batch = concat_batches(*batches)
  mean = codes_lib.mean_code(jax.device_get(state.codes))
  init = np.tile(np.asarray(mean)[None], (len(views), 1))
  return optimize_codes(experiment, state.params, batch, init, steps,
                        learning_rate)


def render_with_code(experiment, state, rays, code, render_step=None,
                     color_params=None, params=None):
  """Renders rays [H, W] (or [N]) with one given code vector.

  Args:
    experiment: `experiment_lib.Experiment`.
    state: `TrainState` (its params unless `params` is given).
    rays: `structs.Rays` of numpy arrays; their code_ids are ignored.
    code: f32[code_dim].
    render_step: a render step from `inference.make_render_step` (default:
      the experiment's); one built with a `color_fn` reads `color_params`.
    color_params: replicated pytree for that step's color_fn.
    params: field parameters to use instead of `state.params`.
  Returns:
    dict of numpy rgb, depth, acc.
  """
  rays = rays.replace(code_ids=np.zeros_like(rays.code_ids))
  table = parallel.replicate({'appearance': jnp.asarray(code)[None]},
                             experiment.mesh)
  params = parallel.replicate(state.params if params is None else params,
                              experiment.mesh)
  render_step = render_step or experiment.render_step
  chunk = experiment.config.eval.chunk
  if rays.code_ids.ndim == 2:
    return inference.render_image(render_step, params, table, rays, chunk,
                                  experiment.mesh, color_params)
  return inference.render_rays(render_step, params, table, rays, chunk,
                               experiment.mesh, color_params)


def render_codes(experiment, state, rays, table, params=None, chunk=None):
  """Renders rays under every code of a table in one batched computation.

  Each ray's geometry is computed once and the color head runs for all codes
  (see `inference.make_codes_render_step`): the way to evaluate a whole code
  bank, an interpolation sweep or a batch of edits.

  Args:
    experiment: `experiment_lib.Experiment`.
    state: `TrainState` (its params unless `params` is given).
    rays: `structs.Rays` of numpy arrays, leading shape [H, W] or [N]; their
      code_ids are ignored.
    table: f32[num_codes, code_dim].
    params: field parameters to use instead of `state.params`.
    chunk: rays x codes per call (default: config.eval.chunk).
  Returns:
    dict of numpy rgb f32[num_codes, H, W, 3] (or [num_codes, N, 3]), and
    depth, acc f32[H, W] (or [N]), which no code changes.
  """
  table = np.asarray(table, np.float32)
  if table.ndim != 2:
    raise EditError(f'A code table must be [num_codes, code_dim], got shape '
                    f'{table.shape}.')
  chunk = max(1, (chunk or experiment.config.eval.chunk) // len(table))
  params = state.params if params is None else params
  placed = parallel.replicate(jnp.asarray(table), experiment.mesh)
  render = (inference.render_image if rays.code_ids.ndim == 2
            else inference.render_rays)
  out = render(experiment.codes_render_step, params, placed, rays, chunk,
               experiment.mesh)
  out['rgb'] = np.moveaxis(out['rgb'], -2, 0)
  return out


def interpolation_sweep(experiment, state, rays, code_a, code_b, num=5):
  """Renders one view under codes blended from `code_a` to `code_b`.

  Returns:
    list of `num` f32[H, W, 3] images, t = 0 .. 1.
  """
  blends = codes_lib.interpolate(jnp.asarray(code_a), jnp.asarray(code_b),
                                 jnp.linspace(0.0, 1.0, num))
  return list(render_codes(experiment, state, rays, blends)['rgb'])


def view_rays(frames, view):
  """Rays [H, W] of one view (code ids are the frame's)."""
  if not 0 <= int(view) < len(frames):
    raise EditError(f'View {view} is out of range: the split has '
                    f'{len(frames)} views.')
  return sampler_lib.image_rays(frames, int(view))

