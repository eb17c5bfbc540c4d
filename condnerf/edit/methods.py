"""Edit methods: a registry of small functions, each returning an `EditResult`.

The third stage of `condnerf.edit`. Every method takes the same inputs (a
trained state, an `EditBatch` of scribbles, optional keep pixels) and
returns a result that renders like the original, so reports compare them on
identical terms:
  code          Adam on the latent code with the field frozen, the classic
                latent-code edit; a palette head first solves its palette
                and light direction in closed form (`linear.solve_look`).
  palette       closed form: the least-squares palette of every entry
                (geometry, palette weights and latent code fixed); a global
                recolor to any color. Palette head only.
  palette_part  closed form on the entries the scribble selects
                (`linear.select_entries`); the rest of the palette, and so
                every other part, stays. Palette head only.
  light         closed form on the light code (`lighting`): the best
                directional light for the pixels, then the 27 coefficients
                by least squares pulled towards it. Shaded head only.
  color_head    fine-tune the color head's weights (geometry cached).
  adapter       a 3x3 color matrix + bias applied to the head's output.
  full          fine-tune every field weight (geometry recomputed).
  hybrid        EditNeRF-style: the code and the color head together, with
                an L2 penalty on how far the head's weights move.
The first four change only a code: the field, every other code and the
geometry stay bitwise as trained. The weight-level ones change what every
appearance looks like (the report's collateral damage).
"""

import dataclasses
import time
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from condnerf import codes as codes_lib
from condnerf import inference
from condnerf import lighting
from condnerf import losses
from condnerf import parallel
from condnerf.edit import linear
from condnerf.edit import optimize
from condnerf.edit import scribbles


def apply_adapter(adapter, rgb):
  """Color adapter: `clip(rgb @ matrix^T + bias, 0, 1)`.

  Args:
    adapter: {'matrix': f32[3, 3], 'bias': f32[3]}.
    rgb: f32[..., 3] per-sample colors.
  Returns:
    f32[..., 3].
  """
  return jnp.clip(rgb @ adapter['matrix'].T + adapter['bias'], 0.0, 1.0)


def identity_adapter():
  return {'matrix': jnp.eye(3, dtype=jnp.float32),
          'bias': jnp.zeros((3,), jnp.float32)}


@dataclasses.dataclass
class EditResult:
  """An edited look, renderable like the original.

  Attributes:
    method: a key of `METHODS`, or 'unedited'.
    code: the code (pytree of numpy arrays) to render the edited look with.
    params: field parameters after the edit (the trained ones for code
      edits).
    adapter: color adapter params, or None.
    info: `optimize.EditInfo` of the edit (None when unedited).
    details: method-specific facts (the palette entries a part edit chose).
    render_step: render step that applies the adapter (built once per
      result, so renders do not recompile), or None.
  """
  method: str
  code: Any
  params: Any
  adapter: Optional[Any] = None
  info: Any = None
  details: dict = dataclasses.field(default_factory=dict)
  render_step: Optional[Any] = None

  @property
  def changes_weights(self):
    return self.method in WEIGHT_METHODS

  def render(self, experiment, rays, code=None):
    """Renders numpy rays [H, W] with this edit (and optionally another code).

    Weight-level edits apply to every code, so `code` shows their collateral
    effect on other appearances.
    """
    code = self.code if code is None else code
    if self.adapter is None:
      return inference.render_with_code(experiment, self.params, rays, code)
    if self.render_step is None:
      self.render_step = inference.make_render_step(
          experiment.model, experiment.mesh, apply_adapter)
    return inference.render_with_code(
        experiment, self.params, rays, code, render_step=self.render_step,
        color_params=parallel.replicate(self.adapter, experiment.mesh))


def unedited(state, code=None):
  """The trained look as an `EditResult` (the mean code by default)."""
  if code is None:
    code = codes_lib.mean_code(jax.device_get(state.codes))
  return EditResult('unedited', jax.tree.map(np.asarray, code), state.params)


@dataclasses.dataclass
class _Edit:
  """What every method reads."""
  experiment: Any
  state: Any
  batch: Any  # scribbles (and keep pixels after them).
  num_scribbled: int  # rows of `batch` that are scribbles.
  code: Any  # the starting code (pytree of jnp arrays).
  steps: int
  learning_rate: Optional[float]
  penalty: float
  ridge: float
  entries: Any  # palette_part: entries to solve for (None = selected).


