"""The edit benchmark of DESIGN.md: edit families scored against ground truth.

Owns `Evaluator(experiment, ...).run(state, out_dir)`, which writes
`out_dir/report.json` (and before | after | ground truth strips). The
report's schema, which later families extend:
  report['families'][NAME] = {'target': ..., 'scribble_view': v,
                              'num_scribbles': n, 'methods': {METHOD: row}}
  row = {psnr, ssim, preservation_psnr, drift_opacity, drift_depth,
         collateral_identical, collateral_psnr, seconds, compile_seconds,
         num_params, steps, loss_start, loss_end} (`edit.scoring.score`)
Families (NAME):
  in_distribution  a new look drawn from the training distribution (seed
                   `10000 + seed`), edited from the mean code;
  ood_recolor      every part saturated blue (`BLUE`), far outside the
                   training hues, edited from training appearance 0;
  part_recolor     only the seat blue, the other parts as in training
                   appearance 0; scribbles inside the seat (on the test
                   view showing most of it), keep pixels on the rest of the
                   object; `preservation_psnr` (edited vs unedited render on
                   the object outside the seat) and `part_psnr` (inside the
                   seat, against ground truth) are added;
  relight_direction  training appearance 0 under a held-out light
                   (`RELIGHT_TURN_DEG` about up, outside the training cone,
                   same intensity and ambient), its light code set from the
                   direction alone (`methods.relight`, method 'light_set');
  relight_fit      the same target, the light fitted from the scribbles
                   (method 'light'), against the code and weight baselines.
                   Both need a shaded head (`model.head.shading='sh'`).
Ground truth comes from the scene's source: a material dataset
(`data.materials`, all three families: any view re-renders exactly under
any part colors) or an appearance-variants dataset (`data.variants`,
in_distribution only). Protocol: at most `num_scribbles` pixels of one test
view colored with the target's ground truth; every method of
`edit.methods` that applies to the model; psnr/ssim over all test views
(the color head on geometry computed once, `edit.scoring.ViewCache`, for
edits that keep the geometry weights); drift on full renders of the
scribbled view and the view half the split away (`report['drift_views']`);
collateral on up to `num_collateral` training appearances. A method that
refuses the input (a part scribble no palette entry clearly holds) is
listed under the family's 'refused' with its message. Also `swap_psnr`
(test views under training appearances' codes) and `fit_half_psnr`
(NeRF-W, unseen looks). Only process 0 writes.
"""

import dataclasses
import os
from typing import Any

import jax
import numpy as np
import tqdm

from condnerf import codes as codes_lib
from condnerf import images
from condnerf import lighting
from condnerf import metrics
from condnerf import workdir as workdir_lib
from condnerf.data import materials
from condnerf.data import procedural
from condnerf.data import variants
from condnerf.edit import methods as methods_lib
from condnerf.edit import scoring
from condnerf.edit import scribbles

BLUE = (0.1, 0.25, 0.9)  # the out-of-distribution target color.
PART = 'seat'  # the part of the part-recolor family.
FAMILIES = ('in_distribution', 'ood_recolor', 'part_recolor',
            'relight_direction', 'relight_fit')
RELIGHT_FAMILIES = ('relight_direction', 'relight_fit')
# The held-out light of the relight families: the scene's default light
# turned this far about the up axis (from front-left to back-right, 63
# degrees from the default direction: outside any training cone below that).
RELIGHT_TURN_DEG = 120.0


