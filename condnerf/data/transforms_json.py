"""The transforms.json format: reading and checking what its entries say.

Blender-synthetic datasets (`transforms_{train,val,test}.json`) and
nerfstudio captures (`transforms.json`) share one format: a top level with
intrinsics (`camera_angle_x`, or `fl_x, fl_y, cx, cy, w, h`) and `frames`,
each `{file_path, transform_matrix}` with optional per-frame intrinsics,
`appearance_id` and `appearance`. Owns parsing those values into numbers
and arrays, with a `base.DataError` naming the file, the frame and the fix
for anything malformed; also the two value checks every loader shares
(`check_background`, `check_positive_int`). Reading image files is
`image_io`'s; building `base.Frames` is each loader's.
"""

import math
import numbers
import os

import numpy as np

from condnerf import cameras
from condnerf.data import base

# Intrinsics keys a frame may carry itself, overriding the global ones.
INTRINSIC_KEYS = ('fl_x', 'fl_y', 'cx', 'cy', 'w', 'h', 'camera_angle_x',
                  'camera_angle_y')


def check_background(background):
  """f32[3] background color; raises `DataError` unless 3 values in [0, 1]."""
  try:
    color = np.asarray(background, np.float32).reshape(3)
  except (TypeError, ValueError) as e:
    raise base.DataError(
        f'background must be 3 numbers in [0, 1], got {background!r}.') from e
  if not np.all((color >= 0) & (color <= 1)):
    raise base.DataError(
        f'background must be 3 numbers in [0, 1], got {background!r}.')
  return color


def check_positive_int(value, name, minimum=1):
  """Returns `value` as int; raises `DataError` unless an int >= minimum."""
  if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
      or value < minimum):
    raise base.DataError(f'{name} must be an integer >= {minimum}, got '
                         f'{value!r}.')
  return int(value)


def is_number(value):
  """Whether a json value is a finite number (booleans are not)."""
  return (isinstance(value, numbers.Real) and not isinstance(value, bool)
          and math.isfinite(value))


def get_number(meta, key, default, where, positive=False):
  """A finite number read from dict `meta`, or `default` when absent."""
  if key not in meta:
    return default
  value = meta[key]
  if not is_number(value) or (positive and value <= 0):
    kind = 'a positive number' if positive else 'a number'
    raise base.DataError(f'{where}: "{key}" must be {kind}, got {value!r}.')
  return float(value)


def get_frames(meta, json_path):
  """The list of frame dicts of a transforms json, checked."""
  if not isinstance(meta, dict) or 'frames' not in meta:
    raise base.DataError(
        f'{json_path} has no "frames" list; each transforms json needs '
        '"frames": [{"file_path": ..., "transform_matrix": ...}, ...].')
  frames = meta['frames']
  if not isinstance(frames, list):
    raise base.DataError(f'{json_path}: "frames" must be a list.')
  for i, frame in enumerate(frames):
    if not isinstance(frame, dict):
      raise base.DataError(f'{json_path} frame {i} is not an object.')
    for key in ('file_path', 'transform_matrix'):
      if key not in frame:
        raise base.DataError(
            f'{json_path} frame {i} has no "{key}"; every frame needs '
            '"file_path" and "transform_matrix".')
    if not isinstance(frame['file_path'], str):
      raise base.DataError(f'{json_path} frame {i}: "file_path" must be a '
                           'string.')
  return frames


def parse_pose(matrix, where):
  """f32[4, 4] from a json transform_matrix; raises `DataError` if malformed."""
  try:
    pose = np.asarray(matrix, np.float64)
  except (TypeError, ValueError):
    pose = None
  if pose is None or pose.shape != (4, 4) or not np.all(np.isfinite(pose)):
    text = repr(matrix)
    text = text if len(text) < 80 else text[:77] + '...'
    raise base.DataError(
        f'{where}: "transform_matrix" must be a 4x4 list of numbers '
        f'(camera-to-world, OpenGL axes), got {text}.')
  return pose.astype(np.float32)


def resolve_image(folder, file_path, where):
  """Path of a frame's image: `file_path` as given, or with `.png` added."""
  path = os.path.normpath(os.path.join(folder, file_path))
  if os.path.isfile(path):
    return path
  if os.path.isfile(path + '.png'):
    return path + '.png'
  raise base.DataError(
      f'{where}: image {path} (or {path}.png) does not exist; fix "file_path" '
      '(it is relative to the json file\'s folder).')


def frame_intrinsics(meta, frame, width, height, where):
  """Intrinsics of one frame for an image of the given size.

  Frame keys override global ones. The focal length comes from `fl_x`/`fl_y`
  or else from `camera_angle_x` (and `camera_angle_y`); `cx`, `cy` default to
  the image center. When `w`/`h` are given and differ from the image size (a
  resized image), all intrinsics are scaled to the actual size.

  Args:
    meta: dict, top level of the transforms json.
    frame: dict, the frame entry.
    width: actual image width in pixels.
    height: actual image height in pixels.
    where: frame description for error messages.
  Returns:
    intrinsics: f32[4], (fx, fy, cx, cy) for the actual image.
    own: whether the frame itself carries any intrinsics key.
  """
  merged = dict(meta)
  merged.update(frame)
  num = lambda key, positive=True: get_number(merged, key, None, where,
                                              positive)
  declared_w = num('w') or float(width)
  declared_h = num('h') or float(height)
  fx, fy = num('fl_x'), num('fl_y')
  angle_x, angle_y = num('camera_angle_x'), num('camera_angle_y')
  if fx is None and fy is None and angle_x is None:
    raise base.DataError(
        f'{where}: no focal length; add a global "camera_angle_x" (radians) or '
        '"fl_x"/"fl_y" (pixels), globally or per frame.')
  if fx is None and fy is None:
    fx = cameras.focal_from_fov(declared_w, angle_x)
    fy = cameras.focal_from_fov(declared_h, angle_y) if angle_y else fx
  fx = fx if fx is not None else fy
  fy = fy if fy is not None else fx
  cx = num('cx', positive=False)
  cy = num('cy', positive=False)
  cx = 0.5 * declared_w if cx is None else cx
  cy = 0.5 * declared_h if cy is None else cy
  sx, sy = width / declared_w, height / declared_h
  intrinsics = np.array([fx * sx, fy * sy, cx * sx, cy * sy], np.float32)
  own = any(key in frame for key in INTRINSIC_KEYS)
  return intrinsics, own


def appearance_id(frame, where):
  """A frame's "appearance_id" (a non-negative int), or -1 when absent."""
  if 'appearance_id' not in frame:
    return -1
  value = frame['appearance_id']
  if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
      or value < 0):
    raise base.DataError(
        f'{where}: "appearance_id" must be a non-negative integer, got '
        f'{value!r}.')
  return int(value)


def appearance_values(frame, where):
  """f32[3] of a frame's "appearance" ([theta, s, g] of a variant)."""
  value = frame.get('appearance')
  if (not isinstance(value, (list, tuple)) or len(value) != 3
      or not all(is_number(v) for v in value)):
    raise base.DataError(
        f'{where}: "appearance" must be [theta, s, g], got {value!r}.')
  return np.asarray(value, np.float32)
