"""Opening runs from notebooks: the small switch, configs, data paths, demo."""

import json
import os
import tempfile

from absl.testing import absltest
import chex
import jax

from condnerf import config_record
from condnerf import runs
from condnerf.configs import base
from condnerf.configs import demo

jax.config.update('jax_disable_most_optimizations', True)


class SmallSwitchTest(absltest.TestCase):

  def test_values(self):
    self.assertFalse(runs.small_requested({}))
    for value in ('', '0', 'false', 'No'):
      self.assertFalse(runs.small_requested({runs.SMALL_ENV: value}))
    for value in ('1', 'true', ' YES '):
      self.assertTrue(runs.small_requested({runs.SMALL_ENV: value}))
    with self.assertRaisesRegex(ValueError, 'CONDNERF_NOTEBOOK_SMALL'):
      runs.small_requested({runs.SMALL_ENV: 'maybe'})


class ConfigAndPathsTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = self.enter_context(tempfile.TemporaryDirectory())

  def test_load_config_overlays_record_on_defaults(self):
    recorded = json.loads(demo.get_config().to_json())
    del recorded['model']['lindisp']  # a field added after this run.
    recorded['model']['num_samples'] = [7, 5]  # JSON has no tuples.
    config_record.save_config_json(self.dir, recorded)
    config = runs.load_config(self.dir)
    self.assertEqual(config.model.num_samples, (7, 5))
    self.assertEqual(config.model.lindisp, base.get_config().model.lindisp)
    self.assertEqual(config.data.procedural.num_appearances, 8)
    self.assertEqual(config.model.sampler, 'proposal')  # the recorded value.

  def test_load_config_without_record_explains(self):
    with self.assertRaisesRegex(config_record.ConfigRecordError,
                                'config.json'):
      runs.load_config(self.dir)

  def test_resolve_data_path_from_the_run_upwards(self):
    data = os.path.join(self.dir, 'runs', 'x', 'data', 'set')
    os.makedirs(data)
    os.makedirs(os.path.join(self.dir, 'notebooks'))
    workdir = os.path.join(self.dir, 'runs', 'x')
    cwd = os.getcwd()
    try:
      os.chdir(os.path.join(self.dir, 'notebooks'))
      found = runs.resolve_data_path('runs/x/data/set', '../runs/x')
      self.assertEqual(os.path.realpath(found), os.path.realpath(data))
      self.assertEqual(runs.resolve_data_path(data, workdir), data)
      self.assertEqual(runs.resolve_data_path('.', workdir), '.')
      with self.assertRaisesRegex(FileNotFoundError, 'not at any of'):
        runs.resolve_data_path('runs/x/data/none', '../runs/x')
    finally:
      os.chdir(cwd)

  def test_has_checkpoint(self):
    self.assertFalse(runs.has_checkpoint(self.dir))
    os.makedirs(os.path.join(self.dir, 'checkpoints', 'tmp'))
    self.assertFalse(runs.has_checkpoint(self.dir))
    os.makedirs(os.path.join(self.dir, 'checkpoints', '12'))
    self.assertTrue(runs.has_checkpoint(self.dir))

  def test_ensure_chair_scene_writes_once(self):
    kwargs = dict(resolution=8, num_train=4, num_val=1, num_test=2,
                  num_appearances=2, supersample=1)
    path = runs.ensure_chair_scene(self.dir, **kwargs)
    self.assertEqual(path, os.path.join(self.dir, 'chair_variants'))
    marker = os.path.join(path, 'transforms_train.json')
    with open(marker) as f:
      ids = [fr['appearance_id'] for fr in json.load(f)['frames']]
    self.assertEqual(sorted(set(ids)), [0, 1])
    stamp = os.stat(marker).st_mtime_ns
    runs.ensure_chair_scene(self.dir, **kwargs)
    self.assertEqual(os.stat(marker).st_mtime_ns, stamp)


class TrainAndLoadTest(absltest.TestCase):

  def test_train_then_load_elsewhere_and_open(self):
    tmp = self.enter_context(tempfile.TemporaryDirectory())
    cwd = os.getcwd()
    try:
      os.chdir(tmp)
      config = demo.get_config('small')
      config.data.procedural.update(resolution=12, num_train=4, num_test=2,
                                    num_appearances=2)
      config.train.steps = 2
      config.data.path = runs.ensure_chair_scene(
          'run/data', **config.data.procedural.to_dict())
      self.assertFalse(os.path.isabs(config.data.path))
      trained = runs.train_run(config, 'run')
      self.assertEqual(trained.step, 2)
      self.assertEqual(trained.metrics['eval']['num_images'], 2)
      self.assertEqual(trained.codes['appearance'].shape,
                       (2, config.codes.dim))
      self.assertEqual(trained.codes['palette'].shape,
                       (2, config.model.head.palette_size, 3))
      os.makedirs('notebooks')
      os.chdir('notebooks')
      loaded = runs.load_run('../run')
      chex.assert_trees_all_equal(loaded.codes, trained.codes)
      self.assertEqual(loaded.bank, os.path.join('../run', 'edit',
                                                 'codes.npz'))
      self.assertIn('step 2', loaded.note)
      opened = runs.open_demo('../run')
      self.assertEqual(opened.workdir, '../run')
      self.assertEqual(opened.scene.num_codes, 2)
    finally:
      os.chdir(cwd)


if __name__ == '__main__':
  absltest.main()
