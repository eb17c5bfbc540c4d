"""Loader for the LLFF format, with NeRF's normalisation of its bounds.

An LLFF scene is a folder with `poses_bounds.npy`, f64[N, 17]: per image a 3x5
matrix (a 3x4 camera-to-world whose rotation columns are [down, right, back],
then a column (H, W, focal) at full resolution), then the near and far z-depth
of the scene points seen by that camera. Images are in `images_<factor>/`
(sorted by name, jpg/png); an optional `masks_<factor>/` holds grayscale masks
in the same sorted order, used as alpha.

Normalisation (`poses.normalize_poses`, shared with `nerfstudio`): the world
is rotated and translated so that the mean camera center is the origin, the
mean camera up vector is +y and the mean viewing direction, made orthogonal
to it, is -z; then it is scaled uniformly. For LLFF the scale follows NeRF's
`bd_factor` convention: the smallest near bound becomes 1 / 0.75. Then
  near = 0.9 * smallest near bound (= 1.2). Bounds are z-depths, which never
    exceed ray distances, so this is conservative.
  far = largest far bound times the length of the most oblique pixel ray per
    unit z-depth, i.e. the far bound as a ray distance.
  scene_bound = the largest |coordinate| of the view frustum of every camera
    cut at its own near and far bounds: a box that holds every scene point
    the bounds describe (it is generous for photo collections whose far bounds
    reach the background).
Owns the file layout and that convention; the pose math is `poses`', image
decoding `image_io`'s, and the share, code assignment and validation
`base`'s. No jax.
"""

import dataclasses
import functools
import os
from typing import Optional

import numpy as np

from condnerf import cameras
from condnerf import ndc as ndc_lib
from condnerf.data import base
from condnerf.data import image_io
from condnerf.data import poses as poses_lib

# NeRF's LLFF convention: scale so the nearest bound sits at 1 / BD_FACTOR.
BD_FACTOR = 0.75
NEAR_MARGIN = 0.9
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')


@dataclasses.dataclass(frozen=True)
class _Files:
  """The image files of a scene, one per pose in sorted order.

  Attributes:
    image_dir: the `images_<factor>/` folder.
    names: sorted image file names in it.
    mask_dir: None, or the `masks_<factor>/` folder.
    mask_names: None, or sorted mask file names, one per image.
  """
  image_dir: str
  names: list
  mask_dir: Optional[str] = None
  mask_names: Optional[list] = None


def _list_images(folder):
  return sorted(name for name in os.listdir(folder)
                if name.lower().endswith(IMAGE_EXTENSIONS)
                and not name.startswith('.'))


def _list_matching(folder, kind, count, counted):
  """Sorted image names of `folder`; raises unless there are `count` of them.

  Args:
    folder: folder to list.
    kind: what its files are, plural ('images', 'masks').
    count: how many there must be.
    counted: what has `count` entries, for the message (e.g.
      'poses_bounds.npy has 20 poses').
  """
  names = _list_images(folder)
  if len(names) != count:
    raise base.DataError(
        f'{folder} holds {len(names)} {kind} but {counted}; they must '
        'correspond one to one in sorted order.')
  return names


def _find_folder(path, prefix, factor):
  names = [f'{prefix}_{factor}'] + ([prefix] if factor == 1 else [])
  for name in names:
    folder = os.path.join(path, name)
    if os.path.isdir(folder):
      return folder
  return None


def _find_files(path, factor, num_poses, masks=True):
  """The `_Files` of a scene folder for `factor`, checked against the poses
  (without masks when `masks` is False)."""
  image_dir = _find_folder(path, 'images', factor)
  if image_dir is None:
    found = sorted(n for n in os.listdir(path) if n.startswith('images'))
    raise base.DataError(
        f'{path} has no images_{factor}/ folder (found {found}); pass a '
        'factor that matches one of them.')
  names = _list_matching(image_dir, 'images', num_poses,
                         f'poses_bounds.npy has {num_poses} poses')
  mask_dir = _find_folder(path, 'masks', factor) if masks else None
  if mask_dir is None:
    return _Files(image_dir, names)
  mask_names = _list_matching(mask_dir, 'masks', len(names),
                              f'{image_dir} holds {len(names)} images')
  return _Files(image_dir, names, mask_dir, mask_names)


