r"""The main job: procedural chair -> appearance variants -> train -> evaluate.

  python -m experiments.demo --workdir=runs/demo [--config=...:runlocal]
Writes under --workdir: data/ (the generated scene), checkpoints/,
metrics.jsonl, tb/, val/, eval/ (metrics.json, PNGs, contact_sheet.png), and
edit/: the edit benchmark (report.json: every method's PSNR, drift, time and
collateral damage) and edit/recolor_blue/, the motivating example — the red
chair made blue from 64 scribbled pixels of one view.
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

from condnerf import edit_lib
from condnerf import experiment as experiment_lib
from condnerf import images
from condnerf import runs
from condnerf import train_lib
from condnerf.evaluators import edit_benchmark

_CONFIG = config_flags.DEFINE_config_file(
    'config', os.path.join(os.path.dirname(__file__), 'configs', 'demo.py'),
    'Demo config file, optionally with :args.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', 'runs/demo', 'Output folder.')


def ensure_scene(config, workdir):
  """Generates the chair and its variants under workdir/data unless present.

  Returns:
    The variants dataset path.
  """
  return runs.ensure_chair_scene(os.path.join(workdir, 'data'),
                                 seed=config.seed,
                                 **config.data.procedural.to_dict())


def scribble_mask(scene, view, count, seed):
  """bool[H, W]: `count` random foreground pixels of a test view."""
  alpha = scene.test.alphas[view]
  pixels = np.argwhere(alpha > 0.99)
  pick = np.random.default_rng(seed).choice(len(pixels), count,
                                            replace=False)
  mask = np.zeros(alpha.shape, bool)
  mask[tuple(pixels[pick].T)] = True
  return mask


def run_edits(config, workdir):
  """The edit benchmark, then the blue-chair recolor through --mode=edit."""
  exp, state = experiment_lib.load_trained(config, workdir)
  source = exp.scene.metadata['variants_source']
  report = edit_benchmark.Evaluator(
      exp, source, view=config.edit.views[0],
      num_scribbles=config.edit.scribbles, steps=config.edit.steps,
      seed=config.edit.seed).run(state, os.path.join(workdir, 'edit'))
  mask_path = os.path.join(workdir, 'edit', 'scribble_mask.png')
  if jax.process_index() == 0:
    images.save_png(mask_path, scribble_mask(
        exp.scene, config.edit.views[0], config.edit.scribbles,
        config.edit.seed).astype(np.float32))
  with config.unlocked():
    config.edit.update(operation='recolor', name='recolor_blue',
                       mask=mask_path, color='#2f5cff', method='code')
  recolor_dir = edit_lib.run(config, workdir)
  return report, recolor_dir


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config, workdir = _CONFIG.value, _WORKDIR.value
  start = time.time()
  with config.unlocked():
    config.data.path = ensure_scene(config, workdir)
  results = train_lib.train_and_evaluate(config, workdir)
  report, recolor_dir = run_edits(config, workdir)
  minutes = (time.time() - start) / 60
  print(f'\nDemo finished in {minutes:.1f} min. Test PSNR '
        f"{results['psnr']:.2f} dB, SSIM {results['ssim']:.4f} over "
        f"{results['num_images']} views.")
  print(f'  metrics:       {workdir}/eval/metrics.json')
  print(f'  renders:       {workdir}/eval/rgb_*.png, depth_*.png, acc_*.png')
  print(f'  contact sheet: {workdir}/eval/contact_sheet.png')
  print(f'  checkpoints:   {workdir}/checkpoints/')
  print(f'  edit report:   {workdir}/edit/report.json')
  for method, row in report['methods'].items():
    print(f"    {method:<11} PSNR {row['psnr']:.2f} dB, "
          f"drift opacity {row['drift_opacity']:.3g}, "
          f"{row['seconds']:.2f} s")
  print(f'  blue chair:    {recolor_dir}/after_*.png')


if __name__ == '__main__':
  cli.run(main)
