"""Loader for the LLFF format, and the pose normalisation of real captures.

An LLFF scene is a folder with `poses_bounds.npy`, f64[N, 17]: per image a 3x5
matrix (a 3x4 camera-to-world whose rotation columns are [down, right, back],
then a column (H, W, focal) at full resolution), then the near and far z-depth
of the scene points seen by that camera. Images are in `images_<factor>/`
(sorted by name, jpg/png); an optional `masks_<factor>/` holds grayscale masks
in the same sorted order, used as alpha.

Normalisation (shared with `nerfstudio`, see `normalize_poses`): the world is
rotated and translated so that the mean camera center is the origin, the mean
camera up vector is +y and the mean viewing direction, made orthogonal to it,
is -z; then it is scaled uniformly. For LLFF the scale follows NeRF's
`bd_factor` convention: the smallest near bound becomes 1 / 0.75. Then
  near = 0.9 * smallest near bound (= 1.2). Bounds are z-depths, which never
    exceed ray distances, so this is conservative.
  far = largest far bound times the length of the most oblique pixel ray per
    unit z-depth, i.e. the far bound as a ray distance.
  scene_bound = the largest |coordinate| of the view frustum of every camera
    cut at its own near and far bounds: a box that holds every scene point
    the bounds describe (it is generous for photo collections whose far bounds
    reach the background).
Owns no image decoding of its own (see `blender`) and no jax.
"""

import os

import numpy as np

from condnerf.data import base
from condnerf.data import blender
from condnerf.data import image_io
from condnerf.data import transforms_json

# NeRF's LLFF convention: scale so the nearest bound sits at 1 / BD_FACTOR.
BD_FACTOR = 0.75
NEAR_MARGIN = 0.9
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')


def _normalize(vector):
  return vector / np.linalg.norm(vector)


def average_pose(poses):
  """The mean camera of a set of camera-to-world poses.

  Its center is the mean camera center, its +y axis the normalised mean camera
  up vector, and its +z axis the mean camera back vector made orthogonal to
  that up. When the back vectors cancel out or all point along the up axis
  (a full sphere of cameras, or cameras all looking straight down), the world
  axis least aligned with up is used instead.

  Args:
    poses: f32[N, 4, 4], camera-to-world (OpenGL axes).
  Returns:
    f64[4, 4] camera-to-world of the mean camera.
  """
  poses = np.asarray(poses, np.float64)
  center = poses[:, :3, 3].mean(axis=0)
  up = poses[:, :3, 1].mean(axis=0)
  if np.linalg.norm(up) < 1e-6:
    up = np.array([0.0, 1.0, 0.0])
  up = _normalize(up)
  back = poses[:, :3, 2].mean(axis=0)
  back = back - back.dot(up) * up
  if np.linalg.norm(back) < 1e-3:
    axis = np.eye(3)[np.argmin(np.abs(up))]
    back = axis - axis.dot(up) * up
  back = _normalize(back)
  right = np.cross(up, back)
  pose = np.eye(4)
  pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, up, back, center
  return pose


def normalize_poses(poses, scale):
  """Moves poses into the frame of their `average_pose`, scaled.

  Args:
    poses: f32[N, 4, 4], camera-to-world.
    scale: positive float multiplying every distance.
  Returns:
    poses: f32[N, 4, 4], camera-to-world in the new world frame (mean camera
      center at the origin, mean up along +y).
    transform: f64[4, 4], maps old world points to new ones
      (homogeneous, `p_new = transform @ p_old`).
  """
  world_from_avg = average_pose(poses)
  transform = np.diag([scale, scale, scale, 1.0]) @ np.linalg.inv(
      world_from_avg)
  return transform_poses(poses, transform), transform


