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


def pixel_directions(pixels, intrinsics, pose, xnp=np):
  """Unit world-space directions through pixel centers.

  Args:
    pixels: f32[..., 2], (row, col) pixel indices (integers or floats).
    intrinsics: f32[..., 4], (fx, fy, cx, cy), broadcastable to `pixels`.
    pose: f32[..., 4, 4], camera-to-world matrices, broadcastable.
    xnp: numpy or jax.numpy.
  Returns:
    origins: f32[..., 3], the camera centers.
    directions: f32[..., 3], unit ray directions.
  """
  row, col = pixels[..., 0], pixels[..., 1]
  fx, fy, cx, cy = (intrinsics[..., i] for i in range(4))
  cam_dirs = xnp.stack([(col + 0.5 - cx) / fx, -(row + 0.5 - cy) / fy,
                        -xnp.ones_like(row, dtype=xnp.float32)], axis=-1)
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