class _Truth:
  """Ground truth of the test views under any look of the scene's source."""

  def __init__(self, scene, num_views):
    meta = scene.metadata
    self.num_views = num_views
    self.background = tuple(float(b) for b in scene.background)
    if 'materials' in meta:
      self.kind, self.source = 'materials', meta['source']
      self.table = materials.read_materials(self.source)
      self.light_cone_deg = float(meta.get('material_distributions', {}).get(
          'light_cone_deg', 0.0))
    elif meta.get('variants_source'):
      self.kind, self.source = 'variants', meta['variants_source']
      self.table = [np.asarray(a, np.float32) for a in meta['appearances']]
    else:
      raise scribbles.EditError(
          'The edit benchmark needs ground truth: a material dataset '
          '(experiments.make_chair --materials) or an appearance-variants '
          'dataset (experiments.make_variants).')
    if self.kind == 'variants' and not os.path.exists(self.source):
      raise scribbles.EditError(f'The variants source {self.source} does '
                                'not exist; the benchmark re-renders it.')

  @property
  def families(self):
    return FAMILIES if self.kind == 'materials' else FAMILIES[:1]

  def images(self, look):
    if self.kind == 'materials':
      return list(materials.ground_truth(
          self.source, 'test', look.part_colors, look.light, self.background,
          max_frames=self.num_views))
    return variants.ground_truth_images(self.source, 'test', look,
                                        self.background,
                                        max_frames=self.num_views)

  def relit(self, index):
    """Training look `index` under the held-out light (`RELIGHT_TURN_DEG`).

    Its intensity and ambient stay; the direction must lie outside the
    training cone (EditError otherwise).
    """
    look = self.table[index]
    turn = lighting.rotation_matrix((0.0, 0.0, 1.0), RELIGHT_TURN_DEG)
    direction = turn @ np.asarray(procedural.LIGHT_DIRECTION)
    cone = self.light_cone_deg
    if materials.in_light_cone(direction, cone):
      raise scribbles.EditError(
          f'The held-out light ({RELIGHT_TURN_DEG:g} degrees about up) lies '
          f'inside this dataset\'s training cone of {cone:g} degrees.')
    light = procedural.Light(direction=tuple(direction.tolist()),
                             intensity=look.light.intensity,
                             ambient=look.light.ambient)
    return materials.Material(part_colors=look.part_colors, light=light)

  def unseen(self, num, seed):
    """`num` looks from the training distribution no frame used."""
    if self.kind == 'materials':
      return materials.sample_appearances(num, seed)
    return list(variants.sample_appearances(num, seed))

  def recolored(self, index, parts):
    """Training look `index` with `parts` (names) painted `BLUE`."""
    look = self.table[index]
    colors = np.array(look.part_colors)
    for part in parts:
      colors[procedural.PARTS.index(part)] = BLUE
    return materials.Material(part_colors=colors, light=look.light)

  def part_coverage(self, part):
    """f32[N, H, W]: how much of each pixel the part covers, per view."""
    _, coverage = materials.part_maps(self.source, 'test', self.num_views)
    return coverage[..., procedural.PARTS.index(part)]


@dataclasses.dataclass
class Family:
  """One edit family's setup: what to reach, from where, with which pixels.

  Attributes:
    name: a key of `FAMILIES`.
    look: the target look (a `materials.Material` or (theta, s, g)).
    truth: list of f32[H, W, 3], every test view under the target.
    start: the code edits start from.
    view: the scribbled test view.
    batch: `scribbles.EditBatch` of the scribbles (target colors).
    keep: None, or an `EditBatch` of pixels that keep their look.
    outside: None, or bool[H, W] per view: the object outside the edited
      part (preservation is scored there).
    inside: None, or bool[H, W] per view: inside the part.
  """
  name: str
  look: Any
  truth: Any
  start: Any
  view: int
  batch: Any
  keep: Any = None
  outside: Any = None
  inside: Any = None


def family_setup(experiment, state, name, view=0, num_scribbles=64, seed=1):
  """The setup of one edit family on a trained run (see module docstring).

  Args:
    experiment: `experiment.Experiment` of a material or variants scene.
    state: trained `TrainState` (its codes give the starting code).
    name: a key of `FAMILIES`.
    view: the scribbled test view (part_recolor uses the test view that
      shows the most of the part).
    num_scribbles: at most this many scribbled (and kept) pixels.
    seed: seed of the in-distribution target and the pixels.
  Returns:
    `Family`.
  Raises:
    scribbles.EditError: the scene has no ground truth for the family, or
      its test views have no alpha.
  """
  frames = experiment.scene.test
  truth = _Truth(experiment.scene, len(frames))
  if name not in truth.families:
    raise scribbles.EditError(
        f'Edit family {name!r} needs ground truth this scene lacks; it '
        f'supports {list(truth.families)}.')
  alpha = frames.alphas
  if alpha is None:
    raise scribbles.EditError('The edit benchmark needs foreground masks '
                              '(alpha) on the test views.')
  table = jax.device_get(state.codes)
  start = codes_lib.row(table, 0)
  outside = inside = None
  if name == 'in_distribution':
    look = truth.unseen(1, 10_000 + seed)[0]
    start = codes_lib.mean_code(table)
    region = alpha[view] > 0.99
  elif name == 'ood_recolor':
    look = truth.recolored(0, procedural.PARTS)
    region = alpha[view] > 0.99
  elif name in RELIGHT_FAMILIES:
    look = truth.relit(0)
    region = alpha[view] > 0.99
  else:
    look = truth.recolored(0, [PART])
    cover = truth.part_coverage(PART)
    view = int(np.argmax((cover > 0.99).sum(axis=(1, 2))))
    region = cover[view] > 0.99
    inside = list(cover > 0.99)
    # The rest of the object (the background cannot change anyway).
    outside = [(c == 0.0) & (a > 0.5) for c, a in zip(cover, alpha)]
  images_ = truth.images(look)

  def batch(mask, pixel_seed):
    pixels = scribbles.sample_pixels(mask, num_scribbles, pixel_seed)
    return scribbles.scribble_batch(frames, [view], [pixels],
                                    [images_[view][tuple(pixels.T)]])

  keep = None
  if outside is not None:
    keep = batch(outside[view] & (alpha[view] > 0.99), seed + 1)
  return Family(name, look, images_, start, view, batch(region, seed), keep,
                outside, inside)