def read_poses_bounds(path):
  """Reads `poses_bounds.npy`.

  Args:
    path: the .npy file.
  Returns:
    poses: f32[N, 4, 4] camera-to-world with OpenGL axes [right, up, back].
    hwf: f64[N, 3], full-resolution height, width and focal length.
    bounds: f64[N, 2], near and far z-depths.
  Raises:
    DataError: when missing or not [N, 17].
  """
  if not os.path.isfile(path):
    raise base.DataError(
        f'{path} does not exist; an LLFF scene needs poses_bounds.npy.')
  try:
    array = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise base.DataError(f'Cannot read {path}: {e}') from e
  if array.ndim != 2 or array.shape[1] != 17 or not array.shape[0]:
    raise base.DataError(f'{path} must hold an [N, 17] array, got '
                         f'{array.shape}.')
  array = array.astype(np.float64)
  if not np.all(np.isfinite(array)):
    raise base.DataError(f'{path} holds non-finite values.')
  llff = array[:, :15].reshape(-1, 3, 5)
  bounds = array[:, 15:]
  if np.any(bounds[:, 0] <= 0) or np.any(bounds[:, 1] <= bounds[:, 0]):
    raise base.DataError(f'{path}: bounds must satisfy 0 < near < far.')
  hwf = llff[:, :, 4]
  # LLFF columns are [down, right, back]; OpenGL wants [right, up, back].
  rotation = np.stack([llff[:, :, 1], -llff[:, :, 0], llff[:, :, 2]], -1)
  poses = np.tile(np.eye(4), (len(array), 1, 1))
  poses[:, :3, :3] = rotation
  poses[:, :3, 3] = llff[:, :, 3]
  return poses.astype(np.float32), hwf, bounds


def holdout_split(num_frames, holdout):
  """(train, test) index arrays: every `holdout`-th frame (from 0) is test."""
  holdout = base.check_positive_int(holdout, 'holdout', minimum=2)
  indices = np.arange(num_frames)
  test = indices[::holdout]
  train = np.setdiff1d(indices, test)
  return train, test


def _intrinsics(files, hwf):
  """Intrinsics that follow the actual image sizes, read from the headers.

  Args:
    files: `_Files`.
    hwf: f64[N, 3], full-resolution height, width and focal length.
  Returns:
    intrinsics: f32[N, 4], (fx, fy, cx, cy).
    heights: i64[N] image heights in pixels.
    widths: i64[N] image widths in pixels.
  """
  sizes = np.array([image_io.image_size(os.path.join(files.image_dir, name))
                    for name in files.names])
  heights, widths = sizes[:, 0], sizes[:, 1]
  full_h, full_w, focal = hwf.T
  intrinsics = np.stack([focal * widths / full_w, focal * heights / full_h,
                         0.5 * widths, 0.5 * heights], -1).astype(np.float32)
  return intrinsics, heights, widths


def _normalize(poses, bounds, intrinsics, heights, widths):
  """NeRF's LLFF normalisation (see the module docstring).

  Args:
    poses: f32[N, 4, 4] camera-to-world as in the file.
    bounds: f64[N, 2] near and far z-depths as in the file.
    intrinsics: f32[N, 4], (fx, fy, cx, cy).
    heights: i64[N] image heights in pixels.
    widths: i64[N] image widths in pixels.
  Returns:
    poses: f32[N, 4, 4] in scene coordinates.
    transform: f64[4, 4] from file to scene coordinates.
    bounds: f64[N, 2] scaled z-depth bounds.
    near, far, scene_bound: floats of the scene.
  """
  scale = 1.0 / (BD_FACTOR * bounds[:, 0].min())
  poses, transform = poses_lib.normalize_poses(poses, scale)
  bounds = bounds * scale
  near = NEAR_MARGIN * float(bounds[:, 0].min())
  far = float((bounds[:, 1] * poses_lib.corner_ray_scale(
      intrinsics, heights, widths)).max())
  scene_bound = poses_lib.frustum_bound(poses, intrinsics, heights, widths,
                                        bounds)
  return poses, transform, bounds, near, far, scene_bound


def _scene_box(files, poses, intrinsics, heights, widths, bound, ndc):
  """(scene_bound, `ndc.Projection` or None): NDC's box with `ndc`, else
  the masks' hull box (`_hull_bound`) when there are masks, else `bound`:
  every camera's frustum between its depth bounds (photo collections'
  frusta reach far past the object, hence the hull)."""
  if ndc:
    projection, ndc_bound = _ndc(poses, intrinsics, heights, widths)
    return ndc_bound, projection
  if files.mask_dir is not None:
    return _hull_bound(files, poses, intrinsics, bound), None
  return bound, None


def _hull_bound(files, poses, intrinsics, bound):
  """The scene box of a masked capture: the masks' visual hull
  (`poses.mask_hull_bound`), or `bound` when no mask shows background.
  Every process reads every mask (small), so all derive the same box."""
  masks = [image_io.read_gray(os.path.join(files.mask_dir, name))
           for name in files.mask_names]
  if all(m.min() > 0.5 for m in masks):
    return bound
  return poses_lib.mask_hull_bound(poses, intrinsics, masks, bound)


def _ndc(poses, intrinsics, heights, widths):
  """(`ndc.Projection` of image 0 with near 1, NDC scene bound) of a
  forward-facing capture; raises `DataError` for any other."""
  try:
    ndc_lib.check_forward_facing(poses, near=1.0)
  except ValueError as e:
    raise base.DataError(f'data.ndc=True: {e}') from e
  projection = ndc_lib.Projection(
      sx=float(2.0 * intrinsics[0, 0] / widths[0]),
      sy=float(2.0 * intrinsics[0, 1] / heights[0]), near=1.0)
  corners = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
  bound = 1.0
  for pose, intr, h, w in zip(poses, intrinsics, heights, widths):
    pixels = corners * np.float32([h, w]) - 0.5
    origins, directions = cameras.pixel_directions(pixels, intr, pose)
    start, step = ndc_lib.rays_to_ndc(origins.astype(np.float64),
                                      directions.astype(np.float64),
                                      projection)
    ends = np.concatenate([start, start + step])[:, :2]
    bound = max(bound, float(np.abs(ends).max()))
  return projection, bound


