"""Scoring edits: one scorer for every method and family, and NeRF-W.

The fourth stage of `condnerf.edit`. Owns
  `score`            an edit against ground truth: target PSNR/SSIM on every
                     view, preservation outside the edited part, geometry
                     drift, collateral damage to other appearances, time and
                     the number of edited parameters (the report schema of
                     `evaluators.edit_benchmark`);
  `ViewCache`        the trained geometry of whole views, computed once, so
                     scoring an edit that keeps it runs only the color head;
  `collateral`       the one collateral measure: are other appearances
                     bitwise identical after the edit, and how close;
  `scribble_score`   a quick table row without ground truth (notebooks);
  `nerfw`            the NeRF-W protocol: codes fitted on the left half of
                     each view, PSNR on the right half.
Renders go through `EditResult.render`, or the color head on a `ViewCache`
for edits that keep the geometry weights; drift is always measured on full
renders, so every method is measured alike.
"""

import dataclasses
from typing import Any

import jax
import numpy as np

from condnerf import codes as codes_lib
from condnerf import metrics as metrics_lib
from condnerf import parallel
from condnerf.edit import linear
from condnerf.edit import methods
from condnerf.edit import optimize
from condnerf.edit import scribbles


def render_views(experiment, result, frames, views, code=None):
  """`result` rendered on views of `frames` (dicts of numpy rgb, depth, acc)."""
  return [result.render(experiment, scribbles.view_rays(frames, v), code)
          for v in views]


@dataclasses.dataclass
class _CachedView:
  rays: Any  # `structs.Rays` [H, W] of the view.
  count: int  # H * W.
  directions: Any  # placed f32[padded, 3].
  level: Any  # placed final-level geometry.


class ViewCache:
  """The trained geometry of whole views, computed once.

  Code edits and weight edits of the color head leave density, sample
  positions and features as trained, so their renders only need the color
  head on this cache: a benchmark scoring many edits on many views computes
  the geometry once instead of once per edit. Edits that move geometry
  weights (`full`) are rendered in full (`holds` says which).
  """

  def __init__(self, experiment, params, frames, views):
    """Computes the final-level geometry of every view.

    Args:
      experiment: `experiment.Experiment`.
      params: the trained field parameters.
      frames: `data.base.Frames`.
      views: view indices.
    """
    self.params = jax.device_get(params)
    self.views = []
    for v in views:
      rays = scribbles.view_rays(frames, v)
      flat = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), rays)
      count = flat.directions.shape[0]
      batch = scribbles.EditBatch(rays=flat,
                                  target=np.zeros((count, 3), np.float32),
                                  weight=np.ones((count,), np.float32))
      placed, level = optimize.cache_geometry(experiment, params, batch)
      self.views.append(_CachedView(rays, count, placed.rays.directions,
                                    level))

  def holds(self, result):
    """Whether `result` keeps every geometry weight (outside `heads_*`)."""
    if result.params is self.params:
      return True
    return all(np.array_equal(a, b)
               for name in self.params if not name.startswith('heads')
               for a, b in zip(jax.tree.leaves(self.params[name]),
                               jax.tree.leaves(result.params[name])))

  def render(self, experiment, result, code=None, views=None):
    """rgb f32[H, W, 3] of every view (or of `views`, indices into the
    cache) under `result` (and another `code`).

    Raises:
      ValueError: when `result` moved geometry weights (see `holds`).
    """
    if not self.holds(result):
      raise ValueError(f'A {result.method!r} edit moves the geometry; '
                       'render it with `render_views`.')
    mesh = experiment.mesh
    code = codes_lib.as_code(result.code if code is None else code)
    if result.adapter is None:
      step = experiment.cached_step(
          'edit_shade', lambda: optimize.make_shade_step(experiment.model,
                                                         mesh))
      color_params = None
    else:
      step = experiment.cached_step(
          'edit_shade_adapter', lambda: optimize.make_shade_step(
              experiment.model, mesh, methods.apply_adapter))
      color_params = parallel.replicate(result.adapter, mesh)
    params = parallel.replicate(result.params, mesh)
    code = parallel.replicate(code, mesh)
    out = []
    for i in range(len(self.views)) if views is None else views:
      view = self.views[i]
      rgb = optimize.to_host(step(params, code, view.level, view.directions,
                                  color_params))
      shape = view.rays.directions.shape[:2]
      out.append(np.asarray(rgb)[:view.count].reshape(shape + (3,)))
    return out


