"""Per-image PSNR / SSIM / LPIPS of a split, with PNGs and a contact sheet.

Owns the files under its output folder (`<workdir>/eval/` for the default
`config.evals.eval`): `metrics.json` = `{"psnr": mean, "ssim": mean,
"lpips": mean, "lpips_net", "split", "num_images", "seconds", "per_image":
[{"index", "name", "psnr", "ssim", "lpips"}...]}`, `per_image.csv` with
the same rows, and, when asked, `rgb_NNN.png`, `depth_NNN.png`,
`acc_NNN.png` and `contact_sheet.png` (ground truth | render | depth rows),
NNN being the frame's position in the split. LPIPS (`metrics.lpips`, AlexNet unless
`lpips='vgg'`) is None for images smaller than its network accepts (31 px
for AlexNet) and when `lpips=''`.

Multi-process: the split is shared out across processes (`data.base.Share`:
process p holds frames p, p + P, ...), each renders its frames on its own
devices, and every round of P frames is gathered to process 0, which alone
writes. A process without a frame in the last round contributes nothing, so
no frame is dropped or counted twice and the result equals, image by image, a
single-process evaluation.
"""

import csv
import os
import time

import jax
import numpy as np
import tqdm

from condnerf import errors
from condnerf import images
from condnerf import inference
from condnerf import metrics as metrics_lib
from condnerf import parallel
from condnerf import workdir as workdir_lib
from condnerf.data import base
from condnerf.data import sampler as sampler_lib

_SHEET_ROWS = 8


def process_share(frames, max_images=0):
  """This process's frames of a split, tagged with their positions.

  Args:
    frames: a whole split, or a share a loader already read with
      `base.Share(jax.process_index(), jax.process_count(), max_images)`.
    max_images: evaluate only the first N frames of the split (0 = all).
  Returns:
    `base.Frames` with `global_indices` and `split_size` set.
  Raises:
    ValueError: `frames` is a share of another process layout.
  """
  share = base.Share(jax.process_index(), jax.process_count(), max_images)
  if frames.split_ids is not None:
    raise errors.ConfigError(
        'The training split is sharded over the processes '
        '(train.frame_shards > 1), so no process holds the frames it would '
        'evaluate; evaluate the training split afterwards with --mode=eval, '
        'or choose eval.split=test.')
  if frames.global_indices is None:
    idx = share.indices(len(frames))
    return share.mark(frames.subset(idx), idx, len(frames))
  expected = share.indices(frames.split_size)
  if not np.array_equal(frames.global_indices[:len(expected)], expected):
    raise ValueError(
        f'These frames are a share {frames.global_indices.tolist()[:4]}... '
        f'of a {frames.split_size}-frame split, not process '
        f'{share.index} of {share.count}\'s; load the scene with '
        f'data.base.Share({share.index}, {share.count}, {max_images}).')
  return frames.subset(range(len(expected)))


