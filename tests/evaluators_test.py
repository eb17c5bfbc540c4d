"""config.evals: the evaluators a run names, built and run by one function."""

import dataclasses
import os
import tempfile

from absl.testing import absltest
import jax

from condnerf import errors
from condnerf import evaluators
from condnerf import experiment as experiment_lib
from condnerf import metrics
from condnerf.configs import base
from condnerf.configs import demo
from condnerf.data import sampler as sampler_lib
from condnerf.edit import scribbles
from condnerf.evaluators import image_metrics
from tests import scenes


class EvalsConfigTest(absltest.TestCase):

  def test_eval_section_and_image_evaluator_are_the_same_fields(self):
    config = base.get_config()
    config.eval.max_images = 3
    self.assertEqual(config.evals.eval.max_images, 3)
    config.evals.eval.split = 'val'
    self.assertEqual(config.eval.split, 'val')
    resolved = config.evals.to_dict()
    self.assertEqual(resolved, {'eval': {
        'type': 'image_metrics', 'split': 'val', 'max_images': 3,
        'save_images': True, 'lpips': 'alex'}})

  def test_demo_names_the_edit_benchmark_with_the_edit_settings(self):
    config = demo.get_config('runlocal')
    self.assertEqual(sorted(config.evals), ['edit', 'eval'])
    self.assertEqual(config.evals.edit.type, 'edit_benchmark')
    config.edit.steps = 7
    self.assertEqual(config.evals.edit.steps, 7)
    self.assertNotIn('edit', demo.get_config('small').evals)

  def test_specs_in_name_order_or_the_named_ones(self):
    config = demo.get_config('runlocal')
    self.assertEqual([n for n, _, _ in evaluators.specs(config)],
                     ['edit', 'eval'])
    [(name, kind, args)] = evaluators.specs(config, 'eval')
    self.assertEqual((name, kind), ('eval', 'image_metrics'))
    self.assertNotIn('type', args)

  def test_bad_evals_are_refused_before_any_data_loads(self):
    cases = [
        ('type', 'imagemetrics', "unknown evaluator type 'imagemetrics'"),
        ('splitt', 'test', 'takes no argument splitt; it takes split'),
    ]
    for key, value, message in cases:
      config = base.get_config()
      config.evals.eval[key] = value
      config.data.path = '/nonexistent/data'
      with self.subTest(key), self.assertRaisesRegex(errors.ConfigError,
                                                     message):
        experiment_lib.check_config(config)
    config = base.get_config()
    config.evals.extra = {'split': 'test'}
    with self.assertRaisesRegex(errors.ConfigError, "evals.extra has no 'type'"):
      experiment_lib.check_config(config)
    config = base.get_config()
    config.eval.names = 'eval,edit'
    with self.assertRaisesRegex(errors.ConfigError,
                                'no evaluator edit in config.evals; it has '
                                'eval'):
      experiment_lib.check_config(config)

  def test_types_are_the_package_modules(self):
    self.assertEqual(evaluators.types(), ['edit_benchmark', 'image_metrics'])

  def test_a_sharded_training_split_is_not_evaluated_in_training(self):
    train = scenes.tiny_scene(num_train=4).train
    held = dataclasses.replace(train.subset([0, 2]), global_indices=[0, 2],
                               split_size=4, split_ids=[-1] * 4)
    with self.assertRaisesRegex(errors.ConfigError, 'eval.split=test'):
      image_metrics.process_share(held)


class _Writer:
  """An evaluator stand-in that writes the files it is given."""

  def __init__(self, names):
    self.names = names

  def run(self, state, out_dir):
    del state
    os.makedirs(out_dir, exist_ok=True)
    for name in self.names:
      with open(os.path.join(out_dir, name), 'w') as f:
        f.write(name)
    return {'names': self.names}


