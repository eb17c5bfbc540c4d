"""Host-side ray batches: random training rays and full-image rays.

Owns turning `Frames` into `structs.Batch`es of numpy arrays. Every process
draws the same global batch from a generator seeded by (seed, step) and keeps
only its own contiguous share, so batches are reproducible across restarts
and across process counts. Nothing here touches jax devices.
"""

import numpy as np

from condnerf import cameras
from condnerf import structs


class RaySampler:
  """Uniformly random pixels over all frames of a split."""

  def __init__(self, frames, batch_size, seed, process_index=0,
               process_count=1):
    """Indexes every pixel of `frames`.

    Args:
      frames: `data.base.Frames`.
      batch_size: global rays per step, over all processes.
      seed: integer seed of the pixel draws.
      process_index: this process's index.
      process_count: number of processes sharing each batch.
    Raises:
      ValueError: if batch_size does not split evenly over processes.
    """
    if batch_size % process_count:
      raise ValueError(f'batch_size={batch_size} must be divisible by the '
                       f'{process_count} processes.')
    self.frames = frames
    self.batch_size = batch_size
    self.local_size = batch_size // process_count
    self.offset = process_index * self.local_size
    self.seed = seed
    sizes = [im.shape[0] * im.shape[1] for im in frames.images]
    self._starts = np.concatenate([[0], np.cumsum(sizes)])
    self._widths = np.array([im.shape[1] for im in frames.images])
    self._rgb = np.concatenate(
        [im.reshape(-1, 3) for im in frames.images]).astype(np.float32)
    self._alpha = (np.ones((self.num_pixels,), np.float32)
                   if frames.alphas is None else np.concatenate(
                       [a.reshape(-1) for a in frames.alphas]).astype(
                           np.float32))

  @property
  def num_pixels(self):
    return int(self._starts[-1])

  def batch(self, step):
    """This process's share of the global batch of `step`.

    Args:
      step: training step; the same step always gives the same rays.
    Returns:
      `structs.Batch` of numpy arrays with leading dim batch_size /
      process_count.
    """
    rng = np.random.default_rng([self.seed, step])
    flat = rng.integers(0, self.num_pixels, size=self.batch_size)
    flat = flat[self.offset:self.offset + self.local_size]
    frame = np.searchsorted(self._starts, flat, side='right') - 1
    local = flat - self._starts[frame]
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
      frames.poses[frame].astype(np.float32))
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
