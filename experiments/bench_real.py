"""`experiments.bench --suite=real`: real captures against the clock.

Each scene trains its own experiment config for the same wall-clock budget
(`train.minutes`, so the learning rate decays over it) and is scored on its
test views at evenly spaced points of that clock, as the lego suite does:
  fern               experiments/configs/llff.py:fast (NDC, LLFF protocol)
  statue_of_liberty  experiments/configs/wild.py (one code per photo); also
                     the NeRF-W half-image PSNR of its held-out photos at
                     every point of the curve
  ethiopian_head     experiments/configs/unbounded.py:fast (contraction)
Per scene the JSON holds the curve (`[{minutes, step, psnr, ssim}]`), the
config and its overrides, throughput and memory; beside --out go a PNG of
the curve, a PNG of test view 0 (render | truth | depth) and a GIF orbit
(`config.render`'s path, test view 0's code).
"""

import functools
import os

from absl import logging

import numpy as np

from condnerf import codes as codes_lib
from condnerf import experiment as experiment_lib
from condnerf import gallery
from condnerf import images
from condnerf.configs import common
from condnerf.data import sampler as sampler_lib
from condnerf.edit import scoring
from experiments import bench_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCENES = {
    'fern': 'experiments/configs/llff.py:fast',
    'statue_of_liberty': 'experiments/configs/wild.py',
    'ethiopian_head': 'experiments/configs/unbounded.py:fast',
}


def scene_config(name, data_root, minutes, overrides):
  """(config, applied overrides) of one scene of `SCENES`."""
  if name not in SCENES:
    raise ValueError(f'Unknown real scene {name!r}; choose from '
                     f'{sorted(SCENES)}.')
  path = os.path.join(data_root, name)
  if not os.path.isdir(path):
    raise ValueError(f'{path} is not a folder; pass --data_root, the folder '
                     f'that holds {name}/ (e.g. ../shared/data).')
  applied = {'data.path': path, 'train.minutes': float(minutes),
             'train.steps': 10_000_000, 'train.val_every': 0}
  applied.update(overrides)
  config = common.config_from_file(SCENES[name], root=REPO)
  return common.with_overrides(config, applied), applied


def _renders(trainer, out_prefix):
  """Test view 0 (render | truth | depth) as PNG and an orbit as GIF."""
  exp, state = trainer.exp, trainer.state
  frames = exp.scene.test
  out = exp.render(state, sampler_lib.image_rays(frames, 0))
  sheet = images.contact_sheet([[out['rgb'], frames.images[0],
                                 images.colorize_depth(out['depth'],
                                                       out['acc'])]],
                               labels=[['render', 'truth', 'depth']])
  images.save_png(out_prefix + '_view0.png', sheet)
  code = codes_lib.row(state.codes, max(int(frames.appearance_ids[0]), 0))
  orbit = gallery.orbit(exp, state, code)
  images.save_gif(out_prefix + '_orbit.gif', orbit)
  return {'view0_png': out_prefix + '_view0.png',
          'orbit_gif': out_prefix + '_orbit.gif'}


def _nerfw(trainer, config, frames):
  """The NeRF-W half-image PSNR of every test photo, as `--mode=edit
  --config.edit.operation=nerfw` scores it: {nerfw_half_psnr (mean, dB),
  nerfw_per_view}."""
  scores, _, _ = scoring.nerfw(
      trainer.exp, trainer.state, frames, steps=config.edit.steps,
      learning_rate=config.edit.learning_rate or 5e-2)
  logging.info('NeRF-W half-image PSNR %.2f dB.', np.mean(scores))
  return {'nerfw_half_psnr': float(np.mean(scores)), 'nerfw_per_view': scores}


def run_scene(name, config, applied, points, eval_images, seed, out_prefix):
  """Trains one scene with its `scene_config`; returns its JSON entry."""
  minutes = config.train.minutes
  trainer = bench_lib.Trainer(experiment_lib.build_experiment(config), seed)
  frames = trainer.exp.scene.test
  count = max(1, min(eval_images, len(frames)))
  views = np.unique(np.linspace(0, len(frames) - 1, count).round()).astype(
      int)
  score = (functools.partial(_nerfw, config=config, frames=frames)
           if name == 'statue_of_liberty' else None)
  curve, step_times = bench_lib.train_curve(trainer, views, minutes, points,
                                            score)
  bench_lib.plot_curve(curve, out_prefix + '_curve.png', name)
  entry = {'config_file': SCENES[name], 'overrides': applied,
           'eval_views': views.tolist(), 'curve': curve,
           'compile_seconds': trainer.compile_seconds,
           'train_rays_per_s': (trainer.batch_size / float(
               np.median(step_times)) if step_times else None),
           'curve_png': out_prefix + '_curve.png'}
  if score:  # the final point's, at the top level as before.
    entry.update({k: curve[-1][k] for k in ('nerfw_half_psnr',
                                            'nerfw_per_view')})
  entry.update(_renders(trainer, out_prefix))
  entry['peak_rss_mb'] = bench_lib.peak_rss_mb()
  return entry