def drift(before, after):
  """Max |change| of opacity and depth between two lists of renders."""
  opacity = max(float(np.max(np.abs(a['acc'] - b['acc'])))
                for a, b in zip(after, before))
  depth = max(float(np.max(np.abs(a['depth'] - b['depth'])))
              for a, b in zip(after, before))
  return opacity, depth


def collateral(experiment, original, result, rays, other_codes):
  """What an edit did to other appearances, rendered on `rays`.

  Args:
    experiment: `experiment.Experiment`.
    original: the unedited `EditResult` (trained weights).
    result: the edit.
    rays: `structs.Rays` [H, W] of one view.
    other_codes: list of codes (e.g. training appearances' rows).
  Returns:
    See `_compare`.
  """
  return _compare(
      [original.render(experiment, rays, code)['rgb'] for code in other_codes],
      [result.render(experiment, rays, code)['rgb'] for code in other_codes])


def _compare(before, after):
  """dict: `identical` (every render bitwise equal), `psnr` (mean PSNR of
  the changed renders against the unedited ones; None when identical) and
  `max_abs` (largest color change), of two lists of rgb renders."""
  psnrs, max_abs = [], 0.0
  for was, now in zip(before, after):
    if not np.array_equal(was, now):
      psnrs.append(float(metrics_lib.psnr(now, was)))
      max_abs = max(max_abs, float(np.max(np.abs(now - was))))
  return {'identical': not psnrs,
          'psnr': float(np.mean(psnrs)) if psnrs else None,
          'max_abs': max_abs}


def num_params(result):
  """How many numbers an edit changes: the code, or every weight it moves."""
  if result.adapter is not None:
    return int(sum(np.size(x) for x in jax.tree.leaves(result.adapter)))
  if result.method == 'palette_part':
    return 3 * len(result.details.get('entries', ()))
  if result.method == 'palette':
    return int(np.size(result.code['palette']))
  if result.method in ('light', 'light_set'):
    return int(np.size(result.code['light']))
  if result.method == 'code':
    return int(sum(np.size(x) for x in jax.tree.leaves(result.code)))
  moved = [np.size(p) for p, name in _leaves_with_heads(result.params)
           if result.method == 'full' or name.startswith('heads')]
  extra = (sum(np.size(x) for x in jax.tree.leaves(result.code))
           if result.method == 'hybrid' else 0)
  return int(sum(moved) + extra)


def _leaves_with_heads(params):
  return [(leaf, name) for name, sub in params.items()
          for leaf in jax.tree.leaves(sub)]


def score(experiment, original, result, cache, targets, before, geometry,
          other_codes=(), collateral_before=None, collateral_view=0,
          outside=None):
  """One edit against ground truth, in the benchmark's schema.

  Args:
    experiment: `experiment.Experiment`.
    original: the unedited look (`methods.unedited`): the trained weights
      and the code the edit started from.
    result: the `EditResult`.
    cache: `ViewCache` of the scored views (all of them); an edit that
      moves geometry weights is rendered in full instead.
    targets: list of f32[H, W, 3] ground truth of every view under the
      edit's target.
    before: list of `original`'s rgb f32[H, W, 3] of every view (from
      `cache`), for preservation.
    geometry: (frames, views, renders): full renders by the trained field
      of a few views, against which the edit's full renders of the same
      views measure geometry drift (opacity and depth do not depend on the
      code, so any code's render serves).
    other_codes: codes of other appearances, for collateral damage.
    collateral_before: the trained look's rgb of `other_codes` on the
      collateral view (from `cache`).
    collateral_view: index into `cache` of the view collateral is scored on.
    outside: None, or a list of bool[H, W] per view: the pixels that must
      not change (outside the edited part), for `preservation_psnr`.
  Returns:
    (dict: psnr, ssim (means over views), preservation_psnr (or None),
    drift_opacity, drift_depth, collateral_identical, collateral_psnr,
    seconds, compile_seconds, num_params, steps, loss_start, loss_end;
    the list of rgb renders of every view).
  """
  frames, drift_views, reference = geometry
  after, others = _render_after(experiment, result, cache, other_codes,
                                collateral_view)
  opacity, depth = drift(
      reference, render_views(experiment, result, frames, drift_views))
  damage = _compare(collateral_before, others)
  preservation = None
  if outside is not None:
    preservation = float(np.mean([
        metrics_lib.psnr(a, b, mask=m)
        for a, b, m in zip(after, before, outside)]))
  info = result.info
  return {
      'psnr': float(np.mean([metrics_lib.psnr(a, t)
                             for a, t in zip(after, targets)])),
      'ssim': float(np.mean([metrics_lib.ssim(a, t)
                             for a, t in zip(after, targets)])),
      'preservation_psnr': preservation,
      'drift_opacity': opacity, 'drift_depth': depth,
      'collateral_identical': damage['identical'],
      'collateral_psnr': damage['psnr'],
      'seconds': info.seconds, 'compile_seconds': info.compile_seconds,
      'num_params': num_params(result),
      'steps': info.steps, 'loss_start': info.loss_start,
      'loss_end': info.loss_end}, after


