"""Normalized device coordinates for forward-facing captures (NeRF, App. C).

A forward-facing scene (LLFF: every camera looks roughly down the world's
-z axis after `data.poses.normalize_poses`) extends to infinity in front of
the cameras. NDC maps the frustum of a reference camera at the origin,
from the plane z = -near to z = -infinity, onto the cube [-1, 1]^3: a ray is
first moved to start on the near plane, and then

  x' = -sx * x / z,   y' = -sy * y / z,   z' = 1 + 2 near / z,

with sx = fx / (W / 2) and sy = fy / (H / 2) of the reference camera. Rays
stay straight; t' in [0, 1] runs from the near plane (z' = -1) to infinity
(z' = +1), so sampling t' evenly is sampling evenly in disparity.

`Projection` holds (sx, sy, near); a scene that uses NDC carries one
(`data.base.Scene.ndc`), the model samples and evaluates its fields in NDC
and reports depth back in world units (`world_distance`). Works on numpy
and jax arrays alike.
"""

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np


class Projection(NamedTuple):
  """The NDC map of a scene.

  Attributes:
    sx: fx / (W / 2) of the reference camera.
    sy: fy / (H / 2) of the reference camera.
    near: distance of the near plane z = -near (1 for LLFF scenes).
  """
  sx: float
  sy: float
  near: float = 1.0


def _xnp(*arrays):
  """numpy for numpy inputs, else jax.numpy."""
  if all(isinstance(a, (np.ndarray, float, int)) for a in arrays):
    return np
  return jnp


def rays_to_ndc(origins, directions, projection):
  """World rays to NDC rays.

  Args:
    origins: f32[..., 3] world origins (in front of the near plane: z >
      -near, where the scene's cameras sit).
    directions: f32[..., 3] world directions, looking into -z (d_z < 0).
    projection: `Projection`.
  Returns:
    (f32[..., 3] NDC origins on the plane z' = -1, f32[..., 3] NDC
    directions): the point at t' is origin' + t' direction', t' = 1 at
    infinity.
  """
  xnp = _xnp(origins, directions)
  sx, sy, near = projection
  shift = -(near + origins[..., 2:3]) / directions[..., 2:3]
  o = origins + shift * directions
  ox, oy, oz = o[..., 0], o[..., 1], o[..., 2]
  dx, dy, dz = directions[..., 0], directions[..., 1], directions[..., 2]
  ndc_origins = xnp.stack(
      [-sx * ox / oz, -sy * oy / oz, 1.0 + 2.0 * near / oz], axis=-1)
  ndc_directions = xnp.stack(
      [-sx * (dx / dz - ox / oz), -sy * (dy / dz - oy / oz),
       -2.0 * near / oz], axis=-1)
  return ndc_origins, ndc_directions


def to_world(points, projection):
  """NDC points (z' < 1) back to world points.

  Args:
    points: f32[..., 3] in NDC.
    projection: `Projection`.
  Returns:
    f32[..., 3] world points.
  """
  xnp = _xnp(points)
  sx, sy, near = projection
  z = 2.0 * near / (points[..., 2] - 1.0)
  return xnp.stack([-points[..., 0] * z / sx, -points[..., 1] * z / sy, z],
                   axis=-1)


def world_distance(t, ndc_origins, ndc_directions, origins, projection,
                   max_t=1.0 - 1e-6):
  """The world distance along the original ray of NDC ray parameter `t`.

  Args:
    t: f32[...] NDC ray parameters in [0, 1] (1 = infinity, clipped to
      `max_t`).
    ndc_origins, ndc_directions: f32[..., 3] from `rays_to_ndc`.
    origins: f32[..., 3] the rays' world origins.
    projection: `Projection`.
  Returns:
    f32[...] distance from each world origin to the point at `t`.
  """
  xnp = _xnp(t, ndc_origins)
  t = xnp.minimum(t, max_t)[..., None]
  world = to_world(ndc_origins + t * ndc_directions, projection)
  return xnp.linalg.norm(world - origins, axis=-1)


def check_forward_facing(poses, near, min_cos=0.5):
  """Refuses cameras NDC cannot serve, saying why and what to use instead.

  Args:
    poses: f32[N, 4, 4] camera-to-world in the normalized world (the average
      camera looks down -z).
    near: the near plane's distance (`Projection.near`).
    min_cos: the smallest cosine between a camera's viewing direction and -z
      that counts as facing the same way (0.5: within 60 degrees).
  Raises:
    ValueError: a camera looking away from -z, or standing beyond the near
      plane.
  """
  poses = np.asarray(poses)
  cosines = poses[:, 2, 2]  # -z axis of each camera, dotted with -z.
  worst = int(np.argmin(cosines))
  instead = ('Use data.ndc=False with model.field.use_contraction=True '
             '(unbounded, 360-degree scenes) or a scene box.')
  if cosines[worst] < min_cos:
    degrees = float(np.degrees(np.arccos(np.clip(cosines[worst], -1, 1))))
    raise ValueError(
        f'NDC needs cameras that all face one way, but camera {worst} looks '
        f'{degrees:.0f} degrees away from the mean viewing direction (at most '
        f'{np.degrees(np.arccos(min_cos)):.0f} allowed); this is not a '
        f'forward-facing capture. {instead}')
  deepest = int(np.argmin(poses[:, 2, 3]))
  if poses[deepest, 2, 3] <= -near:
    raise ValueError(
        f'NDC maps the space beyond the plane z = -{near:g}, but camera '
        f'{deepest} stands at z = {poses[deepest, 2, 3]:.2f}, past it; the '
        f'cameras do not share one front. {instead}')