def _read_image(files, i, background):
  """(f32[H, W, 3] composited image, f32[H, W] alpha or None) of image i."""
  rgb, alpha = image_io.read_image(os.path.join(files.image_dir,
                                                files.names[i]))
  if files.mask_names is not None:
    alpha = image_io.read_gray(os.path.join(files.mask_dir,
                                            files.mask_names[i]))
    if alpha.shape != rgb.shape[:2]:
      raise base.DataError(
          f'Mask {files.mask_names[i]} is {alpha.shape[1]}x{alpha.shape[0]} '
          f'but image {files.names[i]} is {rgb.shape[1]}x{rgb.shape[0]}; '
          'masks must match their images.')
  if alpha is not None:
    rgb = image_io.composite(rgb, alpha, background)
  return rgb, alpha


def _read_frames(indices, files, poses, intrinsics, background, near, far):
  """`base.Frames` of the images at `indices` (file ids all -1)."""
  images, alphas = [], []
  for i in indices:
    rgb, alpha = _read_image(files, i, background)
    if alpha is not None:
      alphas.append(alpha)
    images.append(rgb)
  return base.Frames(
      images=images, alphas=alphas or None,
      poses=poses[indices], intrinsics=intrinsics[indices],
      appearance_ids=np.full((len(indices),), -1, np.int32),
      names=[os.path.join(os.path.basename(files.image_dir), files.names[i])
             for i in indices],
      near=near, far=far)


def load_llff(path, factor=8, appearance='auto', num_codes=0,
              background=(1.0, 1.0, 1.0), holdout=8, max_frames=0,
              share=None, ndc=False, masks=True):
  """Loads an LLFF scene (see the module docstring for the normalisation).

  Args:
    path: folder holding `poses_bounds.npy` and `images_<factor>/`.
    factor: int, which `images_<factor>/` (and `masks_<factor>/`) to read;
      intrinsics are scaled by the actual image size.
    appearance: code assignment mode, see `base.assign_appearance_ids`.
    num_codes: rows of the code table; 0 infers max training code + 1.
    background: 3 floats in [0, 1] the masked images are composited on.
    holdout: every `holdout`-th image (from the first) is a test image; val
      is the test split.
    max_frames: when > 0, keep only the first `max_frames` of every split.
    share: None, or a `base.Share`: of the held-out (val = test) split, and
      of the training split when it sets `train_shards`, read only the
      frames this process holds.
    ndc: forward-facing: sample in NDC (`_ndc`: image 0's projection, near
      plane 1, the frusta's NDC box as `scene_bound`).
    masks: use `masks_<factor>/` when present (alpha, and the box).
  Returns:
    A validated `base.Scene` (up = +y); `scene_bound` per `_scene_box`.
    `metadata`: 'bounds' (the scaled z-depth bounds f32[N, 2] of all
    frames), 'frusta_bound', 'world_transform' (f64[4, 4], file to scene).
  Raises:
    DataError: on missing or inconsistent files, naming the file and the fix.
  """
  path = base.check_folder(path, 'LLFF scene folder', 'poses_bounds.npy')
  factor, max_frames, background = base.check_options(factor, max_frames,
                                                      background)
  poses, hwf, bounds = read_poses_bounds(os.path.join(path,
                                                      'poses_bounds.npy'))
  files = _find_files(path, factor, len(poses), masks)
  train_idx, test_idx = holdout_split(len(poses), holdout)
  if max_frames:
    train_idx, test_idx = train_idx[:max_frames], test_idx[:max_frames]
  intrinsics, heights, widths = _intrinsics(files, hwf)
  poses, transform, bounds, near, far, scene_bound = _normalize(
      poses, bounds, intrinsics, heights, widths)
  frusta_bound = scene_bound
  scene_bound, projection = _scene_box(files, poses, intrinsics, heights,
                                       widths, scene_bound, ndc)
  read = functools.partial(_read_frames, files=files, poses=poses,
                           intrinsics=intrinsics, background=background,
                           near=near, far=far)
  test = base.load_share('test', list(test_idx), share, read)
  train = base.load_share('train', list(train_idx), share, read)
  splits = {'train': train, 'val': test, 'test': test}
  splits, num_codes = base.assign_codes(splits, appearance, num_codes)
  return base.build_scene(
      splits, num_codes, background, scene_bound,
      up=np.array([0.0, 1.0, 0.0], np.float32),
      metadata={'format': 'llff', 'source': os.path.abspath(path),
                'factor': factor, 'masks': files.mask_dir is not None,
                'bounds': bounds.astype(np.float32),
                'frusta_bound': frusta_bound,
                'world_transform': transform}, ndc=projection)
