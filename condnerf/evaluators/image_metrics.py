"""Per-image PSNR/SSIM of a split, with rendered PNGs and a contact sheet.

Owns the files under `<workdir>/eval/`: `metrics.json` =
`{"psnr": mean, "ssim": mean, "per_image": [{"name", "psnr", "ssim"}...]}`,
and, when asked, `rgb_NNN.png`, `depth_NNN.png`, `acc_NNN.png` and
`contact_sheet.png` (ground truth | render | depth rows). Only process 0
writes.
"""

import json
import os
import time

import jax
import numpy as np
import tqdm

from condnerf import images
from condnerf import metrics as metrics_lib
from condnerf.data import sampler as sampler_lib

_SHEET_ROWS = 8


class Evaluator:
  """Renders every frame of a split with its own code and scores it."""

  def __init__(self, experiment, split='test', max_images=0,
               save_images=True):
    self.experiment = experiment
    frames = getattr(experiment.scene, split)
    if max_images:
      frames = frames.subset(range(min(max_images, len(frames))))
    self.frames = frames
    self.split = split
    self.save_images = save_images

  def run(self, state, out_dir):
    """Evaluates `state` and writes the outputs.

    Args:
      state: `train_lib.TrainState` (params and codes are used).
      out_dir: folder for metrics.json and PNGs.
    Returns:
      dict with psnr, ssim (means) and per_image list.
    """
    is_main = jax.process_index() == 0
    if is_main:
      os.makedirs(out_dir, exist_ok=True)
    per_image, sheet = [], []
    start = time.time()
    for i in tqdm.trange(len(self.frames), desc=f'eval {self.split}',
                         disable=not is_main, dynamic_ncols=True):
      out = self.experiment.render(state,
                                   sampler_lib.image_rays(self.frames, i))
      gt = self.frames.images[i]
      per_image.append({
          'name': self.frames.names[i],
          'psnr': float(metrics_lib.psnr(out['rgb'], gt)),
          'ssim': float(metrics_lib.ssim(out['rgb'], gt)),
      })
      if is_main and self.save_images:
        depth = images.colorize_depth(out['depth'], out['acc'],
                                      self.frames.near, self.frames.far)
        images.save_png(os.path.join(out_dir, f'rgb_{i:03d}.png'),
                        out['rgb'])
        images.save_png(os.path.join(out_dir, f'depth_{i:03d}.png'), depth)
        images.save_png(os.path.join(out_dir, f'acc_{i:03d}.png'), out['acc'])
        if len(sheet) < _SHEET_ROWS:
          sheet.append([gt, out['rgb'], depth])
    results = {
        'psnr': float(np.mean([r['psnr'] for r in per_image])),
        'ssim': float(np.mean([r['ssim'] for r in per_image])),
        'num_images': len(per_image),
        'seconds': time.time() - start,
        'per_image': per_image,
    }
    if is_main:
      if sheet:
        images.save_png(os.path.join(out_dir, 'contact_sheet.png'),
                        images.contact_sheet(sheet))
      tmp = os.path.join(out_dir, 'metrics.json.tmp')
      with open(tmp, 'w') as f:
        json.dump(results, f, indent=2)
      os.replace(tmp, os.path.join(out_dir, 'metrics.json'))
    return results
