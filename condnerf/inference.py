"""Full-image rendering shared by evaluation, editing and notebooks.

Owns `shade` (final-level colors on given geometry, optionally through a
color transform, composited), `make_render_step` (a jitted, data-parallel,
deterministic render of a flat batch of rays with a given code table) and
`render_rays`/`render_image`, which chunk rays, pad the last chunk to the
mesh, render and reassemble, and the renders with given codes that editing,
swapping and galleries use (`render_with_code`, `render_codes`,
`interpolation_sweep`). Every caller that turns rays into pixels goes
through here. Rendered colors are clipped to [0, 1] (a palette head's colors
are linear in the palette and may leave it).
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
    codes: per-ray codes (pytree with leading num_rays, see `codes.py`).
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
  return rendering.composite_level(
      rgb, level, jnp.asarray(model.background, jnp.float32))


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
    A function of (params, codes (the code table),
    rays `structs.Rays` [num_rays], color_params) returning a dict with
    f32[num_rays, 3] rgb, f32[num_rays] depth and f32[num_rays] acc of the
    final level.
  """

  def per_device(params, codes, rays, color_params):
    level = model.apply({'params': params}, rays, method='geometry')[-1]
    out = shade(model, params, level, rays.directions,
                codes_lib.lookup(codes, rays.code_ids), color_fn,
                color_params)
    return _with_complete({'rgb': jnp.clip(out.rgb, 0.0, 1.0),
                           'depth': out.depth, 'acc': out.acc}, level)

  return _over_rays(per_device, mesh)


def make_codes_render_step(model, mesh):
  """Jitted render of the same rays under many codes at once.

  The geometry of each ray is computed once; the color head runs for every
  code of the table (vmapped), so evaluating a whole code bank or sweep is one
  compiled computation.

  Args:
    model: an unbound `models.ConditionalNeRF`.
    mesh: the data mesh.
  Returns:
    `render_step(params, table, rays, color_params=None)` with a code table
    (pytree, leading num_codes) and rays `structs.Rays` [num_rays] (their
    code_ids are ignored), returning rgb f32[num_rays, num_codes, 3], depth
    f32[num_rays] and acc f32[num_rays] (which no code changes).
  """

  def per_device(params, table, rays, color_params):
    del color_params
    level = model.apply({'params': params}, rays, method='geometry')[-1]
    num_rays = rays.directions.shape[0]

    def one(code):
      return shade(model, params, level, rays.directions,
                   codes_lib.broadcast(code, num_rays))

    outs = jax.vmap(one, out_axes=1)(table)
    return _with_complete({'rgb': jnp.clip(outs.rgb, 0.0, 1.0),
                           'depth': outs.depth[:, 0], 'acc': outs.acc[:, 0]},
                          level)

  return _over_rays(per_device, mesh)


def _with_complete(out, level):
  """`out` with the level's f32[num_rays] `complete` (occupancy sampler:
  0 for a ray the sample budget cut, which `render_rays` renders again)."""
  if 'complete' in level:
    out['complete'] = level['complete']
  return out


def _over_rays(per_device, mesh):
  """`per_device(params, codes, rays, color_params)` split over the rays of
  `mesh` (the rest replicated) and jitted, with color_params optional."""
  mapped = jax.jit(jax.shard_map(
      per_device, mesh=mesh, in_specs=(P(), P(), P(parallel.AXIS), P()),
      out_specs=P(parallel.AXIS)))

  def render_step(params, codes, rays, color_params=None):
    return mapped(params, codes, rays, color_params)

  return render_step


