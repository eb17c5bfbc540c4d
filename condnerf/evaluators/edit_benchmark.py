"""The edit benchmark of DESIGN.md on an appearance-variants scene.

Owns `Evaluator(experiment, source, ...).run(state, out_dir)`, which writes
`out_dir/report.json`, before/after PNGs of every test view and the edited
code. The protocol:
  * target: an appearance `(theta, s, g)` drawn from a seed no training frame
    used; ground truth for every test view comes from the source RGBA scene;
  * scribbles: at most `num_scribbles` foreground pixels of one test view,
    colored with the target's ground truth;
  * each method of `edit_baselines.METHODS` optimizes from the mean code;
  * psnr/ssim: all test views against their target ground truth;
  * drift_opacity/drift_depth: max |change| over test views, rendered with
    the same code before and after the edit;
  * collateral_psnr: PSNR between renders of up to 8 training appearances
    (their own codes) before and after the edit; None when identical;
  * swap_psnr: test view j rendered with the code of training appearance k,
    against ground truth of view j under appearance k;
  * fit_half_psnr: NeRF-W protocol, codes fitted on the left half of test
    views under unseen appearances, PSNR on the right half.
Only process 0 writes.
"""

import os

import jax
import numpy as np
import tqdm

from condnerf import edit_baselines
from condnerf import editing
from condnerf import images
from condnerf import metrics as metrics_lib
from condnerf import workdir as workdir_lib
from condnerf.data import variants