def run_edit(experiment, state, batch, method='code', steps=200,
             learning_rate=None, init_code=None, keep=None, penalty=1.0,
             ridge=None, entries=None):
  """Runs one edit method on a scribble batch.

  Args:
    experiment: `experiment_lib.Experiment`.
    state: trained `TrainState` (never modified).
    batch: `scribbles.EditBatch` (code_ids are ignored: one code is edited).
    method: a key of `METHODS`.
    steps: optimization steps (gradient methods).
    learning_rate: Adam learning rate (default per method).
    init_code: the starting code (default: the mean code).
    keep: optional `EditBatch` of pixels that must keep their look (targets
      = their current colors); it may not share pixels with `batch`.
    penalty: hybrid only, weight of the L2 penalty on head-weight changes.
    ridge: palette and light methods, the relative pull towards the
      starting palette (or the fitted directional light); None = the
      method's default (`RIDGES`).
    entries: palette_part only: the palette entries to solve for, instead
      of the ones the scribble selects.
  Returns:
    `EditResult`.
  Raises:
    scribbles.EditError: an unknown method, a palette method on a run
      without a palette head, keep pixels overlapping the scribble, or a
      part scribble that selects no entry clearly.
  """
  if method not in METHODS:
    raise scribbles.EditError(f'Unknown edit method {method!r}; choose one '
                              f'of {list(METHODS)}.')
  if init_code is None:
    init_code = codes_lib.mean_code(jax.device_get(state.codes))
  code = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32),
                      codes_lib.as_code(init_code))
  num_scribbled = len(batch.target)
  if keep is not None:
    _check_disjoint(batch, keep)
    batch = scribbles.concat_batches(batch, keep)
  batch = batch.replace(rays=batch.rays.replace(
      code_ids=np.zeros_like(batch.rays.code_ids)))
  ridge = RIDGES.get(method, 0.0) if ridge is None else ridge
  return METHODS[method](_Edit(experiment, state, batch, num_scribbled, code,
                              steps, learning_rate, penalty, ridge, entries))


def _check_disjoint(batch, keep):
  def rows(b):
    return np.concatenate([b.rays.origins, b.rays.directions], -1)
  ours = {r.tobytes() for r in rows(batch).astype(np.float32)}
  shared = sum(r.tobytes() in ours for r in rows(keep).astype(np.float32))
  if shared:
    raise scribbles.EditError(
        f'{shared} keep pixels are also scribbled; a pixel cannot both '
        'change and stay. Draw the keep mask outside the scribble.')


def _code(edit):
  """`linear.solve_look`, then Adam on the latent vector."""
  start = time.perf_counter()
  init = linear.solve_look(edit.experiment, edit.state.params, edit.code,
                           edit.batch)
  solved = time.perf_counter() - start
  code, info = optimize.recolor(edit.experiment, edit.state, edit.batch,
                                init, edit.steps, edit.learning_rate or 0.1,
                                entries=linear.gradient_entries(init))
  info = dataclasses.replace(info, seconds=info.seconds + solved)
  return EditResult('code', code, edit.state.params, info=info)


def _palette(edit, part=False):
  exp = edit.experiment
  if not exp.model.palette_size():
    raise scribbles.EditError(
        'Palette edits need a palette head, and this run has '
        f"model.head.kind={exp.config.model.head.kind!r}; use method 'code' "
        "or train with --config.model.head.kind=palette.")
  palette = np.asarray(edit.code['palette'])

  def solve(design, offset, target, weight):
    free, details = np.ones(len(palette), bool), {}
    if part:
      n = edit.num_scribbled
      free, shares = (linear.select_entries(design[:n], weight[:n])
                      if edit.entries is None else
                      (np.isin(np.arange(len(palette)), edit.entries), None))
      details = {'entries': np.flatnonzero(free).tolist(),
                 'shares': None if shares is None else
                           shares.round(4).tolist()}
    return linear.solve_palette(design, offset, target, weight, palette,
                                free, edit.ridge), details

  return _closed_form(edit, 'palette', 'palette_part' if part else 'palette',
                      solve)


def _light(edit):
  """Fits the light code to the scribbles; palette and geometry stay."""
  check_shaded(edit.experiment, 'Light fits')

  def solve(design, offset, target, weight):
    # A white directional light first (it decides the faces no pixel
    # shows), then the 27 coefficients by least squares pulled towards it.
    prior, found = lighting.fit_directional(design, offset, target, weight,
                                            white=True)
    light = lighting.fit_linear(design, offset, target, weight, prior,
                                edit.ridge)
    return light, {'directional': {k: np.round(v, 4).tolist()
                                   for k, v in found.items()}}

  return _closed_form(edit, 'light', 'light', solve)


