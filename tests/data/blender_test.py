"""Tests for the Blender-format loader."""

import json
import os
import shutil
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
from PIL import Image

from condnerf.data import base
from condnerf.data import blender
from condnerf.data import chair_files
from condnerf.data import scenes

DATA = os.path.normpath(os.path.join(os.path.dirname(__file__), '..', '..',
                                     '..', 'shared', 'data'))
LEGO = os.path.join(DATA, 'lego')


def _identity_pose(z=4.0):
  pose = np.eye(4)
  pose[2, 3] = z
  return pose.tolist()


def _write_png(path, rgba):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(np.asarray(rgba, np.uint8)).save(path)


class LegoTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    if not os.path.isdir(LEGO):
      self.skipTest(f'lego not found at {LEGO} (../shared/data is absent)')

  def test_shapes_focal_alpha(self):
    scene = blender.load_blender(LEGO, max_frames=2)
    for split in ('train', 'val', 'test'):
      frames = getattr(scene, split)
      self.assertLen(frames, 2)
      self.assertEqual(frames.images[0].shape, (200, 200, 3))
      self.assertEqual(frames.images[0].dtype, np.float32)
      self.assertEqual(frames.alphas[0].shape, (200, 200))
      np.testing.assert_allclose(frames.intrinsics[:, :2], 277.7777, atol=1e-2)
      np.testing.assert_allclose(frames.intrinsics[:, 2:], 100.0)
    alpha = scene.train.alphas[0]
    self.assertGreater(alpha.max(), 0.99)
    self.assertLess(alpha.min(), 0.01)
    # Fully transparent pixels show the (white) background.
    np.testing.assert_allclose(scene.train.images[0][alpha == 0], 1.0)
    self.assertEqual(scene.num_codes, 2)
    np.testing.assert_array_equal(scene.train.appearance_ids, [0, 1])
    np.testing.assert_array_equal(scene.test.appearance_ids, [-1, -1])
    self.assertEqual((scene.train.near, scene.train.far), (2.0, 6.0))
    self.assertEqual(scene.scene_bound, 1.5)
    np.testing.assert_array_equal(scene.up, [0.0, 0.0, 1.0])
    self.assertEqual(scene.train.names[0], os.path.join('train', 'r_0.png'))

  def test_factor_and_background(self):
    scene = scenes.load_scene('blender', LEGO, factor=2, max_frames=1,
                              background=(0.0, 0.0, 0.0))
    image, alpha = scene.train.images[0], scene.train.alphas[0]
    self.assertEqual(image.shape, (100, 100, 3))
    np.testing.assert_allclose(scene.train.intrinsics[0],
                               [138.8889, 138.8889, 50.0, 50.0], atol=1e-3)
    np.testing.assert_allclose(image[alpha == 0], 0.0)


