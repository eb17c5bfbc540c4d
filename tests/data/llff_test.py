"""Tests for the LLFF loader (its layout, normalisation and errors)."""

import os
import shutil
import tempfile
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
from PIL import Image

from condnerf import cameras
from condnerf import ndc
from condnerf.data import base
from condnerf.data import image_io
from condnerf.data import llff
from condnerf.data import poses as poses_lib
from tests import scenes

DATA = os.path.normpath(os.path.join(os.path.dirname(__file__), '..', '..',
                                     '..', 'shared', 'data'))


def _check_rotations(test, poses):
  rotations = poses[:, :3, :3].astype(np.float64)
  np.testing.assert_allclose(rotations @ rotations.transpose(0, 2, 1),
                             np.broadcast_to(np.eye(3), rotations.shape),
                             atol=1e-5)
  test.assertTrue(np.all(np.linalg.det(rotations) > 0))


class RealDataTest(parameterized.TestCase):

  def _scene(self, name, **kwargs):
    path = os.path.join(DATA, name)
    if not os.path.isdir(path):
      self.skipTest(f'{name} not found at {path} (../shared/data is absent)')
    return llff.load_llff(path, **kwargs)

  @parameterized.parameters((8, (378, 504)), (16, (189, 252)))
  def test_fern(self, factor, size):
    scene = self._scene('fern', factor=factor, max_frames=2)
    self.assertEqual(scene.train.images[0].shape, size + (3,))
    self.assertIsNone(scene.train.alphas)
    focal = 3260.52633288 * size[1] / 4032
    np.testing.assert_allclose(scene.train.intrinsics[0],
                               [focal, focal, size[1] / 2, size[0] / 2],
                               rtol=1e-5)
    self.assertAlmostEqual(scene.train.near, 1.2)
    self.assertGreater(scene.train.far, 80 / 17 * 1.2 / 0.9)
    _check_rotations(self, scene.train.poses)
    np.testing.assert_array_equal(scene.up, [0, 1, 0])
    self.assertEqual(scene.test.names[0], f'images_{factor}/image000.png')

  def test_fern_holdout(self):
    scene = self._scene('fern', factor=16)
    self.assertEqual((len(scene.train), len(scene.val), len(scene.test)),
                     (17, 3, 3))
    self.assertEqual([n[-7:-4] for n in scene.test.names],
                     ['000', '008', '016'])
    self.assertEqual(scene.num_codes, 17)
    np.testing.assert_array_equal(scene.train.appearance_ids, np.arange(17))
    np.testing.assert_array_equal(scene.test.appearance_ids, -1)
    poses = np.concatenate([scene.train.poses, scene.test.poses])
    np.testing.assert_allclose(poses[:, :3, 3].mean(0), 0.0, atol=1e-5)
    # Forward facing: every camera looks down about -z.
    self.assertGreater(poses[:, 2, 2].min(), 0.9)

  def test_statue_masks_become_alpha(self):
    scene = self._scene('statue_of_liberty', factor=4, max_frames=2,
                        background=(0.0, 0.0, 0.0))
    image, alpha = scene.train.images[0], scene.train.alphas[0]
    self.assertEqual(image.shape, (300, 200, 3))
    self.assertEqual(alpha.shape, (300, 200))
    self.assertGreater(alpha.max(), 0.99)
    self.assertLess(alpha.min(), 0.01)
    self.assertTrue(np.all(image[alpha == 0] == 0.0))
    np.testing.assert_allclose(scene.train.intrinsics[0],
                               [618.5755, 618.5755, 100.0, 150.0], rtol=1e-5)
    self.assertTrue(scene.metadata['masks'])
    self.assertEqual(scene.metadata['bounds'].shape, (135, 2))

  def test_ethiopian_head(self):
    scene = self._scene('ethiopian_head', factor=20, max_frames=1)
    self.assertEqual(scene.train.images[0].shape, (200, 200, 3))
    self.assertIsNotNone(scene.train.alphas)
    self.assertLess(scene.train.near, scene.train.far)


