"""Camera models: intrinsics, pixel -> ray casting, and camera paths for videos.

Conventions (Blender / OpenGL, used by every loader after conversion):
  pose: f32[4, 4] camera-to-world; the camera looks down its -z axis, +y is up
    and +x is right in the image.
  intrinsics: f32[4] = (fx, fy, cx, cy) in pixels; pixel (row, col) has its
    center at (col + 0.5, row + 0.5).
Every function takes `xnp` (numpy or jax.numpy) so host loaders and jitted code
share one implementation. Owns no I/O.
"""

import numpy as np


def focal_from_fov(width, camera_angle_x):
  """Focal length in pixels from a horizontal field of view in radians."""
  return 0.5 * width / np.tan(0.5 * camera_angle_x)


DISTORTION_KEYS = ('k1', 'k2', 'k3', 'k4', 'p1', 'p2')


def distort(x, y, coeffs):
  """OpenCV's radial-tangential lens model on normalized image coordinates.

  With r2 = x^2 + y^2 and d = 1 + k1 r2 + k2 r2^2 + k3 r2^3 + k4 r2^4:
  x' = d x + 2 p1 x y + p2 (r2 + 2 x^2), y' = d y + 2 p2 x y + p1 (r2 + 2 y^2)
  (y pointing down the image, as in OpenCV and COLMAP).

  Args:
    x, y: f64[...] undistorted normalized coordinates ((u - cx) / fx, ...).
    coeffs: f[..., 6] (k1, k2, k3, k4, p1, p2), broadcastable.
  Returns:
    (x', y') distorted, f[...] each.
  """
  k1, k2, k3, k4, p1, p2 = (coeffs[..., i] for i in range(6))
  r2 = x * x + y * y
  d = 1.0 + r2 * (k1 + r2 * (k2 + r2 * (k3 + r2 * k4)))
  return (d * x + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x),
          d * y + 2.0 * p2 * x * y + p1 * (r2 + 2.0 * y * y))


def undistort(xd, yd, coeffs, iterations=10):
  """The normalized coordinates that `distort` maps to (xd, yd) (numpy).

  Newton's method from (xd, yd), with the 2 x 2 Jacobian of `distort`
  solved in closed form; 10 steps reach float64 round-off for the
  distortions cameras have.

  Args:
    xd, yd: f64[...] distorted normalized coordinates.
    coeffs: f64[..., 6] (k1, k2, k3, k4, p1, p2), broadcastable.
    iterations: Newton steps.
  Returns:
    (x, y), f64[...] each.
  """
  k1, k2, k3, k4, p1, p2 = (coeffs[..., i] for i in range(6))
  x, y = np.array(xd, np.float64), np.array(yd, np.float64)
  for _ in range(iterations):
    r2 = x * x + y * y
    d = 1.0 + r2 * (k1 + r2 * (k2 + r2 * (k3 + r2 * k4)))
    d_r2 = k1 + r2 * (2.0 * k2 + r2 * (3.0 * k3 + r2 * 4.0 * k4))
    fx_, fy_ = distort(x, y, coeffs)
    ex, ey = fx_ - xd, fy_ - yd
    # Partial derivatives of (x', y') by x and y.
    a = d + 2.0 * x * x * d_r2 + 2.0 * p1 * y + 6.0 * p2 * x
    b = 2.0 * x * y * d_r2 + 2.0 * p1 * x + 2.0 * p2 * y
    c = 2.0 * x * y * d_r2 + 2.0 * p2 * y + 2.0 * p1 * x
    e = d + 2.0 * y * y * d_r2 + 2.0 * p2 * x + 6.0 * p1 * y
    det = a * e - b * c
    det = np.where(np.abs(det) < 1e-12, 1e-12, det)
    x = x - (e * ex - b * ey) / det
    y = y - (a * ey - c * ex) / det
  return x, y