class Evaluator:
  """Runs every edit method on one scribble set and scores them alike."""

  def __init__(self, experiment, source, target=None, view=0,
               num_scribbles=64, methods=edit_baselines.METHODS, steps=200,
               seed=1, num_collateral=8, num_unseen=1, num_swap=2,
               fit_steps=300):
    """Prepares the protocol.

    Args:
      experiment: `experiment_lib.Experiment` of a variants scene whose metadata
        has the `appearances` table (the scene `make_variants` wrote).
      source: folder of the plain source scene the variants came from.
      target: (theta, s, g) to reach, or None to draw one from `seed`.
      view: index of the scribbled test view.
      num_scribbles: at most this many scribbled pixels.
      methods: edit methods to compare.
      steps: optimization steps per method.
      seed: seed of the target appearance and the scribble pixels.
      num_collateral: training appearances checked for collateral damage.
      num_unseen: unseen appearances of the NeRF-W fit protocol.
      num_swap: training appearances whose codes are swapped onto every test
        view for swap_psnr.
      fit_steps: optimization steps of the fit.
    """
    self.experiment = experiment
    self.source = source
    scene = experiment.scene
    self.frames = scene.test
    self.view = view
    self.methods = tuple(methods)
    self.steps = steps
    self.fit_steps = fit_steps
    self.seed = seed
    self.num_collateral = num_collateral
    self.num_swap = num_swap
    drawn = variants.sample_appearances(1 + num_unseen, 10_000 + seed)
    self.target = np.asarray(drawn[0] if target is None else target,
                             np.float32)
    self.unseen = drawn[1:]
    self.num_scribbles = num_scribbles
    self.background = tuple(float(b) for b in scene.background)

  def _ground_truth(self, appearance):
    return variants.ground_truth_images(
        self.source, 'test', appearance, self.background,
        max_frames=len(self.frames))

  def _scribbles(self, target_images):
    frames = self.frames
    if frames.alphas is None:
      raise editing.EditError('The edit benchmark needs foreground masks '
                              '(alpha) on the test views.')
    alpha = frames.alphas[self.view]
    pixels = np.argwhere(alpha > 0.99)
    rng = np.random.default_rng(self.seed)
    take = rng.choice(len(pixels), min(self.num_scribbles, len(pixels)),
                      replace=False)
    pixels = pixels[np.sort(take)]
    colors = target_images[self.view][pixels[:, 0], pixels[:, 1]]
    return editing.scribble_batch(frames, [self.view], [pixels], [colors])

  def _render_all(self, result, code=None):
    return [result.render(self.experiment,
                          editing.view_rays(self.frames, i), code)
            for i in range(len(self.frames))]

  def run(self, state, out_dir):
    """Runs the benchmark and writes the report.

    Args:
      state: trained `TrainState`.
      out_dir: output folder (report.json, PNGs, codes.npz); may be None on
        processes other than 0, which write nothing.
    Returns:
      The report dict.
    """
    exp = self.experiment
    is_main = jax.process_index() == 0
    if is_main:
      os.makedirs(out_dir, exist_ok=True)
    target_images = self._ground_truth(self.target)
    batch = self._scribbles(target_images)
    table = np.asarray(jax.device_get(state.codes['appearance']))
    mean_code = table.mean(0)
    original = edit_baselines.EditResult('none', mean_code, state.params,
                                         None, None)
    before = self._render_all(original)
    num_codes = min(self.num_collateral, len(table))
    collateral_view = editing.view_rays(self.frames, self.view)
    collateral_before = [original.render(exp, collateral_view, table[k])
                         for k in range(num_codes)]
    report = {'target_appearance': self.target.tolist(),
              'scribble_view': self.view,
              'num_scribbles': int(len(batch.target)), 'methods': {}}
    codes_out = {}
    for method in tqdm.tqdm(self.methods, desc='edit methods',
                            disable=not is_main):
      result = edit_baselines.run_edit(exp, state, batch, method,
                                       steps=self.steps)
      after = self._render_all(result)
      psnrs = [float(metrics_lib.psnr(a['rgb'], gt))
               for a, gt in zip(after, target_images)]
      ssims = [float(metrics_lib.ssim(a['rgb'], gt))
               for a, gt in zip(after, target_images)]
      drift_opacity = max(float(np.max(np.abs(a['acc'] - b['acc'])))
                          for a, b in zip(after, before))
      drift_depth = max(float(np.max(np.abs(a['depth'] - b['depth'])))
                        for a, b in zip(after, before))
      collateral = []
      for k in range(num_codes):
        redo = result.render(exp, collateral_view, table[k])['rgb']
        if not np.array_equal(redo, collateral_before[k]['rgb']):
          collateral.append(float(metrics_lib.psnr(
              redo, collateral_before[k]['rgb'])))
      report['methods'][method] = {
          'psnr': float(np.mean(psnrs)), 'ssim': float(np.mean(ssims)),
          'drift_opacity': drift_opacity, 'drift_depth': drift_depth,
          'seconds': result.info.seconds,
          'compile_seconds': result.info.compile_seconds,
          'steps': result.info.steps,
          'loss_start': result.info.loss_start,
          'loss_end': result.info.loss_end,
          'collateral_psnr': (float(np.mean(collateral)) if collateral
                              else None),
      }
      codes_out[method] = result.code
      if is_main and method == 'code':
        for i, (b, a, gt) in enumerate(zip(before, after, target_images)):
          images.save_png(os.path.join(out_dir, f'view_{i:03d}.png'),
                          np.concatenate([b['rgb'], a['rgb'], gt], axis=1))
    report['swap_psnr'] = self._swap_psnr(state, table)
    report['fit_half_psnr'] = self._fit_half_psnr(state)
    if is_main:
      np.savez(os.path.join(out_dir, 'codes.npz'), **codes_out)
      workdir_lib.write_json(os.path.join(out_dir, 'report.json'), report,
                             sort_keys=False)
    return report

  def _swap_psnr(self, state, table):
    """Mean PSNR of test views rendered with training appearances' codes."""
    appearances = self.experiment.scene.metadata.get('appearances')
    if appearances is None:
      return None
    original = edit_baselines.EditResult('none', None, state.params, None,
                                         None)
    scores = []
    for k in range(min(len(appearances), len(table), self.num_swap)):
      gts = self._ground_truth(np.asarray(appearances[k], np.float32))
      for j in range(len(self.frames)):
        out = original.render(self.experiment,
                              editing.view_rays(self.frames, j), table[k])
        scores.append(float(metrics_lib.psnr(out['rgb'], gts[j])))
    return float(np.mean(scores))

  def _fit_half_psnr(self, state):
    """NeRF-W: fit on the left half of each test view, score the right."""
    scores = []
    for appearance in self.unseen:
      gts = self._ground_truth(appearance)
      height, width = gts[0].shape[:2]
      left = editing.half_mask(height, width, 'left')
      views = list(range(len(self.frames)))
      codes, _ = editing.fit(self.experiment, state, self.frames, views,
                             masks=[left] * len(views), images=gts,
                             steps=self.fit_steps, max_pixels=512)
      right = editing.half_mask(height, width, 'right')
      for j in views:
        out = editing.render_with_code(self.experiment, state,
                                       editing.view_rays(self.frames, j),
                                       codes[j])
        scores.append(float(metrics_lib.psnr(out['rgb'], gts[j],
                                             mask=right)))
    return float(np.mean(scores)) if scores else None