class FixtureTest(parameterized.TestCase):
  """A small forward-facing LLFF scene the test writes."""

  def setUp(self):
    super().setUp()
    self.root = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.root)
    self.poses = np.stack([
        cameras.look_at((x, y, 10.0), (0.0, 0.0, 0.0), up=(0.0, 1.0, 0.0))
        for x, y in ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (-1.0, -1.0))])
    self.hwf = (80.0, 120.0, 100.0)  # Full resolution; images are 1/4.
    self.bounds = np.array([[8.0, 12.0], [7.5, 11.0], [8.5, 13.0],
                            [8.0, 12.5]])
    rows = [scenes.opengl_to_llff(p, self.hwf, b)
            for p, b in zip(self.poses, self.bounds)]
    np.save(os.path.join(self.root, 'poses_bounds.npy'), np.stack(rows))
    for folder, channels in (('images_4', 3), ('masks_4', 1)):
      os.makedirs(os.path.join(self.root, folder))
      for i in range(len(self.poses)):
        shape = (20, 30) + ((channels,) if channels > 1 else ())
        pixels = np.full(shape, 255 if channels == 1 else 40, np.uint8)
        Image.fromarray(pixels).save(
            os.path.join(self.root, folder, f'img{i}.png'))

  def test_poses_intrinsics_ranges(self):
    scene = llff.load_llff(self.root, factor=4, holdout=2)
    self.assertEqual(scene.train.names, ['images_4/img1.png',
                                         'images_4/img3.png'])
    transform = scene.metadata['world_transform']
    expected = poses_lib.transform_poses(self.poses, transform)
    np.testing.assert_allclose(scene.test.poses, expected[[0, 2]], atol=1e-5)
    np.testing.assert_allclose(scene.train.poses, expected[[1, 3]],
                               atol=1e-5)
    scale = np.cbrt(np.linalg.det(transform[:3, :3]))
    self.assertAlmostEqual(scale, 1.0 / (0.75 * 7.5))
    np.testing.assert_allclose(scene.train.intrinsics[0], [25, 25, 15, 10])
    self.assertAlmostEqual(scene.train.near, 0.9 * 7.5 * scale)
    corner = np.sqrt(1.0 + (15 / 25)**2 + (10 / 25)**2)
    self.assertAlmostEqual(scene.train.far, 13.0 * scale * corner, places=5)
    # The far point on every optical axis lies inside the bound.
    poses = expected
    far_points = poses[:, :3, 3] - poses[:, :3, 2] * (self.bounds[:, 1:] *
                                                      scale)
    self.assertLessEqual(np.abs(far_points).max(), scene.scene_bound)
    self.assertEqual(scene.train.alphas[0].min(), 1.0)

  def test_masks_can_be_left_out(self):
    self.assertIsNotNone(llff.load_llff(self.root, factor=4).train.alphas)
    scene = llff.load_llff(self.root, factor=4, masks=False)
    self.assertIsNone(scene.train.alphas)
    self.assertFalse(scene.metadata['masks'])

  def test_ndc_projection_and_bound_from_the_cameras(self):
    scene = llff.load_llff(self.root, factor=4, holdout=2, ndc=True)
    # Image 0: fx = 100 / 4 = 25 over a half-width of 15 px (10 px high).
    np.testing.assert_allclose(scene.ndc, (25 / 15, 25 / 10, 1.0))
    # Every frustum corner ray between the near plane and infinity lies
    # inside the NDC box (the outermost one touches it).
    corners = []
    for frames in (scene.train, scene.test):
      for pose, intr in zip(frames.poses, frames.intrinsics):
        pixels = np.float32([[-0.5, -0.5], [-0.5, 29.5], [19.5, -0.5],
                             [19.5, 29.5]])
        o, d = cameras.pixel_directions(pixels, intr, pose)
        start, step = ndc.rays_to_ndc(o.astype(np.float64),
                                      d.astype(np.float64), scene.ndc)
        corners += [start, start + step]
    reach = np.abs(np.concatenate(corners)[:, :2]).max()
    self.assertAlmostEqual(scene.scene_bound, max(1.0, reach), places=5)
    self.assertIsNone(llff.load_llff(self.root, factor=4, holdout=2).ndc)

  def test_ndc_is_refused_for_cameras_facing_many_ways(self):
    turned = self.poses.copy()
    turned[3] = cameras.look_at((10.0, 0.0, 0.0), (0.0, 0.0, 0.0),
                                up=(0.0, 1.0, 0.0))
    rows = [scenes.opengl_to_llff(p, self.hwf, b)
            for p, b in zip(turned, self.bounds)]
    np.save(os.path.join(self.root, 'poses_bounds.npy'), np.stack(rows))
    self._expect('not a forward-facing capture. Use data.ndc=False',
                 ndc=True)
    llff.load_llff(self.root, factor=4)  # fine without NDC.

  def test_training_share_reads_its_shard_with_the_whole_normalization(self):
    whole = llff.load_llff(self.root, factor=4, holdout=4)  # train 1, 2, 3.
    share = base.Share(0, 2, train_shards=2, evals=False)  # train 1 and 3.
    decoded = []
    read_image = image_io.read_image

    def recording_read(path, *args, **kwargs):
      decoded.append(os.path.basename(path))
      return read_image(path, *args, **kwargs)

    self.enter_context(mock.patch.object(image_io, 'read_image',
                                         recording_read))
    mine = llff.load_llff(self.root, factor=4, holdout=4, share=share)
    self.assertEqual(mine.train.names, ['images_4/img1.png',
                                        'images_4/img3.png'])
    # Its training frames and the held-out ones (evals=False): not img2.
    self.assertCountEqual(decoded, ['img0.png', 'img1.png', 'img3.png'])
    np.testing.assert_array_equal(mine.train.poses, whole.train.poses[[0, 2]])
    np.testing.assert_array_equal(mine.train.appearance_ids, [0, 2])
    self.assertEqual(mine.num_codes, 3)
    self.assertEqual(mine.scene_bound, whole.scene_bound)

  def _expect(self, phrase, **kwargs):
    with self.assertRaises(base.DataError) as ctx:
      llff.load_llff(self.root, **{'factor': 4, **kwargs})
    self.assertIn(phrase, str(ctx.exception))

  def test_image_count_mismatch(self):
    os.remove(os.path.join(self.root, 'images_4', 'img3.png'))
    self._expect('holds 3 images but poses_bounds.npy has 4 poses')

  def test_mask_count_mismatch(self):
    os.remove(os.path.join(self.root, 'masks_4', 'img3.png'))
    self._expect('holds 3 masks')

  def test_missing_image_folder(self):
    self._expect("no images_3/ folder (found ['images_4'])", factor=3)

  def test_bad_poses_bounds(self):
    np.save(os.path.join(self.root, 'poses_bounds.npy'), np.zeros((4, 15)))
    self._expect('[N, 17]')
    os.remove(os.path.join(self.root, 'poses_bounds.npy'))
    self._expect('poses_bounds.npy does not exist')

  def test_missing_folder_and_bad_holdout(self):
    with self.assertRaises(base.DataError):
      llff.load_llff(os.path.join(self.root, 'nope'))
    self._expect('holdout must be an integer >= 2', holdout=1)


if __name__ == '__main__':
  absltest.main()
