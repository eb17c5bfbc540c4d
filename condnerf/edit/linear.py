"""Closed-form code edits: color as a linear function of one code entry.

The second stage of `condnerf.edit`, beside `optimize`. With geometry
cached (`optimize.cache_geometry`) and the rest of the code fixed, a
palette head's rendered color is linear in its palette, and a shaded one's
in its light code too. Owns
  `linear_system`      per-ray `color = A E + b` in the palette or the light,
                       on cached geometry (`palette_system` for the palette);
  `solve_palette`      the regularized least-squares palette;
  `select_entries`     the entries a part scribble touches;
  `render_linear`      the colors a system gives an entry.
(The light's solves are `lighting.fit_directional` and `fit_linear`.)
Symbols: `num_rays` edited rays, `K` palette entries, `J` the entry's rows
(K, or 9 SH coefficients).
"""

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import numpy as np

from condnerf import codes as codes_lib
from condnerf import lighting
from condnerf import parallel
from condnerf.edit import optimize
from condnerf.edit import scribbles


def make_linear_step(model, mesh, entry):
  """Jitted per-ray linear model of color in one code entry (see below)."""
  background = jnp.asarray(model.background, jnp.float32)

  def per_device(params, code, batch, level):
    num_rays = batch.rays.directions.shape[0]
    ray_codes = codes_lib.broadcast(code, num_rays)
    terms = model.apply({'params': params}, level, batch.rays.directions,
                        ray_codes, method='palette_terms')
    weights = level['weights']
    shading = jnp.broadcast_to(terms['shading'], terms['residual'].shape)
    if entry == codes_lib.PALETTE:
      design = jnp.einsum('rs,rsc,rsk->rkc', weights, shading,
                          terms['weights'])
      offset = jnp.einsum('rs,rsc->rc', weights, terms['residual'])
    else:  # The light: the albedo times each SH function where it is lit.
      albedo = jnp.einsum('rsk,rkc->rsc', terms['weights'],
                          ray_codes[codes_lib.PALETTE])
      lit = (shading > 0).astype(albedo.dtype)
      basis = lighting.sh_basis(terms['normals'])
      design = jnp.einsum('rs,rsc,rsi->ric', weights, albedo * lit, basis)
      offset = jnp.einsum('rs,rsc->rc', weights, terms['residual'])
    acc = jnp.sum(weights, axis=-1, keepdims=True)
    return design, offset + (1.0 - acc) * background

  return jax.jit(jax.shard_map(
      per_device, mesh=mesh,
      in_specs=(P(), P(), P(parallel.AXIS), P(parallel.AXIS)),
      out_specs=P(parallel.AXIS)))


def linear_system(experiment, params, code, placed, level, entry='palette'):
  """Rendered color as a linear function of one code entry, ray by ray.

  With geometry and the rest of the code fixed, a palette head renders
  `color_rc = sum_j A_rjc E_jc + b_rc` in its palette `E = P` f32[K, 3]
  (`A_rkc`: each sample's compositing weight x shading x palette weight of
  entry k, summed) and, with a shaded head, in its light code `E = L`
  f32[9, 3] (`A_ric`: compositing weight x albedo x SH function i at the
  normal, over the samples the current light lights; exact while no
  sample changes sides). `b` is the weighted residual plus the background
  behind the ray.

  Args:
    experiment: `experiment_lib.Experiment` with a palette head.
    params: field parameters.
    code: the code being edited.
    placed: `EditBatch` from `cache_geometry`.
    level: its cached geometry.
    entry: 'palette' or 'light'.
  Returns:
    (A f64[num_rays, J, 3], b f64[num_rays, 3], weight f64[num_rays]) on
    the host; padding rays have weight 0.
  """
  mesh = experiment.mesh
  step = experiment.cached_step(
      f'{entry}_system', lambda: make_linear_step(experiment.model, mesh,
                                                  entry))
  design, offset = step(parallel.replicate(params, mesh),
                        parallel.replicate(code, mesh), placed, level)
  design, offset, weight = optimize.to_host((design, offset, placed.weight))
  return (np.asarray(design, np.float64), np.asarray(offset, np.float64),
          np.asarray(weight, np.float64))


def palette_system(experiment, params, code, placed, level):
  """`linear_system` of the palette."""
  return linear_system(experiment, params, code, placed, level, 'palette')


def solve_palette(design, offset, target, weight, palette, free, ridge=1e-3):
  """The least-squares palette: free entries fitted, the others kept.

  Minimizes `sum_r weight_r |A_r P + b_r - t_r|^2 + lam |P_F - P0_F|^2`
  over the free rows `F` of P, channel by channel, with
  `lam = ridge * mean(diag(A_F^T W A_F))` (a scale-free pull towards the
  current palette, so an entry no ray sees stays where it was).

  Args:
    design: f64[num_rays, K, 3] (A).
    offset: f64[num_rays, 3] (b).
    target: f32[num_rays, 3] target colors (t).
    weight: f64[num_rays] row weights (0 = padding).
    palette: f32[K, 3], the current palette P0.
    free: bool[K], the entries to solve for.
    ridge: relative strength of the pull towards P0.
  Returns:
    f32[K, 3], the new palette.
  """
  palette = np.asarray(palette, np.float64)
  free = np.asarray(free, bool)
  root = np.sqrt(np.asarray(weight, np.float64))
  out = palette.copy()
  for c in range(palette.shape[1]):
    a = design[:, :, c] * root[:, None]
    rhs = (np.asarray(target, np.float64)[:, c] - offset[:, c] -
           design[:, ~free, c] @ palette[~free, c]) * root
    a_free = a[:, free]
    gram = a_free.T @ a_free
    lam = ridge * max(float(np.mean(np.diag(gram))) if free.any() else 0.0,
                      1e-12)
    out[free, c] = np.linalg.solve(gram + lam * np.eye(int(free.sum())),
                                   a_free.T @ rhs + lam * palette[free, c])
  return out.astype(np.float32)


