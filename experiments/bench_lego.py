"""The lego suite of `experiments.bench`: one config's PSNR curve on a
Blender scene, and optionally a reference config's in the same process.

`run` trains `name` (and first `reference`, when given) on the scene for
`minutes` of training time each, and returns the suite's JSON document: the
config's figures at the top level, the reference's under `reference`, and
`ratios` of the config over the reference (training rays/s, field
evaluations/s, and the PSNR difference at the end). Both are measured by the
same process on the same machine, so their ratio holds where absolute
figures move with the machine.
"""

import os

from absl import logging
import numpy as np

from condnerf import experiment as experiment_lib
from experiments import bench_lib


def train_one(name, data, minutes, points, eval_images, seed, batch_size,
              overrides, plot):
  """Trains config `name` for `minutes`; its curve and rates (dict)."""
  overrides = {'train.minutes': minutes, **overrides}
  config, applied = bench_lib.make_config(name, data, '', batch_size,
                                          overrides)
  trainer = bench_lib.Trainer(experiment_lib.build_experiment(config), seed)
  frames = trainer.exp.scene.test
  count = max(1, min(eval_images, len(frames)))
  views = np.unique(np.linspace(0, len(frames) - 1, count).round()).astype(
      int)
  logging.info('lego: %s for %.1f min, %d evaluations of %d views.', name,
               minutes, points, len(views))
  curve, step_times = bench_lib.train_curve(trainer, views, minutes,
                                            max(1, points))
  bench_lib.plot_curve(curve, plot, f'{name} on {os.path.basename(data)}')
  step_ms = rays_per_s = None
  if step_times:
    step_ms = 1e3 * float(np.median(step_times))
    rays_per_s = 1e3 * trainer.batch_size / step_ms
  seconds = trainer.clock.shared
  steps = curve[-1]['step'] if curve else 0
  return {
      'config': name, 'config_file': bench_lib.config_file(name),
      'overrides': applied, 'eval_views': views.tolist(),
      'batch_size': trainer.batch_size,
      'compile_seconds': trainer.compile_seconds,
      'train_step_ms': step_ms, 'train_rays_per_s': rays_per_s,
      # Over the whole budget (steps x rays / training seconds), which
      # counts the occupancy grid's updates that the median step skips.
      'mean_train_rays_per_s': steps * trainer.batch_size / max(1e-9,
                                                                seconds),
      'samples_per_ray': curve[-1]['samples_per_ray'] if curve else None,
      'curve': curve, 'plot': os.path.abspath(plot),
  }


def run(name, data, minutes, points, eval_images, seed, batch_size,
        overrides, out, reference=''):
  """The lego suite's document (see the module doc)."""
  stem = os.path.splitext(out)[0] if out else 'bench_curve'
  result = {'suite': 'lego', 'env': bench_lib.environment(), 'data': data,
            'minutes': minutes}
  ref = None
  if reference:
    ref = train_one(reference, data, minutes, points, eval_images, seed,
                    batch_size, overrides, f'{stem}_{reference}.png')
  mine = train_one(name, data, minutes, points, eval_images, seed,
                   batch_size, overrides, stem + '.png')
  result.update(mine)
  if ref is not None:
    result['reference'] = ref

    def ratio(key):
      a, b = mine.get(key), ref.get(key)
      return a / b if a and b else None

    result['ratios'] = {
        'train_rays_per_s': ratio('train_rays_per_s'),
        'mean_train_rays_per_s': ratio('mean_train_rays_per_s'),
        'field_evals_per_s': ratio_of_last(mine, ref, 'field_evals_per_s'),
        'psnr_db_difference': (mine['curve'][-1]['psnr'] -
                               ref['curve'][-1]['psnr']),
    }
  result['peak_rss_mb'] = bench_lib.peak_rss_mb()
  result['peak_device_mb'] = bench_lib.peak_device_mb()
  return result


def ratio_of_last(mine, ref, key):
  """`key` of the last curve point of `mine` over that of `ref`."""
  a, b = mine['curve'][-1].get(key), ref['curve'][-1].get(key)
  return a / b if a and b else None