def render_rays(render_step, params, codes, rays, chunk, mesh,
                color_params=None, spread=1):
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
  Raises:
    ValueError: no rays.
  """
  num_devices = mesh.devices.size
  chunk = -(-chunk // num_devices) * num_devices
  num_rays = rays.code_ids.shape[0]
  if not num_rays:
    raise ValueError('render_rays got 0 rays; select at least one pixel.')
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
  out = jax.tree.map(lambda x: x[:num_rays], out)
  if 'complete' in out:
    out = _render_cut_rays(render_step, params, codes, rays, chunk, mesh,
                           color_params, out, spread)
  return out


def _render_cut_rays(render_step, params, codes, rays, chunk, mesh,
                     color_params, out, spread):
  """Renders again the rays a sample budget cut (`out['complete'] == 0`).

  They go in chunks of the same size (one compiled step) with each ray
  followed by `2 * spread - 1` empty rays (near = far: no samples), so each
  pass gives every ray twice the budget of the last; once a device holds
  one ray, the budget covers it (a render's budget is at least one ray's
  `max_steps`, `models.ConditionalNeRF._occupancy_level`).
  """
  cut = np.flatnonzero(np.asarray(out.pop('complete')) < 0.5)
  if not cut.size:
    return out
  spread *= 2
  if spread > 4 * chunk:
    raise RuntimeError(f'{cut.size} rays did not fit the sample budget when '
                       'rendered alone; raise '
                       'model.occupancy.render_samples_per_ray.')
  picked = jax.tree.map(lambda x: np.repeat(x[cut], spread, axis=0), rays)
  empty = np.arange(picked.near.shape[0]) % spread != 0
  picked = picked.replace(far=np.where(empty[:, None], picked.near,
                                       picked.far))
  again = render_rays(render_step, params, codes, picked, chunk, mesh,
                      color_params, spread=spread)
  for name, values in again.items():
    out[name][cut] = values[::spread]
  return out


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


def render_with_code(experiment, params, rays, code, render_step=None,
                     color_params=None):
  """Renders rays [H, W] (or [N]) with one given code.

  Args:
    experiment: `experiment.Experiment`.
    params: field parameters (e.g. `state.params`).
    rays: `structs.Rays` of numpy arrays; their code_ids are ignored.
    code: one code (pytree, or a bare latent vector f32[code_dim]).
    render_step: a render step from `make_render_step` (default: the
      experiment's); one built with a `color_fn` reads `color_params`.
    color_params: replicated pytree for that step's color_fn.
  Returns:
    dict of numpy rgb, depth, acc.
  """
  mesh = experiment.mesh
  rays = rays.replace(code_ids=np.zeros_like(rays.code_ids))
  table = parallel.replicate(codes_lib.stack([codes_lib.as_code(code)]), mesh)
  params = parallel.replicate(params, mesh)
  render = render_image if rays.code_ids.ndim == 2 else render_rays
  return render(render_step or experiment.render_step, params, table, rays,
                experiment.config.eval.chunk, mesh, color_params)


def render_codes(experiment, params, rays, table, chunk=None):
  """Renders rays under every code of a table in one batched computation.

  Each ray's geometry is computed once and the color head runs for all codes
  (see `make_codes_render_step`): the way to evaluate a whole code bank, an
  interpolation sweep or a batch of edits.

  Args:
    experiment: `experiment.Experiment`.
    params: field parameters.
    rays: `structs.Rays` of numpy arrays, leading shape [H, W] or [N]; their
      code_ids are ignored.
    table: a code table (pytree with leading num_codes), or f32[num_codes,
      code_dim] latent codes.
    chunk: rays x codes per call (default: config.eval.chunk).
  Returns:
    dict of numpy rgb f32[num_codes, H, W, 3] (or [num_codes, N, 3]), and
    depth, acc f32[H, W] (or [N]), which no code changes.
  """
  table = jax.tree.map(lambda x: np.asarray(x, np.float32),
                       codes_lib.as_code(table))
  if table['appearance'].ndim != 2:
    raise ValueError('A code table must hold [num_codes, code_dim] latent '
                     f"codes, got shape {table['appearance'].shape}.")
  count = codes_lib.num_rows(table)
  chunk = max(1, (chunk or experiment.config.eval.chunk) // count)
  placed = parallel.replicate(table, experiment.mesh)
  params = parallel.replicate(params, experiment.mesh)
  render = render_image if rays.code_ids.ndim == 2 else render_rays
  out = render(experiment.codes_render_step, params, placed, rays, chunk,
               experiment.mesh)
  out['rgb'] = np.moveaxis(out['rgb'], -2, 0)
  return out


def interpolation_sweep(experiment, params, rays, code_a, code_b, num=5):
  """Renders one view under codes blended from `code_a` to `code_b`.

  Returns:
    list of `num` f32[H, W, 3] images, t = 0 .. 1.
  """
  blends = codes_lib.interpolate(codes_lib.as_code(code_a),
                                 codes_lib.as_code(code_b),
                                 jnp.linspace(0.0, 1.0, num))
  return list(render_codes(experiment, params, rays, blends)['rgb'])


def make_palette_maps_step(model, mesh):
  """Jitted `step(params, codes, rays, color_params=None)` of palette maps.

  For each ray: `weights` f32[num_rays, K], the composited share of each
  palette entry (sum over samples of compositing weight x palette weight),
  and `intensity` f32[num_rays], the composited intensity s (with a shaded
  head, the mean irradiance of the code's light); neither depends on the
  palette. Also `albedo` f32[num_rays, 3] (composited `w @ P` of the
  code's palette) and `shading` f32[num_rays, 3] (composited shading), and
  with a shaded head `normals` f32[num_rays, 3] (composited unit normals,
  code-free).
  """

  def per_device(params, codes, rays, color_params):
    del color_params
    level = model.apply({'params': params}, rays, method='geometry')[-1]
    terms = model.apply({'params': params}, level, rays.directions,
                        codes_lib.lookup(codes, rays.code_ids),
                        method='palette_terms')
    weights = level['weights']
    ray_codes = codes_lib.lookup(codes, rays.code_ids)
    albedo = jnp.einsum('rsk,rkc->rsc', terms['weights'],
                        ray_codes[codes_lib.PALETTE])
    shading = jnp.broadcast_to(terms['shading'], albedo.shape)
    maps = {'weights': jnp.einsum('rs,rsk->rk', weights, terms['weights']),
            'intensity': jnp.sum(weights * terms['intensity'], axis=-1),
            'acc': jnp.sum(weights, axis=-1),
            'albedo': jnp.einsum('rs,rsc->rc', weights, albedo),
            'shading': jnp.einsum('rs,rsc->rc', weights, shading)}
    if 'normals' in terms:
      maps['normals'] = jnp.einsum('rs,rsc->rc', weights, terms['normals'])
    return _with_complete(maps, level)

  return jax.jit(jax.shard_map(
      per_device, mesh=mesh, in_specs=(P(), P(), P(parallel.AXIS), P()),
      out_specs=P(parallel.AXIS)))


def render_palette_maps(experiment, params, rays, code):
  """The palette's soft segmentation of a view: see `make_palette_maps_step`.

  Args:
    experiment: `experiment.Experiment` with a palette head.
    params: field parameters.
    rays: `structs.Rays` [H, W] (or [N]) of numpy arrays.
    code: one code (its latent entry feeds nothing here; any code works).
  Returns:
    dict: weights f32[H, W, K], intensity and acc (opacity) f32[H, W],
    albedo and shading f32[H, W, 3], and with a shaded head normals
    f32[H, W, 3].
  """
  mesh = experiment.mesh
  step = experiment.cached_step(
      'palette_maps', lambda: make_palette_maps_step(experiment.model, mesh))
  rays = rays.replace(code_ids=np.zeros_like(rays.code_ids))
  table = parallel.replicate(codes_lib.stack([codes_lib.as_code(code)]), mesh)
  render = render_image if rays.code_ids.ndim == 2 else render_rays
  return render(step, parallel.replicate(params, mesh), table, rays,
                experiment.config.eval.chunk, mesh)
