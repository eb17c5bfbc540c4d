"""Full-image rendering shared by evaluation, editing and notebooks.

Owns `shade` (final-level colors on given geometry, optionally through a
color transform, composited), `make_render_step` (a jitted, data-parallel,
deterministic render of a flat batch of rays with a given code table) and
`render_rays`/`render_image`, which chunk rays, pad the last chunk to the
mesh, render and reassemble. Every caller that turns rays into pixels goes
through here.
"""

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import numpy as np

from condnerf import codes as codes_lib
from condnerf import parallel
from condnerf import rendering


def shade(model, params, level, directions, codes, color_fn=None,
          color_params=None):
  """Final-level rendering on given (possibly cached) geometry.

  Args:
    model: unbound `models.ConditionalNeRF`.
    params: field parameters.
    level: the final dict of `model.geometry` (tdist, weights, feature).
    directions: f32[num_rays, 3], unit ray directions.
    codes: f32[num_rays, code_dim], per-ray appearance codes.
    color_fn: None, or `color_fn(color_params, rgb) -> rgb` applied to the
      per-sample colors f32[num_rays, num_samples, 3] before compositing (a
      color adapter).
    color_params: the pytree `color_fn` reads.
  Returns:
    `structs.RenderOutput` of the final level.
  """
  rgb = model.apply({'params': params}, level, directions, codes,
                    method='final_colors')
  if color_fn is not None:
    rgb = color_fn(color_params, rgb)
  return rendering.composite(rgb, level['weights'], level['tdist'],
                             jnp.asarray(model.background, jnp.float32))


def make_render_step(model, mesh, color_fn=None):
  """Jitted `render_step(params, codes, rays, color_params=None)`.

  Rays are split over the mesh's 'data' axis; params and codes are
  replicated. Sampling is deterministic (no noise), so a render depends only
  on params, codes and rays.

  Args:
    model: an unbound `models.ConditionalNeRF`.
    mesh: the data mesh.
    color_fn: optional per-sample color transform (see `shade`).
  Returns:
    A function of (params, codes {'appearance': f32[num_codes, code_dim]},
    rays `structs.Rays` [num_rays], color_params) returning a dict with
    f32[num_rays, 3] rgb, f32[num_rays] depth and f32[num_rays] acc of the
    final level.
  """

  def per_device(params, codes, rays, color_params):
    level = model.apply({'params': params}, rays, method='geometry')[-1]
    out = shade(model, params, level, rays.directions,
                codes_lib.lookup(codes, rays.code_ids), color_fn,
                color_params)
    return {'rgb': out.rgb, 'depth': out.depth, 'acc': out.acc}

  mapped = jax.jit(jax.shard_map(
      per_device, mesh=mesh, in_specs=(P(), P(), P(parallel.AXIS), P()),
      out_specs=P(parallel.AXIS)))

  def render_step(params, codes, rays, color_params=None):
    return mapped(params, codes, rays, color_params)

  return render_step


def make_codes_render_step(model, mesh):
  """Jitted render of the same rays under many codes at once.

  The geometry of each ray is computed once; the color head runs for every
  code of the table (vmapped), so evaluating a whole code bank or sweep is one
  compiled computation.

  Args:
    model: an unbound `models.ConditionalNeRF`.
    mesh: the data mesh.
  Returns:
    `render_step(params, table, rays, color_params=None)` with table
    f32[num_codes, code_dim] and rays `structs.Rays` [num_rays] (their
    code_ids are ignored), returning rgb f32[num_rays, num_codes, 3], depth
    f32[num_rays] and acc f32[num_rays] (which no code changes).
  """

  def per_device(params, table, rays, color_params):
    del color_params
    level = model.apply({'params': params}, rays, method='geometry')[-1]
    num_rays = rays.directions.shape[0]

    def one(code):
      return shade(model, params, level, rays.directions,
                   jnp.broadcast_to(code, (num_rays, code.shape[-1])))

    outs = jax.vmap(one, out_axes=1)(table)
    return {'rgb': outs.rgb, 'depth': outs.depth[:, 0],
            'acc': outs.acc[:, 0]}

  mapped = jax.jit(jax.shard_map(
      per_device, mesh=mesh, in_specs=(P(), P(), P(parallel.AXIS), P()),
      out_specs=P(parallel.AXIS)))

  def render_step(params, table, rays, color_params=None):
    return mapped(params, table, rays, color_params)

  return render_step


def render_rays(render_step, params, codes, rays, chunk, mesh,
                color_params=None):
  """Renders any number of rays in fixed-size chunks.

  On a mesh spanning several processes, every process must call this with the
  same rays (each renders its share of every chunk, and the pieces are
  gathered). On a mesh of this process's devices only (`parallel.local_mesh`)
  each process renders its own rays independently. The last chunk is padded
  with copies of its last ray and the padding is dropped.

  Args:
    render_step: from `make_render_step`.
    params: replicated field parameters.
    codes: replicated code table.
    rays: `structs.Rays` of numpy arrays, leading shape [num_rays].
    chunk: rays per call; rounded up to a multiple of the global device count.
    mesh: the data mesh.
    color_params: replicated pytree for the render step's color_fn.
  Returns:
    dict of numpy arrays: rgb f32[num_rays, 3], depth f32[num_rays],
    acc f32[num_rays].
  """
  num_devices = mesh.devices.size
  chunk = -(-chunk // num_devices) * num_devices
  num_rays = rays.code_ids.shape[0]
  processes = 1 if parallel.is_local(mesh) else jax.process_count()
  pieces = []
  for start in range(0, num_rays, chunk):
    part = jax.tree.map(lambda x, s=start: x[s:s + chunk], rays)
    part, _ = parallel.pad_to_multiple(part, chunk)
    if processes > 1:
      part = parallel.process_rows(part)
    piece = render_step(params, codes, parallel.shard_batch(part, mesh),
                        color_params)
    # One chunk in flight: queued multi-device programs can deadlock
    # XLA:CPU's collectives (see train_lib).
    pieces.append(jax.block_until_ready(piece))
  if processes > 1:
    pieces = [multihost_utils.process_allgather(p, tiled=True) for p in pieces]
  out = jax.tree.map(lambda *xs: np.concatenate([np.asarray(x) for x in xs]),
                     *pieces)
  return jax.tree.map(lambda x: x[:num_rays], out)


def render_image(render_step, params, codes, rays, chunk, mesh,
                 color_params=None):
  """Renders rays with leading shape [H, W] into images.

  Args:
    render_step: from `make_render_step`.
    params: replicated field parameters.
    codes: replicated code table.
    rays: `structs.Rays` of numpy arrays with leading shape [H, W].
    chunk: rays per call.
    mesh: the data mesh.
    color_params: replicated pytree for the render step's color_fn.
  Returns:
    dict: rgb f32[H, W, 3], depth f32[H, W], acc f32[H, W].
  """
  height, width = rays.code_ids.shape
  flat = rays.reshape(height * width)
  out = render_rays(render_step, params, codes, flat, chunk, mesh,
                    color_params)
  return jax.tree.map(lambda x: x.reshape((height, width) + x.shape[1:]), out)
