"""The data-parallel train step: device-count invariance and single compile."""

import dataclasses
import json
import os
import re
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import numpy as np

from condnerf import checkpointing
from condnerf import config_record
from condnerf import errors
from condnerf import experiment as experiment_lib
from condnerf import losses
from condnerf import parallel
from condnerf import train_clock
from condnerf import train_lib
from condnerf import train_step
from condnerf.configs import base
from condnerf.data import sampler as sampler_lib
from experiments import bench_lib
from tests import scenes


def tiny_config(sampler='hierarchical'):
  config = base.get_config('runlocal')
  config.model.sampler = sampler
  config.train.batch_size = 64
  return config


def _nan_from_step(real_step, first):
  """A train step whose update `first` (and later ones) makes params NaN."""

  def step_fn(state, batch, key, progress=None):
    state, metrics = real_step(state, batch, key, progress)
    if int(state.step) >= first:
      state = state.replace(params=jax.tree.map(lambda x: x * np.nan,
                                                state.params))
    return state, metrics

  return step_fn


class TrainStepTest(parameterized.TestCase):

  @parameterized.parameters('hierarchical', 'proposal')
  @scenes.needs_devices(8)
  def test_eight_devices_equal_one_device(self, sampler):
    config = tiny_config(sampler)
    scene = scenes.tiny_scene()
    batch = sampler_lib.RaySampler(scene.train, 64, seed=0).batch(0)
    results = []
    for devices in (jax.devices()[:1], jax.devices()[:8]):
      exp = experiment_lib.build_experiment(
          config, scene=scene, mesh=parallel.create_mesh(devices))
      state = exp.init_state(jax.random.key(0))
      key = jax.random.key(1)
      for step in range(2):
        state, metrics = exp.train_step(
            state, parallel.shard_batch(batch, exp.mesh),
            jax.random.fold_in(key, step))
      self.assertEqual(exp.train_step._cache_size(), 1)  # compiled once.
      results.append(jax.device_get((state, metrics)))
    (state1, metrics1), (state8, metrics8) = results
    chex.assert_trees_all_close(state1.params, state8.params, atol=1e-5)
    chex.assert_trees_all_close(state1.codes, state8.codes, atol=1e-5)
    chex.assert_trees_all_close(metrics1, metrics8, rtol=1e-5, atol=1e-6)
    self.assertEqual(int(state8.step), 2)

  def test_training_reduces_loss(self):
    config = tiny_config()
    config.optim.lr_init, config.optim.warmup_steps = 2e-2, 0
    scene = scenes.tiny_scene()
    exp = experiment_lib.build_experiment(config, scene=scene,
                                     mesh=scenes.small_mesh())
    state = exp.init_state(jax.random.key(0))
    batch = parallel.shard_batch(
        sampler_lib.RaySampler(scene.train, 64, seed=0).batch(0), exp.mesh)
    history = []
    for step in range(60):
      state, metrics = exp.train_step(state, batch, jax.random.key(step))
      history.append(float(metrics['loss']))
    self.assertLess(history[-1], 0.6 * history[0])
    self.assertTrue(np.all(np.isfinite(history)))

  @parameterized.parameters('hierarchical', 'proposal')
  def test_random_background_loss_equals_loss_on_that_background(self,
                                                                  sampler):
    # Training on a white scene with background b must see exactly what
    # training on the same scene composited on b sees.
    color = np.array([0.2, 0.7, 0.4], np.float32)
    config = tiny_config(sampler)
    config.train.random_background = True
    mesh = parallel.create_mesh(jax.devices()[:1])
    white = experiment_lib.build_experiment(config, scene=scenes.tiny_scene(),
                                       mesh=mesh)
    colored = experiment_lib.build_experiment(
        config, scene=scenes.tiny_scene(background=color), mesh=mesh)
    state = white.init_state(jax.random.key(0))
    trainable = {'params': state.params, 'codes': state.codes}
    results = []
    for exp, background in ((white, np.tile(color, (64, 1))),
                            (colored, None)):
      batch = sampler_lib.RaySampler(exp.scene.train, 64, seed=0).batch(0)
      loss_fn = losses.make_loss_fn(exp.model, losses.LossWeights())
      results.append(loss_fn(trainable, batch, None, background)[0])
    plain = losses.make_loss_fn(white.model, losses.LossWeights())(
        trainable, sampler_lib.RaySampler(white.scene.train, 64,
                                          seed=0).batch(0), None)[0]
    self.assertGreater(abs(float(plain) - float(results[1])), 1e-3)
    np.testing.assert_allclose(results[0], results[1], rtol=1e-5)

  def test_random_background_trains_and_needs_alpha(self):
    config = tiny_config('proposal')
    config.train.random_background = True
    scene = scenes.tiny_scene()
    exp = experiment_lib.build_experiment(config, scene=scene,
                                     mesh=scenes.small_mesh())
    state = exp.init_state(jax.random.key(0))
    batch = parallel.shard_batch(
        sampler_lib.RaySampler(scene.train, 64, seed=0).batch(0), exp.mesh)
    state, metrics = exp.train_step(state, batch, jax.random.key(1))
    self.assertTrue(np.isfinite(float(metrics['loss'])))
    no_alpha = dataclasses.replace(
        scene, train=dataclasses.replace(scene.train, alphas=None))
    with self.assertRaisesRegex(ValueError, 'random_background=False'):
      experiment_lib.build_experiment(config, scene=no_alpha)

  @scenes.needs_devices(8)
  def test_batch_not_divisible_by_devices_is_refused(self):
    config = tiny_config()
    config.train.batch_size = 12
    with self.assertRaisesRegex(
        ValueError, 'divisible by the 8 devices of the mesh; use a multiple '
        'of 8: the nearest are 8 or 16'):
      experiment_lib.build_experiment(config, scene=scenes.tiny_scene())
    config.train.batch_size = 4
    with self.assertRaisesRegex(ValueError, 'the nearest are 8\\.'):
      experiment_lib.build_experiment(config, scene=scenes.tiny_scene())