class FixtureTest(parameterized.TestCase):
  """Loads small datasets written by the test itself."""

  def setUp(self):
    super().setUp()
    self.root = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.root)

  def _dataset(self, metas):
    """Writes `transforms_<split>.json` for every split in `metas`."""
    for split, meta in metas.items():
      with open(os.path.join(self.root, f'transforms_{split}.json'), 'w',
                encoding='utf-8') as f:
        f.write(meta if isinstance(meta, str) else json.dumps(meta))
    return self.root

  def _frame(self, name, size=(4, 6), color=(255, 0, 0, 128), **extra):
    rgba = np.zeros(size + (4,), np.uint8) + np.array(color, np.uint8)
    _write_png(os.path.join(self.root, name + '.png'), rgba)
    frame = {'file_path': './' + name, 'transform_matrix': _identity_pose()}
    frame.update(extra)
    return frame

  def _simple(self, train_frames=None, test_frames=None, **top):
    meta = {'camera_angle_x': 1.0}
    meta.update(top)
    train = dict(meta, frames=train_frames or [self._frame('train/a')])
    test = dict(meta, frames=test_frames or [self._frame('test/a')])
    return self._dataset({'train': train, 'test': test})

  def test_composite_straight_alpha(self):
    frame = self._frame('train/a', color=(255, 0, 0, 51))
    path = self._simple([frame])
    scene = blender.load_blender(path, background=(0.0, 0.0, 1.0))
    a = 51 / 255
    np.testing.assert_allclose(scene.train.images[0][0, 0],
                               [a, 0.0, 1.0 - a], atol=1e-6)
    np.testing.assert_allclose(scene.train.alphas[0], a, atol=1e-6)
    self.assertIs(scene.val.images, scene.test.images)  # No val json.

  def test_file_path_with_extension_and_focal(self):
    frame = self._frame('train/a')
    frame['file_path'] += '.png'
    scene = blender.load_blender(self._simple([frame]))
    expected = 0.5 * 6 / np.tan(0.5)
    np.testing.assert_allclose(scene.train.intrinsics[0],
                               [expected, expected, 3.0, 2.0], rtol=1e-6)

  def test_files_outside_the_folder_are_read_with_a_notice(self):
    outside = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, outside)
    _write_png(os.path.join(outside, 'x.png'),
               np.full((4, 6, 4), (200, 200, 200, 255), np.uint8))
    frame = self._frame('train/a')
    frame['file_path'] = os.path.relpath(os.path.join(outside, 'x'),
                                         self.root)
    test = self._frame('test/a')
    test['file_path'] = os.path.join(outside, 'x.png')  # absolute.
    with self.assertLogs(level='WARNING') as logs:
      scene = blender.load_blender(self._simple([frame], [test]))
    self.assertLen(logs.output, 2)  # one line per split.
    self.assertIn(f'names 1 file(s) outside its folder {self.root}, read '
                  f'as given: {outside}/x.png', logs.output[0])
    np.testing.assert_allclose(scene.train.images[0][0, 0], 200 / 255,
                               atol=1e-6)
    # Files inside the folder (even through "..") say nothing.
    inside = self._frame('train/b')
    inside['file_path'] = 'train/../train/b'
    with self.assertNoLogs(level='WARNING'):
      blender.load_blender(self._simple([inside]))

  def test_factor_averages_premultiplied(self):
    rgba = np.array([[[255, 0, 0, 255], [0, 0, 255, 0]],
                     [[0, 255, 0, 255], [0, 0, 0, 255]]], np.uint8)
    _write_png(os.path.join(self.root, 'train/q.png'), rgba)
    frame = {'file_path': 'train/q', 'transform_matrix': _identity_pose(),
             'fl_x': 10.0, 'cx': 1.0, 'cy': 1.0}
    scene = blender.load_blender(self._simple([frame]), factor=2,
                                 background=(0.0, 0.0, 0.0))
    # Premultiplied mean: red + green + 0 + black over 4 pixels, alpha 3/4.
    np.testing.assert_allclose(scene.train.images[0][0, 0],
                               [0.25, 0.25, 0.0], atol=1e-6)
    np.testing.assert_allclose(scene.train.alphas[0][0, 0], 0.75)
    np.testing.assert_allclose(scene.train.intrinsics[0], [5, 5, 0.5, 0.5])

  def test_global_and_per_frame_intrinsics_mixed_sizes(self):
    frames = [
        self._frame('train/a', size=(4, 6)),
        self._frame('train/b', size=(8, 12), fl_x=20.0, fl_y=21.0, cx=5.0,
                    cy=4.0, w=12, h=8),
        self._frame('train/c', size=(2, 3), w=6, h=4),
    ]
    path = self._simple(frames, fl_x=10.0, fl_y=11.0, cx=3.0, cy=2.0, w=6,
                        h=4)
    scene = blender.load_blender(path)
    np.testing.assert_allclose(scene.train.intrinsics, [
        [10.0, 11.0, 3.0, 2.0],
        [20.0, 21.0, 5.0, 4.0],
        [5.0, 5.5, 1.5, 1.0],  # Declared 6x4, actual 3x2: scaled by 1/2.
    ])
    self.assertEqual([im.shape[:2] for im in scene.train.images],
                     [(4, 6), (8, 12), (2, 3)])

  def test_near_far_bound_ids_appearances_depths(self):
    depth = np.full((4, 6), np.inf, np.float32)
    depth[1, 2] = 3.5
    np.save(os.path.join(self.root, 'd.npy'), depth)
    train = [self._frame('train/a', appearance_id=2, depth_file_path='d.npy',
                         appearance=[0.5, 1.0, 1.2]),
             self._frame('train/b', appearance_id=0, depth_file_path='d.npy',
                         appearance=[0.0, 1.0, 1.0])]
    test = [self._frame('test/a', appearance_id=2)]
    path = self._simple(train, test, near=0.5, far=3.0, scene_bound=2.5,
                        appearances=[[0, 1, 1], [1, 1, 1], [2, 1, 1]],
                        variants_seed=3)
    scene = blender.load_blender(path)
    self.assertEqual(scene.num_codes, 3)
    np.testing.assert_array_equal(scene.train.appearance_ids, [2, 0])
    np.testing.assert_array_equal(scene.test.appearance_ids, [2])
    np.testing.assert_allclose(scene.train.appearances,
                               [[0.5, 1.0, 1.2], [0.0, 1.0, 1.0]])
    self.assertIsNone(scene.test.depths)
    np.testing.assert_array_equal(scene.train.depths[0], depth)
    self.assertEqual((scene.test.near, scene.test.far), (0.5, 3.0))
    self.assertEqual(scene.scene_bound, 2.5)
    self.assertEqual(scene.metadata['appearances'].shape, (3, 3))
    self.assertEqual(scene.metadata['variants_seed'], 3)
    explicit = blender.load_blender(path, num_codes=10)
    self.assertEqual(explicit.num_codes, 10)
    shared = blender.load_blender(path, appearance='shared')
    self.assertEqual(shared.num_codes, 1)

  def test_depth_factor_ignores_background(self):
    depth = np.full((4, 6), np.inf, np.float32)
    depth[0, 0], depth[0, 1] = 2.0, 4.0
    np.save(os.path.join(self.root, 'd.npy'), depth)
    frame = self._frame('train/a', depth_file_path='d.npy')
    scene = blender.load_blender(self._simple([frame]), factor=2)
    np.testing.assert_array_equal(scene.train.depths[0],
                                  [[3.0, np.inf, np.inf],
                                   [np.inf, np.inf, np.inf]])

  def test_procedural_dataset_loads(self):
    chair_files.write_chair_dataset(self.root, resolution=16, num_train=2,
                                   num_val=1, num_test=1)
    scene = blender.load_blender(self.root)
    self.assertEqual((len(scene.train), len(scene.val), len(scene.test)),
                     (2, 1, 1))
    alpha, depth = scene.train.alphas[0], scene.train.depths[0]
    np.testing.assert_array_equal(alpha > 0.5, np.isfinite(depth))

  def _expect(self, path, phrase, **kwargs):
    with self.assertRaises(base.DataError) as ctx:
      blender.load_blender(path, **kwargs)
    self.assertIn(phrase, str(ctx.exception))
    return str(ctx.exception)

  def test_missing_folder(self):
    self._expect(os.path.join(self.root, 'nope'), 'does not exist')

  def test_missing_jsons(self):
    self._dataset({'test': {'camera_angle_x': 1.0, 'frames': []}})
    message = self._expect(self.root, 'transforms_train.json')
    self.assertIn('does not exist', message)
    os.remove(os.path.join(self.root, 'transforms_test.json'))
    self._dataset({'train': {'camera_angle_x': 1.0,
                             'frames': [self._frame('train/a')]}})
    self._expect(self.root, 'transforms_test.json does not exist')

  def test_json_parse_error(self):
    self._dataset({'train': '{"frames": [', 'test': '{}'})
    message = self._expect(self.root, 'not valid JSON')
    self.assertIn('transforms_train.json', message)

  @parameterized.named_parameters(
      ('frames', 'frames', 'no "frames"'),
      ('file_path', 'file_path', 'has no "file_path"'),
      ('transform_matrix', 'transform_matrix', 'has no "transform_matrix"'),
      ('focal', 'camera_angle_x', 'no focal length'),
  )
  def test_missing_key(self, key, phrase):
    frame = self._frame('train/a')
    meta = {'camera_angle_x': 1.0, 'frames': [frame]}
    meta.pop(key, None)
    frame.pop(key, None)
    self._dataset({'train': meta, 'test': meta})
    self._expect(self.root, phrase)

  @parameterized.named_parameters(
      ('3x4', np.eye(4)[:3].tolist()),
      ('strings', [['a'] * 4] * 4),
      ('ragged', [[1, 0, 0, 0], [0, 1, 0], [0, 0, 1, 0], [0, 0, 0, 1]]),
      ('nan', [[float('nan')] * 4] * 4),
      ('scalar', 3),
  )
  def test_bad_transform_matrix(self, matrix):
    frame = self._frame('train/a', transform_matrix=matrix)
    message = self._expect(self._simple([frame]),
                           '"transform_matrix" must be a 4x4')
    self.assertIn("'./train/a'", message)

  def test_missing_image(self):
    frame = self._frame('train/a')
    frame['file_path'] = './train/missing'
    message = self._expect(self._simple([frame]), 'does not exist')
    self.assertIn('missing', message)
    self.assertIn('file_path', message)

  def test_mixed_sizes_without_intrinsics(self):
    frames = [self._frame('train/a', size=(4, 6)),
              self._frame('train/b', size=(8, 6))]
    message = self._expect(self._simple(frames), 'share one size')
    self.assertIn('6x8', message)

  @parameterized.named_parameters(
      ('string', '1'), ('float', 1.5), ('bool', True), ('negative', -1))
  def test_appearance_id_not_an_int(self, value):
    frame = self._frame('train/a', appearance_id=value)
    self._expect(self._simple([frame]), 'non-negative integer')

  def test_appearance_id_out_of_range(self):
    train = [self._frame('train/a', appearance_id=0),
             self._frame('train/b', appearance_id=3)]
    self._expect(self._simple(train), 'outside the code table [0, 2)',
                 num_codes=2)

  def test_test_id_unseen_in_training(self):
    train = [self._frame('train/a', appearance_id=0),
             self._frame('train/b', appearance_id=2)]
    test = [self._frame('test/a', appearance_id=1)]
    path = self._simple(train, test)
    self._expect(path, 'which no training frame uses')
    # With an explicit table size the id is allowed.
    self.assertEqual(blender.load_blender(path, num_codes=3).num_codes, 3)

  def test_partial_training_ids(self):
    train = [self._frame('train/a', appearance_id=0), self._frame('train/b')]
    self._expect(self._simple(train), 'give every training frame')

  def _four_frames(self, ids):
    """4 training frames of distinct colors (file ids `ids`, or none)."""
    train = [self._frame(f'train/{i}', color=(40 * i, 0, 0, 255),
                         **({} if ids is None else {'appearance_id': ids[i]}))
             for i in range(4)]
    return self._simple(train, [self._frame('test/a', appearance_id=0)]
                        if ids else None)

  def test_a_training_share_reads_only_its_frames_and_keeps_code_rows(self):
    for ids in (None, [3, 1, 3, 0]):  # per-frame codes, then file ids.
      with self.subTest(ids=ids):
        path = self._four_frames(ids)
        whole = blender.load_blender(path)
        # Process 1 of 2 with 2 shards holds frames 1 and 3; frame 0's image
        # is gone and nobody notices.
        os.rename(os.path.join(self.root, 'train/0.png'),
                  os.path.join(self.root, 'hidden.png'))
        share = base.Share(1, 2, train_shards=2, evals=False)
        mine = blender.load_blender(path, share=share)
        os.rename(os.path.join(self.root, 'hidden.png'),
                  os.path.join(self.root, 'train/0.png'))
        self.assertEqual(mine.train.names, ['train/1.png', 'train/3.png'])
        np.testing.assert_array_equal(mine.train.global_indices, [1, 3])
        self.assertEqual(mine.train.split_size, 4)
        np.testing.assert_array_equal(mine.train.images[1],
                                      whole.train.images[3])
        np.testing.assert_array_equal(mine.train.appearance_ids,
                                      whole.train.appearance_ids[[1, 3]])
        self.assertEqual(mine.num_codes, whole.num_codes)
        self.assertEqual(len(mine.test), len(whole.test))  # evals=False.

  def test_ndc_is_refused_for_a_loader_without_it(self):
    with self.assertRaisesRegex(base.DataError, "the 'blender' loader has no "
                                'NDC. Set data.ndc=False'):
      scenes.load_scene('blender', self._simple(), ndc=True)

  def test_a_training_share_checks_ids_of_frames_it_does_not_read(self):
    train = [self._frame('train/a', appearance_id=0), self._frame('train/b')]
    share = base.Share(0, 2, train_shards=2, evals=False)  # reads train/a.
    message = self._expect(self._simple(train), 'give every training frame',
                           share=share)
    self.assertIn('#1 (read by another process)', message)


if __name__ == '__main__':
  absltest.main()