class StagedRunTest(absltest.TestCase):

  def test_a_new_evaluation_replaces_the_old_folder_when_complete(self):
    workdir = self.enter_context(tempfile.TemporaryDirectory())
    evaluators.run({'eval': _Writer(['metrics.json', 'rgb_000.png',
                                     'rgb_001.png'])}, None, workdir)
    # Another split with fewer images: the old images do not stay.
    evaluators.run({'eval': _Writer(['metrics.json', 'rgb_000.png'])}, None,
                   workdir)
    self.assertEqual(sorted(os.listdir(os.path.join(workdir, 'eval'))),
                     ['metrics.json', 'rgb_000.png'])
    self.assertEqual(os.listdir(workdir), ['eval'])  # no staging left.

  def test_the_edit_folder_keeps_the_bank_and_the_edits(self):
    workdir = self.enter_context(tempfile.TemporaryDirectory())
    edit = os.path.join(workdir, 'edit')
    os.makedirs(os.path.join(edit, 'runs', 'blue'))
    for name in ('codes.npz', 'scribble_mask.png', 'runs/blue/report.json'):
      with open(os.path.join(edit, name), 'w') as f:
        f.write('mine')
    evaluators.run({'edit': _Writer(['report.json', 'a_code_000.png'])},
                   None, workdir)
    evaluators.run({'edit': _Writer(['report.json'])}, None, workdir)
    files = sorted(os.path.relpath(os.path.join(r, n), edit)
                   for r, _, ns in os.walk(edit) for n in ns)
    self.assertEqual(files, ['.outputs.json', 'codes.npz', 'report.json',
                             'runs/blue/report.json', 'scribble_mask.png'])

  def test_an_evaluator_named_after_a_training_folder_is_refused(self):
    config = base.get_config()
    config.evals.checkpoints = dict(type='image_metrics', split='test',
                                    max_images=1, save_images=False,
                                    lpips='alex')
    with self.assertRaisesRegex(errors.UserError,
                                "evals.checkpoints: an evaluator writes to "
                                "DIR/checkpoints/"):
      experiment_lib.check_config(config)


class BuildAndRunTest(absltest.TestCase):

  def test_build_and_run_write_under_the_evaluator_name(self):
    config = base.get_config('runlocal')
    config.evals.val_images = dict(type='image_metrics', split='val',
                                   max_images=1, save_images=False)
    scene = scenes.tiny_scene(num_train=4, num_test=2)
    exp = experiment_lib.build_experiment(config, scene=scene,
                                          mesh=scenes.small_mesh())
    built = evaluators.build(config, exp)
    self.assertEqual(list(built), ['eval', 'val_images'])
    self.assertIsInstance(built['eval'], image_metrics.Evaluator)
    self.assertEqual(built['val_images'].split, 'val')
    only = evaluators.build(config, exp, names='eval')
    self.assertEqual(list(only), ['eval'])
    state = exp.init_state(jax.random.key(0))
    with tempfile.TemporaryDirectory() as tmp:
      results = evaluators.run(only, state, tmp)
      self.assertEqual(results['eval']['num_images'],
                       min(2, config.eval.max_images))
      self.assertTrue(os.path.exists(os.path.join(tmp, 'eval',
                                                  'metrics.json')))

  def test_image_metrics_report_lpips_where_the_network_fits(self):
    config = base.get_config('runlocal')
    exp = experiment_lib.build_experiment(
        config, scene=scenes.tiny_scene(num_test=1, size=32),
        mesh=scenes.small_mesh())
    state = exp.init_state(jax.random.key(0))
    frames = exp.scene.test
    rendered = exp.render(state, sampler_lib.image_rays(frames, 0))['rgb']
    expected = float(metrics.lpips(rendered, frames.images[0]))
    with tempfile.TemporaryDirectory() as tmp:
      for net, want in (('alex', expected), ('', None)):
        results = evaluators.build_one(
            exp, 'image_metrics', lpips=net, save_images=False).run(
                state, os.path.join(tmp, net or 'none'))
        with self.subTest(net or 'off'):
          self.assertEqual(results['lpips_net'], net or None)
          if want is None:
            self.assertIsNone(results['lpips'])
          else:
            self.assertGreater(results['lpips'], 0.0)
            self.assertAlmostEqual(results['lpips'], want, places=4)
            self.assertEqual(results['per_image'][0]['lpips'],
                             results['lpips'])
    with self.assertRaisesRegex(ValueError, 'net must be one of'):
      evaluators.build_one(exp, 'image_metrics', lpips='squeeze')

  def test_build_one_checks_arguments(self):
    config = base.get_config('runlocal')
    exp = experiment_lib.build_experiment(
        config, scene=scenes.tiny_scene(), mesh=scenes.small_mesh())
    with self.assertRaisesRegex(errors.ConfigError,
                                'edit_benchmark takes no argument scribbles'):
      evaluators.build_one(exp, 'edit_benchmark', scribbles=3)
    # Valid arguments reach the evaluator, which wants ground truth.
    with self.assertRaisesRegex(scribbles.EditError, 'needs ground truth'):
      evaluators.build_one(exp, 'edit_benchmark', view=0)


if __name__ == '__main__':
  absltest.main()