class StepRunnerTest(absltest.TestCase):

  def test_runner_draws_the_batches_and_keys_a_manual_loop_does(self):
    config = tiny_config()
    config.train.steps = 4
    exp = experiment_lib.build_experiment(config, scene=scenes.tiny_scene(),
                                          mesh=scenes.small_mesh())
    init_key, train_key = jax.random.split(jax.random.key(config.seed))
    sampler = sampler_lib.RaySampler(exp.scene.train, 64, config.seed)
    manual = exp.init_state(init_key)
    for step in range(4):
      manual, _ = exp.train_step(
          manual, parallel.shard_batch(sampler.batch(step), exp.mesh),
          jax.random.fold_in(train_key, step))
    runs = {}
    for name, prefetch, stop in (('prefetch', True, 4), ('timed', False, 4),
                                 ('resumed', True, 2)):
      runner = train_lib.StepRunner(exp, train_key, prefetch=prefetch)
      state = exp.init_state(init_key)
      while runner.step < stop:
        state, _ = runner(state)
      if name == 'resumed':  # a new runner continues from step 2.
        runner = train_lib.StepRunner(exp, train_key, start=2)
        while runner.step < 4:
          state, _ = runner(state)
      self.assertEqual(runner.step, 4)
      runs[name] = jax.device_get(state.params)
    for name, params in runs.items():
      with self.subTest(name):
        chex.assert_trees_all_equal(params, jax.device_get(manual.params))


  def test_steps_per_call_takes_the_steps_single_calls_take(self):
    config = tiny_config()
    config.train.update(steps=5, steps_per_call=2, log_every=2,
                        checkpoint_every=4, val_every=0)
    exp = experiment_lib.build_experiment(config, scene=scenes.tiny_scene(),
                                          mesh=scenes.small_mesh())
    init_key, train_key = jax.random.split(jax.random.key(config.seed))
    sampler = sampler_lib.RaySampler(exp.scene.train, 64, config.seed)
    manual = exp.init_state(init_key)
    for step in range(5):
      manual, _ = exp.train_step(
          manual, parallel.shard_batch(sampler.batch(step), exp.mesh),
          jax.random.fold_in(train_key, step))
    for start in (0, 1):  # from a multiple of 2, and resumed off one.
      with self.subTest(start=start):
        state = exp.init_state(init_key)
        # A step_fn of its own takes one step per call.
        runner = train_lib.StepRunner(exp, train_key, step_fn=exp.train_step)
        while runner.step < start:
          state, _ = runner(state)
        runner = train_lib.StepRunner(exp, train_key, start=start)
        sizes = []
        while runner.step < 5:
          sizes.append(runner.call_size())
          state, metrics = runner(state)
        # Two steps per call where aligned with two left; single otherwise.
        self.assertEqual(sizes, [2, 2, 1] if start == 0 else [1, 2, 1])
        self.assertEqual(int(jax.device_get(state.step)), 5)
        self.assertTrue(np.isfinite(float(metrics['loss'])))
        chex.assert_trees_all_close(jax.device_get(state.params),
                                    jax.device_get(manual.params),
                                    atol=1e-6, rtol=1e-5)

  def test_steps_per_call_must_divide_the_periodic_actions(self):
    config = tiny_config()
    config.train.update(steps_per_call=3, log_every=4, checkpoint_every=6,
                        val_every=0)
    with self.assertRaisesRegex(errors.ConfigError,
                                r'steps_per_call=3 .*train.log_every=4'):
      experiment_lib.check_config(config)
    config.train.steps_per_call = 0
    with self.assertRaisesRegex(errors.ConfigError, 'must be >= 1'):
      experiment_lib.check_config(config)


