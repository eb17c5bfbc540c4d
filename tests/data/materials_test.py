"""Tests for material variants of the procedural chair."""

import colorsys
import json
import os
import shutil
import tempfile
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from condnerf.data import base
from condnerf.data import chair_files
from condnerf.data import materials
from condnerf.data import procedural
from condnerf.data import scenes

BLUE = (0.1, 0.25, 0.9)


def _side_direction():
  """A unit direction 90 degrees away from the default light."""
  axis = np.asarray(procedural.LIGHT_DIRECTION)
  side = np.cross(axis, [0.0, 0.0, 1.0])
  return side / np.linalg.norm(side)


def _read_split(root, split):
  with open(os.path.join(root, f'transforms_{split}.json'),
            encoding='utf-8') as f:
    return json.load(f)


class DistributionTest(parameterized.TestCase):

  def test_hsv_matches_colorsys(self):
    rgb = np.random.default_rng(0).uniform(size=(50, 3))
    hsv = materials.rgb_to_hsv(rgb)
    for color, (hue, s, v) in zip(rgb, hsv):
      h_ref, s_ref, v_ref = colorsys.rgb_to_hsv(*color)
      self.assertAlmostEqual((hue / 360.0) % 1.0, h_ref, places=9)
      self.assertAlmostEqual(s, s_ref, places=9)
      self.assertAlmostEqual(v, v_ref, places=9)
    np.testing.assert_allclose(materials.hsv_to_rgb(hsv), rgb, atol=1e-12)

  def test_sampled_colors_inside_band_and_blue_outside(self):
    table = np.stack([m.part_colors
                      for m in materials.sample_appearances(200, seed=0)])
    self.assertEqual(table.shape, (200, len(procedural.PARTS), 3))
    self.assertEqual(table.dtype, np.float32)
    self.assertTrue(np.all(materials.in_color_distribution(table)))
    hue = materials.rgb_to_hsv(table)[..., 0]
    low, high = materials.HUE_RANGE_DEG
    self.assertLess(hue.min(), low + 5.0)  # The band is used to its ends.
    self.assertGreater(hue.max(), high - 5.0)
    self.assertFalse(materials.in_hue_band(BLUE))
    self.assertFalse(materials.in_color_distribution(BLUE))
    self.assertFalse(materials.in_hue_band((0.5, 0.5, 0.5)))
    defaults = np.array(list(procedural.PART_COLORS.values()))
    self.assertTrue(np.all(materials.in_color_distribution(defaults)))

  def test_light_cone(self):
    cone = 25.0
    drawn = materials.sample_appearances(300, seed=1, light_cone_deg=cone)
    directions = np.array([m.light.direction for m in drawn])
    np.testing.assert_allclose(np.linalg.norm(directions, axis=-1), 1.0)
    self.assertTrue(np.all(materials.in_light_cone(directions, cone)))
    angles = materials.light_angle_deg(directions)
    self.assertGreater(angles.max(), 0.8 * cone)
    # Uniform in solid angle: the median angle is about cone / sqrt(2).
    self.assertAlmostEqual(np.median(angles) / cone, 2**-0.5, delta=0.08)
    low, high = materials.INTENSITY_RANGE
    self.assertTrue(all(low <= m.light.intensity <= high for m in drawn))
    self.assertTrue(all(materials.in_light_distribution(m.light, cone)
                        for m in drawn))
    side = _side_direction()
    self.assertAlmostEqual(float(materials.light_angle_deg(side)), 90.0)
    self.assertFalse(materials.in_light_cone(side, cone))
    self.assertFalse(materials.in_light_distribution(
        procedural.Light(tuple(side)), cone))

  def test_cone_zero_is_the_default_light(self):
    drawn = materials.sample_appearances(5, seed=2, light_cone_deg=0.0)
    for material in drawn:
      self.assertEqual(material.light, procedural.Light())
    self.assertTrue(materials.in_light_distribution(None, 0.0))
    self.assertFalse(materials.in_light_cone(_side_direction(), 0.0))
    # The same seed gives the same colors whatever the cone.
    wide = materials.sample_appearances(5, seed=2, light_cone_deg=40.0)
    for a, b in zip(drawn, wide):
      np.testing.assert_array_equal(a.part_colors, b.part_colors)
    with self.assertRaises(base.DataError):
      materials.sample_appearances(2, seed=0, light_cone_deg=-1.0)

  def test_material_json_round_trip(self):
    material = materials.sample_appearances(1, seed=3, light_cone_deg=10)[0]
    again = materials.Material.from_json(
        json.loads(json.dumps(material.to_json())))
    np.testing.assert_array_equal(again.part_colors, material.part_colors)
    self.assertEqual(again.light, material.light)
    with self.assertRaises(base.DataError):
      materials.Material.from_json({'part_colors': {'seat': BLUE},
                                    'light': procedural.Light().to_json()})


class DatasetTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.parent = tempfile.mkdtemp()
    cls.root = os.path.join(cls.parent, 'chair')
    materials.write_material_dataset(
        cls.root, resolution=16, num_train=7, num_val=2, num_test=3,
        num_appearances=3, seed=4, supersample=3, light_cone_deg=30.0)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.parent)
    super().tearDownClass()

  def test_layout_and_ids(self):
    self.assertEqual(os.listdir(self.parent), ['chair'])
    train = _read_split(self.root, 'train')
    ids = [frame['appearance_id'] for frame in train['frames']]
    self.assertEqual(sorted(np.bincount(ids).tolist()), [2, 2, 3])
    self.assertEqual(train['parts'], list(procedural.PARTS))
    self.assertEqual(len(train['materials']), 3)
    self.assertEqual(train['procedural'],
                     {'scene': 'chair', 'seed': 4, 'resolution': 16,
                      'supersample': 3})
    self.assertEqual(train['material_distributions'],
                     materials.training_distribution(30.0))
    for split in ('train', 'val', 'test'):
      for frame in _read_split(self.root, split)['frames']:
        self.assertEqual(train['materials'][frame['appearance_id']],
                         {'part_colors': frame['part_colors'],
                          'light': frame['light']})
        self.assertTrue(os.path.isfile(
            os.path.join(self.root, frame['depth_file_path'])))

  def test_loads_with_codes_and_metadata(self):
    scene = scenes.load_scene('blender', self.root, appearance='ids',
                              num_codes=0, holdout=8)
    self.assertEqual(scene.num_codes, 3)
    self.assertEqual((len(scene.train), len(scene.val), len(scene.test)),
                     (7, 2, 3))
    test = _read_split(self.root, 'test')
    np.testing.assert_array_equal(
        scene.test.appearance_ids,
        [frame['appearance_id'] for frame in test['frames']])
    self.assertEqual(scene.metadata['parts'], list(procedural.PARTS))
    self.assertEqual(scene.metadata['procedural']['resolution'], 16)
    table = [materials.Material.from_json(entry)
             for entry in scene.metadata['materials']]
    self.assertEqual(len(table), 3)
    read = materials.read_materials(self.root)
    for a, b in zip(table, read):
      np.testing.assert_array_equal(a.part_colors, b.part_colors)
      self.assertEqual(a.light, b.light)
    self.assertEqual(
        scene.metadata['material_distributions']['light_cone_deg'], 30.0)

  @parameterized.parameters(((1.0, 1.0, 1.0), 1), ((0.2, 0.5, 0.1), 2))
  def test_ground_truth_equals_loaded_images(self, background, factor):
    scene = scenes.load_scene('blender', self.root, appearance='ids',
                              background=background, factor=factor)
    table = materials.read_materials(self.root)
    for split in ('train', 'val', 'test'):
      frames = getattr(scene, split)
      recorded = _read_split(self.root, split)['frames']
      for code, material in enumerate(table):
        images = materials.ground_truth(
            self.root, split, material.part_colors, material.light,
            background=background, factor=factor)
        for i in np.flatnonzero(frames.appearance_ids == code):
          np.testing.assert_array_equal(images[i], frames.images[i])
        # The json entries of a frame work as well as the table.
        for i, frame in enumerate(recorded):
          if frame['appearance_id'] == code:
            again = materials.ground_truth(
                self.root, split, frame['part_colors'], frame['light'],
                background=background, factor=factor, max_frames=i + 1)
            np.testing.assert_array_equal(again[i], frames.images[i])

  def test_ground_truth_of_an_edit(self):
    material = materials.read_materials(self.root)[0]
    colors = material.part_colors.copy()
    colors[procedural.PARTS.index('seat')] = BLUE
    before = materials.ground_truth(self.root, 'test', material.part_colors,
                                    material.light)
    after = materials.ground_truth(self.root, 'test', colors, material.light)
    _, coverage = materials.part_maps(self.root, 'test')
    seat = coverage[..., procedural.PARTS.index('seat')] > 0
    changed = np.any(before != after, axis=-1)
    self.assertTrue(np.any(changed))
    self.assertFalse(np.any(changed & ~seat))
    relit = materials.ground_truth(self.root, 'test', material.part_colors,
                                   procedural.Light(tuple(_side_direction())))
    self.assertFalse(np.array_equal(relit, before))

  def test_part_maps(self):
    scene = scenes.load_scene('blender', self.root, appearance='ids')
    part_id, coverage = materials.part_maps(self.root, 'val', max_frames=1)
    self.assertEqual(part_id.shape, (1, 16, 16))
    self.assertEqual(coverage.shape, (1, 16, 16, len(procedural.PARTS)))
    np.testing.assert_array_equal(part_id >= 0,
                                  np.isfinite(scene.val.depths[0])[None])
    # The written alpha is the coverage, rounded to 8 bits.
    np.testing.assert_allclose(coverage.sum(-1)[0], scene.val.alphas[0],
                               atol=0.5 / 255 + 1e-6)

  def test_refuses_non_empty_out_and_writes_nothing(self):
    parent = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, parent)
    out = os.path.join(parent, 'chair')
    os.mkdir(out)
    with open(os.path.join(out, 'keep.txt'), 'w', encoding='utf-8') as f:
      f.write('mine')
    before = set(os.listdir(parent))
    with self.assertRaisesRegex(base.DataError, 'not empty'):
      materials.write_material_dataset(out, resolution=12, num_train=2,
                                       num_val=1, num_test=1,
                                       num_appearances=2)
    self.assertEqual(os.listdir(out), ['keep.txt'])
    self.assertEqual(set(os.listdir(parent)), before)
    materials.write_material_dataset(out, resolution=12, num_train=2,
                                     num_val=1, num_test=1, num_appearances=2,
                                     overwrite=True)
    self.assertNotIn('keep.txt', os.listdir(out))
    self.assertEqual(set(os.listdir(parent)), before)

  def test_failure_leaves_no_partial_output(self):
    parent = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, parent)
    out = os.path.join(parent, 'chair')
    real = chair_files.save_frame
    calls = []

    def flaky(*args):
      calls.append(1)
      if len(calls) == 3:
        raise OSError('disk full')
      return real(*args)

    with mock.patch.object(chair_files, 'save_frame', flaky):
      with self.assertRaisesRegex(OSError, 'disk full'):
        materials.write_material_dataset(out, resolution=12, num_train=4,
                                         num_val=1, num_test=1,
                                         num_appearances=2)
    self.assertEqual(os.listdir(parent), [])

  def test_bad_arguments(self):
    parent = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, parent)
    out = os.path.join(parent, 'chair')
    with self.assertRaisesRegex(base.DataError, 'num_appearances'):
      materials.write_material_dataset(out, resolution=12, num_train=2,
                                       num_appearances=3)
    with self.assertRaises(base.DataError):
      materials.write_material_dataset(out, resolution=12, num_train=2,
                                       num_appearances=2, light_cone_deg=200)
    self.assertEqual(os.listdir(parent), [])


if __name__ == '__main__':
  absltest.main()
