"""The dataset contract every loader returns, and the ends loaders share.

A loader turns files on disk into a `Scene`: three `Frames` splits of host-side
numpy arrays in one camera convention (see `condnerf.cameras`). Loaders raise
`DataError` with a message naming the problem and the fix.

Besides the contract (`Frames`, `Share`, `Scene`, `validate_scene`) this
module owns the two ends every loader (`blender`, `nerfstudio`, `llff`)
shares: at the start, checking the common arguments (`check_folder`,
`check_options` and the value checks `check_positive_int`,
`check_background`); at the end, reading only a process's `Share` of an
evaluation split (`load_share`), turning file appearance ids into code rows
(`assign_codes`) and assembling the validated `Scene` (`build_scene`).
Reading files is `image_io`'s and `transforms_json`'s; nothing here touches
jax.
"""

import dataclasses
import numbers
import os
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


SPLITS = ('train', 'val', 'test')
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
  for split in SPLITS:
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


def check_folder(path, what, holds):
  """`path` as a str; raises `DataError` unless it is an existing folder.

  Args:
    path: str or path-like, the dataset folder.
    what: what the folder is, e.g. 'LLFF scene folder'.
    holds: the file the folder must hold, named in the message.
  """
  path = os.fspath(path)
  if not os.path.isdir(path):
    raise DataError(f'{what} {path} does not exist; pass the folder that '
                    f'holds {holds}.')
  return path


def check_positive_int(value, name, minimum=1):
  """Returns `value` as int; raises `DataError` unless an int >= minimum."""
  if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
      or value < minimum):
    raise DataError(f'{name} must be an integer >= {minimum}, got '
                    f'{value!r}.')
  return int(value)


def check_background(background):
  """f32[3] background color; raises `DataError` unless 3 values in [0, 1]."""
  try:
    color = np.asarray(background, np.float32).reshape(3)
  except (TypeError, ValueError) as e:
    raise DataError(
        f'background must be 3 numbers in [0, 1], got {background!r}.') from e
  if not np.all((color >= 0) & (color <= 1)):
    raise DataError(
        f'background must be 3 numbers in [0, 1], got {background!r}.')
  return color


def check_options(factor, max_frames, background):
  """The loaders' common arguments, checked in this order.

  Args:
    factor: int >= 1, downsampling factor.
    max_frames: int >= 0, frames kept per split (0 = all).
    background: 3 floats in [0, 1].
  Returns:
    (factor: int, max_frames: int, background: f32[3]).
  """
  return (check_positive_int(factor, 'factor'),
          check_positive_int(max_frames, 'max_frames', minimum=0),
          check_background(background))


def load_share(split, entries, share, load):
  """`load(entries)`, or only `share`'s part of them for an eval split.

  Args:
    split: the split's name.
    entries: list describing every frame of the split.
    share: None or `Share`.
    load: list of entries -> `Frames`.
  Returns:
    `Frames`, tagged with global positions when shared.
  """
  if share is None or split not in EVAL_SPLITS:
    return load(entries)
  mine, positions = share.take(entries)
  return share.mark(load(mine), positions, len(entries))


def _check_codes(splits, num_codes, inferred):
  """Raises `DataError` for a code row outside the table of `num_codes`.

  When the table size was `inferred`, also for a row no training frame uses.
  """
  seen = set(splits['train'].appearance_ids.tolist())
  for split, frames in splits.items():
    for name, code in zip(frames.names, frames.appearance_ids.tolist()):
      if code >= num_codes:
        raise DataError(
            f'{split} frame {name!r} has appearance_id {code}, outside the '
            f'code table [0, {num_codes}); renumber the ids or pass a larger '
            'num_codes.')
      if inferred and code >= 0 and code not in seen:
        raise DataError(
            f'{split} frame {name!r} has appearance_id {code}, which no '
            'training frame uses, so it would get no trained code; use a '
            'training id, drop the id, or pass num_codes explicitly.')


def assign_codes(splits, mode, num_codes):
  """Turns file appearance ids into code rows for every split.

  Mode 'auto' is resolved once, from the training split: file ids when every
  training frame has one, else one code per training frame. In 'ids' mode
  val/test frames without an id get -1 (the mean code).

  Args:
    splits: dict split name -> `Frames` with file ids (-1 = none).
    mode: 'auto', 'ids', 'per_frame' or 'shared' (see
      `assign_appearance_ids`).
    num_codes: rows of the code table; <= 0 infers max train row + 1.
  Returns:
    (dict split name -> `Frames` with code rows, num_codes).
  Raises:
    DataError: on partial ids in training, or an id outside the table, or
      (when num_codes is inferred) a val/test id never seen in training.
  """
  train = splits['train']
  have = train.appearance_ids >= 0
  if have.any() and not have.all():
    missing = train.names[int(np.argmin(have))]
    present = train.names[int(np.argmax(have))]
    raise DataError(
        f'Training frame {missing!r} has no "appearance_id" but {present!r} '
        'has one; give every training frame an appearance_id, or none.')
  if mode == 'auto':
    mode = 'ids' if have.size and have.all() else 'per_frame'
  out = {}
  for split, frames in splits.items():
    raw = frames.appearance_ids
    ids = raw if (split != 'train' or (raw >= 0).any()) else None
    codes = assign_appearance_ids(ids, len(frames), mode, split)
    out[split] = dataclasses.replace(frames, appearance_ids=codes)
  inferred = num_codes <= 0
  if inferred:
    num_codes = max(1, int(out['train'].appearance_ids.max(initial=-1)) + 1)
  _check_codes(out, num_codes, inferred)
  return out, int(num_codes)


def build_scene(splits, num_codes, background, scene_bound, up, metadata):
  """The validated `Scene` of a loader's splits (see `assign_codes`).

  Args:
    splits: dict 'train', 'val', 'test' -> `Frames` with code rows.
    num_codes: rows of the code table.
    background: f32[3] background color.
    scene_bound: half-width of the box holding the scene content.
    up: f32[3] world up direction.
    metadata: dict of extra facts (see `Scene`).
  Returns:
    The `Scene`, checked by `validate_scene`.
  """
  scene = Scene(
      train=splits['train'], val=splits['val'], test=splits['test'],
      num_codes=num_codes, background=background, scene_bound=scene_bound,
      up=up, metadata=metadata)
  return validate_scene(scene)
