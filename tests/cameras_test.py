"""Pinhole ray casting and camera poses, against hand-computed values.

Convention (`cameras` docstring): the camera looks down its -z axis, +x is
right and +y up in the image; pixel (row, col) has its center at
(col + 0.5, row + 0.5).
"""

import jax.numpy as jnp
import numpy as np
import pytest

from condnerf import cameras

# A 3 x 5 image with focal 2 and the principal point at the image center
# (2.5, 1.5), so pixel (1, 2) looks straight ahead, and the corner pixels
# are one focal length right/left and half of one up/down: (+-1, +-0.5, -1),
# of norm 1.5.
_HEIGHT, _WIDTH = 3, 5
_INTRINSICS = np.array([2.0, 2.0, 2.5, 1.5], np.float32)
_CORNERS = {  # pixel -> direction in camera coordinates.
    (1, 2): (0.0, 0.0, -1.0),
    (0, 0): (-2 / 3, 1 / 3, -2 / 3),
    (0, 4): (2 / 3, 1 / 3, -2 / 3),
    (2, 0): (-2 / 3, -1 / 3, -2 / 3),
    (2, 4): (2 / 3, -1 / 3, -2 / 3),
}


def _pose(rotation, position):
  pose = np.eye(4, dtype=np.float32)
  pose[:3, :3], pose[:3, 3] = rotation, position
  return pose


def test_identity_camera_rays_match_hand_values():
  origins, directions = cameras.image_rays(np.eye(4), _INTRINSICS, _HEIGHT,
                                           _WIDTH)
  assert origins.shape == directions.shape == (_HEIGHT, _WIDTH, 3)
  assert origins.dtype == directions.dtype == np.float32
  for (row, col), expected in _CORNERS.items():
    np.testing.assert_allclose(directions[row, col], expected, atol=1e-6)
  np.testing.assert_array_equal(origins, 0.0)
  # Columns go right (+x), rows go down (-y).
  assert np.all(np.diff(directions[..., 0], axis=1) > 0)
  assert np.all(np.diff(directions[..., 1], axis=0) < 0)


def test_rays_follow_the_pose_rotation_and_start_at_its_center():
  # 90 degrees about +z: camera x -> world y, camera y -> world -x.
  rotation = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
  position = np.array([1.0, 2.0, 3.0])
  origins, directions = cameras.image_rays(_pose(rotation, position),
                                           _INTRINSICS, _HEIGHT, _WIDTH)
  np.testing.assert_allclose(directions[1, 2], [0.0, 0.0, -1.0], atol=1e-6)
  np.testing.assert_allclose(directions[0, 0], [-1 / 3, -2 / 3, -2 / 3],
                             atol=1e-6)
  np.testing.assert_allclose(directions[2, 4], [1 / 3, 2 / 3, -2 / 3],
                             atol=1e-6)
  np.testing.assert_array_equal(
      origins, np.broadcast_to(position, (_HEIGHT, _WIDTH, 3)))


def test_look_at_camera_center_ray_hits_the_target():
  pose = cameras.look_at((0.0, -4.0, 0.0), (0.0, 0.0, 0.0))
  origins, directions = cameras.image_rays(pose, _INTRINSICS, _HEIGHT, _WIDTH)
  np.testing.assert_allclose(directions[1, 2], [0.0, 1.0, 0.0], atol=1e-6)
  # The top-left pixel looks left (-x), ahead (+y) and up (+z, world up).
  np.testing.assert_allclose(directions[0, 0], [-2 / 3, 2 / 3, 1 / 3],
                             atol=1e-6)
  np.testing.assert_allclose(origins[0, 0], [0.0, -4.0, 0.0], atol=1e-6)


def test_directions_are_unit_and_jax_matches_numpy():
  pose = cameras.look_at((1.0, -3.0, 2.0), (0.2, 0.1, -0.3))
  intrinsics = np.array([7.0, 6.0, 3.3, 2.1], np.float32)
  origins, directions = cameras.image_rays(pose, intrinsics, 4, 6)
  np.testing.assert_allclose(np.linalg.norm(directions, axis=-1), 1.0,
                             rtol=1e-6)
  np.testing.assert_allclose(origins, np.broadcast_to(pose[:3, 3], (4, 6, 3)))
  jnp_origins, jnp_directions = cameras.image_rays(
      jnp.asarray(pose), jnp.asarray(intrinsics), 4, 6, xnp=jnp)
  np.testing.assert_allclose(jnp_origins, origins, atol=1e-6)
  np.testing.assert_allclose(jnp_directions, directions, atol=1e-6)