class Evaluator:
  """Runs every edit method on every family and scores them alike."""

  def __init__(self, experiment, view=0, num_scribbles=64, steps=200, seed=1,
               num_collateral=8, num_unseen=1, num_swap=2, fit_steps=100,
               fit_pixels=128, families=None, methods=None):
    """Prepares the protocol.

    Args:
      experiment: `experiment.Experiment` of a material or variants scene.
      view: index of the scribbled test view (the part family uses the test
        view that shows the most of the part).
      num_scribbles: at most this many scribbled pixels.
      steps: optimization steps of the gradient methods.
      seed: seed of the in-distribution target and the scribble pixels.
      num_collateral: training appearances checked for collateral damage.
      num_unseen: unseen looks of the NeRF-W fit protocol.
      num_swap: training appearances swapped onto every test view.
      fit_steps: Adam steps of the fit on the latent vector, after the
        palette and light are solved in closed form (`linear.solve_look`;
        on the demo 100 and 300 steps scored within 0.01 dB).
      fit_pixels: left-half pixels per view the fit draws. A code is 50
        numbers or fewer, and each step shades every drawn pixel: at 512 the
        fit took 88 s of a 10-minute demo, at 128 about 19 s.
      families: names to run (default: all the ground truth allows).
      methods: edit methods to compare (default: every one that applies).
    """
    self.experiment = experiment
    self.frames = experiment.scene.test
    self.truth = _Truth(experiment.scene, len(self.frames))
    self.view, self.num_scribbles, self.seed = view, num_scribbles, seed
    self.steps, self.fit_steps, self.fit_pixels = steps, fit_steps, fit_pixels
    self.num_collateral, self.num_unseen = num_collateral, num_unseen
    self.num_swap = num_swap
    shaded = experiment.model.needs_normals()
    self.families = tuple(families or [
        f for f in self.truth.families
        if shaded or f not in RELIGHT_FAMILIES])
    if not shaded and set(self.families) & set(RELIGHT_FAMILIES):
      methods_lib.check_shaded(experiment, 'The relight families')
    unknown = sorted(set(self.families) - set(self.truth.families))
    if unknown:
      raise scribbles.EditError(
          f'Edit families {unknown} need ground truth this scene lacks; '
          f'it supports {list(self.truth.families)}.')
    self.methods = tuple(methods or methods_lib.methods_for(experiment.model))

  def run(self, state, out_dir):
    """Runs the benchmark and writes the report.

    Args:
      state: trained `TrainState`.
      out_dir: output folder (report.json, PNGs); may be None on processes
        other than 0, which write nothing.
    Returns:
      The report dict.
    """
    exp = self.experiment
    is_main = jax.process_index() == 0
    if is_main:
      os.makedirs(out_dir, exist_ok=True)
    table = jax.device_get(state.codes)
    others = [codes_lib.row(table, k) for k in range(
        min(self.num_collateral, codes_lib.num_rows(table)))]
    trained = methods_lib.unedited(state)
    views = range(len(self.frames))
    cache = scoring.ViewCache(exp, state.params, self.frames, views)
    # Drift: full renders of the scribbled view and the one most unlike it.
    drift_views = sorted({self.view, (self.view + len(views) // 2) %
                          len(views)})
    geometry = (self.frames, drift_views, scoring.render_views(
        exp, trained, self.frames, drift_views))
    others = (others, [cache.render(exp, trained, code, [self.view])[0]
                       for code in others])
    shared = (cache, geometry, others)
    report = {'train_step': int(jax.device_get(state.step)), 'families': {}}
    for name in self.families:
      setup = family_setup(exp, state, name, self.view, self.num_scribbles,
                           self.seed)
      report['families'][name] = self._family(state, setup, shared,
                                              out_dir if is_main else None)
    report['drift_views'] = drift_views
    report['swap_psnr'] = self._swap_psnr(state, table, cache)
    report['fit_half_psnr'] = self._fit_half_psnr(state, cache)
    if is_main:
      workdir_lib.write_json(os.path.join(out_dir, 'report.json'), report,
                             sort_keys=False)
    return report

  def _family(self, state, setup, shared, out_dir):
    """Every method on one family, scored; strips of palette and code.

    `shared` is (the `scoring.ViewCache` of the test views, the geometry
    reference of `scoring.score`, (codes of other appearances, their
    unedited renders on the collateral view)).
    """
    exp = self.experiment
    cache, geometry, others = shared
    original = methods_lib.unedited(state, setup.start)
    before = cache.render(exp, original)
    family = {'target': _describe(setup.look),
              'scribble_view': setup.view,
              'num_scribbles': int(len(setup.batch.target)),
              'num_keep': (0 if setup.keep is None
                           else int(len(setup.keep.target))),
              'methods': {}}
    names = _family_methods(setup.name, self.methods)
    if setup.name == 'relight_direction':
      family['num_scribbles'] = 0  # the direction alone, no pixels.
    for method in tqdm.tqdm(names, desc=f'edit {setup.name}',
                            disable=jax.process_index() != 0):
      try:
        if method == 'light_set':
          result = methods_lib.relight(
              exp, state, setup.start,
              direction=setup.look.light.direction)
        else:
          result = methods_lib.run_edit(exp, state, setup.batch, method,
                                        steps=self.steps,
                                        init_code=setup.start,
                                        keep=setup.keep)
      except scribbles.EditError as e:  # a part no entry clearly holds.
        family.setdefault('refused', {})[method] = str(e)
        continue
      row, after = scoring.score(exp, original, result, cache, setup.truth,
                                 before, geometry, others[0], others[1],
                                 self.view, setup.outside)
      if setup.inside is not None:
        row['part_psnr'] = _masked_psnr(after, setup.truth, setup.inside)
      row['details'] = result.details
      family['methods'][method] = row
      if out_dir and method in ('palette', 'palette_part', 'code', 'light',
                                'light_set'):
        self._save_strips(out_dir, setup.name, method, before, after,
                          setup.truth)
    return family

  def _save_strips(self, out_dir, family, method, before, after, gts):
    """before | after | ground truth of every test view, one PNG each."""
    for i, (b, a, gt) in enumerate(zip(before, after, gts)):
      images.save_png(
          os.path.join(out_dir, f'{family}_{method}_{i:03d}.png'),
          np.concatenate([b, a, gt], axis=1))

  def _swap_psnr(self, state, table, cache):
    """Mean PSNR of test views rendered with training appearances' codes."""
    scores = []
    for k in range(min(len(self.truth.table), codes_lib.num_rows(table),
                       self.num_swap)):
      gts = self.truth.images(self.truth.table[k])
      look = methods_lib.unedited(state, codes_lib.row(table, k))
      renders = cache.render(self.experiment, look)
      scores += [_psnr(r, gt) for r, gt in zip(renders, gts)]
    return float(np.mean(scores)) if scores else None

  def _fit_half_psnr(self, state, cache):
    """NeRF-W: fit on the left half of each test view, score the right."""
    scores = []
    for look in self.truth.unseen(1 + self.num_unseen,
                                  10_000 + self.seed)[1:]:
      per_view, _, _ = scoring.nerfw(
          self.experiment, state, self.frames, images=self.truth.images(look),
          steps=self.fit_steps, max_pixels=self.fit_pixels, cache=cache)
      scores += per_view
    return float(np.mean(scores)) if scores else None


def _family_methods(family, methods):
  """The methods a family runs, in the order of `methods`.

  relight_direction has no pixels: its only method sets the light from the
  direction (`light_set`). relight_fit runs the light fit, the code and
  every weight-level baseline; the light fit runs nowhere else, and the
  part fit only on part_recolor.
  """
  if family == 'relight_direction':
    return ['light_set']
  skip = set(methods_lib.PALETTE_METHODS if family == 'relight_fit' else
             methods_lib.LIGHT_METHODS)
  if family != 'part_recolor':
    skip.add('palette_part')
  return [m for m in methods if m not in skip]


def _psnr(img, ref, mask=None):
  return float(metrics.psnr(img, ref, mask=mask))


def _masked_psnr(renders, gts, masks):
  return float(np.mean([_psnr(r, gt, m)
                        for r, gt, m in zip(renders, gts, masks)]))


def _describe(look):
  """A JSON description of a target look."""
  if isinstance(look, materials.Material):
    return look.to_json()
  return {'appearance': np.asarray(look).tolist()}
