"""The edit benchmark's families on a tiny material scene."""

import os
import tempfile

from absl.testing import absltest
import jax
import numpy as np

from condnerf import codes as codes_lib
from condnerf import experiment as experiment_lib
from condnerf import parallel
from condnerf.configs import demo
from condnerf.data import materials
from condnerf.data import procedural
from condnerf.data import sampler as sampler_lib
from condnerf.edit import methods
from condnerf.edit import scoring
from condnerf.edit import scribbles
from condnerf.evaluators import edit_benchmark
from tests import scenes


class BenchmarkTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.TemporaryDirectory()
    data = os.path.join(cls.tmp.name, 'chair_materials')
    materials.write_material_dataset(data, resolution=16, num_train=6,
                                     num_val=1, num_test=2, num_appearances=2,
                                     supersample=1)
    config = demo.get_config('runlocal')
    config.data.path = data
    config.train.batch_size = 256
    cls.exp = experiment_lib.build_experiment(config, mesh=scenes.small_mesh())
    state = cls.exp.init_state(jax.random.key(0))
    sampler = sampler_lib.RaySampler(cls.exp.scene.train, 256, seed=0)
    for step in range(60):
      state, _ = cls.exp.train_step(state, parallel.shard_batch(
          sampler.batch(step), cls.exp.mesh), jax.random.key(step))
    cls.state = state

  @classmethod
  def tearDownClass(cls):
    cls.tmp.cleanup()
    super().tearDownClass()

  def test_families_and_schema(self):
    report = edit_benchmark.Evaluator(
        self.exp, num_scribbles=16, steps=3, num_unseen=1, fit_steps=3,
        methods=('code', 'palette', 'palette_part', 'light',
                 'color_head')).run(
            self.state, os.path.join(self.tmp.name, 'report'))
    self.assertEqual(list(report['families']), list(edit_benchmark.FAMILIES))
    keys = {'psnr', 'ssim', 'preservation_psnr', 'drift_opacity',
            'drift_depth', 'collateral_identical', 'collateral_psnr',
            'seconds', 'compile_seconds', 'num_params'}
    for name, family in report['families'].items():
      expected = {'code', 'palette', 'color_head'} | (
          {'palette_part'} if name == 'part_recolor' else set())
      if name == 'relight_direction':  # the direction alone, no pixels.
        expected = {'light_set'}
        self.assertEqual(family['num_scribbles'], 0)
      elif name == 'relight_fit':
        expected = {'code', 'light', 'color_head'}
      # A tiny model's palette may not separate the seat: part edits that
      # select no entry clearly are refused, and then not reported.
      self.assertLessEqual(set(family['methods']), expected)
      self.assertGreaterEqual(set(family['methods']), expected -
                              {'palette_part'})
      for method, row in family['methods'].items():
        self.assertLessEqual(keys, set(row), (name, method))
        if method != 'color_head':  # code edits: geometry and others fixed.
          self.assertEqual(row['drift_opacity'], 0.0)
          self.assertEqual(row['drift_depth'], 0.0)
          self.assertTrue(row['collateral_identical'])
        else:
          self.assertFalse(row['collateral_identical'])
      for method, size in (('palette', 6 * 3), ('light', 9 * 3),
                           ('light_set', 9 * 3)):
        if method in family['methods']:
          self.assertEqual(family['methods'][method]['num_params'], size)
          self.assertEqual(family['methods'][method]['steps'], 0)
    relit = report['families']['relight_fit']['target']['light']
    # The held-out light: the default one turned 120 degrees about up.
    self.assertGreater(np.degrees(np.arccos(np.dot(
        relit['direction'], procedural.LIGHT_DIRECTION))), 60.0)
    part = report['families']['part_recolor']
    self.assertIsNotNone(part['methods']['code']['preservation_psnr'])
    self.assertIn('part_psnr', part['methods']['code'])
    np.testing.assert_allclose(part['target']['part_colors']['seat'],
                               edit_benchmark.BLUE, rtol=1e-6)
    self.assertIsNone(report['families']['ood_recolor']['methods']['palette']
                      ['preservation_psnr'])
    self.assertTrue(os.path.exists(os.path.join(
        self.tmp.name, 'report', 'report.json')))
    self.assertIsNotNone(report['fit_half_psnr'])

  def test_view_cache_renders_like_a_full_render(self):
    frames = self.exp.scene.test
    cache = scoring.ViewCache(self.exp, self.state.params, frames, [0, 1])
    code = codes_lib.row(jax.device_get(self.state.codes), 1)
    trained = methods.unedited(self.state)
    adapter = methods.EditResult(
        'adapter', trained.code, self.state.params,
        adapter={'matrix': np.diag([0.5, 1.0, 0.8]).astype(np.float32),
                 'bias': np.full((3,), 0.1, np.float32)})
    for result in (trained, adapter):
      self.assertTrue(cache.holds(result))
      for v, rgb in enumerate(cache.render(self.exp, result, code)):
        full = result.render(self.exp, scribbles.view_rays(frames, v), code)
        np.testing.assert_allclose(rgb, full['rgb'], atol=1e-5)
    moved = jax.tree.map(lambda x: x + 1e-3, self.state.params)
    full_edit = methods.EditResult('full', trained.code, moved)
    self.assertFalse(cache.holds(full_edit))
    with self.assertRaisesRegex(ValueError, 'moves the geometry'):
      cache.render(self.exp, full_edit)

  def test_family_setup(self):
    setup = edit_benchmark.family_setup(self.exp, self.state, 'part_recolor',
                                        num_scribbles=8)
    self.assertLen(setup.truth, 2)
    self.assertEqual(len(setup.batch.target), 8)
    self.assertEqual(len(setup.keep.target), 8)
    # Scribbles lie inside the seat, keep pixels outside it.
    seat = setup.inside[setup.view]
    self.assertGreater(seat.sum(), 0)
    self.assertFalse(np.any(setup.outside[setup.view] & seat))
    # The relight target keeps look 0's colors and changes only the light.
    relit = edit_benchmark.family_setup(self.exp, self.state, 'relight_fit',
                                        num_scribbles=8)
    look = materials.read_materials(self.exp.scene.metadata['source'])[0]
    np.testing.assert_array_equal(relit.look.part_colors, look.part_colors)
    self.assertEqual(relit.look.light.intensity, look.light.intensity)
    self.assertNotEqual(relit.look.light.direction, look.light.direction)
    with self.assertRaisesRegex(scribbles.EditError, 'needs ground truth'):
      edit_benchmark.family_setup(self.exp, self.state, 'relight_spot')


if __name__ == '__main__':
  absltest.main()