def transform_poses(poses, transform):
  """Applies a similarity transform of world coordinates to poses.

  Args:
    poses: f32[N, 4, 4], camera-to-world.
    transform: f64[4, 4], rotation times a positive scale, plus translation.
  Returns:
    f32[N, 4, 4], camera-to-world in the transformed world (rotations stay
    orthonormal; camera centers move with the transform).
  """
  poses = np.asarray(poses, np.float64)
  linear = transform[:3, :3]
  scale = np.cbrt(np.linalg.det(linear))
  new = np.zeros_like(poses)
  new[:, :3, :3] = (linear / scale) @ poses[:, :3, :3]
  new[:, :3, 3] = (linear @ poses[:, :3, 3, None])[..., 0] + transform[:3, 3]
  new[:, 3, 3] = 1.0
  return new.astype(np.float32)


def corner_ray_scale(intrinsics, heights, widths):
  """f64[N]: ray length per unit z-depth through the most oblique pixel.

  Args:
    intrinsics: f32[N, 4], (fx, fy, cx, cy).
    heights: i32[N] image heights in pixels.
    widths: i32[N] image widths in pixels.
  """
  intrinsics = np.asarray(intrinsics, np.float64)
  fx, fy, cx, cy = intrinsics.T
  dx = np.maximum(np.abs(cx), np.abs(np.asarray(widths) - cx)) / fx
  dy = np.maximum(np.abs(cy), np.abs(np.asarray(heights) - cy)) / fy
  return np.sqrt(1.0 + dx**2 + dy**2)


def frustum_bound(poses, intrinsics, heights, widths, depths):
  """Largest |coordinate| of every camera's frustum between two z-depths.

  Args:
    poses: f32[N, 4, 4], camera-to-world.
    intrinsics: f32[N, 4], (fx, fy, cx, cy).
    heights: i32[N] image heights in pixels.
    widths: i32[N] image widths in pixels.
    depths: f32[N, 2], near and far z-depth of each camera.
  Returns:
    float, the half-width of the origin-centred box holding all frusta.
  """
  poses = np.asarray(poses, np.float64)
  fx, fy, cx, cy = np.asarray(intrinsics, np.float64).T
  widths, heights = np.asarray(widths), np.asarray(heights)
  corners = []
  for u in (-cx, widths - cx):
    for v in (-cy, heights - cy):
      corners.append(np.stack([u / fx, -v / fy, -np.ones_like(fx)], -1))
  corners = np.stack(corners, axis=1)  # [N, 4, 3] camera space, unit z-depth.
  points = corners[:, None] * np.asarray(depths, np.float64)[:, :, None, None]
  points = points.reshape(len(poses), -1, 3)
  world = np.einsum('nij,nkj->nki', poses[:, :3, :3], points)
  world = world + poses[:, None, :3, 3]
  return float(np.abs(world).max())


def _list_images(folder):
  return sorted(name for name in os.listdir(folder)
                if name.lower().endswith(IMAGE_EXTENSIONS)
                and not name.startswith('.'))


def _find_folder(path, prefix, factor):
  names = [f'{prefix}_{factor}'] + ([prefix] if factor == 1 else [])
  for name in names:
    folder = os.path.join(path, name)
    if os.path.isdir(folder):
      return folder
  return None


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
  holdout = transforms_json.check_positive_int(holdout, 'holdout', minimum=2)
  indices = np.arange(num_frames)
  test = indices[::holdout]
  train = np.setdiff1d(indices, test)
  return train, test