class Evaluator:
  """Renders every frame of a split with its own code and scores it."""

  def __init__(self, experiment, split='test', max_images=0,
               save_images=True, lpips='alex'):
    if lpips:
      metrics_lib.lpips_min_size(lpips)  # refuses an unknown net now.
    self.lpips = lpips
    self.experiment = experiment
    self.frames = process_share(getattr(experiment.scene, split), max_images)
    self.split = split
    self.save_images = save_images
    if jax.process_count() == 1:
      self.mesh, self.render_step = experiment.mesh, experiment.render_step
    else:  # each process renders its own frames on its own devices.
      self.mesh = parallel.local_mesh()
      self.render_step = inference.make_render_step(experiment.model,
                                                    self.mesh)

  def _render(self, params, codes, index):
    """f32[H, W, 8] = rgb, depth, acc, ground truth of local frame `index`."""
    out = inference.render_image(
        self.render_step, params, codes,
        sampler_lib.image_rays(self.frames, index),
        self.experiment.config.eval.chunk, self.mesh)
    return np.concatenate([out['rgb'], out['depth'][..., None],
                           out['acc'][..., None], self.frames.images[index]],
                          -1).astype(np.float32)

  def _lpips(self, rgb, gt):
    """LPIPS of one image, or None (off, or the image is too small)."""
    if not self.lpips or min(rgb.shape[:2]) < metrics_lib.lpips_min_size(
        self.lpips):
      return None
    return float(metrics_lib.lpips(rgb, gt, self.lpips))

  def _score(self, index, name, rgb, gt):
    """The per-image row of frame `index` of the split."""
    return {'index': index, 'name': name,
            'psnr': float(metrics_lib.psnr(rgb, gt)),
            'ssim': float(metrics_lib.ssim(rgb, gt)),
            'lpips': self._lpips(rgb, gt)}

  def _save(self, out_dir, index, rgb, depth, acc, gt, sheet):
    """Writes frame `index`'s PNGs; adds its row to the first `sheet` rows."""
    colored = images.colorize_depth(depth, acc, self.frames.near,
                                    self.frames.far)
    images.save_png(os.path.join(out_dir, f'rgb_{index:03d}.png'), rgb)
    images.save_png(os.path.join(out_dir, f'depth_{index:03d}.png'), colored)
    images.save_png(os.path.join(out_dir, f'acc_{index:03d}.png'), acc)
    if len(sheet) < _SHEET_ROWS:
      sheet.append([gt, rgb, colored])

  def run(self, state, out_dir):
    """Evaluates `state` and writes the outputs (process 0).

    Args:
      state: `train_step.TrainState` (params and codes are used).
      out_dir: folder for metrics.json, per_image.csv and PNGs.
    Returns:
      dict with psnr, ssim, lpips (means), lpips_net, split, num_images,
      seconds and the per_image list, on every process.
    """
    is_main = jax.process_index() == 0
    if is_main:
      os.makedirs(out_dir, exist_ok=True)
    params, codes = parallel.to_local((state.params, state.codes), self.mesh)
    frames, count = self.frames, jax.process_count()
    total = frames.split_size
    per_image, sheet = [], []
    start = time.time()
    with tqdm.tqdm(total=total, desc=f'eval {self.split}', unit='img',
                   disable=not is_main, dynamic_ncols=True) as bar:
      for r in range(-(-total // count)):
        mine = r < len(frames)
        stack = self._render(params, codes, r) if mine else None
        name = frames.names[r] if mine else None
        for q, (pixels, frame_name) in enumerate(zip(
            parallel.gather_arrays(stack, 3), parallel.gather_strings(name))):
          if pixels is None:
            continue
          rgb, depth, acc, gt = (pixels[..., :3], pixels[..., 3],
                                 pixels[..., 4], pixels[..., 5:])
          index = r * count + q
          per_image.append(self._score(index, frame_name, rgb, gt))
          if is_main and self.save_images:
            self._save(out_dir, index, rgb, depth, acc, gt, sheet)
          bar.update(1)
    lpips = [r['lpips'] for r in per_image if r['lpips'] is not None]
    results = {
        'psnr': float(np.mean([r['psnr'] for r in per_image])),
        'ssim': float(np.mean([r['ssim'] for r in per_image])),
        'lpips': float(np.mean(lpips)) if lpips else None,
        'lpips_net': self.lpips or None,
        'split': self.split,
        'num_images': len(per_image),
        'seconds': time.time() - start,
        'per_image': per_image,
    }
    if is_main:
      if sheet:
        images.save_png(os.path.join(out_dir, 'contact_sheet.png'),
                        images.contact_sheet(sheet))
      write_results(results, out_dir)
    return results


def summary(results):
  """One line of `run`'s means: 'test PSNR 30.12 dB, SSIM 0.9779, LPIPS
  (alex) 0.0210 over 16 images'."""
  lpips = ('' if results.get('lpips') is None else
           f", LPIPS ({results['lpips_net']}) {results['lpips']:.4f}")
  return (f"{results['split']} PSNR {results['psnr']:.2f} dB, SSIM "
          f"{results['ssim']:.4f}{lpips} over {results['num_images']} images")


def write_results(results, out_dir):
  """Writes metrics.json and per_image.csv atomically."""
  def write_csv(f):
    writer = csv.DictWriter(f, ['index', 'name', 'psnr', 'ssim', 'lpips'])
    writer.writeheader()
    writer.writerows(results['per_image'])

  workdir_lib.write_atomic(os.path.join(out_dir, 'per_image.csv'), write_csv)
  workdir_lib.write_json(os.path.join(out_dir, 'metrics.json'), results,
                         sort_keys=False)
