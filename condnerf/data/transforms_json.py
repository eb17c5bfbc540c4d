"""The transforms.json format: its values, and reading a split's frames.

Blender-synthetic datasets (`transforms_{train,val,test}.json`) and
nerfstudio captures (`transforms.json`) share one format: a top level with
intrinsics (`camera_angle_x`, or `fl_x, fl_y, cx, cy, w, h`), optional
`near`/`far`, and `frames`, each `{file_path, transform_matrix}` with
optional per-frame intrinsics, `appearance_id`, `appearance` and
`depth_file_path`. Owns parsing those values into numbers and arrays, with a
`base.DataError` naming the file, the frame and the fix for anything
malformed, and reading the frame entries of a split into `base.Frames`
(`load_frames`), what the `blender` and `nerfstudio` loaders share.
Decoding image files is `image_io`'s; which frames form a split, and the
scene around them, is each loader's.
"""

import math
import numbers
import os

from absl import logging
import numpy as np

from condnerf import cameras
from condnerf.data import base
from condnerf.data import image_io

# Intrinsics keys a frame may carry itself, overriding the global ones.
INTRINSIC_KEYS = ('fl_x', 'fl_y', 'cx', 'cy', 'w', 'h', 'camera_angle_x',
                  'camera_angle_y')


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


def scene_range(meta, where, default_near, default_far):
  """(near, far) from a json's top-level keys, checked."""
  near = get_number(meta, 'near', default_near, where)
  far = get_number(meta, 'far', default_far, where)
  if near < 0 or far <= near:
    raise base.DataError(
        f'{where}: need 0 <= "near" < "far", got near={near}, far={far}.')
  return near, far


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


def note_outside(folder, paths, where):
  """Says, in one line, which files a dataset names outside its folder.

  Such files are read as given (on purpose: nerfstudio allows it, and a
  capture may share images with another), but a downloaded dataset could
  pull any readable image into outputs people share, so the user is told.

  Args:
    folder: the dataset's folder (the json file's).
    paths: the files its frames name.
    where: the json, for the message.
  Returns:
    list of the paths outside `folder`.
  """
  root = os.path.realpath(folder)
  outside = [p for p in paths
             if os.path.commonpath([root, os.path.realpath(p)]) != root]
  if outside:
    logging.warning(
        '%s names %d file(s) outside its folder %s, read as given: %s%s. '
        'Move them inside the dataset folder to silence this.', where,
        len(outside), folder, os.path.normpath(outside[0]),
        f' and {len(outside) - 1} more' if len(outside) > 1 else '')
  return outside


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


def file_ids(frames, where):
  """i32[N]: each frame entry's "appearance_id" (-1 where absent), read
  without the images (a training share numbers code rows from them)."""
  return np.asarray([appearance_id(frame, f'{where} frame {i}')
                     for i, frame in enumerate(frames)], np.int32)


def appearance_values(frame, where):
  """f32[3] of a frame's "appearance" ([theta, s, g] of a variant)."""
  value = frame.get('appearance')
  if (not isinstance(value, (list, tuple)) or len(value) != 3
      or not all(is_number(v) for v in value)):
    raise base.DataError(
        f'{where}: "appearance" must be [theta, s, g], got {value!r}.')
  return np.asarray(value, np.float32)


def _all_or_none(frames, key, where):
  """Whether the frames carry `key`; raises unless all or none of them do."""
  flags = [key in frame for frame in frames]
  if any(flags) and not all(flags):
    first = frames[flags.index(False)]['file_path']
    raise base.DataError(
        f'{where}: some frames have "{key}" and frame {first!r} does not; '
        'give it to every frame of the split or to none.')
  return any(flags)


def _read_view(meta, frame, folder, factor, where):
  """What one frame entry says of its view, at the image's full size.

  Returns:
    pose: f32[4, 4] camera-to-world.
    image_path: the image file.
    rgb: f32[H, W, 3] straight color.
    alpha: f32[H, W], or None when the image has no alpha channel.
    intrinsics: f32[4] for the full-size image (see `frame_intrinsics`).
    own: whether the frame carries intrinsics of its own.
  """
  pose = parse_pose(frame['transform_matrix'], where)
  image_path = resolve_image(folder, frame['file_path'], where)
  rgb, alpha = image_io.read_image(image_path)
  height, width = rgb.shape[:2]
  if height < factor or width < factor:
    raise base.DataError(f'{where}: image {width}x{height} is smaller '
                         f'than the downsampling factor {factor}.')
  intrinsics, own = frame_intrinsics(meta, frame, width, height, where)
  return pose, image_path, rgb, alpha, intrinsics, own


def frame_distortion(meta, frame, where):
  """f64[6]: a frame's lens coefficients `cameras.DISTORTION_KEYS` (its
  own, else the file's; 0 where absent)."""
  merged = dict(meta)
  merged.update(frame)
  return np.array([get_number(merged, key, 0.0, where, positive=False)
                   for key in cameras.DISTORTION_KEYS], np.float64)