def _render_after(experiment, result, cache, other_codes, collateral_view):
  """The edit's rgb of every view of `cache` and, on the collateral view,
  under each of `other_codes` (cached renders unless it moved geometry)."""
  if cache.holds(result):
    after = cache.render(experiment, result)
    others = [cache.render(experiment, result, code, [collateral_view])[0]
              for code in other_codes]
    return after, others
  rays = [view.rays for view in cache.views]
  after = [result.render(experiment, r)['rgb'] for r in rays]
  others = [result.render(experiment, rays[collateral_view], code)['rgb']
            for code in other_codes]
  return after, others


def scribble_score(experiment, original, result, batch, frames, views,
                   other_codes=()):
  """How well an edit hit its scribbles and what else it changed.

  A quick row for notebooks and ad-hoc edits, without ground truth.

  Args:
    experiment: `experiment.Experiment`.
    original: the unedited look (`methods.unedited`).
    result: `EditResult`.
    batch: the `scribbles.EditBatch` the edit was fitted to.
    frames: `data.base.Frames` of the views checked for geometry drift.
    views: view indices rendered before and after.
    other_codes: codes of other appearances, rendered on `views[0]`.
  Returns:
    dict: method; scribble_psnr (dB); drift_depth, drift_opacity (max over
    the views); collateral (largest color change of the other appearances;
    0 when the weights are untouched); steps; seconds.
  """
  scribbled = result.render(experiment, batch.rays)['rgb']
  opacity, depth = drift(render_views(experiment, original, frames, views),
                         render_views(experiment, result, frames, views))
  damage = collateral(experiment, original, result,
                      scribbles.view_rays(frames, views[0]), other_codes)
  mse = float(np.mean((scribbled - batch.target)**2))
  return {'method': result.method,
          'scribble_psnr': float(metrics_lib.mse_to_psnr(max(mse, 1e-10))),
          'drift_depth': depth, 'drift_opacity': opacity,
          'collateral': damage['max_abs'], 'steps': result.info.steps,
          'seconds': result.info.seconds}


def nerfw(experiment, state, frames, views=None, images=None, steps=300,
          learning_rate=5e-2, max_pixels=1024, closed_form=True,
          cache=None):
  """The NeRF-W protocol: fit a code on each view's left half, score the right.

  Args:
    experiment: `experiment.Experiment`.
    state: trained `TrainState`.
    frames: `data.base.Frames` holding the poses (and images).
    views: view indices (default: all).
    images: None (the frames' images) or f32[H, W, 3] per view: photos of
      an appearance to invert (ground truth of a held-out look).
    steps, learning_rate, max_pixels: of `optimize.fit`.
    closed_form: each code starts at the palette and light of its view's
      left half in closed form (`linear.solve_look`) and Adam moves only
      the latent vector; else every code starts at the mean code.
    cache: None, or a `ViewCache` of the trained geometry of `frames` whose
      views are indexed like `frames` (renders reuse it).
  Returns:
    (list of per-view right-half PSNRs, fitted code table, `EditInfo`).
  """
  views = list(range(len(frames))) if views is None else list(views)
  shapes = [(frames.images[v] if images is None else images[i]).shape[:2]
            for i, v in enumerate(views)]
  left = [metrics_lib.masked_region(h, w, 'left') for h, w in shapes]
  start = {}
  if closed_form:
    start = dict(init_fn=linear.look_init(experiment, state.params),
                 entries=linear.gradient_entries(state.codes))
  fitted, info = optimize.fit(experiment, state, frames, views, masks=left,
                              images=images, steps=steps,
                              learning_rate=learning_rate,
                              max_pixels=max_pixels, **start)
  scores = []
  for i, v in enumerate(views):
    truth = frames.images[v] if images is None else images[i]
    result = methods.EditResult('fit', codes_lib.row(fitted, i), state.params)
    if cache is None:
      rgb = result.render(experiment, scribbles.view_rays(frames, v))['rgb']
    else:
      rgb = cache.render(experiment, result, views=[v])[0]
    right = metrics_lib.masked_region(*shapes[i], 'right')
    scores.append(float(metrics_lib.psnr(rgb, truth, mask=right)))
  return scores, fitted, info