def _closed_form(edit, entry, name, solve):
  """A code entry solved in closed form on the scribbles' linear system.

  Args:
    edit: `_Edit`.
    entry: the code entry solved for ('palette' or 'light').
    name: the method's name.
    solve: `solve(design, offset, target, weight) -> (value, details)`
      on the host arrays of `linear.linear_system`.
  Returns:
    `EditResult`; its seconds count the system and the solve, not the
    first call's compilation.
  """
  exp, params = edit.experiment, edit.state.params
  placed, level = optimize.cache_geometry(exp, params, edit.batch)
  start = time.perf_counter()
  linear.linear_system(exp, params, edit.code, placed, level, entry)
  compile_seconds = time.perf_counter() - start  # the first call compiles.
  start = time.perf_counter()
  design, offset, weight = linear.linear_system(exp, params, edit.code,
                                                placed, level, entry)
  target = np.zeros(offset.shape)
  target[:len(edit.batch.target)] = edit.batch.target
  solved, details = solve(design, offset, target, weight)
  seconds = time.perf_counter() - start

  def loss(value):
    per_ray = np.mean((linear.render_linear(design, offset, value) -
                       target)**2, axis=-1)
    return float(np.sum(weight * per_ray) / max(np.sum(weight), 1.0))

  code = jax.tree.map(np.asarray, {**edit.code, entry: solved})
  info = optimize.EditInfo(steps=0, seconds=seconds,
                           compile_seconds=compile_seconds,
                           loss_start=loss(np.asarray(edit.code[entry])),
                           loss_end=loss(solved))
  return EditResult(name, code, params, info=info, details=details)


def relight(experiment, state, code, light=None, direction=None,
            intensity=None, ambient=None, rotate=0.0):
  """A code under another light, set without pixels (`light_set`).

  In order: start from `light` (f32[9, 3], e.g. another frame's) or the
  code's own; light it from `direction` (keeping its estimated intensity
  and ambient unless given; `lighting.with_direction`); turn it by `rotate`
  degrees about the scene's up axis. The palette, the latent code and the
  field stay bitwise.

  Args:
    experiment: `experiment.Experiment` with a shaded head.
    state: trained `TrainState`.
    code: one code (pytree).
    light: None or f32[9, 3].
    direction: None or 3 floats towards the light.
    intensity, ambient: None (keep) or a float / 3 floats.
    rotate: degrees about `scenes`' up axis (+z for the chair).
  Returns:
    `EditResult` with method 'light_set'.
  """
  check_shaded(experiment, 'Relighting')
  start = time.perf_counter()
  new = lighting.check_light(code['light'] if light is None else light,
                             'light code')
  if direction is not None:
    new = lighting.with_direction(new, direction, intensity, ambient)
  elif intensity is not None or ambient is not None:
    found = lighting.estimate(new)
    new = lighting.with_direction(
        new, found['direction'],
        found['intensity'] if intensity is None else intensity,
        found['ambient'] if ambient is None else ambient)
  if rotate:
    new = lighting.rotate_about(new, rotate, experiment.scene.up)
  code = jax.tree.map(np.asarray, {**code, 'light': new})
  info = optimize.EditInfo(steps=0, seconds=time.perf_counter() - start,
                           compile_seconds=0.0, loss_start=0.0, loss_end=0.0)
  return EditResult('light_set', code, state.params, info=info)


def check_shaded(experiment, what):
  """Raises EditError unless the run shades with light codes."""
  if not experiment.model.needs_normals():
    head = experiment.config.model.head
    raise scribbles.EditError(
        f'{what} need a shaded head, and this run has model.head.kind='
        f"{head.kind!r}, shading={head.get('shading', 'none')!r}; train with "
        "--config.model.head.kind=palette --config.model.head.shading=sh.")


def _head_mask(params):
  """Pytree of bools: True on the color-head leaves (`heads_*`)."""
  return {name: jax.tree.map(lambda _, n=name: n.startswith('heads'), sub)
          for name, sub in params.items()}


def _merge(params, head_params, mask):
  return jax.tree.map(lambda p, h, m: h if m else p, params, head_params,
                      mask)


def _shade(model, params, level, batch, code, color_fn=None,
           color_params=None):
  ray_codes = codes_lib.broadcast(code, batch.rays.directions.shape[0])
  return inference.shade(model, params, level, batch.rays.directions,
                         ray_codes, color_fn, color_params)


