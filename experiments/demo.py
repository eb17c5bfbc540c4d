r"""The main job: procedural chair -> its looks -> train -> evaluate -> edit.

  python -m experiments.demo --workdir=runs/demo [--config=...:runlocal]
Writes under --workdir: data/ (the generated scene), checkpoints/,
metrics.jsonl, tb/, val/, eval/ (metrics.json, PNGs, contact_sheet.png), and
edit/: the edit benchmark (report.json: every family and method's PSNR
against ground truth, preservation, drift, time and collateral damage, and
before | after | ground truth strips) and edit/runs/recolor_blue/, the
motivating example — the red chair made blue from 64 scribbled pixels of
one view.
Prints the report as a table.
"""

# pylint: disable=g-bad-import-order
from experiments import cli  # first: sets up CPU devices before jax loads.

import os
import time

from absl import app
from absl import flags
from ml_collections import config_flags

import jax
import numpy as np

from condnerf import experiment as experiment_lib
from condnerf import images
from condnerf import runs
from condnerf import train_lib
from condnerf.edit import operations
from condnerf.edit import scribbles
from condnerf.evaluators import image_metrics

_CONFIG = config_flags.DEFINE_config_file(
    'config', os.path.join(os.path.dirname(__file__), 'configs', 'demo.py'),
    'Demo config file, optionally with :args.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', 'runs/demo', 'Output folder.')


def ensure_scene(config, workdir):
  """Generates the chair's appearance dataset under workdir/data unless present.

  Returns:
    The dataset path.
  """
  return runs.ensure_chair_scene(os.path.join(workdir, 'data'),
                                 seed=config.seed,
                                 **config.data.procedural.to_dict())


def scribble_mask(scene, view, count, seed):
  """bool[H, W]: `count` random foreground pixels of a test view."""
  alpha = scene.test.alphas[view]
  pixels = scribbles.sample_pixels(alpha > 0.99, count, seed)
  mask = np.zeros(alpha.shape, bool)
  mask[tuple(pixels.T)] = True
  return mask


def recolor_blue(config, workdir):
  """The motivating edit through --mode=edit: the chair made blue from the
  benchmark's scribbled pixels of one view.

  Returns:
    The edit's output folder.
  """
  exp, _ = experiment_lib.load_trained(config, workdir)
  mask_path = os.path.join(workdir, 'edit', 'scribble_mask.png')
  if jax.process_index() == 0:
    images.save_png(mask_path, scribble_mask(
        exp.scene, config.edit.views[0], config.edit.scribbles,
        config.edit.seed).astype(np.float32))
  method = 'palette' if exp.model.palette_size() else 'code'
  with config.unlocked():
    config.edit.update(operation='recolor', name='recolor_blue',
                       mask=mask_path, color='#2f5cff', method=method)
  return operations.run(config, workdir)


def report_table(report):
  """The edit report as a text table: one row per family and method."""
  def fmt(value, spec):
    return '-' if value is None else format(value, spec)
  lines = [f"  {'family':<19}{'method':<13}{'PSNR':>7}{'keep':>7}"
           f"{'drift':>8}{'others':>9}{'seconds':>9}{'params':>8}"]
  for family, entry in report['families'].items():
    for method, row in entry['methods'].items():
      others = ('same' if row['collateral_identical']
                else fmt(row['collateral_psnr'], '.1f'))
      lines.append(
          f"  {family:<19}{method:<13}{row['psnr']:>7.2f}"
          f"{fmt(row['preservation_psnr'], '.1f'):>7}"
          f"{row['drift_opacity']:>8.2g}{others:>9}{row['seconds']:>9.3f}"
          f"{row['num_params']:>8}")
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config, workdir = _CONFIG.value, _WORKDIR.value
  start = time.time()
  with config.unlocked():
    config.data.path = ensure_scene(config, workdir)
  # Training ends with config.evals: the image metrics (eval/) and the edit
  # benchmark (edit/).
  evaluated = train_lib.train_and_evaluate(config, workdir)
  results, report = evaluated['eval'], evaluated['edit']
  recolor_dir = recolor_blue(config, workdir)
  minutes = (time.time() - start) / 60
  print(f'\nDemo finished in {minutes:.1f} min: '
        f'{image_metrics.summary(results)}.')
  print(f'  metrics:       {workdir}/eval/metrics.json')
  print(f'  renders:       {workdir}/eval/rgb_*.png, depth_*.png, acc_*.png')
  print(f'  contact sheet: {workdir}/eval/contact_sheet.png')
  print(f'  checkpoints:   {workdir}/checkpoints/')
  print(f'  edit report:   {workdir}/edit/report.json (PSNR against ground '
        'truth on every test view; keep = PSNR outside the edited part; '
        'others = other looks after the edit)')
  print(report_table(report))
  print(f'  blue chair:    {recolor_dir}/after_*.png')


if __name__ == '__main__':
  cli.run(main)
