"""Pose math of real captures: the average camera, normalisation, bounds.

Pure numpy functions on camera-to-world poses (OpenGL axes: columns right,
up, back, center), shared by the loaders of real captures (`llff`,
`nerfstudio`): the mean camera of a set of poses, moving poses (and points)
by a similarity transform into the frame of that mean camera, the scale that
fits the camera centers in a unit ball, and the frustum-based ray lengths and
bounds that turn per-camera depth bounds into near/far and a scene bound.
Owns no file format and no jax.
"""

import numpy as np


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


def transform_points(points, transform):
  """f64[N, 3]: points f32[N, 3] mapped by a homogeneous f64[4, 4]."""
  points = np.asarray(points, np.float64)
  return (transform[:3, :3] @ points[..., None])[..., 0] + transform[:3, 3]


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
  new[:, :3, 3] = transform_points(poses[:, :3, 3], transform)
  new[:, 3, 3] = 1.0
  return new.astype(np.float32)


def unit_radius_scale(poses):
  """Scale putting the farthest camera center at distance 1 from the mean.

  Args:
    poses: f32[N, 4, 4], camera-to-world.
  Returns:
    float, 1 / the largest distance of a camera center from the mean camera
    center (1 when every camera sits at the same point).
  """
  centers = np.asarray(poses)[:, :3, 3]
  radius = np.linalg.norm(centers - centers.mean(0), axis=-1)
  return float(1.0 / radius.max()) if radius.max() > 1e-6 else 1.0


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


def project(points, pose, intrinsics):
  """World points into one camera: (f64[P, 2] (row, col) pixel positions,
  f64[P] z-depth in front of the camera; <= 0 behind it).

  The inverse of `cameras.pixel_directions`: pixel (row, col) holds the
  ray through its center at (row + 0.5, col + 0.5).
  """
  pose = np.asarray(pose, np.float64)
  fx, fy, cx, cy = np.asarray(intrinsics, np.float64)
  cam = (np.asarray(points, np.float64) - pose[:3, 3]) @ pose[:3, :3]
  depth = -cam[:, 2]
  safe = np.where(depth > 1e-9, depth, 1e-9)
  col = fx * cam[:, 0] / safe + cx - 0.5
  row = -fy * cam[:, 1] / safe + cy - 0.5
  return np.stack([row, col], -1), depth


def _hull_votes(points, poses, intrinsics, masks):
  """(i64[P] cameras that see each point, i64[P] whose mask covers it)."""
  seen = np.zeros(len(points), np.int64)
  inside = np.zeros(len(points), np.int64)
  for pose, intr, mask in zip(poses, intrinsics, masks):
    pixels, depth = project(points, pose, intr)
    rows, cols = np.round(pixels).astype(np.int64).T
    visible = ((depth > 0) & (rows >= 0) & (rows < mask.shape[0]) &
               (cols >= 0) & (cols < mask.shape[1]))
    seen += visible
    hit = np.zeros(len(points), bool)
    hit[visible] = mask[rows[visible], cols[visible]] > 0.5
    inside += hit
  return seen, inside


def mask_hull_bound(poses, intrinsics, masks, bound, resolution=48,
                    agree=0.9, min_share=0.25, passes=4):
  """The half-width of the origin-centred box that holds the masks' hull.

  A point belongs to the (visual) hull when at least `min_share` of the
  cameras (and 3) see it and it lies inside at least `agree` of their
  masks. Searched on a `resolution`^3 grid of [-bound, bound]^3, then on
  grids over the previous hull's box widened by two cells (more on a side
  the hull touched), so the answer is accurate to a cell of the last grid.

  Args:
    poses: f32[N, 4, 4], camera-to-world.
    intrinsics: f32[N, 4], (fx, fy, cx, cy) of each mask's pixels.
    masks: list of N f32[H, W] foreground masks (> 0.5 = object).
    bound: half-width of a box known to hold the scene (the frusta's).
    resolution: grid points per axis.
    agree: share of the seeing cameras whose mask must cover a point.
    min_share: share of all cameras that must see a point.
    passes: grids searched.
  Returns:
    float, the hull box's half-width (+ one grid cell), or `bound` when no
    point qualifies.
  """
  min_views = max(3, min_share * len(masks))
  lo, hi = np.full(3, -bound), np.full(3, bound)
  for _ in range(passes):
    axes = [np.linspace(a, b, resolution) for a, b in zip(lo, hi)]
    points = np.stack(np.meshgrid(*axes, indexing='ij'), -1).reshape(-1, 3)
    seen, inside = _hull_votes(points, poses, intrinsics, masks)
    hull = points[(seen >= min_views) & (inside >= agree * seen)]
    if not len(hull):
      return float(bound)
    cell = (hi - lo) / (resolution - 1)
    # A side the hull touched may hide more of it: widen that side more.
    touched_lo, touched_hi = hull.min(0) <= lo + cell, hull.max(0) >= hi - cell
    lo = np.maximum(-bound, hull.min(0) - cell * np.where(touched_lo, 4, 2))
    hi = np.minimum(bound, hull.max(0) + cell * np.where(touched_hi, 4, 2))
  return float(np.abs(np.stack([hull.min(0) - cell,
                                hull.max(0) + cell])).max().clip(max=bound))
