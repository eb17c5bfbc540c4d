"""Host-side ray batches: random training rays and full-image rays.

Owns turning `Frames` into `structs.Batch`es of numpy arrays. The global
batch of a step is `shards` equal blocks, block s drawn uniformly from the
pixels of training shard s (frames i with i % shards == s) by a generator
seeded with (seed, step, s), or (seed, step) for one shard. Every process
draws the blocks that meet its contiguous rows of the global batch and keeps
those rows, so batches are reproducible across restarts and across process
counts, and a process needs only the frames of its shards (`base.Share`).
Nothing here touches jax devices.
"""

import numpy as np

from condnerf import cameras
from condnerf import errors
from condnerf import structs
from condnerf.data import base


def _valid_positions(frames, mine, shard):
  """None, or i64[V]: where the pixels training may draw lie in the
  concatenation of the frames `mine` (`Frames.valid`)."""
  if frames.valid is None:
    return None
  for i in mine:
    if frames.valid[i].shape != frames.images[i].shape[:2]:
      raise ValueError(
          f'Frame {frames.names[i]!r}: its mask of valid pixels is '
          f'{frames.valid[i].shape}, its image {frames.images[i].shape[:2]}.')
  keep = np.concatenate([frames.valid[i].reshape(-1) for i in mine])
  if not keep.any():
    raise ValueError(
        f'Every pixel of the training frames of shard {shard} is masked out '
        '(mask_path); masks mark the pixels to keep with white.')
  # int32 halves the index of a large capture (every kept pixel of it).
  return np.flatnonzero(keep).astype(
      np.int32 if keep.size < 2**31 else np.int64)


def check_frame_shards(frames, shards):
  """Returns the split's size (every process's frames); refuses more frame
  shards (`train.frame_shards`) than it has frames."""
  split_size = (len(frames) if frames.global_indices is None else
                frames.split_size)
  if shards > split_size:
    raise errors.ConfigError(
        f'train.frame_shards={shards} is more than the {split_size} '
        'training frames; use at most one shard per frame.')
  return split_size


class RaySampler:
  """Uniformly random pixels over the frames of each shard of a split (of
  their valid pixels, when `Frames.valid` is set)."""

  def __init__(self, frames, batch_size, seed, process_index=0,
               process_count=1, shards=1):
    """Indexes every pixel of `frames`.

    Args:
      frames: `data.base.Frames`: the whole split, or a process's share of
        it (`global_indices` set) holding at least this process's shards.
      batch_size: global rays per step, over all processes.
      seed: integer seed of the pixel draws.
      process_index: this process's index.
      process_count: number of processes sharing each batch.
      shards: frame shards of the split (`train.frame_shards`).
    Raises:
      ValueError: if batch_size does not split evenly over processes or
        shards, a shard has no frame, or `frames` lack a shard's frames.
    """
    if batch_size % process_count or batch_size % shards:
      raise ValueError(
          f'batch_size={batch_size} must be divisible by the '
          f'{process_count} processes and the {shards} frame shards '
          '(train.frame_shards).')
    share = base.Share(process_index, process_count, train_shards=shards)
    positions = (np.arange(len(frames)) if frames.global_indices is None
                 else np.asarray(frames.global_indices))
    split_size = check_frame_shards(frames, shards)
    missing = np.setdiff1d(share.train_indices(split_size), positions)
    if missing.size:
      raise ValueError(
          f'Process {process_index} of {process_count} needs training '
          f'frames {missing.tolist()[:8]} of shards '
          f'{list(share.train_shard_range())} of {shards}, which were not '
          'loaded; load the scene with this base.Share.')
    self.frames, self.batch_size = frames, batch_size
    self.local_size = batch_size // process_count
    self.seed, self.shards, self.block = seed, shards, batch_size // shards
    held = share.train_shard_range()
    # Rows of this process within the blocks of its shards, concatenated.
    self.offset = process_index * self.local_size - held.start * self.block
    sizes = [im.shape[0] * im.shape[1] for im in frames.images]
    self._starts = np.concatenate([[0], np.cumsum(sizes)])
    self._widths = np.array([im.shape[1] for im in frames.images])
    # Per held shard: its frames (in split order), their pixel starts and
    # the positions of the pixels it may draw (None: all; `frames.valid`).
    self._shards = []
    for shard in held:
      mine = np.flatnonzero(positions % shards == shard)
      starts = np.concatenate([[0], np.cumsum(np.asarray(sizes)[mine])])
      self._shards.append((shard, mine, starts,
                           _valid_positions(frames, mine, shard)))
    self._rgb = np.concatenate(
        [im.reshape(-1, 3) for im in frames.images]).astype(np.float32)
    self._alpha = (np.ones((self.num_pixels,), np.float32)
                   if frames.alphas is None else np.concatenate(
                       [a.reshape(-1) for a in frames.alphas]).astype(
                           np.float32))

  @property
  def num_pixels(self):
    return int(self._starts[-1])

  def _draw(self, step):
    """(i64[rows] frame of each row, i64[rows] pixel index within it) of
    this process's rows of the global batch of `step`."""
    frames, pixels = [], []
    for shard, mine, starts, valid in self._shards:
      key = [self.seed, step] if self.shards == 1 else [self.seed, step, shard]
      rng = np.random.default_rng(key)
      if valid is None:
        flat = rng.integers(0, starts[-1], size=self.block)
      else:
        flat = valid[rng.integers(0, len(valid), size=self.block)]
      k = np.searchsorted(starts, flat, side='right') - 1
      frames.append(mine[k])
      pixels.append(flat - starts[k])
    rows = slice(self.offset, self.offset + self.local_size)
    return np.concatenate(frames)[rows], np.concatenate(pixels)[rows]

  def batch(self, step):
    """This process's share of the global batch of `step`.

    Args:
      step: training step; the same step always gives the same rays.
    Returns:
      `structs.Batch` of numpy arrays with leading dim batch_size /
      process_count.
    """
    frame, local = self._draw(step)
    flat = self._starts[frame] + local
    pixels = np.stack([local // self._widths[frame],
                       local % self._widths[frame]], axis=-1)
    rays = frame_rays(self.frames, frame, pixels.astype(np.float32))
    return structs.Batch(rays=rays, rgb=self._rgb[flat],
                         weight=np.ones((self.local_size,), np.float32),
                         alpha=self._alpha[flat])


