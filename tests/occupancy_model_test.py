"""The occupancy sampler in the model, the train step and the renderer:
packed evaluation against every step, cut rays rendered again, the grid in
the train state (updated, left alone by the optimizer, the same on any
number of devices, checkpointed and resumed on another topology), and the
settings it refuses."""

import os
import tempfile

from absl.testing import absltest
import chex
import jax
import jax.numpy as jnp
import numpy as np

from condnerf import errors
from condnerf import experiment as experiment_lib
from condnerf import inference
from condnerf import models
from condnerf import occupancy
from condnerf import parallel
from condnerf import rendering
from condnerf import sampling
from condnerf import train_lib
from condnerf.configs import base
from condnerf.data import sampler as sampler_lib
from tests import scenes


def occupancy_config(**settings):
  config = base.get_config('runlocal')
  config.model.sampler = 'occupancy'
  config.model.occupancy.update(
      resolution=16, max_steps=64, samples_per_ray=64,
      render_samples_per_ray=64, prune_samples_per_ray=0, update_every=2,
      warmup_steps=2, update_cells=512)
  config.model.occupancy.update(settings)
  config.train.update(batch_size=64, checkpoint_every=0, val_every=0,
                      log_every=1)
  config.eval.update(chunk=256, max_images=1)
  return config


def _all_occupied(state):
  params = dict(state.params)
  params[occupancy.PARAM] = jnp.ones_like(params[occupancy.PARAM])
  return state.replace(params=params)


def _every_step_render(model, params, rays, codes):
  """The reference: the field and head at every step, NeRF quadrature."""
  settings = model.occupancy_settings()
  half = float(model.field['scene_bound'])
  near, far = (jnp.asarray(x) for x in (rays.near, rays.far))
  origins, directions = jnp.asarray(rays.origins), jnp.asarray(rays.directions)
  near, far = sampling.clip_to_box(origins, directions, near, far, half)
  edges = occupancy.step_edges(near, far, occupancy.step_size(
      half, settings['max_steps']), settings['max_steps'])
  points = sampling.positions(origins, directions, edges)
  variables = {'params': params}
  density, feature = model.apply(variables, points,
                                 method=lambda m, x: m.fields[0](x))
  rgb = model.apply(variables, feature, directions, codes['appearance'],
                    method=lambda m, f, d, c: m.heads[0](f, d, c))
  weights = rendering.compute_alpha_weights(density, edges)[0]
  return rendering.composite(rgb, weights, edges, jnp.ones(3)).rgb


class SamplerTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.scene = scenes.tiny_scene()

  def _experiment(self, config, devices=2):
    return experiment_lib.build_experiment(
        config, scene=self.scene,
        mesh=parallel.create_mesh(jax.devices()[:devices]))

  def test_packed_samples_render_as_every_step_does(self):
    exp = self._experiment(occupancy_config())
    state = _all_occupied(exp.init_state(jax.random.key(0)))
    rays = jax.tree.map(lambda x: x[:4, :8].reshape((32,) + x.shape[2:]),
                        sampler_lib.image_rays(self.scene.test, 0))
    out = exp.render(state, rays)
    codes = jax.tree.map(lambda t: t[np.asarray(rays.code_ids)],
                         jax.device_get(state.codes))
    want = _every_step_render(exp.model, jax.device_get(state.params), rays,
                              codes)
    np.testing.assert_allclose(out['rgb'], np.clip(want, 0, 1), atol=2e-5)
    self.assertNotIn('complete', out)

  def test_rays_a_render_budget_cuts_are_rendered_again(self):
    full = self._experiment(occupancy_config())
    small = self._experiment(occupancy_config(render_samples_per_ray=4,
                                              max_steps=64))
    state = _all_occupied(full.init_state(jax.random.key(0)))
    rays = sampler_lib.image_rays(self.scene.test, 0)  # [H, W]
    flat = rays.reshape(-1)
    first = small.render_step(
        state.params, state.codes,
        parallel.shard_batch(jax.tree.map(lambda x: x[:256], flat),
                             small.mesh))
    self.assertLess(float(np.min(first['complete'])), 0.5)  # some were cut.
    want, got = full.render(state, rays), small.render(state, rays)
    for name in ('rgb', 'depth', 'acc'):
      np.testing.assert_allclose(got[name], want[name], atol=1e-5,
                                 err_msg=name)
    # One ray per device (4 samples of budget by the setting): a render's
    # budget still holds a whole ray, as `render_codes`' small chunks need.
    tiny = small.render(state, jax.tree.map(lambda x: x[:8], flat), chunk=2)
    np.testing.assert_allclose(tiny['rgb'], want['rgb'].reshape(-1, 3)[:8],
                               atol=1e-5)

  @scenes.needs_devices(8)
  def test_the_grid_trains_the_same_on_one_and_eight_devices(self):
    # A budget of max_steps per ray cuts nothing. (Which rays a smaller one
    # cuts depends on each device's share of the batch, as a batch would.)
    config = occupancy_config()
    batch = sampler_lib.RaySampler(self.scene.train, 64, seed=0).batch(0)
    results = []
    for devices in (1, 8):
      exp = self._experiment(config, devices)
      state = exp.init_state(jax.random.key(0))
      grids, used = [], []
      for step in range(3):
        state, metrics = exp.train_step(
            state, parallel.shard_batch(batch, exp.mesh),
            jax.random.fold_in(jax.random.key(1), step))
        grids.append(np.asarray(jax.device_get(
            state.params[occupancy.PARAM])))
        used.append(float(metrics['rays_used']))
      results.append((jax.device_get(state), grids, used))
    (state1, grids1, used1), (state8, grids8, used8) = results
    for grids in (grids1, grids8):
      self.assertGreater(grids[0].max(), 0.0)  # the step-0 update filled it.
      # Step 1 is not due (update_every=2): the optimizer left it alone.
      np.testing.assert_array_equal(grids[1], grids[0])
      self.assertFalse(np.array_equal(grids[2], grids[1]))  # step 2 is.
    for a, b in zip(grids1, grids8):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    chex.assert_trees_all_close(state1.params, state8.params, atol=1e-5)
    self.assertEqual(used1 + used8, [1.0] * 6)

  def test_rays_a_training_budget_cuts_leave_the_loss(self):
    exp = self._experiment(occupancy_config(samples_per_ray=8))
    batch = sampler_lib.RaySampler(self.scene.train, 64, seed=0).batch(0)
    state = exp.init_state(jax.random.key(0))
    state, metrics = exp.train_step(state, parallel.shard_batch(
        batch, exp.mesh), jax.random.key(1))
    metrics = jax.device_get(metrics)
    # 64 rays share 64 x 8 samples, and the rays through the box need
    # more: the budget is full and only the rays that fitted are scored.
    self.assertEqual(float(metrics['samples_per_ray']), 8.0)
    self.assertGreater(float(metrics['needed_per_ray']), 8.0)
    self.assertTrue(0.0 < float(metrics['rays_used']) < 1.0)
    self.assertTrue(np.isfinite(float(metrics['loss'])))

  def test_a_shaded_palette_head_trains_and_renders_its_maps(self):
    config = occupancy_config(samples_per_ray=16)
    config.model.head.update(kind='palette', shading='sh', palette_size=3)
    exp = self._experiment(config)
    batch = sampler_lib.RaySampler(self.scene.train, 64, seed=0).batch(0)
    state = exp.init_state(jax.random.key(0))
    state, metrics = exp.train_step(state, parallel.shard_batch(
        batch, exp.mesh), jax.random.key(1))
    self.assertTrue(np.isfinite(float(jax.device_get(metrics['loss']))))
    state = _all_occupied(state)
    rays = sampler_lib.image_rays(self.scene.test, 0)
    code = jax.tree.map(lambda t: t[0], jax.device_get(state.codes))
    maps = inference.render_palette_maps(exp, state.params, rays, code)
    image = exp.render(state, rays)
    # The palette's shares of each pixel add up to its opacity, which is
    # the opacity the image was rendered with.
    np.testing.assert_allclose(maps['weights'].sum(-1), maps['acc'],
                               atol=1e-5)
    np.testing.assert_allclose(maps['acc'], image['acc'], atol=1e-5)
    self.assertGreater(float(image['acc'].max()), 0.0)
    self.assertEqual(maps['normals'].shape, rays.origins.shape)

  def test_a_checkpoint_resumes_on_another_topology(self):
    workdir = self.enter_context(tempfile.TemporaryDirectory())
    config = occupancy_config()  # nothing cut: the same on any topology.
    config.train.update(steps=4, checkpoint_every=2)
    config.optim.warmup_steps = 0
    straight, split = (os.path.join(workdir, n) for n in ('straight', 'split'))
    train_lib.train_and_evaluate(config, straight, self._experiment(config))
    # The same run stopped after step 2 on one device, resumed on four.
    short = occupancy_config()
    short.train.update(steps=4, checkpoint_every=2)
    short.optim.warmup_steps = 0
    exp = self._experiment(short, 1)
    real_step, calls = exp.train_step, []

    def preempted_step(*args):
      if len(calls) == 2:
        raise KeyboardInterrupt('simulated preemption')
      calls.append(1)
      return real_step(*args)

    exp.train_step = preempted_step
    with self.assertRaises(KeyboardInterrupt):
      train_lib.train_and_evaluate(short, split, exp)
    train_lib.train_and_evaluate(config, split, self._experiment(config, 4))
    loaded = []
    for folder in (straight, split):
      _, state = experiment_lib.load_trained(config, folder,
                                             self._experiment(config))
      loaded.append(jax.device_get(state))
    a, b = loaded
    self.assertEqual((int(a.step), int(b.step)), (4, 4))
    self.assertGreater(float(np.max(b.params[occupancy.PARAM])), 0.0)
    chex.assert_trees_all_close(a.params, b.params, atol=1e-5)


