"""The dataset contract every loader returns, and its validation.

A loader turns files on disk into a `Scene`: three `Frames` splits of host-side
numpy arrays in one camera convention (see `condnerf.cameras`). Nothing here
touches jax. Loaders raise `DataError` with a message naming the problem and
the fix.
"""

import dataclasses
from typing import Optional

import numpy as np

from condnerf import errors


class DataError(errors.UserError, ValueError):
  """Bad or missing dataset input; the message says what and how to fix it."""


@dataclasses.dataclass
class Frames:
  """The frames of one split.

  Attributes:
    images: list of f32[H_i, W_i, 3] in [0, 1], already composited on the
      scene background. Sizes may differ between frames.
    alphas: None, or list of f32[H_i, W_i] foreground opacity in [0, 1].
    poses: f32[N, 4, 4] camera-to-world (OpenGL convention).
    intrinsics: f32[N, 4] (fx, fy, cx, cy) in pixels, per frame.
    appearance_ids: i32[N]; row of the appearance-code table of each frame, or
      -1 for a frame that has no code of its own (rendered with the mean code).
    names: list of N strings identifying the frames (file paths).
    near: distance where rays start.
    far: distance where rays stop.
    depths: None, or list of f32[H_i, W_i] ground-truth ray distance (inf on
      background), when the source knows it (the procedural scene).
    appearances: None, or f32[N, 3] per-frame `(theta, s, g)` of an appearance
      variant dataset.
    global_indices: None when these are all the frames of the split, else
      i64[N], the position of each frame in the whole split (a process's
      `Share` of it).
    split_size: frames in the whole split when `global_indices` is set.
  """
  images: list
  alphas: Optional[list]
  poses: np.ndarray
  intrinsics: np.ndarray
  appearance_ids: np.ndarray
  names: list
  near: float
  far: float
  depths: Optional[list] = None
  appearances: Optional[np.ndarray] = None
  global_indices: Optional[np.ndarray] = None
  split_size: int = 0

  def __len__(self):
    return len(self.images)

  def subset(self, indices):
    """Returns the frames at `indices` (a sequence of ints) as new `Frames`."""
    indices = [int(i) for i in indices]
    pick = lambda xs: None if xs is None else [xs[i] for i in indices]
    return Frames(
        images=pick(self.images), alphas=pick(self.alphas),
        poses=self.poses[indices], intrinsics=self.intrinsics[indices],
        appearance_ids=self.appearance_ids[indices],
        names=pick(self.names), near=self.near, far=self.far,
        depths=pick(self.depths),
        appearances=None if self.appearances is None
        else self.appearances[indices],
        global_indices=None if self.global_indices is None
        else self.global_indices[indices],
        split_size=self.split_size)


@dataclasses.dataclass(frozen=True)
class Share:
  """The frames of an evaluation split that one process holds.

  Of the first `limit` frames (0 = all), process `index` of `count` holds
  every `count`-th one starting at `index`, so round r of an evaluation
  renders frames r * count ... r * count + count - 1 across the processes.
  """
  index: int = 0
  count: int = 1
  limit: int = 0

  def __post_init__(self):
    if not 0 <= self.index < self.count or self.limit < 0:
      raise ValueError(f'Invalid share {self}: need 0 <= index < count and '
                       'limit >= 0.')

  def size(self, num_frames):
    """Frames of the whole split that are shared out."""
    return min(num_frames, self.limit) if self.limit else num_frames

  def indices(self, num_frames):
    """i64[n] positions in the split of the frames this process holds."""
    return np.arange(self.index, self.size(num_frames), self.count)

  def take(self, items):
    """(this process's items, their positions) of a split's list."""
    idx = self.indices(len(items))
    return [items[i] for i in idx], idx

  def mark(self, frames, indices, num_frames):
    """`frames` (loaded from `take`'s items) tagged with their positions."""
    return dataclasses.replace(frames, global_indices=np.asarray(indices),
                               split_size=self.size(num_frames))


EVAL_SPLITS = ('val', 'test')  # splits a loader's `share` applies to.


@dataclasses.dataclass
class Scene:
  """A whole dataset.

  Attributes:
    train, val, test: `Frames` of each split (val may equal test).
    num_codes: rows of the appearance-code table the scene needs.
    background: f32[3] background color the images are composited on.
    scene_bound: half-width of an axis-aligned box centred at the origin that
      holds the scene content (used by bounded encodings such as hash grids).
    up: f32[3] world up direction (for camera paths).
    metadata: free-form dict of extra facts (source path, variants table, ...).
  """
  train: Frames
  val: Frames
  test: Frames
  num_codes: int
  background: np.ndarray
  scene_bound: float
  up: np.ndarray
  metadata: dict = dataclasses.field(default_factory=dict)


def assign_appearance_ids(ids, num_frames, mode, split):
  """Chooses the code row of every frame.

  Args:
    ids: None or i32[num_frames] `appearance_id`s read from the files (entries
      may be -1 where a frame gave none).
    num_frames: frames in the split.
    mode: 'auto' (file ids when present, else one code per training frame),
      'ids' (file ids, required), 'per_frame' (one code per training frame) or
      'shared' (one code for everything).
    split: 'train', 'val' or 'test'; only training frames get per-frame codes.
  Returns:
    i32[num_frames] code rows (-1 = mean code).
  Raises:
    DataError: on an unknown mode, or mode 'ids' without ids in the files.
  """
  have_ids = ids is not None and np.all(np.asarray(ids) >= 0)
  if mode == 'auto':
    mode = 'ids' if have_ids else 'per_frame'
  if mode == 'ids':
    if ids is None:
      raise DataError(
          f'data.appearance="ids" but the {split} frames carry no '
          '"appearance_id"; add it to every frame or use "per_frame"/"shared".')
    return np.asarray(ids, np.int32)
  if mode == 'per_frame':
    if split == 'train':
      return np.arange(num_frames, dtype=np.int32)
    return np.full((num_frames,), -1, np.int32)
  if mode == 'shared':
    return np.zeros((num_frames,), np.int32)
  raise DataError(f'Unknown data.appearance mode {mode!r}; choose one of '
                  "'auto', 'ids', 'per_frame', 'shared'.")


def validate_scene(scene):
  """Checks cross-split invariants; raises `DataError` naming the problem."""
  for split in ('train', 'val', 'test'):
    frames = getattr(scene, split)
    n = len(frames)
    if n == 0 and split == 'train':
      raise DataError('The training split has no frames.')
    if frames.poses.shape != (n, 4, 4):
      raise DataError(f'{split}: poses must be [N, 4, 4], got '
                      f'{frames.poses.shape}.')
    if frames.intrinsics.shape != (n, 4):
      raise DataError(f'{split}: intrinsics must be [N, 4], got '
                      f'{frames.intrinsics.shape}.')
    ids = frames.appearance_ids
    bad = np.flatnonzero((ids < -1) | (ids >= scene.num_codes))
    if bad.size:
      raise DataError(
          f'{split} frame {frames.names[bad[0]]!r} has appearance_id '
          f'{int(ids[bad[0]])}, outside [0, {scene.num_codes}) of the code '
          'table; renumber the ids from 0 or set data.num_codes larger.')
  return scene