def _adapter(edit):
  model = edit.experiment.model

  def loss_fn(adapter, frozen, batch, level):
    out = _shade(model, frozen['params'], level, batch, frozen['code'],
                 apply_adapter, adapter)
    return losses.photometric(out.rgb, batch.target, batch.weight)

  placed, level = optimize.cache_geometry(edit.experiment, edit.state.params,
                                          edit.batch)
  adapter, info = optimize.run_optimizer(
      edit.experiment, loss_fn, identity_adapter(),
      {'params': edit.state.params, 'code': edit.code}, placed, level,
      edit.steps, edit.learning_rate or 1e-2, name='adapter')
  return EditResult('adapter', jax.device_get(edit.code), edit.state.params,
                    adapter=adapter, info=info)


def _full(edit):
  model = edit.experiment.model

  def loss_fn(trainable, code, batch, level):
    del level  # geometry moves with the weights: recompute it.
    new_level = model.apply({'params': trainable}, batch.rays,
                            method='geometry')[-1]
    out = _shade(model, trainable, new_level, batch, code)
    return losses.photometric(out.rgb, batch.target, batch.weight)

  placed, level = optimize.cache_geometry(edit.experiment, edit.state.params,
                                          edit.batch)
  new_params, info = optimize.run_optimizer(
      edit.experiment, loss_fn, edit.state.params, edit.code, placed, level,
      edit.steps, edit.learning_rate or 1e-3, name='full')
  return EditResult('full', jax.device_get(edit.code), new_params, info=info)


def _heads(edit, with_code):
  """color_head (head weights) and hybrid (head weights and the code)."""
  model, params = edit.experiment.model, edit.state.params
  mask = _head_mask(params)

  def loss_fn(trainable, frozen, batch, level):
    merged = _merge(frozen['params'], trainable['params'], mask)
    code = trainable.get('code', frozen['code'])
    out = _shade(model, merged, level, batch, code)
    loss = losses.photometric(out.rgb, batch.target, batch.weight)
    if with_code:
      moved = jax.tree.map(lambda a, b, m: jnp.sum((a - b)**2) if m else 0.0,
                           merged, frozen['params'], mask)
      loss += edit.penalty * sum(jax.tree.leaves(moved))
    return loss

  heads = jax.tree.map(lambda p, m: p if m else jnp.zeros((0,), p.dtype),
                       params, mask)
  trainable = {'params': heads}
  if with_code:
    trainable['code'] = edit.code
  placed, level = optimize.cache_geometry(edit.experiment, params, edit.batch)
  trained, info = optimize.run_optimizer(
      edit.experiment, loss_fn, trainable,
      {'params': params, 'code': edit.code}, placed, level, edit.steps,
      edit.learning_rate or 1e-3,
      name=('hybrid', edit.penalty) if with_code else 'color_head')
  new_params = _merge(jax.device_get(params), trained['params'],
                      jax.device_get(mask))
  code = trained.get('code', jax.device_get(edit.code))
  return EditResult('hybrid' if with_code else 'color_head',
                    jax.tree.map(np.asarray, code), new_params, info=info)


METHODS = {
    'code': _code,
    'palette': _palette,
    'palette_part': lambda edit: _palette(edit, part=True),
    'light': _light,
    'color_head': lambda edit: _heads(edit, with_code=False),
    'adapter': _adapter,
    'full': _full,
    'hybrid': lambda edit: _heads(edit, with_code=True),
}
# Default relative ridges of the closed-form methods. Palettes: at 1e-6 an
# entry that only faint floaters use was free to take any value, and on a
# shaded demo run the whole-chair blue recolor painted the background with
# speckles (20.3 dB on the test views, 28.3 dB at 1e-3). Lights: 64 pixels
# of one view see three faces; pulled harder towards the directional fit,
# the 27 coefficients leave the unseen faces to it (relight_fit on a demo
# run: 25.3 dB at 1e-3, 27.3 dB at 0.1, 27.2 dB at 1).
RIDGES = {'palette': 1e-3, 'palette_part': 1e-3, 'light': 0.1}
CODE_METHODS = ('code', 'palette', 'palette_part', 'light')
WEIGHT_METHODS = ('color_head', 'adapter', 'full', 'hybrid')
PALETTE_METHODS = ('palette', 'palette_part')
LIGHT_METHODS = ('light',)


def methods_for(model):
  """The methods that apply to a model (palette ones need a palette head,
  light ones a shaded head)."""
  return tuple(m for m in METHODS
               if (model.palette_size() or m not in PALETTE_METHODS) and
               (model.needs_normals() or m not in LIGHT_METHODS))