def render_linear(design, offset, entry):
  """f64[num_rays, 3]: the colors `A E + b` of a linear system."""
  return np.einsum('rjc,jc->rc', design, entry) + offset


def select_entries(design, weight, threshold=0.2, coverage=0.8):
  """The palette entries a part scribble selects.

  Each entry's share of the scribbled rays' palette mass, `sum_r w_r A_rk`
  over `sum_r w_r sum_k A_rk`; an entry is selected when its share is at
  least `threshold`, and the selection must hold `coverage` of the mass.

  Args:
    design: f64[num_rays, K, 3] (A) of the scribbled rays.
    weight: f64[num_rays] (0 = padding).
    threshold: smallest share of a selected entry.
    coverage: smallest share of all selected entries together.
  Returns:
    (bool[K] selection, f64[K] shares).
  Raises:
    scribbles.EditError: no clear selection (the message lists the shares).
  """
  mass = np.asarray(weight, np.float64) @ np.asarray(design, np.float64).sum(
      -1)
  total = float(mass.sum())
  if total <= 0:
    raise scribbles.EditError('The scribbled pixels show no surface (no '
                              'palette weight); scribble on the object.')
  share = mass / total
  selected = share >= threshold
  if share[selected].sum() < coverage:
    listed = ', '.join(f'entry {k}: {100 * v:.0f}%' for k, v in
                       sorted(enumerate(share), key=lambda kv: -kv[1])
                       if v >= 0.01)
    raise scribbles.EditError(
        'The part scribble selects no palette entry clearly (the entries '
        f'with at least {100 * threshold:.0f}% of its weight hold '
        f'{100 * share[selected].sum():.0f}%, below {100 * coverage:.0f}%): '
        f'{listed}. Scribble inside one part, or recolor the whole object '
        "(method 'palette').")
  return selected, share


def solve_look(experiment, params, code, batch, rounds=1,
               palette_ridge=1e-3, strength=None):
  """The palette and the light direction of pixels in closed form.

  A look of a shaded palette head is its light times its albedo (the
  palette), each linear given the other. The palette is solved first (the
  pixels' colors), then the light's direction with its strength kept
  (`lighting.fit_direction`: from a few pixels, a free light trades
  brightness with the albedo and drifts), then the palette again under the
  new light; `rounds` of direction-then-palette. Gradient fits start from
  the result and leave what it solved as solved (`gradient_entries`). A head
  without a palette returns `code` unchanged; one without a light solves
  the palette once.

  Args:
    experiment: `experiment_lib.Experiment`.
    params: field parameters (frozen).
    code: the starting code (pytree).
    batch: `scribbles.EditBatch` of the pixels and their target colors
      (code ids ignored).
    rounds: direction-then-palette rounds after the first palette solve.
    palette_ridge: the pull of `solve_palette` towards the current palette.
    strength: (intensity, ambient) the light keeps; None: those of the
      code's light (`lighting.estimate`).
  Returns:
    The code with 'palette' (and 'light') solved, as numpy.
  """
  model = experiment.model
  code = jax.tree.map(np.asarray, codes_lib.as_code(code))
  if not model.palette_size():
    return code
  batch = batch.replace(rays=batch.rays.replace(
      code_ids=np.zeros_like(batch.rays.code_ids)))
  placed, level = optimize.cache_geometry(experiment, params, batch)
  target = np.zeros((int(placed.weight.shape[0]), 3))
  target[:len(batch.target)] = batch.target

  def with_palette(code):
    design, offset, weight = linear_system(experiment, params, code, placed,
                                           level, 'palette')
    current = code[codes_lib.PALETTE]
    return {**code, codes_lib.PALETTE: solve_palette(
        design, offset, target, weight, current,
        np.ones(len(current), bool), palette_ridge)}

  code = with_palette(code)
  rounds = rounds if model.needs_normals() else 0
  if rounds and strength is None:
    strength = light_strength(code[codes_lib.LIGHT])
  for _ in range(rounds):
    design, offset, weight = linear_system(experiment, params, code, placed,
                                           level, 'light')
    light, _ = lighting.fit_direction(design, offset, target, weight,
                                      *strength)
    code = with_palette({**code, codes_lib.LIGHT: light})
  return code


def light_strength(light):
  """(intensity f64[3], ambient f64[3]) of a light code (`estimate`)."""
  info = lighting.estimate(light)
  return info['intensity'], info['ambient']


def gradient_entries(code):
  """The entries a gradient fit after `solve_look` moves: those it does not
  solve (the latent vector). Adam on the palette and the light from a few
  pixels overfits them: on the demo's NeRF-W fit, 300 steps on the whole
  code from the closed form lost 4 dB on the unseen right halves."""
  solved = (codes_lib.PALETTE, codes_lib.LIGHT)
  return tuple(k for k in codes_lib.as_code(code) if k not in solved)


def look_init(experiment, params):
  """`optimize.fit`'s `init_fn`: each view's code starts at the light and
  palette of its pixels (`solve_look`). Views that start from one code
  share its light's strength, estimated once."""
  strengths = {}

  def init(code, batch):
    light = code.get(codes_lib.LIGHT)
    key = None if light is None else np.asarray(light).tobytes()
    if key is not None and key not in strengths:
      strengths[key] = light_strength(light)
    return solve_look(experiment, params, code, batch,
                      strength=strengths.get(key))

  return init
