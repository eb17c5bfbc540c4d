"""Tests for the procedural chair."""

import os
import shutil
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from condnerf import cameras
from condnerf.data import blender
from condnerf.data import chair_files
from condnerf.data import procedural


def _reference_render(poses, intrinsics, height, width, supersample=1):
  """The renderer as it was before parts and lights: one color per box.

  Kept as a reference so the default render provably stays bit for bit the
  same.
  """
  k = supersample
  if k != 1:
    rgb, alpha, depth = _reference_render(
        poses, np.asarray(intrinsics, np.float64) * k, height * k, width * k)
    blocks = lambda x: x.reshape(x.shape[0], height, k, width, k,
                                 *x.shape[3:])
    coverage = blocks(alpha).mean(axis=(2, 4))
    color = blocks(rgb * alpha[..., None]).mean(axis=(2, 4))
    straight = np.where(coverage[..., None] > 0,
                        color / np.maximum(coverage[..., None], 1e-12),
                        np.asarray(procedural.BACKGROUND, np.float32))
    center = blocks(depth)[:, :, k // 2, :, k // 2]
    return (straight.astype(np.float32), coverage.astype(np.float32),
            center.astype(np.float32))
  boxes = list(procedural.CHAIR_BOXES.values())
  lower = np.array([b[0] for b in boxes], np.float64)
  upper = np.array([b[1] for b in boxes], np.float64)
  colors = np.array([b[2] for b in boxes], np.float64)
  light = np.asarray(procedural.LIGHT_DIRECTION)
  pixels = cameras.image_pixels(height, width).reshape(-1, 2).astype(
      np.float64)
  out = []
  for pose, (fx, fy, cx, cy) in zip(np.asarray(poses, np.float64),
                                    np.asarray(intrinsics, np.float64)):
    cam = np.stack([(pixels[:, 1] + 0.5 - cx) / fx,
                    -(pixels[:, 0] + 0.5 - cy) / fy,
                    -np.ones(len(pixels))], -1)
    directions = cam @ pose[:3, :3].T
    directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
    origins = np.broadcast_to(pose[:3, 3], directions.shape)
    tdist, box, normal = procedural.intersect_boxes(origins, directions,
                                                    lower, upper)
    hit = np.isfinite(tdist)
    shade = procedural.AMBIENT + procedural.DIFFUSE * np.maximum(
        normal @ light, 0.0)
    color = np.clip(colors[box] * shade[:, None], 0.0, 1.0)
    out.append((np.where(hit[:, None], color, 1.0), hit, tdist))
  shape = (len(out), height, width)
  return tuple(np.stack([o[j] for o in out]).astype(np.float32).reshape(
      shape + ((3,) if j == 0 else ())) for j in range(3))


def _orbit(num, size, seed=1):
  poses = procedural.chair_poses(num, seed=seed)
  return poses, np.tile(chair_files.dataset_intrinsics(size), (num, 1))


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
    chair_files.write_chair_dataset(root, resolution=24, num_train=3,
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


class PartsAndLightTest(parameterized.TestCase):

  def test_part_table(self):
    self.assertEqual(set(procedural.BOX_PARTS), set(procedural.CHAIR_BOXES))
    self.assertEqual(tuple(procedural.PART_COLORS), procedural.PARTS)
    for name, box in procedural.CHAIR_BOXES.items():
      self.assertEqual(procedural.PART_COLORS[procedural.BOX_PARTS[name]],
                       box[2])
    light = procedural.Light()
    self.assertEqual(light.direction, tuple(procedural.LIGHT_DIRECTION))
    self.assertEqual((light.intensity, light.ambient),
                     (procedural.DIFFUSE, procedural.AMBIENT))

  @parameterized.parameters(1, 3)
  def test_default_reproduces_reference_bitwise(self, supersample):
    poses, intrinsics = _orbit(2, 14)
    old = _reference_render(poses, intrinsics, 14, 14, supersample)
    new = procedural.render_chair(poses, intrinsics, 14, 14, supersample)
    explicit = procedural.render_chair_full(
        poses, intrinsics, 14, 14, supersample,
        part_colors=dict(procedural.PART_COLORS),
        light=procedural.Light().to_json())
    for before, after, full in zip(old, new, (explicit.rgb, explicit.alpha,
                                              explicit.depth)):
      self.assertEqual(before.dtype, after.dtype)
      np.testing.assert_array_equal(before, after)
      np.testing.assert_array_equal(before, full)

  @parameterized.parameters(1, 3)
  def test_part_maps_partition_the_object(self, supersample):
    poses, intrinsics = _orbit(3, 16)
    render = procedural.render_chair_full(poses, intrinsics, 16, 16,
                                          supersample)
    num_parts = len(procedural.PARTS)
    self.assertEqual(render.part_id.dtype, np.int32)
    self.assertEqual(render.coverage.shape, (3, 16, 16, num_parts))
    np.testing.assert_array_equal(render.part_id >= 0,
                                  np.isfinite(render.depth))
    self.assertTrue(np.all(render.part_id[np.isinf(render.depth)] == -1))
    self.assertEqual(set(np.unique(render.part_id)),
                     set(range(-1, num_parts)))
    np.testing.assert_allclose(render.coverage.sum(-1), render.alpha,
                               atol=1e-6)
    hit = render.part_id >= 0
    center = np.take_along_axis(render.coverage,
                                np.maximum(render.part_id, 0)[..., None], -1)
    self.assertTrue(np.all(center[hit] > 0))
    np.testing.assert_array_equal(render.normal[~hit], 0.0)
    np.testing.assert_allclose(np.linalg.norm(render.normal[hit], axis=-1),
                               1.0)
    if supersample == 1:  # One ray: exactly one part per hit pixel.
      np.testing.assert_array_equal(render.coverage.sum(-1), render.alpha)
      np.testing.assert_array_equal(render.coverage.argmax(-1)[hit],
                                    render.part_id[hit])

  def test_part_ids_match_the_boxes_hit(self):
    poses, intrinsics = _orbit(2, 20)
    render = procedural.render_chair_full(poses, intrinsics, 20, 20)
    boxes = list(procedural.CHAIR_BOXES.items())
    for i in range(2):
      origins, directions = cameras.image_rays(poses[i], intrinsics[i], 20,
                                               20)
      hit = render.part_id[i] >= 0
      points = origins[hit] + directions[hit] * render.depth[i][hit][:, None]
      for point, part in zip(points, render.part_id[i][hit]):
        owners = {procedural.PARTS.index(procedural.BOX_PARTS[name])
                  for name, (lo, hi, _) in boxes
                  if np.all(point >= np.asarray(lo) - 1e-4) and
                  np.all(point <= np.asarray(hi) + 1e-4)}
        self.assertIn(int(part), owners)

  @parameterized.parameters(1, 3)
  def test_recolor_changes_only_that_part(self, supersample):
    poses, intrinsics = _orbit(3, 16)
    before = procedural.render_chair_full(poses, intrinsics, 16, 16,
                                          supersample)
    after = procedural.render_chair_full(
        poses, intrinsics, 16, 16, supersample,
        part_colors={'back': (0.1, 0.25, 0.9)})
    back = before.coverage[..., procedural.PARTS.index('back')] > 0
    changed = np.any(before.rgb != after.rgb, axis=-1)
    self.assertTrue(np.any(changed))
    self.assertFalse(np.any(changed & ~back))
    if supersample == 1:
      np.testing.assert_array_equal(changed, back)
    for name in ('alpha', 'depth', 'part_id', 'coverage', 'normal'):
      np.testing.assert_array_equal(getattr(before, name),
                                    getattr(after, name))

  def test_light_shading_closed_form(self):
    intrinsics = np.array([[10.0, 10.0, 1.5, 1.5]], np.float32)
    light = procedural.Light((0.0, 0.6, 0.8), intensity=0.3, ambient=0.2)
    colors = np.tile([[0.5, 0.4, 0.3]], (len(procedural.PARTS), 1))
    render = procedural.render_chair_full(
        _top_down_pose(4.0)[None], intrinsics, 3, 3, part_colors=colors,
        light=light)
    self.assertEqual(render.part_id[0, 1, 1], procedural.PARTS.index('seat'))
    np.testing.assert_allclose(render.rgb[0, 1, 1],
                               np.array([0.5, 0.4, 0.3]) * (0.2 + 0.3 * 0.8),
                               rtol=1e-6)
    np.testing.assert_array_equal(render.normal[0, 1, 1], [0.0, 0.0, 1.0])
    below = procedural.render_chair_full(
        _top_down_pose(4.0)[None], intrinsics, 3, 3, part_colors=colors,
        light=procedural.Light((0.0, 0.0, -1.0), 0.3, 0.2))
    np.testing.assert_allclose(below.rgb[0, 1, 1],
                               np.array([0.5, 0.4, 0.3]) * 0.2, rtol=1e-6)

  def test_light_and_color_arguments(self):
    light = procedural.Light((0.0, 0.0, 2.0))
    self.assertEqual(light.direction, (0.0, 0.0, 1.0))
    self.assertEqual(procedural.as_light(light.to_json()), light)
    for bad in ((0.0, 0.0, 0.0), (1.0, np.nan, 0.0), (1.0, 0.0)):
      with self.assertRaises(ValueError):
        procedural.Light(bad)
    with self.assertRaises(ValueError):
      procedural.Light(intensity=-1.0)
    with self.assertRaises(ValueError):
      procedural.as_light({'direction': (0.0, 0.0, 1.0)})
    with self.assertRaisesRegex(ValueError, 'front_legs'):
      procedural.as_part_colors({'legs': (0.0, 0.0, 0.0)})
    with self.assertRaises(ValueError):
      procedural.as_part_colors(np.zeros((3, 3)))
    with self.assertRaises(ValueError):
      procedural.as_part_colors({'seat': (1.5, 0.0, 0.0)})
    table = procedural.as_part_colors({'seat': (0.0, 0.0, 1.0)})
    self.assertEqual(table.shape, (len(procedural.PARTS), 3))
    np.testing.assert_array_equal(table[0], [0.0, 0.0, 1.0])
    np.testing.assert_array_equal(table[1], procedural.PART_COLORS['back'])
    with self.assertRaises(ValueError):
      procedural.render_chair_full(_top_down_pose(4.0)[None],
                                   np.array([[8.0, 8.0, 4.0, 4.0]]), 8, 8,
                                   supersample=2)


if __name__ == '__main__':
  absltest.main()
