"""Full-image rendering shared by evaluation, editing and notebooks.

Owns `make_render_step` (a jitted, data-parallel, deterministic render of a
flat batch of rays with a given code table) and `render_image`, which
chunks an image's rays, pads the last chunk to the mesh, renders and
reassembles. Every caller that turns rays into pixels goes through here.
"""

import jax
from jax.experimental import multihost_utils
from jax.sharding import PartitionSpec as P
import numpy as np

from condnerf import codes as codes_lib
from condnerf import parallel


def make_render_step(model, mesh):
  """Jitted `render_step(params, codes, rays) -> {'rgb', 'depth', 'acc'}`.

  Rays are split over the mesh's 'data' axis; params and codes are
  replicated. Sampling is deterministic (no noise), so a render depends only
  on params, codes and rays.

  Args:
    model: an unbound `models.ConditionalNeRF`.
    mesh: the data mesh.
  Returns:
    A function of (params, codes {'appearance': f32[num_codes, code_dim]},
    rays `structs.Rays` [num_rays]) returning f32[num_rays, 3] rgb,
    f32[num_rays] depth and f32[num_rays] acc of the final level.
  """

  def per_device(params, codes, rays):
    code_vecs = codes_lib.lookup(codes, rays.code_ids)
    final = model.apply({'params': params}, rays, code_vecs)[-1]
    return {'rgb': final.rgb, 'depth': final.depth, 'acc': final.acc}

  return jax.jit(jax.shard_map(
      per_device, mesh=mesh, in_specs=(P(), P(), P(parallel.AXIS)),
      out_specs=P(parallel.AXIS)))


def render_rays(render_step, params, codes, rays, chunk, mesh):
  """Renders any number of rays in fixed-size chunks.

  Every process must call this with the same rays (each renders its share of
  every chunk). The last chunk is padded with copies of its last ray and the
  padding is dropped.

  Args:
    render_step: from `make_render_step`.
    params: replicated field parameters.
    codes: replicated code table.
    rays: `structs.Rays` of numpy arrays, leading shape [num_rays].
    chunk: rays per call; rounded up to a multiple of the global device count.
    mesh: the data mesh.
  Returns:
    dict of numpy arrays: rgb f32[num_rays, 3], depth f32[num_rays],
    acc f32[num_rays].
  """
  num_devices = mesh.devices.size
  chunk = -(-chunk // num_devices) * num_devices
  num_rays = rays.code_ids.shape[0]
  pieces = []
  for start in range(0, num_rays, chunk):
    part = jax.tree.map(lambda x, s=start: x[s:s + chunk], rays)
    part, _ = parallel.pad_to_multiple(part, chunk)
    local = chunk // jax.process_count()
    lo = jax.process_index() * local
    part = jax.tree.map(lambda x, lo=lo: x[lo:lo + local], part)
    pieces.append(render_step(params, codes, parallel.shard_batch(part, mesh)))
  if jax.process_count() > 1:
    pieces = [multihost_utils.process_allgather(p, tiled=True) for p in pieces]
  out = jax.tree.map(lambda *xs: np.concatenate([np.asarray(x) for x in xs]),
                     *pieces)
  return jax.tree.map(lambda x: x[:num_rays], out)


def render_image(render_step, params, codes, rays, chunk, mesh):
  """Renders rays with leading shape [H, W] into images.

  Args:
    render_step: from `make_render_step`.
    params: replicated field parameters.
    codes: replicated code table.
    rays: `structs.Rays` of numpy arrays with leading shape [H, W].
    chunk: rays per call.
    mesh: the data mesh.
  Returns:
    dict: rgb f32[H, W, 3], depth f32[H, W], acc f32[H, W].
  """
  height, width = rays.code_ids.shape
  flat = rays.reshape(height * width)
  out = render_rays(render_step, params, codes, flat, chunk, mesh)
  return jax.tree.map(lambda x: x.reshape((height, width) + x.shape[1:]), out)