def test_pixel_directions_broadcast_over_cameras():
  poses = np.stack([np.eye(4, dtype=np.float32),
                    cameras.look_at((0.0, -4.0, 0.0), (0.0, 0.0, 0.0))])
  intrinsics = np.stack([_INTRINSICS, _INTRINSICS])
  pixels = np.array([[0.0, 0.0], [1.0, 2.0]], np.float32)  # one per camera.
  origins, directions = cameras.pixel_directions(pixels, intrinsics, poses)
  np.testing.assert_allclose(directions, [[-2 / 3, 1 / 3, -2 / 3],
                                          [0.0, 1.0, 0.0]], atol=1e-6)
  np.testing.assert_allclose(origins, [[0.0, 0.0, 0.0], [0.0, -4.0, 0.0]],
                             atol=1e-6)


def test_image_pixels_is_a_row_col_grid():
  np.testing.assert_array_equal(
      cameras.image_pixels(2, 3),
      [[[0, 0], [0, 1], [0, 2]], [[1, 0], [1, 1], [1, 2]]])


def test_focal_from_fov():
  assert cameras.focal_from_fov(100, np.pi / 2) == pytest.approx(50.0)
  assert cameras.focal_from_fov(64, 2 * np.arctan(0.25)) == pytest.approx(
      128.0)


@pytest.mark.parametrize('position, target, up', [
    ((3.0, -2.0, 1.5), (0.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
    ((0.5, 2.0, -4.0), (1.0, -1.0, 0.0), (0.0, 1.0, 0.0)),
])
def test_look_at_is_a_rotation_facing_the_target(position, target, up):
  pose = cameras.look_at(position, target, up)
  rotation = pose[:3, :3]
  np.testing.assert_allclose(rotation.T @ rotation, np.eye(3), atol=1e-6)
  assert np.linalg.det(rotation) == pytest.approx(1.0, abs=1e-6)
  np.testing.assert_array_equal(pose[3], [0.0, 0.0, 0.0, 1.0])
  np.testing.assert_allclose(pose[:3, 3], position)
  forward = np.subtract(target, position)
  np.testing.assert_allclose(-rotation[:, 2], forward / np.linalg.norm(forward),
                             atol=1e-6)
  assert rotation[:, 1] @ np.asarray(up) > 0  # image up is world up-ish.
  assert rotation[:, 0] @ np.asarray(up) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize('up', [(0.0, 0.0, 1.0), (0.0, 1.0, 0.0)])
def test_orbit_path_circles_the_target_at_its_elevation(up):
  target = np.array([1.0, 0.5, -0.5])
  poses = cameras.orbit_path(6, 3.0, 30.0, target=target, up=up)
  assert poses.shape == (6, 4, 4) and poses.dtype == np.float32
  offsets = poses[:, :3, 3] - target
  np.testing.assert_allclose(np.linalg.norm(offsets, axis=-1), 3.0,
                             rtol=1e-6)
  np.testing.assert_allclose(offsets @ np.asarray(up), 1.5, rtol=1e-5)
  # Each camera looks at the target.
  np.testing.assert_allclose(-poses[:, :3, 2], -offsets / 3.0, atol=1e-6)
  # One turn in equal steps: consecutive horizontal offsets 60 degrees apart.
  flat = offsets - np.outer(offsets @ np.asarray(up), up)
  cosines = np.sum(flat * np.roll(flat, -1, axis=0), -1) / np.sum(flat**2, -1)
  np.testing.assert_allclose(cosines, 0.5, atol=1e-6)


@pytest.mark.parametrize('up', [(1.0, 0.0, 0.0), (0.0, 0.0, -1.0),
                                (0.0, 0.6, 0.8)])
def test_orbit_path_refuses_an_up_it_cannot_orbit(up):
  with pytest.raises(ValueError, match=r'\+z \(0, 0, 1\) or \+y'):
    cameras.orbit_path(4, 3.0, 20.0, up=up)