def load_llff(path, factor=8, appearance='auto', num_codes=0,
              background=(1.0, 1.0, 1.0), holdout=8, max_frames=0,
              share=None):
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
    share: None, or a `base.Share`: of the held-out (val = test) split, read
      only the frames this process evaluates.
  Returns:
    A validated `base.Scene` (up = +y). `metadata['bounds']` holds the scaled
    per-frame z-depth bounds f32[N, 2] of all frames and
    `metadata['world_transform']` f64[4, 4] the map from file to scene
    coordinates.
  Raises:
    DataError: on missing or inconsistent files, naming the file and the fix.
  """
  path = os.fspath(path)
  if not os.path.isdir(path):
    raise base.DataError(
        f'LLFF scene folder {path} does not exist; pass the folder that holds '
        'poses_bounds.npy.')
  factor = transforms_json.check_positive_int(factor, 'factor')
  max_frames = transforms_json.check_positive_int(max_frames, 'max_frames',
                                                  minimum=0)
  background = transforms_json.check_background(background)
  poses, hwf, bounds = read_poses_bounds(os.path.join(path,
                                                      'poses_bounds.npy'))
  image_dir = _find_folder(path, 'images', factor)
  if image_dir is None:
    found = sorted(n for n in os.listdir(path) if n.startswith('images'))
    raise base.DataError(
        f'{path} has no images_{factor}/ folder (found {found}); pass a '
        'factor that matches one of them.')
  names = _list_images(image_dir)
  if len(names) != len(poses):
    raise base.DataError(
        f'{image_dir} holds {len(names)} images but poses_bounds.npy has '
        f'{len(poses)} poses; they must correspond one to one in sorted '
        'order.')
  mask_dir = _find_folder(path, 'masks', factor)
  mask_names = None
  if mask_dir is not None:
    mask_names = _list_images(mask_dir)
    if len(mask_names) != len(names):
      raise base.DataError(
          f'{mask_dir} holds {len(mask_names)} masks but {image_dir} holds '
          f'{len(names)} images; they must correspond one to one in sorted '
          'order.')

  train_idx, test_idx = holdout_split(len(poses), holdout)
  if max_frames:
    train_idx, test_idx = train_idx[:max_frames], test_idx[:max_frames]

  # Intrinsics follow the actual image size, read from the file headers.
  sizes = np.array([image_io.image_size(os.path.join(image_dir, name))
                    for name in names])
  heights, widths = sizes[:, 0], sizes[:, 1]
  full_h, full_w, focal = hwf.T
  intrinsics = np.stack([focal * widths / full_w, focal * heights / full_h,
                         0.5 * widths, 0.5 * heights], -1).astype(np.float32)

  scale = 1.0 / (BD_FACTOR * bounds[:, 0].min())
  poses, transform = normalize_poses(poses, scale)
  bounds = bounds * scale
  near = NEAR_MARGIN * float(bounds[:, 0].min())
  far = float((bounds[:, 1] * corner_ray_scale(intrinsics, heights,
                                               widths)).max())
  scene_bound = frustum_bound(poses, intrinsics, heights, widths, bounds)

  def read(indices):
    images, alphas = [], []
    for i in indices:
      rgb, alpha = image_io.read_image(os.path.join(image_dir, names[i]))
      if mask_names is not None:
        alpha = image_io.read_gray(os.path.join(mask_dir, mask_names[i]))
        if alpha.shape != rgb.shape[:2]:
          raise base.DataError(
              f'Mask {mask_names[i]} is {alpha.shape[1]}x{alpha.shape[0]} but '
              f'image {names[i]} is {rgb.shape[1]}x{rgb.shape[0]}; masks must '
              'match their images.')
      if alpha is not None:
        alphas.append(alpha)
        rgb = image_io.composite(rgb, alpha, background)
      images.append(rgb)
    return base.Frames(
        images=images, alphas=alphas or None,
        poses=poses[indices], intrinsics=intrinsics[indices],
        appearance_ids=np.full((len(indices),), -1, np.int32),
        names=[os.path.join(os.path.basename(image_dir), names[i])
               for i in indices],
        near=near, far=far)

  test = blender.load_share('test', list(test_idx), share, read)
  splits = {'train': read(train_idx), 'val': test, 'test': test}
  splits, num_codes = blender.assign_codes(splits, appearance, num_codes)
  scene = base.Scene(
      train=splits['train'], val=splits['val'], test=splits['test'],
      num_codes=num_codes, background=background, scene_bound=scene_bound,
      up=np.array([0.0, 1.0, 0.0], np.float32),
      metadata={'format': 'llff', 'source': os.path.abspath(path),
                'factor': factor, 'masks': mask_dir is not None,
                'bounds': bounds.astype(np.float32),
                'world_transform': transform})
  return base.validate_scene(scene)