class SettingsTest(absltest.TestCase):

  def _model_cfg(self, **changes):
    cfg = occupancy_config().model.to_dict()
    cfg['field']['scene_bound'] = cfg['proposal_field']['scene_bound'] = 1.5
    for key, value in changes.items():
      cfg[key] = value
    return cfg

  def test_scenes_it_cannot_march_are_refused_naming_the_sampler(self):
    cfg = self._model_cfg(ndc=(1.0, 1.0, 1.0))
    with self.assertRaisesRegex(errors.ConfigError, "sampler='proposal'"):
      models.build_model('conditional_nerf', cfg, (1, 1, 1))
    cfg = self._model_cfg()
    cfg['field']['use_contraction'] = True
    with self.assertRaisesRegex(errors.ConfigError, 'contracted'):
      models.build_model('conditional_nerf', cfg, (1, 1, 1))

  def test_bad_settings_are_refused(self):
    for bad, pattern in (({'resolution': 0}, 'resolution=0'),
                         ({'resolution': 12.5}, 'resolution=12.5'),
                         ({'max_steps': -3}, 'max_steps=-3'),
                         ({'min_alpha': 1.0}, 'min_alpha=1.0'),
                         ({'steps': 8}, "Unknown model.occupancy keys")):
      cfg = self._model_cfg()
      cfg['occupancy'] = dict(cfg['occupancy'], **bad)
      with self.subTest(bad), self.assertRaisesRegex(errors.ConfigError,
                                                     pattern):
        models.build_model('conditional_nerf', cfg, (1, 1, 1))

  def test_a_budget_below_one_rays_steps_is_refused(self):
    config = occupancy_config(samples_per_ray=1, max_steps=64)
    with self.assertRaisesRegex(errors.ConfigError,
                                r'budget of 32 samples per device'):
      experiment_lib.build_experiment(config, scene=scenes.tiny_scene(),
                                      mesh=scenes.small_mesh())
    config = occupancy_config()
    config.train.sample_budget = 64  # 1 sample per ray.
    with self.assertRaisesRegex(errors.ConfigError, 'train.batch_size=64'):
      experiment_lib.build_experiment(config, scene=scenes.tiny_scene(),
                                      mesh=scenes.small_mesh())


if __name__ == '__main__':
  absltest.main()