class LoopTest(absltest.TestCase):
  """train_and_evaluate: resume equivalence, divergence, outputs."""

  def setUp(self):
    super().setUp()
    self.workdir = self.enter_context(tempfile.TemporaryDirectory())
    self.scene = scenes.tiny_scene()

  def _config(self, steps):
    config = tiny_config()
    config.train.update(steps=steps, checkpoint_every=0, val_every=0,
                        log_every=1)
    config.eval.max_images = 1
    return config

  def _params(self, workdir, config):
    exp = experiment_lib.build_experiment(config, scene=self.scene,
                                     mesh=scenes.small_mesh())
    _, state = experiment_lib.load_trained(config, workdir, exp)
    return jax.device_get(state)

  def test_resume_equals_uninterrupted(self):
    n = 3
    straight = os.path.join(self.workdir, 'straight')
    split = os.path.join(self.workdir, 'split')
    config = self._config(2 * n)
    config.optim.warmup_steps = 0  # so the decaying schedule matters.
    config.train.checkpoint_every = n
    train_lib.train_and_evaluate(config, straight, experiment_lib.build_experiment(
        config, scene=self.scene, mesh=scenes.small_mesh()))
    # The same run, killed right after step n's checkpoint, then restarted.
    exp = experiment_lib.build_experiment(config, scene=self.scene,
                                     mesh=scenes.small_mesh())
    real_step, calls = exp.train_step, []

    def preempted_step(*args):
      if len(calls) == n:
        raise KeyboardInterrupt('simulated preemption')
      calls.append(1)
      return real_step(*args)

    exp.train_step = preempted_step
    with self.assertRaises(KeyboardInterrupt):
      train_lib.train_and_evaluate(config, split, exp)
    train_lib.train_and_evaluate(config, split, experiment_lib.build_experiment(
        config, scene=self.scene, mesh=scenes.small_mesh()))
    a, b = self._params(straight, config), self._params(split, config)
    self.assertEqual(int(a.step), 2 * n)
    self.assertEqual(int(b.step), 2 * n)
    chex.assert_trees_all_close(a.params, b.params, atol=1e-6)
    chex.assert_trees_all_close(a.codes, b.codes, atol=1e-6)
    self.assertTrue(os.path.exists(os.path.join(split, 'config.json')))
    self.assertTrue(os.path.exists(os.path.join(split, 'eval',
                                                'metrics.json')))
    with open(os.path.join(split, 'metrics.jsonl')) as f:
      lines = [json.loads(line) for line in f]
    self.assertEqual([r['step'] for r in lines if r['split'] == 'train'],
                     list(range(1, 2 * n + 1)))

  def test_steps_per_call_logs_and_checkpoints_between_calls(self):
    config = self._config(6)
    config.train.update(steps_per_call=2, log_every=2, checkpoint_every=4)
    train_lib.train_and_evaluate(config, self.workdir,
                                 experiment_lib.build_experiment(
                                     config, scene=self.scene,
                                     mesh=scenes.small_mesh()))
    with open(os.path.join(self.workdir, 'metrics.jsonl')) as f:
      lines = [json.loads(line) for line in f]
    self.assertEqual([r['step'] for r in lines if r['split'] == 'train'],
                     [2, 4, 6])
    steps = sorted(int(name) for name in os.listdir(
        os.path.join(self.workdir, 'checkpoints')) if name.isdigit())
    self.assertEqual(steps, [4, 6])
    self.assertEqual(int(self._params(self.workdir, config).step), 6)

  def test_time_budget_stops_early_and_is_resumed(self):
    config = self._config(1000)
    config.train.minutes = 1e-4  # 6 ms of training after the first step.
    exp = experiment_lib.build_experiment(config, scene=self.scene,
                                     mesh=scenes.small_mesh())
    progress = []
    real_step = exp.train_step

    def recording_step(state, batch, key, p=None):
      progress.append(p)
      return real_step(state, batch, key, p)

    exp.train_step = recording_step
    train_lib.train_and_evaluate(config, self.workdir, exp)
    steps = len(progress)
    # The first step (compilation) is not on the clock, so at least two run.
    self.assertBetween(steps, 2, 999)
    self.assertEqual(progress[:2], [0.0, 0.001])  # step counts bind first.
    self.assertEqual(progress, sorted(progress))
    with open(os.path.join(self.workdir, train_clock.CLOCK_FILE)) as f:
      record = json.load(f)['steps']
    self.assertEqual(max(int(k) for k in record), steps)
    self.assertGreaterEqual(record[str(steps)], 6e-3)
    # A resumed run starts from the recorded time: the budget is used up.
    progress.clear()
    train_lib.train_and_evaluate(config, self.workdir, exp)
    self.assertEqual(progress, [])
    self.assertEqual(int(self._params(self.workdir, config).step), steps)

  def test_nan_loss_stops_with_step_and_keeps_checkpoint(self):
    config = self._config(4)
    config.train.checkpoint_every = 2
    exp = experiment_lib.build_experiment(config, scene=self.scene,
                                     mesh=scenes.small_mesh())
    train_lib.train_and_evaluate(config, self.workdir, exp)
    config.train.steps = 8
    exp = experiment_lib.build_experiment(config, scene=self.scene,
                                          mesh=scenes.small_mesh())
    exp.train_step = _nan_from_step(exp.train_step, 5)
    # Step 5 applies the first NaN update; step 6's loss is the first NaN.
    with self.assertRaisesRegex(train_lib.TrainingDivergedError,
                                'diverged at step 6'):
      train_lib.train_and_evaluate(config, self.workdir, exp,
                                   allow_config_change=True)
    state = self._params(self.workdir, config)
    self.assertEqual(int(state.step), 4)
    self.assertTrue(all(np.all(np.isfinite(x))
                        for x in jax.tree.leaves(state.params)))

  def _good_run(self, steps=4):
    """Trains `steps` steps with checkpoints every 2; returns the config."""
    config = self._config(steps)
    config.train.checkpoint_every = 2
    config.train.guard.update(window=5, history=5)
    train_lib.train_and_evaluate(config, self.workdir, self._exp(config))
    return config

  def _exp(self, config):
    return experiment_lib.build_experiment(config, scene=self.scene,
                                           mesh=scenes.small_mesh())

  def _steps(self):
    return checkpointing.Checkpointer(
        os.path.join(self.workdir, 'checkpoints'), read_only=True).all_steps()

  def test_dead_network_stops_and_good_checkpoints_survive(self):
    config = self._good_run()
    good = self._params(self.workdir, config)
    # A learning rate of 1 kills this positional-encoding model at once: its
    # gradient norm is exactly 0 from the next step on.
    config.train.update(steps=40, checkpoint_every=1)
    config.optim.update(lr_init=1.0, lr_final=1.0, warmup_steps=0)
    with self.assertRaisesRegex(
        train_lib.TrainingDivergedError,
        r'diverged at step 9: the gradient norm was 0 in 4 of the last 5 '
        r'steps \(5-9\); the network is dead'):
      train_lib.train_and_evaluate(config, self.workdir, self._exp(config),
                                   allow_config_change=True)
    # Step 5 was saved before its parameters showed they were dead (at step
    # 6), then discarded; 6-9 were never written.
    self.assertEqual(self._steps(), [2, 4])
    chex.assert_trees_all_equal(self._params(self.workdir, config).params,
                                good.params)

  def _scaled_metric(self, exp, name, first, factor=100.0):
    """exp's train step with metric `name` x factor from step `first` on."""
    normal = exp.train_step

    def step_fn(state, *args):
      state, metrics = normal(state, *args)
      if int(state.step) >= first:
        metrics = dict(metrics, **{name: metrics[name] * factor})
      return state, metrics

    return step_fn

  def test_guard_watches_the_photometric_loss(self):
    """A regularizer switching on (total loss x100) is no divergence."""
    config = self._good_run()
    config.train.update(steps=12, checkpoint_every=1)
    exp = self._exp(config)
    exp.train_step = self._scaled_metric(exp, 'loss', 6)
    train_lib.train_and_evaluate(config, self.workdir, exp,
                                 allow_config_change=True)
    self.assertEqual(self._steps()[-1], 12)
    config.train.steps = 24
    exp = self._exp(config)
    exp.train_step = self._scaled_metric(exp, 'mse', 14)
    with self.assertRaisesRegex(train_lib.TrainingDivergedError,
                                r'the loss was above 10x its minimum'):
      train_lib.train_and_evaluate(config, self.workdir, exp,
                                   allow_config_change=True)

  def test_exploding_gradients_stop_and_write_no_checkpoint(self):
    config = self._good_run(steps=10)
    self.assertEqual(self._steps(), [6, 8, 10])
    config.train.update(steps=40, checkpoint_every=1)
    exp = self._exp(config)
    # From step 17 on the loss is scaled by 1e10, so its gradients are (the
    # resumed guard first sees 6 normal steps for its median).
    loss_fn = losses.make_loss_fn(exp.model, losses.LossWeights())
    exploding = train_step.make_train_step(
        exp.model, exp.optimizer, exp.mesh,
        lambda *args: (lambda l, m: (l * 1e10, m))(*loss_fn(*args)))
    normal = exp.train_step
    exp.train_step = lambda state, *args: (
        exploding if int(state.step) >= 16 else normal)(state, *args)
    with self.assertRaisesRegex(train_lib.TrainingDivergedError,
                                r'diverged at step 20: the gradient norm was '
                                r'above 1000x its median .* exploding'):
      train_lib.train_and_evaluate(config, self.workdir, exp,
                                   allow_config_change=True)
    # 11-16 were saved (rotating out 6-13), then 16 was discarded: step 17,
    # computed with its parameters, was suspect. No later step was written.
    self.assertEqual(self._steps(), [14, 15])

  def test_resume_drops_repeated_metric_rows(self):
    config = self._config(4)
    config.train.checkpoint_every = 2
    exp = self._exp(config)
    real_step, calls = exp.train_step, []

    def preempted_step(*args):
      if len(calls) == 3:
        raise KeyboardInterrupt('simulated preemption')
      calls.append(1)
      return real_step(*args)

    exp.train_step = preempted_step
    with self.assertRaises(KeyboardInterrupt):
      train_lib.train_and_evaluate(config, self.workdir, exp)
    train_lib.train_and_evaluate(config, self.workdir, self._exp(config))
    with open(os.path.join(self.workdir, 'metrics.jsonl')) as f:
      rows = [json.loads(line) for line in f]
    keys = [(r['step'], r['split']) for r in rows]
    self.assertLen(set(keys), len(keys))
    self.assertEqual([r['step'] for r in rows if r['split'] == 'train'],
                     [1, 2, 3, 4])
    # Evaluating a finished run again replaces its eval row, too.
    train_lib.train_and_evaluate(config, self.workdir, self._exp(config))
    with open(os.path.join(self.workdir, 'metrics.jsonl')) as f:
      rows = [json.loads(line) for line in f]
    self.assertEqual([r['step'] for r in rows if r['split'] == 'eval'], [4])

  def test_changed_config_on_resume_is_refused_unless_allowed(self):
    config = self._good_run()
    with open(os.path.join(self.workdir, 'config.json')) as f:
      before = f.read()
    config.train.steps = 6
    config.optim.lr_init = 1e-3
    with self.assertRaisesRegex(
        config_record.ConfigChangedError,
        r'resuming at step 4: optim.lr_init: 0.0005 -> 0.001; '
        r'train.steps: 4 -> 6'):
      train_lib.train_and_evaluate(config, self.workdir, self._exp(config))
    with open(os.path.join(self.workdir, 'config.json')) as f:
      self.assertEqual(f.read(), before)
    self.assertEqual(self._steps(), [2, 4])  # nothing trained.
    train_lib.train_and_evaluate(config, self.workdir, self._exp(config),
                                 allow_config_change=True)
    self.assertEqual(self._steps()[-1], 6)
    history = config_record.config_history(self.workdir)
    self.assertEqual([h['step'] for h in history], [4])
    self.assertEqual(history[0]['config']['train']['steps'], 4)

  def test_transfer_with_frozen_fields(self):
    source = os.path.join(self.workdir, 'source')
    config = self._config(2)
    train_lib.train_and_evaluate(config, source, experiment_lib.build_experiment(
        config, scene=self.scene, mesh=scenes.small_mesh()))
    src_state = self._params(source, config)
    target = os.path.join(self.workdir, 'target')
    config = self._config(3)
    config.train.init_from = source
    config.train.freeze = '^fields_'
    train_lib.train_and_evaluate(config, target, experiment_lib.build_experiment(
        config, scene=self.scene, mesh=scenes.small_mesh()))
    new_state = self._params(target, config)
    for name, sub in src_state.params.items():
      if name.startswith('fields_'):
        chex.assert_trees_all_equal(sub, new_state.params[name])
      else:
        self.assertFalse(all(np.array_equal(a, b) for a, b in zip(
            jax.tree.leaves(sub), jax.tree.leaves(new_state.params[name]))))
    # The benchmark's trainer starts a transfer from the same weights.
    trainer = bench_lib.Trainer(experiment_lib.build_experiment(
        config, scene=self.scene, mesh=scenes.small_mesh()), seed=0)
    chex.assert_trees_all_equal(jax.device_get(trainer.state.params),
                                src_state.params)
    # train.init_params takes only the matching weights (here the color
    # heads); the fields keep their fresh values.
    config.train.init_params = '^heads_'
    exp = experiment_lib.build_experiment(config, scene=self.scene,
                                          mesh=scenes.small_mesh())
    fresh = exp.init_state(jax.random.key(0))
    started = jax.device_get(experiment_lib.start_from(exp, fresh).params)
    for name, sub in started.items():
      want = (src_state.params[name] if name.startswith('heads_') else
              jax.device_get(fresh.params[name]))
      chex.assert_trees_all_equal(sub, want)
    for bad, message in (('^nothing', 'matches none of the field weights'),
                         ('heads_(', 'is not a regular expression')):
      config.train.init_params = bad
      with self.assertRaisesRegex(errors.ConfigError, re.escape(message)):
        experiment_lib.start_from(dataclasses.replace(exp, config=config),
                                  fresh)
    config.train.init_params = ''
    config.model.field.width = 40  # another architecture cannot start.
    with self.assertRaisesRegex(checkpointing.CheckpointMismatchError,
                                'differ'):
      train_lib.train_and_evaluate(
          config, os.path.join(self.workdir, 'other'),
          experiment_lib.build_experiment(config, scene=self.scene,
                                     mesh=scenes.small_mesh()))

  def test_checkpoint_of_other_model_is_refused(self):
    config = self._config(1)
    train_lib.train_and_evaluate(config, self.workdir,
                                 experiment_lib.build_experiment(
                                     config, scene=self.scene,
                                     mesh=scenes.small_mesh()))
    with open(os.path.join(self.workdir, 'config.json')) as f:
      before = f.read()
    config.model.field.width = 48
    with self.assertRaisesRegex(checkpointing.CheckpointMismatchError,
                                'different model'):
      train_lib.train_and_evaluate(config, self.workdir,
                                   experiment_lib.build_experiment(
                                       config, scene=self.scene,
                                       mesh=scenes.small_mesh()))
    with open(os.path.join(self.workdir, 'config.json')) as f:
      self.assertEqual(f.read(), before)  # nothing overwritten.


if __name__ == '__main__':
  absltest.main()
