"""The dataset contract every loader returns, and the ends loaders share.

A loader turns files on disk into a `Scene`: three `Frames` splits of host-side
numpy arrays in one camera convention (see `condnerf.cameras`). Loaders raise
`DataError` with a message naming the problem and the fix.

Besides the contract (`Frames`, `Share`, `Scene`, `validate_scene`) this
module owns the two ends every loader (`blender`, `nerfstudio`, `llff`)
shares: at the start, checking the common arguments (`check_folder`,
`check_options` and the value checks `check_positive_int`,
`check_background`); at the end, reading only a process's `Share` of the
evaluation splits and, in a multi-process training, of the training frames
(`load_share`), turning file appearance ids into code rows
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
    distortion: None (pinhole cameras), or f64[N, 6] lens coefficients
      (k1, k2, k3, k4, p1, p2) of each frame (`cameras.distort`): rays are
      cast through the undistorted pixel positions.
    split_ids: None, or (for a share of the training split) i32[split_size],
      the file appearance ids of every frame of the whole split (-1 where
      absent), so that code rows are numbered as if every frame were read.
    valid: None, or list of bool[H_i, W_i]: the pixels training may draw
      (nerfstudio's `mask_path`: 0 marks pixels to leave out, such as
      passers-by); evaluation still scores every pixel.
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
  split_ids: Optional[np.ndarray] = None
  distortion: Optional[np.ndarray] = None
  valid: Optional[list] = None

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
        split_size=self.split_size, split_ids=self.split_ids,
        distortion=None if self.distortion is None
        else self.distortion[indices], valid=pick(self.valid))


@dataclasses.dataclass(frozen=True)
class Share:
  """The frames one process of `count` holds.

  Evaluation splits: of the first `limit` frames (0 = all), process `index`
  holds every `count`-th one starting at `index`, so round r of an
  evaluation renders frames r * count ... r * count + count - 1 across the
  processes.

  Training split, when `train_shards` > 0: training frame i is in shard
  i % train_shards, every global batch is one equal block of rays per shard
  in shard order (`data.sampler`), and a process holds the shards whose
  blocks meet its contiguous rows of the batch (`train_shard_range`). With
  0 the training split is read whole; with `evals` False so are the
  evaluation splits (a training's share).
  """
  index: int = 0
  count: int = 1
  limit: int = 0
  train_shards: int = 0
  evals: bool = True

  def __post_init__(self):
    if (not 0 <= self.index < self.count or self.limit < 0 or
        self.train_shards < 0):
      raise ValueError(f'Invalid share {self}: need 0 <= index < count, '
                       'limit >= 0 and train_shards >= 0.')

  def train_shard_range(self):
    """range of the training shards whose batch blocks meet this process's
    rows: of rows [index, index + 1) * B / count, blocks of B / shards."""
    shards = self.train_shards
    return range(self.index * shards // self.count,
                 -(-(self.index + 1) * shards // self.count))

  def train_indices(self, num_frames):
    """i64[n] positions in the training split of the frames held."""
    held = np.isin(np.arange(num_frames) % self.train_shards,
                   list(self.train_shard_range()))
    return np.flatnonzero(held)

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
    ndc: None, or the `ndc.Projection` (sx, sy, near) of a forward-facing
      scene the model samples in NDC (`scene_bound` is then NDC's).
  """
  train: Frames
  val: Frames
  test: Frames
  num_codes: int
  background: np.ndarray
  scene_bound: float
  up: np.ndarray
  metadata: dict = dataclasses.field(default_factory=dict)
  ndc: Optional[tuple] = None


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


def load_share(split, entries, share, load, file_ids=None):
  """`load(entries)`, or only `share`'s part of them.

  Args:
    split: the split's name.
    entries: list describing every frame of the split.
    share: None or `Share` (eval splits; the training split when
      `share.train_shards`).
    load: list of entries -> `Frames`.
    file_ids: None (no file gives ids), or `() -> i32[len(entries)]`, the
      file appearance ids of every entry read without the images; called
      for a training share only.
  Returns:
    `Frames`, tagged with global positions when shared.
  """
  if share is None:
    return load(entries)
  if split in EVAL_SPLITS and share.evals:
    mine, positions = share.take(entries)
    return share.mark(load(mine), positions, len(entries))
  if split != 'train' or not share.train_shards:
    return load(entries)
  positions = share.train_indices(len(entries))
  frames = load([entries[i] for i in positions])
  ids = (np.full((len(entries),), -1, np.int32) if file_ids is None
         else np.asarray(file_ids(), np.int32).reshape(-1))
  return dataclasses.replace(frames, global_indices=positions,
                             split_size=len(entries), split_ids=ids)


def _check_codes(splits, num_codes, inferred, seen):
  """Raises `DataError` for a code row outside the table of `num_codes`.

  When the table size was `inferred`, also for a row no training frame uses
  (`seen`: the set of the whole training split's rows).
  """
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
  # A training share numbers its rows from the whole split's file ids.
  whole = train.appearance_ids if train.split_ids is None else train.split_ids
  have = whole >= 0
  if have.any() and not have.all():
    missing, present = int(np.argmin(have)), int(np.argmax(have))
    raise DataError(
        f'Training frame {_frame_name(train, missing)} has no '
        f'"appearance_id" but {_frame_name(train, present)} has one; give '
        'every training frame an appearance_id, or none.')
  if mode == 'auto':
    mode = 'ids' if have.size and have.all() else 'per_frame'
  out = {}
  for split, frames in splits.items():
    raw = frames.appearance_ids if split != 'train' else whole
    ids = raw if (split != 'train' or (raw >= 0).any()) else None
    codes = assign_appearance_ids(ids, len(raw), mode, split)
    out[split] = dataclasses.replace(frames, appearance_ids=codes)
  train_codes = out['train'].appearance_ids
  if train.split_ids is not None:
    out['train'].appearance_ids = train_codes[train.global_indices]
  inferred = num_codes <= 0
  if inferred:
    num_codes = max(1, int(train_codes.max(initial=-1)) + 1)
  _check_codes(out, num_codes, inferred, set(train_codes.tolist()))
  return out, int(num_codes)


def _frame_name(frames, position):
  """The name of the frame at `position` of the split, when loaded."""
  if frames.global_indices is None:
    return repr(frames.names[position])
  held = np.flatnonzero(frames.global_indices == position)
  return (repr(frames.names[held[0]]) if held.size else
          f'#{position} (read by another process)')



def build_scene(splits, num_codes, background, scene_bound, up, metadata,
                ndc=None):
  """The validated `Scene` of a loader's splits (see `assign_codes`).

  Args:
    splits: dict 'train', 'val', 'test' -> `Frames` with code rows.
    num_codes: rows of the code table.
    background: f32[3] background color.
    scene_bound: half-width of the box holding the scene content.
    up: f32[3] world up direction.
    metadata: dict of extra facts (see `Scene`).
    ndc: None, or the scene's `ndc.Projection`.
  Returns:
    The `Scene`, checked by `validate_scene`.
  """
  scene = Scene(
      train=splits['train'], val=splits['val'], test=splits['test'],
      num_codes=num_codes, background=background, scene_bound=scene_bound,
      up=up, metadata=metadata, ndc=None if ndc is None else tuple(ndc))
  return validate_scene(scene)
