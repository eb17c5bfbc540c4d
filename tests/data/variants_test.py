"""Tests for appearance variants."""

import json
import os
import shutil
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import jax.numpy as jnp
import numpy as np

from condnerf.data import base
from condnerf.data import blender
from condnerf.data import chair_files
from condnerf.data import variants


def _reference(rgb, theta, s, g):
  """Per-pixel loop with an explicit Rodrigues rotation matrix."""
  u = np.ones(3) / np.sqrt(3.0)
  cross = np.array([[0.0, -u[2], u[1]], [u[2], 0.0, -u[0]],
                    [-u[1], u[0], 0.0]])
  rotation = (np.cos(theta) * np.eye(3) + np.sin(theta) * cross +
              (1.0 - np.cos(theta)) * np.outer(u, u))
  gray = np.outer(u, u)
  matrix = g * (gray + s * rotation @ (np.eye(3) - gray))
  flat = rgb.reshape(-1, 3).astype(np.float64)
  out = np.empty_like(flat)
  for i, pixel in enumerate(flat):
    out[i] = np.clip(matrix @ pixel, 0.0, 1.0)
  return out.reshape(rgb.shape)


class TransformTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.rgb = np.random.default_rng(0).uniform(size=(5, 7, 3)).astype(
        np.float32)

  def test_identity(self):
    np.testing.assert_allclose(
        variants.apply_appearance(self.rgb, *variants.IDENTITY), self.rgb,
        atol=1e-6)

  @parameterized.parameters((0.3, 0.5), (2.0, 1.5), (4.5, 1.0), (6.2, 0.7))
  def test_gray_stays_gray(self, theta, s):
    gray = np.repeat(self.rgb[..., :1], 3, axis=-1)
    np.testing.assert_allclose(variants.apply_appearance(gray, theta, s, 1.0),
                               gray, atol=1e-6)

  @parameterized.parameters((0.0, 1.0, 1.0), (1.0, 0.5, 0.6), (2.5, 1.5, 1.4),
                            (5.0, 1.2, 0.9))
  def test_matches_reference(self, theta, s, g):
    np.testing.assert_allclose(
        variants.apply_appearance(self.rgb, theta, s, g),
        _reference(self.rgb, theta, s, g), atol=1e-5)

  def test_jax_and_broadcasting(self):
    looks = np.array([[1.0, 0.5, 0.6], [3.0, 1.4, 1.2]], np.float32)
    frames = np.stack([self.rgb, self.rgb[::-1]])
    out = variants.apply_appearance(frames, *(looks[:, i, None, None]
                                              for i in range(3)), xnp=jnp)
    for k in range(2):
      np.testing.assert_allclose(out[k], _reference(frames[k], *looks[k]),
                                 atol=1e-5)

  def test_variant_image_composites(self):
    alpha = np.zeros(self.rgb.shape[:2], np.float32)
    alpha[0, 0] = 1.0
    image = variants.variant_image(self.rgb, alpha, (1.0, 1.0, 1.0),
                                   background=(0.0, 1.0, 0.0))
    np.testing.assert_array_equal(image[1:, 1:] == [0.0, 1.0, 0.0], True)
    np.testing.assert_allclose(image[0, 0],
                               _reference(self.rgb[0, 0], 1.0, 1.0, 1.0),
                               atol=1e-6)

  def test_sample_appearances(self):
    looks = variants.sample_appearances(1000, seed=3)
    self.assertEqual(looks.shape, (1000, 3))
    self.assertEqual(looks.dtype, np.float32)
    for column, (low, high) in enumerate(
        (variants.THETA_RANGE, variants.S_RANGE, variants.G_RANGE)):
      self.assertGreaterEqual(looks[:, column].min(), np.float32(low))
      self.assertLessEqual(looks[:, column].max(), np.float32(high))
    self.assertLess(looks[:, 0].max(), np.float32(2 * np.pi))
    np.testing.assert_array_equal(looks, variants.sample_appearances(1000, 3))
    self.assertFalse(np.allclose(looks, variants.sample_appearances(1000, 4)))


class MakeVariantsTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.src = os.path.join(cls.tmp, 'chair')
    chair_files.write_chair_dataset(cls.src, resolution=16, num_train=6,
                                   num_val=2, num_test=3, seed=0)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp)
    super().tearDownClass()

  def setUp(self):
    super().setUp()
    self.out_root = tempfile.mkdtemp(dir=self.tmp)
    self.out = os.path.join(self.out_root, 'variants')

  def test_round_trip(self):
    variants.make_variants(self.src, self.out, seed=7, num_appearances=4)
    scene = blender.load_blender(self.out)
    source = blender.load_blender(self.src)
    table = scene.metadata['appearances']
    np.testing.assert_array_equal(table, variants.sample_appearances(4, 7))
    self.assertEqual(scene.metadata['variants_seed'], 7)
    self.assertEqual(scene.metadata['variants_source'],
                     os.path.abspath(self.src))
    self.assertEqual(scene.num_codes, 4)
    self.assertEqual(sorted(set(scene.train.appearance_ids.tolist())),
                     [0, 1, 2, 3])
    for split in ('train', 'val', 'test'):
      frames, original = getattr(scene, split), getattr(source, split)
      self.assertTrue(np.all((frames.appearance_ids >= 0) &
                             (frames.appearance_ids < 4)))
      np.testing.assert_array_equal(frames.appearances,
                                    table[frames.appearance_ids])
      np.testing.assert_array_equal(np.stack(frames.alphas),
                                    np.stack(original.alphas))
      np.testing.assert_array_equal(np.stack(frames.depths),
                                    np.stack(original.depths))
      np.testing.assert_array_equal(frames.poses, original.poses)
      for i, code in enumerate(frames.appearance_ids):
        truth = variants.ground_truth_images(self.src, split, table[code])
        np.testing.assert_array_equal(frames.images[i], truth[i])
    # The colors really changed, and ground truth under another look differs.
    self.assertGreater(np.abs(np.stack(scene.train.images) -
                              np.stack(source.train.images)).max(), 0.1)
    with open(os.path.join(self.out, 'transforms_train.json'),
              encoding='utf-8') as f:
      meta = json.load(f)
    self.assertEqual(meta['procedural']['scene'], 'chair')  # Keys copied.
    self.assertIn('depth_file_path', meta['frames'][0])

  def test_seeded(self):
    variants.make_variants(self.src, self.out, seed=1, num_appearances=3)
    other = os.path.join(self.out_root, 'again')
    variants.make_variants(self.src, other, seed=1, num_appearances=3)
    first, second = (blender.load_blender(p) for p in (self.out, other))
    np.testing.assert_array_equal(first.test.appearance_ids,
                                  second.test.appearance_ids)
    np.testing.assert_array_equal(first.train.images[0],
                                  second.train.images[0])

  def test_refuses_non_empty_out(self):
    os.makedirs(self.out)
    with open(os.path.join(self.out, 'keep.txt'), 'w', encoding='utf-8') as f:
      f.write('mine')
    with self.assertRaises(base.DataError) as ctx:
      variants.make_variants(self.src, self.out, num_appearances=2)
    self.assertIn('is not empty', str(ctx.exception))
    self.assertTrue(os.path.isfile(os.path.join(self.out, 'keep.txt')))
    variants.make_variants(self.src, self.out, num_appearances=2,
                           overwrite=True)
    self.assertFalse(os.path.exists(os.path.join(self.out, 'keep.txt')))
    self.assertEqual(blender.load_blender(self.out).num_codes, 2)
    self.assertEqual(os.listdir(self.out_root), ['variants'])

  def test_refuses_bad_requests(self):
    with self.assertRaises(base.DataError) as ctx:
      variants.make_variants(self.src, self.src, overwrite=True)
    self.assertIn('is or contains the source', str(ctx.exception))
    with self.assertRaises(base.DataError) as ctx:
      variants.make_variants(self.src, self.out, num_appearances=7)
    self.assertIn('fewer than num_appearances=7', str(ctx.exception))
    variants.make_variants(self.src, self.out, num_appearances=2)
    with self.assertRaises(base.DataError) as ctx:
      variants.make_variants(self.out, os.path.join(self.out_root, 'x'))
    self.assertIn('already is an appearance-variant dataset',
                  str(ctx.exception))

  def test_failure_leaves_nothing(self):
    broken = os.path.join(self.out_root, 'broken')
    shutil.copytree(self.src, broken)
    os.remove(os.path.join(broken, 'test', 'r_2.png'))
    with self.assertRaises(base.DataError) as ctx:
      variants.make_variants(broken, self.out, num_appearances=2)
    self.assertIn('r_2', str(ctx.exception))
    self.assertEqual(os.listdir(self.out_root), ['broken'])


if __name__ == '__main__':
  absltest.main()
