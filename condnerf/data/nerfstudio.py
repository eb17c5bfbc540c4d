"""Loader for nerfstudio's `transforms.json`, so users can bring captures.

The file holds global pinhole intrinsics `fl_x, fl_y, cx, cy, w, h` (any of
them may be overridden per frame) and `frames[]` with `file_path` (relative to
the json's folder) and `transform_matrix` (OpenGL camera-to-world), plus the
optional extensions `appearance_id`, `split` ('train', 'val' or 'test') and
`depth_file_path` (see `blender`), and nerfstudio's `mask_path` (a grayscale
image per frame, black where pixels are left out of training, e.g.
passers-by: `Frames.valid`; test views are still scored whole). Images may
be RGB or RGBA. A top-level `applied_transform` (how ns-process-data turned
COLMAP's world into the json's) is checked and kept as
`metadata['colmap_transform']`.

Frames are sorted by `file_path` (as nerfstudio does). Frames with a `split`
key go to that split; the others are split by index in that order, every
`holdout`-th one (from the first) to test. Val is the test split unless some
frame says 'val'.

Normalisation (documented choice): poses are moved into the frame of their
average pose (`poses.normalize_poses`: mean camera center at the origin, mean
camera up along +y) and scaled so the farthest camera center is at distance 1
(`poses.unit_radius_scale`).
  Without top-level `near`/`far`, the capture is assumed object-centric: the
    content lies in the box [-1.5, 1.5]^3 (the camera ball with a 50% margin,
    the bound the Blender scenes use), so scene_bound = 1.5, near = 0.05 and
    far = the largest distance from any camera to a corner of that box (no ray
    can be inside the box beyond it).
  With top-level `near`/`far` (in the json's units) they are scaled along with
    the poses and scene_bound = the largest camera-center coordinate + far
    (every point within `far` of a camera fits), unless a top-level
    `scene_bound` (json units) is given.
Lens distortion of the perspective models (`k1 k2 k3 k4 p1 p2`, global or per
frame, OpenCV's radial-tangential model as COLMAP writes it) is honored: rays
are cast through the undistorted pixel positions (`cameras.undistort`), and
`metadata['distortion']` says when some coefficient was non-zero. Fisheye
and equirectangular captures are refused with how to undistort them. Owns the split rule and that normalisation; reading the frame
entries is `transforms_json.load_frames` (shared with `blender`), the pose
math `poses`', and the share, code assignment and validation `base`'s. No
jax.
"""

import functools
import os

import numpy as np

from condnerf import cameras
from condnerf.data import base
from condnerf.data import image_io
from condnerf.data import poses as poses_lib
from condnerf.data import transforms_json

DEFAULT_NEAR = 0.05
DEFAULT_SCENE_BOUND = 1.5
_PINHOLE_MODELS = ('OPENCV', 'PINHOLE', 'SIMPLE_PINHOLE', 'SIMPLE_RADIAL',
                   'RADIAL')


def _split_frames(frames, holdout, json_path):
  """Dict split -> list of frame dicts, per the module docstring's rule."""
  order = sorted(range(len(frames)), key=lambda i: frames[i]['file_path'])
  splits = {'train': [], 'val': [], 'test': []}
  for rank, i in enumerate(order):
    frame = frames[i]
    split = frame.get('split')
    if split is None:
      split = 'test' if rank % holdout == 0 else 'train'
    elif split not in splits:
      raise base.DataError(
          f'{json_path} frame {i} ({frame["file_path"]!r}) has split '
          f'{split!r}; use "train", "val" or "test".')
    splits[split].append(frame)
  if not splits['train']:
    raise base.DataError(f'{json_path}: no frame is in the training split; '
                         'mark some frames "split": "train".')
  return splits


def _check_camera_model(meta, frames, json_path):
  """True when some distortion coefficient is non-zero (honored)."""
  distorted = False
  for entry in [meta] + list(frames):
    model = entry.get('camera_model', 'OPENCV')
    if model not in _PINHOLE_MODELS:
      raise base.DataError(
          f'{json_path}: camera_model {model!r} is not supported; the '
          f'perspective models {_PINHOLE_MODELS} are (with k1 k2 k3 k4 p1 '
          'p2 distortion). Undistort the images to a pinhole camera first '
          '(COLMAP image_undistorter, or ns-process-data without '
          '--camera-type fisheye).')
    for key in cameras.DISTORTION_KEYS:
      value = entry.get(key, 0.0)
      distorted = distorted or (isinstance(value, (int, float)) and
                                value != 0)
  return distorted


def _json_path(path):
  """The `transforms.json` of a path that is the file or its folder."""
  if os.path.isdir(path):
    return os.path.join(path, 'transforms.json')
  if not os.path.exists(path):
    raise base.DataError(
        f'nerfstudio dataset {path} does not exist; pass the folder holding '
        'transforms.json or the file itself.')
  return path


def _normalization(frames, json_path):
  """(scale, f64[4, 4] transform, f64[N, 3] camera centers) of every frame.

  Uses every frame, so it does not depend on `max_frames`.
  """
  poses = np.stack([
      transforms_json.parse_pose(f['transform_matrix'],
                                 f'{json_path} frame {i} ({f["file_path"]!r})')
      for i, f in enumerate(frames)])
  scale = poses_lib.unit_radius_scale(poses)
  _, transform = poses_lib.normalize_poses(poses, scale)
  centers = poses_lib.transform_points(poses[:, :3, 3], transform)
  return scale, transform, centers


