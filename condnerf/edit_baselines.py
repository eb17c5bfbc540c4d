"""Every edit method behind one call: the code edit and weight-level baselines.

Owns `METHODS`, `EditResult`, `run_edit(experiment, state, batch, method)`
and `score_edit`, which measures any result on the same terms.
  code        optimize one appearance code; the field is frozen (editing.py).
  color_head  fine-tune only the color head's weights (geometry cached).
  adapter     train a 3x3 color matrix + bias applied to the head's output.
  full        fine-tune every field weight (geometry recomputed each step).
  hybrid      EditNeRF-style: the code and the color head together, with an
              L2 penalty on how far the head's weights move.
A result renders through `EditResult.render`, so reports compare methods on
identical terms. Weight-level methods change what every appearance looks
like; the report measures that as collateral damage.
"""

import dataclasses
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from condnerf import codes as codes_lib
from condnerf import editing
from condnerf import inference
from condnerf import losses
from condnerf import metrics as metrics_lib
from condnerf import parallel

METHODS = ('code', 'color_head', 'adapter', 'full', 'hybrid')


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
    method: one of METHODS.
    code: f32[code_dim] code to render the edited look with.
    params: field parameters after the edit (the originals for code/adapter).
    adapter: color adapter params, or None.
    info: `editing.EditInfo` of the optimization.
    render_step: render step that applies the adapter (built once per
      result, so renders do not recompile), or None.
  """
  method: str
  code: np.ndarray
  params: Any
  adapter: Optional[Any]
  info: Any
  render_step: Optional[Any] = None

  def render(self, experiment, rays, code=None):
    """Renders numpy rays [H, W] with this edit (and optionally another code).

    Weight-level edits apply to every code, so `code` shows their collateral
    effect on other appearances.
    """
    code = self.code if code is None else code
    if self.adapter is None:
      return editing.render_with_code(experiment, None, rays, code,
                                      params=self.params)
    if self.render_step is None:
      self.render_step = inference.make_render_step(
          experiment.model, experiment.mesh, apply_adapter)
    return editing.render_with_code(
        experiment, None, rays, code, render_step=self.render_step,
        color_params=parallel.replicate(self.adapter, experiment.mesh),
        params=self.params)


def _head_mask(params):
  """Pytree of bools: True on the color-head leaves (`heads_*`)."""
  return {name: jax.tree.map(lambda _, n=name: n.startswith('heads'), sub)
          for name, sub in params.items()}


def _merge(params, head_params, mask):
  return jax.tree.map(lambda p, h, m: h if m else p, params, head_params,
                      mask)


def run_edit(experiment, state, batch, method='code', steps=200,
             learning_rate=None, init_code=None, penalty=1.0):
  """Runs one edit method on a scribble batch.

  Args:
    experiment: `experiment_lib.Experiment`.
    state: trained `TrainState` (never modified).
    batch: `editing.EditBatch` (code_ids are ignored: one code is edited).
    method: one of METHODS.
    steps: optimization steps.
    learning_rate: Adam learning rate (default per method).
    init_code: f32[code_dim] starting code (default: the mean code).
    penalty: hybrid only, weight of the L2 penalty on head-weight changes.
  Returns:
    `EditResult`.
  Raises:
    editing.EditError: for an unknown method.
  """
  if method not in METHODS:
    raise editing.EditError(f'Unknown edit method {method!r}; choose one of '
                            f'{list(METHODS)}.')
  model = experiment.model
  params = state.params
  if init_code is None:
    init_code = np.asarray(jax.device_get(state.codes['appearance'])).mean(0)
  init_code = jnp.asarray(init_code, jnp.float32)
  batch = batch.replace(rays=batch.rays.replace(
      code_ids=np.zeros_like(batch.rays.code_ids)))
  if method == 'code':
    code, info = editing.recolor(experiment, state, batch, init_code, steps,
                                 learning_rate or 0.1)
    return EditResult(method, code, params, None, info)

  placed, level = editing.cache_geometry(experiment, params, batch)
  mask = _head_mask(params)
  lr = learning_rate or {'color_head': 1e-3, 'adapter': 1e-2, 'full': 1e-3,
                         'hybrid': 1e-3}[method]

  def codes_of(code, batch):
    return jnp.broadcast_to(code, batch.rays.directions.shape[:-1] +
                            code.shape)

  if method == 'adapter':
    def loss_fn(adapter, frozen, batch, level):
      out = inference.shade(model, frozen['params'], level,
                            batch.rays.directions,
                            codes_of(frozen['code'], batch), apply_adapter,
                            adapter)
      return losses.photometric(out.rgb, batch.target, batch.weight)
    adapter, info = editing.run_optimizer(
        experiment, loss_fn, identity_adapter(),
        {'params': params, 'code': init_code}, placed, level, steps, lr)
    return EditResult(method, np.asarray(init_code), params, adapter, info)

  if method == 'full':
    def loss_fn(trainable, code, batch, level):
      del level  # geometry moves with the weights: recompute it.
      new_level = model.apply({'params': trainable}, batch.rays,
                              method='geometry')[-1]
      out = inference.shade(model, trainable, new_level,
                            batch.rays.directions, codes_of(code, batch))
      return losses.photometric(out.rgb, batch.target, batch.weight)
    new_params, info = editing.run_optimizer(
        experiment, loss_fn, params, init_code, placed, level, steps, lr)
    return EditResult(method, np.asarray(init_code), new_params, None, info)

  # color_head and hybrid: only head leaves (and for hybrid the code) move.
  def head_loss(trainable, frozen, batch, level):
    merged = _merge(frozen['params'], trainable['params'], mask)
    code = trainable.get('code', frozen['code'])
    out = inference.shade(model, merged, level, batch.rays.directions,
                          codes_of(code, batch))
    loss = losses.photometric(out.rgb, batch.target, batch.weight)
    if method == 'hybrid':
      moved = jax.tree.map(lambda a, b, m: jnp.sum((a - b)**2) if m else 0.0,
                           merged, frozen['params'], mask)
      loss += penalty * sum(jax.tree.leaves(moved))
    return loss

  heads = jax.tree.map(lambda p, m: p if m else jnp.zeros((0,), p.dtype),
                       params, mask)
  trainable = {'params': heads}
  frozen = {'params': params, 'code': init_code}
  if method == 'hybrid':
    trainable['code'] = init_code
  trained, info = editing.run_optimizer(experiment, head_loss, trainable,
                                        frozen, placed, level, steps, lr)
  new_params = _merge(jax.device_get(params), trained['params'],
                      jax.device_get(mask))
  code = trained.get('code', init_code)
  return EditResult(method, np.asarray(code), new_params, None, info)


def score_edit(experiment, state, result, batch, frames, views,
               other_codes=()):
  """How well an edit hit its scribbles and what else it changed.

  Args:
    experiment: `experiment_lib.Experiment`.
    state: the trained `TrainState` the edit started from.
    result: `EditResult`.
    batch: the `editing.EditBatch` the edit was fitted to.
    frames: `data.base.Frames` of the views checked for geometry drift.
    views: view indices; each is rendered before (mean code, trained
      weights) and after (the edit).
    other_codes: f32[k, code_dim] other appearances (e.g. training codes),
      rendered on `views[0]` with the trained and the edited weights.
  Returns:
    dict: method; scribble_psnr (edit renders of the scribbled rays vs their
    targets, dB); drift_depth and drift_opacity (max |after - before| over
    the views); collateral (max |rgb change| of the other appearances; 0
    when the weights are untouched); steps; seconds (edit time without
    compilation).
  """
  scribbled = result.render(experiment, batch.rays)['rgb']
  original = EditResult('none', codes_lib.mean_code(
      jax.device_get(state.codes)), state.params, None, None)
  drift_depth = drift_opacity = 0.0
  for view in views:
    rays = editing.view_rays(frames, view)
    before, after = original.render(experiment, rays), result.render(
        experiment, rays)
    drift_depth = max(drift_depth, float(np.max(np.abs(
        after['depth'] - before['depth']))))
    drift_opacity = max(drift_opacity, float(np.max(np.abs(
        after['acc'] - before['acc']))))
  collateral = 0.0
  if len(other_codes) and len(views):
    rays = editing.view_rays(frames, views[0])
    for code in np.asarray(other_codes):
      mine = original.render(experiment, rays, code)['rgb']
      theirs = result.render(experiment, rays, code)['rgb']
      collateral = max(collateral, float(np.max(np.abs(theirs - mine))))
  mse = float(np.mean((np.clip(scribbled, 0.0, 1.0) - batch.target)**2))
  return {'method': result.method,
          'scribble_psnr': float(metrics_lib.mse_to_psnr(max(mse, 1e-10))),
          'drift_depth': drift_depth, 'drift_opacity': drift_opacity,
          'collateral': collateral, 'steps': result.info.steps,
          'seconds': result.info.seconds}
