"""What the dataset generators (`variants`, `materials`) share when writing.

Owns refusing an output folder that already holds data (`check_out`) and
spreading the ids of an appearance table evenly over a split's frames
(`balanced_ids`). Writing atomically is `workdir.staged_dir`'s; what each
dataset holds is its generator's. No jax.
"""

import os

import numpy as np

from condnerf.data import base


def check_out(src, out, overwrite):
  """Refuses an output folder that holds data (or contains `src`).

  Args:
    src: None, or the source dataset folder `out` must not be or contain.
    out: the folder to write.
    overwrite: whether a non-empty `out` may be replaced.
  Raises:
    DataError: when `out` is or contains `src`, is a file, or is not empty
      (unless `overwrite`).
  """
  if src is not None:
    real_src, real_out = os.path.realpath(src), os.path.realpath(out)
    if real_out == real_src or real_src.startswith(real_out + os.sep):
      raise base.DataError(
          f'out {out} is or contains the source {src}; choose another '
          'folder.')
  if os.path.exists(out):
    if not os.path.isdir(out):
      raise base.DataError(f'out {out} exists and is not a folder.')
    if os.listdir(out) and not overwrite:
      raise base.DataError(
          f'out {out} is not empty; choose an empty folder, or pass '
          'overwrite=True (--overwrite) to replace it.')


def balanced_ids(rng, num_frames, num_appearances):
  """i32[num_frames]: a shuffled, as-even-as-possible use of every id.

  Args:
    rng: `np.random.Generator`, advanced by one permutation.
    num_frames: frames of the split.
    num_appearances: ids 0 .. num_appearances - 1 to use.
  """
  ids = np.arange(num_frames) % num_appearances
  return rng.permutation(ids).astype(np.int32)