def pixel_directions(pixels, intrinsics, pose, xnp=np, distortion=None):
  """Unit world-space directions through pixel centers.

  Args:
    pixels: f32[..., 2], (row, col) pixel indices (integers or floats).
    intrinsics: f32[..., 4], (fx, fy, cx, cy), broadcastable to `pixels`.
    pose: f32[..., 4, 4], camera-to-world matrices, broadcastable.
    xnp: numpy or jax.numpy.
    distortion: None (pinhole), or f32[..., 6] `DISTORTION_KEYS`
      coefficients, broadcastable: the rays of a distorting lens (numpy
      only).
  Returns:
    origins: f32[..., 3], the camera centers.
    directions: f32[..., 3], unit ray directions.
  """
  row, col = pixels[..., 0], pixels[..., 1]
  fx, fy, cx, cy = (intrinsics[..., i] for i in range(4))
  x, y = (col + 0.5 - cx) / fx, (row + 0.5 - cy) / fy
  if distortion is not None:
    x, y = undistort(x, y, np.asarray(distortion, np.float64))
  cam_dirs = xnp.stack([x, -y, -xnp.ones_like(row, dtype=xnp.float32)],
                       axis=-1)
  directions = (pose[..., :3, :3] @ cam_dirs[..., None])[..., 0]
  directions = directions / xnp.linalg.norm(directions, axis=-1, keepdims=True)
  origins = xnp.broadcast_to(pose[..., :3, 3], directions.shape)
  return origins.astype(xnp.float32), directions.astype(xnp.float32)


def image_pixels(height, width, xnp=np):
  """i32[height, width, 2] grid of (row, col) indices."""
  rows, cols = xnp.meshgrid(xnp.arange(height), xnp.arange(width),
                            indexing='ij')
  return xnp.stack([rows, cols], axis=-1)


def image_rays(pose, intrinsics, height, width, xnp=np):
  """Rays through every pixel center of one image.

  Args:
    pose: f32[4, 4], camera-to-world.
    intrinsics: f32[4], (fx, fy, cx, cy).
    height: image height in pixels.
    width: image width in pixels.
    xnp: numpy or jax.numpy.
  Returns:
    origins, directions: f32[height, width, 3] each.
  """
  pixels = image_pixels(height, width, xnp).astype(xnp.float32)
  return pixel_directions(pixels, xnp.asarray(intrinsics, xnp.float32),
                          xnp.asarray(pose, xnp.float32), xnp)


def look_at(position, target, up=(0.0, 0.0, 1.0)):
  """f32[4, 4] camera-to-world pose at `position` looking at `target`."""
  position = np.asarray(position, np.float64)
  forward = np.asarray(target, np.float64) - position
  forward /= np.linalg.norm(forward)
  right = np.cross(forward, np.asarray(up, np.float64))
  right /= np.linalg.norm(right)
  cam_up = np.cross(right, forward)
  pose = np.eye(4)
  pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = (
      right, cam_up, -forward, position)
  return pose.astype(np.float32)


def orbit_path(num_frames, radius, elevation_deg, target=(0.0, 0.0, 0.0),
               up=(0.0, 0.0, 1.0)):
  """f32[num_frames, 4, 4] poses circling `target` once at a fixed elevation.

  The orbit is about the `up` axis, which must be +z or +y.
  Raises:
    ValueError: another `up`.
  """
  up = np.asarray(up, np.float64)
  if up.shape != (3,) or not (np.array_equal(up, [0.0, 0.0, 1.0]) or
                              np.array_equal(up, [0.0, 1.0, 0.0])):
    raise ValueError(f'orbit_path orbits about +z (0, 0, 1) or +y (0, 1, 0); '
                     f'got up={tuple(up.tolist())}.')
  elevation = np.deg2rad(elevation_deg)
  poses = []
  for angle in np.linspace(0.0, 2.0 * np.pi, num_frames, endpoint=False):
    horizontal = np.array([np.cos(angle), np.sin(angle)]) * np.cos(elevation)
    height = radius * np.sin(elevation)
    if up[2] != 0:
      offset = np.array([horizontal[0] * radius, horizontal[1] * radius, height])
    else:
      offset = np.array([horizontal[0] * radius, height, horizontal[1] * radius])
    poses.append(look_at(np.asarray(target) + offset, target, up))
  return np.stack(poses)