def frame_rays(frames, frame, pixels):
  """Rays through given pixels of given frames.

  Args:
    frames: `data.base.Frames`.
    frame: i32[...], frame index of each ray.
    pixels: f32[..., 2], (row, col) of each ray.
  Returns:
    `structs.Rays` of numpy arrays with leading shape `frame.shape`.
  """
  origins, directions = cameras.pixel_directions(
      pixels, frames.intrinsics[frame].astype(np.float32),
      frames.poses[frame].astype(np.float32),
      distortion=None if frames.distortion is None
      else frames.distortion[frame])
  shape = frame.shape + (1,)
  return structs.Rays(
      origins=origins, directions=directions,
      near=np.full(shape, frames.near, np.float32),
      far=np.full(shape, frames.far, np.float32),
      code_ids=frames.appearance_ids[frame].astype(np.int32))


def image_rays(frames, index, code_id=None):
  """Rays of every pixel of one frame.

  Args:
    frames: `data.base.Frames`.
    index: which frame.
    code_id: None to use the frame's own code row, else this row.
  Returns:
    `structs.Rays` with leading shape [H, W].
  """
  height, width = frames.images[index].shape[:2]
  pixels = cameras.image_pixels(height, width).astype(np.float32)
  frame = np.full((height, width), index, np.int64)
  rays = frame_rays(frames, frame, pixels)
  if code_id is not None:
    rays = rays.replace(code_ids=np.full((height, width), code_id, np.int32))
  return rays


def pose_rays(pose, intrinsics, height, width, near, far, code_id):
  """Rays of a virtual camera (camera paths, novel views).

  Args:
    pose: f32[4, 4] camera-to-world.
    intrinsics: f32[4] (fx, fy, cx, cy).
    height, width: image size in pixels.
    near, far: ray bounds.
    code_id: row of the code table (-1 = mean code).
  Returns:
    `structs.Rays` with leading shape [height, width].
  """
  origins, directions = cameras.image_rays(pose, intrinsics, height, width)
  shape = (height, width, 1)
  return structs.Rays(
      origins=origins, directions=directions,
      near=np.full(shape, near, np.float32),
      far=np.full(shape, far, np.float32),
      code_ids=np.full((height, width), code_id, np.int32))
