"""Tests for the nerfstudio loader, on a capture the test writes itself."""

import dataclasses
import json
import os
import shutil
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
from PIL import Image

from condnerf import cameras
from condnerf.data import base
from condnerf.data import nerfstudio
from condnerf.data import sampler
from condnerf.data import scenes

TARGET = np.array([5.0, -2.0, 1.0])
NUM_FRAMES = 10


def _capture_poses():
  """Cameras on a tilted ring of radius 3 around TARGET, z up, looking at it."""
  angles = np.linspace(0.0, 2.0 * np.pi, NUM_FRAMES, endpoint=False)
  offsets = np.stack([3.0 * np.cos(angles), 3.0 * np.sin(angles),
                      1.0 + 0.5 * np.sin(2 * angles)], -1)
  return np.stack([cameras.look_at(TARGET + o, TARGET) for o in offsets])


class NerfstudioTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.root = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.root)
    self.poses = _capture_poses()
    frames = []
    for i, pose in enumerate(self.poses):
      size, extra = (4, 6), {}
      if i == 2:  # A bigger image with intrinsics of its own.
        size, extra = (8, 10), {'fl_x': 20.0, 'fl_y': 22.0, 'cx': 5.0,
                                'cy': 4.0, 'w': 10, 'h': 8}
      if i == 6:  # Only the focal length is overridden.
        extra = {'fl_x': 12.0}
      channels = 4 if i % 2 else 3
      pixels = np.full(size + (channels,), 200, np.uint8)
      if channels == 4:
        pixels[..., 3] = 0
      path = os.path.join(self.root, 'images', f'f{i:02d}.png')
      os.makedirs(os.path.dirname(path), exist_ok=True)
      Image.fromarray(pixels).save(path)
      frame = {'file_path': f'images/f{i:02d}.png',
               'transform_matrix': pose.tolist(), 'appearance_id': i % 3}
      frame.update(extra)
      frames.append(frame)
    frames[3]['split'] = 'val'
    frames[4]['split'] = 'train'
    frames.reverse()  # The loader sorts by file_path.
    self.meta = {'camera_model': 'OPENCV', 'fl_x': 10.0, 'fl_y': 11.0,
                 'cx': 3.0, 'cy': 2.0, 'w': 6, 'h': 4, 'k1': 0.01,
                 'frames': frames}
    self._write()

  def _write(self):
    with open(os.path.join(self.root, 'transforms.json'), 'w',
              encoding='utf-8') as f:
      json.dump(self.meta, f)

  def _all(self, scene):
    frames = [scene.train, scene.val, scene.test]
    names = sum([f.names for f in frames], [])
    return names, np.concatenate([f.poses for f in frames])

  def test_splits_and_intrinsics(self):
    scene = scenes.load_scene('nerfstudio', self.root, holdout=4)
    name = lambda i: os.path.join('images', f'f{i:02d}.png')
    self.assertEqual(scene.test.names, [name(0), name(8)])
    self.assertEqual(scene.val.names, [name(3)])
    self.assertEqual(scene.train.names,
                     [name(i) for i in (1, 2, 4, 5, 6, 7, 9)])
    np.testing.assert_allclose(scene.train.intrinsics[:5], [
        [10.0, 11.0, 3.0, 2.0],
        [20.0, 22.0, 5.0, 4.0],
        [10.0, 11.0, 3.0, 2.0],
        [10.0, 11.0, 3.0, 2.0],
        [12.0, 11.0, 3.0, 2.0],
    ])
    self.assertEqual(scene.train.images[1].shape, (8, 10, 3))
    # RGB frames get alpha 1; RGBA frames keep theirs (0 here).
    self.assertEqual(scene.train.alphas[0].max(), 0.0)
    self.assertEqual(scene.train.alphas[1].min(), 1.0)
    np.testing.assert_allclose(scene.train.images[0], 1.0)  # Background.
    np.testing.assert_array_equal(scene.train.appearance_ids,
                                  [1, 2, 1, 2, 0, 1, 0])
    self.assertEqual(scene.num_codes, 3)
    self.assertTrue(scene.metadata['distortion'])
    np.testing.assert_array_equal(scene.train.distortion[:, 0], 0.01)
    np.testing.assert_array_equal(scene.train.distortion[:, 1:], 0.0)

  def test_normalization(self):
    scene = nerfstudio.load_nerfstudio(self.root, holdout=4)
    names, poses = self._all(scene)
    order = [int(n[-6:-4]) for n in names]
    original = self.poses[order]
    centers = poses[:, :3, 3]
    np.testing.assert_allclose(centers.mean(0), 0.0, atol=1e-5)
    self.assertAlmostEqual(np.linalg.norm(centers, axis=-1).max(), 1.0,
                           places=5)
    rotations = poses[:, :3, :3]
    np.testing.assert_allclose(rotations @ rotations.transpose(0, 2, 1),
                               np.broadcast_to(np.eye(3), rotations.shape),
                               atol=1e-5)
    up = rotations[:, :, 1].mean(0)
    np.testing.assert_allclose(up / np.linalg.norm(up), [0, 1, 0], atol=1e-5)
    # A similarity: distances scale uniformly; cameras still see TARGET.
    scale = np.linalg.norm(centers[0] - centers[1]) / np.linalg.norm(
        original[0, :3, 3] - original[1, :3, 3])
    np.testing.assert_allclose(
        np.linalg.norm(centers[2] - centers[5]),
        scale * np.linalg.norm(original[2, :3, 3] - original[5, :3, 3]),
        rtol=1e-5)
    transform = scene.metadata['world_transform']
    target = (transform @ np.append(TARGET, 1.0))[:3]
    for pose in poses:
      view = target - pose[:3, 3]
      np.testing.assert_allclose(view / np.linalg.norm(view), -pose[:3, 2],
                                 atol=1e-5)
    np.testing.assert_allclose(
        (transform @ np.append(original[0, :3, 3], 1.0))[:3], centers[0],
        atol=1e-5)

  def test_applied_transform_maps_colmap_points_into_the_scene(self):
    scene = nerfstudio.load_nerfstudio(self.root, holdout=4)
    self.assertIsNone(scene.metadata['colmap_transform'])
    # ns-process-data's: json = applied @ COLMAP (a rotation about x, and a
    # shift), so a COLMAP camera center is inv(applied) @ the json's.
    angle = 0.3
    applied = np.array([[1.0, 0.0, 0.0, 0.5],
                        [0.0, np.cos(angle), -np.sin(angle), -1.0],
                        [0.0, np.sin(angle), np.cos(angle), 2.0]])
    self.meta['applied_transform'] = applied.tolist()
    self._write()
    scene = nerfstudio.load_nerfstudio(self.root, holdout=4)
    names, poses = self._all(scene)
    colmap = np.linalg.inv(np.vstack([applied, [0, 0, 0, 1]]))
    for name, pose in zip(names, poses):
      center = colmap @ np.append(self.poses[int(name[-6:-4]), :3, 3], 1.0)
      np.testing.assert_allclose(
          (scene.metadata['colmap_transform'] @ center)[:3], pose[:3, 3],
          atol=1e-5)
    self.meta['applied_transform'] = [[1.0, 0.0], [0.0, 1.0]]
    self._write()
    with self.assertRaisesRegex(base.DataError,
                                '"applied_transform" must be a 3x4'):
      nerfstudio.load_nerfstudio(self.root, holdout=4)

  def test_masks_keep_left_out_pixels_out_of_training(self):
    # Every image: left half dark (kept), right half bright (masked out).
    for i, frame in enumerate(self.meta['frames']):
      path = os.path.join(self.root, frame['file_path'])
      h, w = np.asarray(Image.open(path)).shape[:2]
      pixels = np.full((h, w, 3), 250, np.uint8)
      pixels[:, :w // 2] = 50
      Image.fromarray(pixels).save(path)
      mask = np.zeros((h, w), np.uint8)
      mask[:, :w // 2] = 255
      frame['mask_path'] = f'masks/m{i:02d}.png'
      os.makedirs(os.path.join(self.root, 'masks'), exist_ok=True)
      Image.fromarray(mask).save(os.path.join(self.root, frame['mask_path']))
    self._write()
    scene = nerfstudio.load_nerfstudio(self.root, holdout=4)
    for valid, image in zip(scene.train.valid, scene.train.images):
      self.assertEqual(valid.shape, image.shape[:2])
      self.assertTrue(np.all(valid[:, :image.shape[1] // 2]))
      self.assertFalse(np.any(valid[:, image.shape[1] // 2:]))
    draw = sampler.RaySampler(scene.train, batch_size=512, seed=0)
    for step in range(3):
      np.testing.assert_allclose(draw.batch(step).rgb, 50 / 255, atol=1e-6)
    none_kept = dataclasses.replace(
        scene.train, valid=[np.zeros_like(v) for v in scene.train.valid])
    with self.assertRaisesRegex(ValueError, 'is masked out'):
      sampler.RaySampler(none_kept, batch_size=512, seed=0)
    # Downsampled: a pixel is kept only when all of its pixels are (the
    # 8x10 frame's 5 kept columns make 2 whole ones at factor 2).
    big = nerfstudio.load_nerfstudio(self.root, holdout=4, factor=2)
    index = big.train.names.index('images/f02.png')
    np.testing.assert_array_equal(big.train.valid[index][0], [1, 1, 0, 0, 0])
    # A mask of another size, a missing one, and masks on some frames only.
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(
        os.path.join(self.root, 'masks', 'm00.png'))
    with self.assertRaisesRegex(base.DataError, 'is 3x3 but the image is'):
      nerfstudio.load_nerfstudio(self.root, holdout=4)
    os.remove(os.path.join(self.root, 'masks', 'm00.png'))
    with self.assertRaisesRegex(base.DataError, 'does not exist; fix '
                                '"mask_path"'):
      nerfstudio.load_nerfstudio(self.root, holdout=4)
    del self.meta['frames'][0]['mask_path']
    self._write()
    with self.assertRaisesRegex(base.DataError, 'some frames have '
                                '"mask_path"'):
      nerfstudio.load_nerfstudio(self.root, holdout=4)

  def test_default_and_given_ranges(self):
    scene = nerfstudio.load_nerfstudio(self.root)
    self.assertEqual(scene.train.near, nerfstudio.DEFAULT_NEAR)
    self.assertEqual(scene.scene_bound, nerfstudio.DEFAULT_SCENE_BOUND)
    self.assertGreater(scene.train.far, 1.5 * np.sqrt(3.0))
    self.assertLessEqual(scene.train.far, 1.0 + 1.5 * np.sqrt(3.0) + 1e-6)
    self.meta.update(near=1.0, far=8.0)
    self._write()
    given = nerfstudio.load_nerfstudio(
        os.path.join(self.root, 'transforms.json'))
    scale = given.metadata['world_transform'][0, :3]
    scale = np.linalg.norm(scale)
    self.assertAlmostEqual(given.train.near, 1.0 * scale, places=5)
    self.assertAlmostEqual(given.train.far, 8.0 * scale, places=5)
    _, poses = self._all(given)
    self.assertAlmostEqual(given.scene_bound,
                           np.abs(poses[:, :3, 3]).max() + 8.0 * scale,
                           places=5)

  def test_max_frames_keeps_normalization(self):
    full = nerfstudio.load_nerfstudio(self.root, holdout=4)
    few = nerfstudio.load_nerfstudio(self.root, holdout=4, max_frames=1,
                                     appearance='per_frame')
    self.assertLen(few.train, 1)
    np.testing.assert_allclose(few.train.poses[0], full.train.poses[0])

  def _expect(self, phrase, path=None, **kwargs):
    with self.assertRaises(base.DataError) as ctx:
      nerfstudio.load_nerfstudio(path or self.root, **kwargs)
    self.assertIn(phrase, str(ctx.exception))
    return str(ctx.exception)

  def test_missing_path_and_json(self):
    self._expect('does not exist', os.path.join(self.root, 'nope'))
    os.remove(os.path.join(self.root, 'transforms.json'))
    self._expect('transforms.json does not exist')

  def test_bad_split(self):
    self.meta['frames'][0]['split'] = 'training'
    self._write()
    self._expect("has split 'training'")

  def test_unsupported_camera(self):
    self.meta['camera_model'] = 'OPENCV_FISHEYE'
    self._write()
    self._expect('Undistort the images to a pinhole camera first')

  def test_distorted_pixels_see_the_points_they_image(self):
    # Per-frame OPENCV coefficients: a world point projected through the
    # lens model lands on a pixel whose ray passes through that point.
    coeffs = {'k1': -0.12, 'k2': 0.03, 'k3': 0.004, 'k4': 0.0, 'p1': 0.002,
              'p2': -0.003}
    for frame in self.meta['frames']:
      frame.update(coeffs)
    frame = self.meta['frames'][-1]  # f00 (test split)
    frame['k1'] = 0.08  # its own radial term
    self._write()
    scene = nerfstudio.load_nerfstudio(self.root, holdout=4)
    frames = scene.test
    self.assertEqual(frames.names[0], os.path.join('images', 'f00.png'))
    np.testing.assert_allclose(frames.distortion[0],
                               [0.08, 0.03, 0.004, 0.0, 0.002, -0.003],
                               rtol=1e-6)
    pose, (fx, fy, cx, cy) = frames.poses[0], frames.intrinsics[0]
    rng = np.random.default_rng(0)
    cam = np.concatenate([rng.uniform(-0.5, 0.5, (20, 2)),
                          -np.ones((20, 1))], -1) * rng.uniform(1, 3, (20, 1))
    world = cam @ pose[:3, :3].T.astype(np.float64) + pose[:3, 3]
    x, y = cam[:, 0] / -cam[:, 2], -cam[:, 1] / -cam[:, 2]  # y down
    xd, yd = cameras.distort(x, y, frames.distortion[0].astype(np.float64))
    pixels = np.stack([yd * fy + cy - 0.5, xd * fx + cx - 0.5], -1)
    rays = sampler.frame_rays(frames, np.zeros(20, np.int64),
                              pixels.astype(np.float32))
    to_point = world - rays.origins
    along = np.sum(to_point * rays.directions, -1, keepdims=True)
    miss = np.linalg.norm(to_point - along * rays.directions, axis=-1)
    self.assertLess(miss.max(), 1e-5)
    # The pinhole ray through the same pixel misses by far more.
    pinhole = sampler.frame_rays(
        dataclasses.replace(frames, distortion=None), np.zeros(20, np.int64),
        pixels.astype(np.float32))
    along = np.sum(to_point * pinhole.directions, -1, keepdims=True)
    self.assertGreater(
        np.linalg.norm(to_point - along * pinhole.directions, -1).max(), 1e-3)

  def test_undistort_inverts_distort(self):
    rng = np.random.default_rng(1)
    x, y = rng.uniform(-0.6, 0.6, (2, 200))
    coeffs = np.array([-0.25, 0.08, -0.01, 0.001, 0.003, -0.002])
    xd, yd = cameras.distort(x, y, coeffs)
    ux, uy = cameras.undistort(xd, yd, coeffs)
    np.testing.assert_allclose(ux, x, atol=1e-12)
    np.testing.assert_allclose(uy, y, atol=1e-12)

  def test_mixed_sizes_without_intrinsics(self):
    frame = self.meta['frames'][-3]  # f02, the bigger image.
    for key in ('fl_x', 'fl_y', 'cx', 'cy', 'w', 'h'):
      del frame[key]
    self._write()
    self._expect('share one size', holdout=4)

  @parameterized.named_parameters(
      ('missing_image', 'file_path', 'images/gone.png', 'does not exist'),
      ('bad_pose', 'transform_matrix', [[1, 0], [0, 1]], 'must be a 4x4'),
      ('bad_id', 'appearance_id', 'x', 'non-negative integer'),
  )
  def test_bad_frame(self, key, value, phrase):
    self.meta['frames'][0][key] = value
    self._write()
    self._expect(phrase)

  def test_no_focal(self):
    for key in ('fl_x', 'fl_y'):
      del self.meta[key]
    self._write()
    self._expect('no focal length')

  def test_unknown_dataset_name(self):
    with self.assertRaises(base.DataError) as ctx:
      scenes.load_scene('colmap', self.root)
    self.assertIn("['blender', 'llff', 'nerfstudio']", str(ctx.exception))


if __name__ == '__main__':
  absltest.main()
