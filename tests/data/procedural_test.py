"""Tests for the procedural chair."""

import os
import shutil
import tempfile

from absl.testing import absltest
import numpy as np

from condnerf import cameras
from condnerf.data import blender
from condnerf.data import procedural


def _top_down_pose(height):
  """Camera at (0, 0, height) looking down -z (identity rotation)."""
  pose = np.eye(4, dtype=np.float32)
  pose[2, 3] = height
  return pose


class ProceduralTest(absltest.TestCase):

  def test_seat_depth_from_above(self):
    # A 3x3 image whose center pixel ray is exactly the -z axis.
    intrinsics = np.array([[10.0, 10.0, 1.5, 1.5]], np.float32)
    rgb, alpha, depth = procedural.render_chair(_top_down_pose(4.0)[None],
                                                intrinsics, 3, 3)
    seat_top = procedural.CHAIR_BOXES['seat'][1][2]
    self.assertEqual(depth[0, 1, 1], np.float32(4.0 - seat_top))
    self.assertEqual(alpha[0, 1, 1], 1.0)
    light = np.asarray(procedural.LIGHT_DIRECTION)
    shade = procedural.AMBIENT + procedural.DIFFUSE * light[2]
    expected = np.asarray(procedural.CHAIR_BOXES['seat'][2]) * shade
    np.testing.assert_allclose(rgb[0, 1, 1], expected, rtol=1e-6)

  def test_background(self):
    # Looking up, away from the chair: nothing is hit.
    pose = cameras.look_at((0.0, 0.0, 4.0), (1.0, 0.0, 8.0))
    rgb, alpha, depth = procedural.render_chair(
        pose[None], np.array([[8.0, 8.0, 4.0, 4.0]]), 8, 8)
    self.assertTrue(np.all(np.isinf(depth)))
    np.testing.assert_array_equal(alpha, 0.0)
    np.testing.assert_array_equal(rgb, 1.0)

  def test_orbit_views_depth_and_mask(self):
    poses = procedural.chair_poses(3, seed=1)
    focal = cameras.focal_from_fov(32, procedural.CAMERA_ANGLE_X)
    intrinsics = np.tile([focal, focal, 16.0, 16.0], (3, 1))
    rgb, alpha, depth = procedural.render_chair(poses, intrinsics, 32, 32)
    self.assertEqual(rgb.shape, (3, 32, 32, 3))
    np.testing.assert_array_equal(alpha == 1.0, np.isfinite(depth))
    self.assertTrue(np.all(np.unique(alpha) == [0.0, 1.0]))
    # Corners are background; the center (the origin direction) is not.
    self.assertTrue(np.all(np.isinf(depth[:, [0, 0, -1, -1], [0, -1, 0, -1]])))
    self.assertTrue(np.all(alpha[:, 16, 16] == 1.0))
    red = rgb[alpha == 1.0]
    self.assertTrue(np.all(red[:, 0] > red[:, 1]) and
                    np.all(red[:, 0] > red[:, 2]))
    # Every hit point lies on the surface of some box.
    origins, directions = cameras.image_rays(poses[0], intrinsics[0], 32, 32)
    hit = np.isfinite(depth[0])
    points = origins[hit] + directions[hit] * depth[0][hit][:, None]
    lower = np.array([b[0] for b in procedural.CHAIR_BOXES.values()])
    upper = np.array([b[1] for b in procedural.CHAIR_BOXES.values()])
    outside = np.maximum(lower[None] - points[:, None],
                         points[:, None] - upper[None]).max(-1)  # [R, B]
    self.assertLess(np.abs(outside.min(-1)).max(), 1e-5)

  def test_deterministic(self):
    poses = procedural.chair_poses(2, seed=3)
    np.testing.assert_array_equal(poses, procedural.chair_poses(2, seed=3))
    self.assertFalse(np.allclose(poses, procedural.chair_poses(2, seed=4)))
    intrinsics = np.tile([20.0, 20.0, 8.0, 8.0], (2, 1))
    first = procedural.render_chair(poses, intrinsics, 16, 16)
    second = procedural.render_chair(poses, intrinsics, 16, 16)
    for a, b in zip(first, second):
      np.testing.assert_array_equal(a, b)

  def test_chair_poses_on_hemisphere(self):
    poses = procedural.chair_poses(50, seed=0, radius=4.0)
    centers = poses[:, :3, 3]
    np.testing.assert_allclose(np.linalg.norm(centers, axis=-1), 4.0,
                               rtol=1e-5)
    self.assertTrue(np.all(centers[:, 2] > 0))
    # Looking at the origin: -z axis points from the center to the origin.
    np.testing.assert_allclose(-poses[:, :3, 2], -centers / 4.0, atol=1e-5)

  def test_write_dataset(self):
    root = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, root)
    procedural.write_chair_dataset(root, resolution=24, num_train=3,
                                   num_val=1, num_test=2, seed=5)
    scene = blender.load_blender(root)
    self.assertEqual((len(scene.train), len(scene.val), len(scene.test)),
                     (3, 1, 2))
    self.assertEqual(scene.train.images[0].shape, (24, 24, 3))
    rgb, alpha, depth = procedural.render_chair(
        scene.test.poses, scene.test.intrinsics, 24, 24)
    np.testing.assert_array_equal(scene.test.depths[1], depth[1])
    np.testing.assert_array_equal(scene.test.alphas[1], alpha[1])
    np.testing.assert_allclose(scene.test.images[1], rgb[1], atol=0.5 / 255)
    self.assertEqual((scene.train.near, scene.train.far, scene.scene_bound),
                     (2.0, 6.0, 1.5))
    self.assertTrue(os.path.isfile(os.path.join(root, 'val', 'r_0.png')))


if __name__ == '__main__':
  absltest.main()