def _colmap_transform(meta, json_path, transform):
  """f64[4, 4] from COLMAP's coordinates to the scene's, when the json has
  ns-process-data's `applied_transform` (3x4 or 4x4: COLMAP -> json; the
  frames' matrices already include it), else None."""
  if 'applied_transform' not in meta:
    return None
  try:
    applied = np.asarray(meta['applied_transform'], np.float64)
  except (TypeError, ValueError):
    applied = np.zeros((0,))
  if (applied.shape not in ((3, 4), (4, 4)) or
      not np.all(np.isfinite(applied))):
    raise base.DataError(
        f'{json_path}: "applied_transform" must be a 3x4 (or 4x4) list of '
        'numbers, as ns-process-data writes it; fix it or remove the key '
        '(it only records how COLMAP\'s poses were turned).')
  return transform @ np.vstack([applied[:3], [0.0, 0.0, 0.0, 1.0]])


def _scene_range(meta, json_path, scale, centers):
  """(near, far, scene_bound) in scene units, per the module docstring."""
  if 'near' in meta or 'far' in meta:
    if 'near' not in meta or 'far' not in meta:
      raise base.DataError(f'{json_path}: give both "near" and "far", or '
                           'neither.')
    near, far = transforms_json.scene_range(meta, json_path, None, None)
    near, far = near * scale, far * scale
    scene_bound = float(np.abs(centers).max() + far)
  else:
    bound = DEFAULT_SCENE_BOUND
    corners = np.stack(np.meshgrid(*[[-bound, bound]] * 3), -1).reshape(-1, 3)
    near = DEFAULT_NEAR
    far = float(np.linalg.norm(centers[:, None] - corners[None], axis=-1).max())
    scene_bound = bound
  scene_bound = transforms_json.get_number(
      meta, 'scene_bound', scene_bound / scale, json_path,
      positive=True) * scale
  return near, far, scene_bound


def load_nerfstudio(path, appearance='auto', num_codes=0,
                    background=(1.0, 1.0, 1.0), factor=1, holdout=8,
                    max_frames=0, share=None):
  """Loads a nerfstudio capture (see the module docstring for conventions).

  Args:
    path: the `transforms.json` file or the folder holding it.
    appearance: code assignment mode, see `base.assign_appearance_ids`.
    num_codes: rows of the code table; 0 infers max training code + 1.
    background: 3 floats in [0, 1] that RGBA images are composited on.
    factor: int >= 1, box-downsampling factor (intrinsics are scaled).
    holdout: int >= 2; every `holdout`-th frame without a `split` key is test.
    max_frames: when > 0, keep only the first `max_frames` of every split.
    share: None, or a `base.Share`: of the val and test splits (and of the
      training split when it sets `train_shards`), read only the frames
      this process holds.
  Returns:
    A validated `base.Scene` (up = +y). `metadata['world_transform']` f64[4, 4]
    maps json coordinates to scene coordinates ('colmap_transform': COLMAP's).
  Raises:
    DataError: on missing or malformed files, naming the file and the fix.
  """
  json_path = _json_path(os.fspath(path))
  folder = os.path.dirname(os.path.abspath(json_path))
  factor, max_frames, background = base.check_options(factor, max_frames,
                                                      background)
  holdout = base.check_positive_int(holdout, 'holdout', minimum=2)
  meta = image_io.read_json(json_path)
  frames = transforms_json.get_frames(meta, json_path)
  if not frames:
    raise base.DataError(f'{json_path} lists no frames.')
  distorted = _check_camera_model(meta, frames, json_path)
  split_frames = _split_frames(frames, holdout, json_path)
  scale, transform, centers = _normalization(frames, json_path)
  near, far, scene_bound = _scene_range(meta, json_path, scale, centers)
  colmap = _colmap_transform(meta, json_path, transform)
  where = os.path.basename(json_path)
  load = functools.partial(transforms_json.load_frames, meta, folder=folder,
                           where=where, background=background, factor=factor,
                           near=near, far=far)
  splits = {}
  for split, entries in split_frames.items():
    if entries or split == 'train':
      entries = entries[:max_frames] if max_frames else entries
      splits[split] = base.load_share(split, entries, share, load, (
          functools.partial(transforms_json.file_ids, entries, where)))
      splits[split].poses = poses_lib.transform_poses(splits[split].poses,
                                                      transform)
  if 'test' not in splits:
    raise base.DataError(
        f'{json_path}: no test frames; lower holdout or mark frames "split": '
        '"test".')
  splits.setdefault('val', splits['test'])
  splits, num_codes = base.assign_codes(splits, appearance, num_codes)
  return base.build_scene(
      splits, num_codes, background, scene_bound,
      up=np.array([0.0, 1.0, 0.0], np.float32),
      metadata={'format': 'nerfstudio', 'source': os.path.abspath(json_path),
                'factor': factor, 'world_transform': transform,
                'colmap_transform': colmap, 'distortion': distorted})