def _check_same_size(first, image_path, size, where):
  """(size, path) of a split's first image that uses the global intrinsics.

  Args:
    first: None, or what this returned for an earlier image.
    image_path: this image, which also uses the global intrinsics.
    size: (height, width) of this image.
    where: frame description for error messages.
  Raises:
    DataError: when `size` differs from the first image's.
  """
  if first is None:
    return size, image_path
  if size != first[0]:
    (height, width), (first_h, first_w) = size, first[0]
    raise base.DataError(
        f'{where}: image {image_path} is {width}x{height} but '
        f'{first[1]} is {first_w}x{first_h}; images of '
        'a split must share one size unless frames give their own '
        'intrinsics ("fl_x", "fl_y", "cx", "cy", "w", "h").')
  return first


def _load_depth(folder, frame, shape, where):
  """f32[H, W]: a frame's `depth_file_path`, checked against the image."""
  path = os.path.normpath(os.path.join(folder, frame['depth_file_path']))
  if not os.path.isfile(path):
    raise base.DataError(f'{where}: depth file {path} does not exist; fix '
                         '"depth_file_path".')
  try:
    depth = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise base.DataError(f'{where}: cannot read depth file {path}: {e}') from e
  if depth.shape != shape:
    raise base.DataError(
        f'{where}: depth {path} has shape {depth.shape} but the image is '
        f'{shape}; they must match.')
  return depth.astype(np.float32)


def _load_valid(folder, frame, shape, factor, where):
  """bool[H / factor, W / factor]: a frame's `mask_path` (nerfstudio: 0 =
  leave the pixel out of training), checked against the image; a
  downsampled pixel is kept only when all of its pixels are."""
  path = os.path.normpath(os.path.join(folder, frame['mask_path']))
  if not os.path.isfile(path):
    raise base.DataError(f'{where}: mask {path} does not exist; fix '
                         '"mask_path".')
  mask = image_io.read_gray(path)
  if mask.shape != shape:
    raise base.DataError(
        f'{where}: mask {path} is {mask.shape[1]}x{mask.shape[0]} but the '
        f'image is {shape[1]}x{shape[0]}; they must match.')
  return image_io.box_downsample((mask > 0.5).astype(np.float32),
                                 factor) > 1.0 - 1e-6


def load_frames(meta, frames, folder, where, background, factor, near, far):
  """Reads frame entries into `Frames` whose ids are still the file ids.

  Args:
    meta: dict, top level of the transforms json (global intrinsics).
    frames: list of frame dicts (see `get_frames`).
    folder: folder that `file_path`s are relative to.
    where: name of the json for error messages.
    background: f32[3], color to composite on.
    factor: int downsampling factor (box average).
    near: near distance of the split.
    far: far distance of the split.
  Returns:
    `base.Frames`; `appearance_ids` i32[N] are the files' `appearance_id`s
    (-1 where absent), to be turned into code rows by `base.assign_codes`.
  """
  has_depth = _all_or_none(frames, 'depth_file_path', where)
  has_look = _all_or_none(frames, 'appearance', where)
  has_mask = _all_or_none(frames, 'mask_path', where)
  images, alphas, poses, intrinsics, ids, names = [], [], [], [], [], []
  distortions, valid = [], []
  depths, appearances, any_alpha, first = [], [], False, None
  for i, frame in enumerate(frames):
    frame_where = f'{where} frame {i} ({frame["file_path"]!r})'
    pose, image_path, rgb, alpha, intr, own = _read_view(
        meta, frame, folder, factor, frame_where)
    if not own:
      first = _check_same_size(first, image_path, rgb.shape[:2], frame_where)
    any_alpha = any_alpha or alpha is not None
    alpha = np.ones(rgb.shape[:2], np.float32) if alpha is None else alpha
    if has_depth:
      depth = _load_depth(folder, frame, rgb.shape[:2], frame_where)
      depths.append(image_io.downsample_depth(depth, factor))
    if has_look:
      appearances.append(appearance_values(frame, frame_where))
    if has_mask:
      valid.append(_load_valid(folder, frame, rgb.shape[:2], factor,
                               frame_where))
    images.append(image_io.box_downsample(
        image_io.composite(rgb, alpha, background), factor))
    alphas.append(image_io.box_downsample(alpha, factor))
    poses.append(pose)
    intrinsics.append(intr / factor)
    distortions.append(frame_distortion(meta, frame, frame_where))
    ids.append(appearance_id(frame, frame_where))
    names.append(os.path.relpath(image_path, folder))
  note_outside(folder, [os.path.join(folder, n) for n in names] + [
      os.path.join(folder, frame[key]) for frame in frames
      for key in ('depth_file_path', 'mask_path') if key in frame], where)
  return base.Frames(
      images=images, alphas=alphas if any_alpha else None,
      poses=np.asarray(poses, np.float32).reshape(-1, 4, 4),
      intrinsics=np.asarray(intrinsics, np.float32).reshape(-1, 4),
      appearance_ids=np.asarray(ids, np.int32).reshape(-1),
      names=names, near=float(near), far=float(far),
      depths=depths if has_depth else None,
      appearances=np.stack(appearances) if has_look else None,
      distortion=(np.stack(distortions) if np.any(distortions) else None),
      valid=valid if has_mask else None)
