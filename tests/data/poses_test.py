"""Tests for the pose math of real captures (`condnerf.data.poses`)."""

from absl.testing import absltest
import numpy as np

from condnerf import cameras
from condnerf.data import poses as poses_lib


def _ring_poses():
  """f32[6, 4, 4]: cameras on a tilted ring around (1, 2, 3), looking at it."""
  angles = np.linspace(0.0, 2.0 * np.pi, 6, endpoint=False)
  target = np.array([1.0, 2.0, 3.0])
  offsets = np.stack([2.0 * np.cos(angles), 2.0 * np.sin(angles),
                      0.5 + 0.3 * np.sin(2 * angles)], -1)
  return np.stack([cameras.look_at(target + o, target)
                   for o in offsets]).astype(np.float32)


def _check_rotations(test, poses):
  rotations = np.asarray(poses)[:, :3, :3].astype(np.float64)
  np.testing.assert_allclose(rotations @ rotations.transpose(0, 2, 1),
                             np.broadcast_to(np.eye(3), rotations.shape),
                             atol=1e-5)
  test.assertTrue(np.all(np.linalg.det(rotations) > 0))


class PosesTest(absltest.TestCase):

  def test_average_pose_degenerate(self):
    # Cameras looking straight down: back vectors parallel to up's mean.
    poses = np.tile(np.eye(4), (2, 1, 1))
    poses[1, :3, 3] = [1.0, 0.0, 0.0]
    average = poses_lib.average_pose(poses)
    _check_rotations(self, average[None])
    np.testing.assert_allclose(average[:3, 3], [0.5, 0.0, 0.0])

  def test_normalize_poses_centers_and_scales(self):
    poses = _ring_poses()
    scale = poses_lib.unit_radius_scale(poses)
    self.assertAlmostEqual(scale, 1.0 / np.linalg.norm(
        poses[:, :3, 3] - poses[:, :3, 3].mean(0), axis=-1).max(), places=6)
    new, transform = poses_lib.normalize_poses(poses, scale)
    _check_rotations(self, new)
    np.testing.assert_allclose(new[:, :3, 3].mean(0), 0.0, atol=1e-5)
    radius = np.linalg.norm(new[:, :3, 3], axis=-1)
    self.assertAlmostEqual(float(radius.max()), 1.0, places=5)
    # The mean camera up is +y.
    up = new[:, :3, 1].mean(0)
    np.testing.assert_allclose(up / np.linalg.norm(up), [0, 1, 0], atol=1e-5)
    np.testing.assert_allclose(
        poses_lib.transform_points(poses[:, :3, 3], transform),
        new[:, :3, 3], atol=1e-5)

  def test_unit_radius_scale_of_one_point(self):
    poses = np.tile(np.eye(4, dtype=np.float32), (3, 1, 1))
    self.assertEqual(poses_lib.unit_radius_scale(poses), 1.0)

  def test_corner_ray_scale_and_frustum_bound(self):
    intrinsics = np.array([[10.0, 10.0, 5.0, 4.0]])
    scale = poses_lib.corner_ray_scale(intrinsics, [8], [10])
    np.testing.assert_allclose(scale, np.sqrt(1.0 + 0.5**2 + 0.4**2))
    pose = np.eye(4, dtype=np.float32)[None]
    bound = poses_lib.frustum_bound(pose, intrinsics, [8], [10], [[1.0, 3.0]])
    self.assertAlmostEqual(bound, 3.0)

  def test_frustum_box_holds_every_frustum_section_and_no_more(self):
    # Six cameras of different sizes and depth bounds; points drawn inside
    # each frustum between its near and far z-depths must lie in the box,
    # and the frusta's corners must reach its faces.
    poses = _ring_poses()
    rng = np.random.default_rng(3)
    heights, widths = [20, 24, 18, 30, 20, 26], [30, 24, 22, 18, 40, 26]
    shifts = rng.uniform(-2, 2, (6, 2))
    intrinsics = np.stack([[f, f, w / 2 + dx, h / 2 + dy] for f, h, w, (dx, dy)
                           in zip(rng.uniform(20, 40, 6), heights, widths,
                                  shifts)])
    depths = np.stack([rng.uniform(0.5, 1.5, 6), rng.uniform(2.0, 6.0, 6)], -1)
    bound = poses_lib.frustum_bound(poses, intrinsics, heights, widths, depths)
    reach = 0.0
    for i, pose in enumerate(poses):
      # Random pixels plus the four image corners, at random depths and at
      # both bounds.
      pixels = np.concatenate([
          rng.uniform(0, 1, (400, 2)) * [heights[i], widths[i]],
          [[0, 0], [0, widths[i]], [heights[i], 0],
           [heights[i], widths[i]]]]) - 0.5  # rays through pixel + 0.5.
      o, d = cameras.pixel_directions(pixels.astype(np.float32),
                                      intrinsics[i].astype(np.float32), pose)
      _, unit_depth = poses_lib.project(o + d, pose, intrinsics[i])
      for z in (depths[i, 0], depths[i, 1],
                rng.uniform(*depths[i], (len(pixels), 1))):
        points = o + d * (np.asarray(z).reshape(-1, 1) / unit_depth[:, None])
        _, depth = poses_lib.project(points, pose, intrinsics[i])
        np.testing.assert_allclose(depth, np.broadcast_to(
            np.asarray(z).reshape(-1), depth.shape), rtol=1e-4)
        self.assertLessEqual(np.abs(points).max(), bound * (1 + 1e-5))
        reach = max(reach, np.abs(points).max())
    self.assertGreater(reach, bound * (1 - 1e-4))

  def test_project_inverts_pixel_directions(self):
    poses = _ring_poses()
    intrinsics = np.array([30.0, 32.0, 15.5, 11.0])
    pixels = np.random.default_rng(0).uniform(0, 24, (50, 2))
    origins, directions = cameras.pixel_directions(
        pixels.astype(np.float32), intrinsics.astype(np.float32), poses[2])
    points = origins + 3.0 * directions
    back, depth = poses_lib.project(points, poses[2], intrinsics)
    np.testing.assert_allclose(back, pixels, atol=1e-3)
    self.assertTrue(np.all(depth > 0))

  def test_mask_hull_box_is_tight_around_the_object(self):
    # A ball of radius 0.5 at c, seen by 12 cameras around it (two rings).
    center, radius = np.array([0.3, -0.2, 0.1]), 0.5
    size, focal = 40, 45.0
    poses = np.stack(
        [cameras.look_at((4 * np.cos(a), 4 * np.sin(a), h), (0, 0, 0))
         for a, h in zip(np.linspace(0, 2 * np.pi, 12, endpoint=False),
                         [1.5, -1.5] * 6)])
    intrinsics = np.tile([focal, focal, size / 2, size / 2], (12, 1))
    masks = []
    pixels = cameras.image_pixels(size, size).reshape(-1, 2)
    for pose, intr in zip(poses, intrinsics):
      o, d = cameras.pixel_directions(pixels.astype(np.float32),
                                      intr.astype(np.float32), pose)
      # Distance from the ball's center to each ray's line.
      t = np.sum((center - o) * d, -1)
      gap = np.linalg.norm(o + t[:, None] * d - center, axis=-1)
      masks.append((gap < radius).reshape(size, size).astype(np.float32))
    loose = poses_lib.frustum_bound(poses, intrinsics, [size] * 12,
                                    [size] * 12, [[1.0, 8.0]] * 12)
    bound = poses_lib.mask_hull_bound(poses, intrinsics, masks, loose)
    # The ball reaches |x| = 0.8; the hull holds it, plus a little (a hull
    # of 12 views is larger than the ball, and a grid cell is added).
    self.assertGreaterEqual(bound, 0.8)
    self.assertLess(bound, 1.1)
    self.assertGreater(loose, 5.0)
    # Masks that cover nothing leave the loose box.
    empty = [np.zeros_like(m) for m in masks]
    self.assertEqual(
        poses_lib.mask_hull_bound(poses, intrinsics, empty, loose), loose)


if __name__ == '__main__':
  absltest.main()
