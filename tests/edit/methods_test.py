"""Edit methods: code edits keep geometry, recolor works, fit inverts,
baselines (moved from editing_test.py with the edit package)."""

from absl.testing import absltest
import chex
import jax
import jax.numpy as jnp
import numpy as np

from condnerf import codes as codes_lib
from condnerf import experiment as experiment_lib
from condnerf import inference
from condnerf import losses
from condnerf import metrics as metrics_lib
from condnerf import parallel
from condnerf.configs import base
from condnerf.data import sampler as sampler_lib
from condnerf.edit import linear
from condnerf.edit import methods
from condnerf.edit import optimize
from condnerf.edit import scribbles
from tests import scenes


def trained_tiny(devices=None, steps=300, head='mlp', shading='none'):
  """A small hash-grid model trained briefly on the tinted chair."""
  config = base.get_config('fast,runlocal')
  config.model.head.kind = head
  config.model.head.shading = shading
  config.train.batch_size = 256
  config.codes.dim = 8
  config.optim.warmup_steps = 0
  scene = scenes.tiny_scene(num_train=6, num_test=2, size=16, num_codes=3)
  mesh = (scenes.small_mesh() if devices is None
          else parallel.create_mesh(devices))
  exp = experiment_lib.build_experiment(config, scene=scene, mesh=mesh)
  state = exp.init_state(jax.random.key(0))
  sampler = sampler_lib.RaySampler(scene.train, 256, seed=0)
  for step in range(steps):
    state, _ = exp.train_step(state, parallel.shard_batch(
        sampler.batch(step), exp.mesh), jax.random.key(step))
  return exp, state


class EditingTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.exp, cls.state = trained_tiny()
    cls.frames = cls.exp.scene.test

  def _scribble(self, color=(0.2, 0.4, 0.9)):
    alpha = self.frames.alphas[0]
    pixels = np.argwhere(alpha > 0.5)[:32]
    return scribbles.scribble_batch(self.frames, [0], [pixels], [color])

  def test_code_edit_keeps_geometry_bitwise_and_moves_color(self):
    batch = self._scribble()
    result = methods.run_edit(self.exp, self.state, batch, 'code',
                              steps=200)
    self.assertGreater(result.info.loss_start, 10 * result.info.loss_end)
    rays = scribbles.view_rays(self.frames, 0)
    before = inference.render_with_code(
        self.exp, self.state.params, rays,
        codes_lib.mean_code(self.state.codes))
    after = result.render(self.exp, rays)
    np.testing.assert_array_equal(before['acc'], after['acc'])
    np.testing.assert_array_equal(before['depth'], after['depth'])
    self.assertGreater(np.abs(before['rgb'] - after['rgb']).max(), 0.05)
    # The scribbled pixels moved toward the target color.
    rows, cols = np.argwhere(self.frames.alphas[0] > 0.5)[:32].T
    target = np.array([0.2, 0.4, 0.9])
    err_before = np.abs(before['rgb'][rows, cols] - target).mean()
    err_after = np.abs(after['rgb'][rows, cols] - target).mean()
    self.assertLess(err_after, 0.5 * err_before)

  def test_cached_gradients_equal_uncached(self):
    batch = self._scribble()
    model = self.exp.model
    params = self.state.params
    table = {'appearance': jnp.asarray(
        jax.device_get(self.state.codes['appearance']))}
    rays = jax.tree.map(jnp.asarray, batch.rays)
    level = model.apply({'params': params}, rays, method='geometry')[-1]

    def cached(codes):
      out = inference.shade(model, params, level, rays.directions,
                            codes_lib.lookup(codes, rays.code_ids))
      return losses.photometric(out.rgb, batch.target, batch.weight)

    def uncached(codes):
      out = model.apply({'params': params}, rays,
                        codes_lib.lookup(codes, rays.code_ids))[-1]
      return losses.photometric(out.rgb, batch.target, batch.weight)

    chex.assert_trees_all_close(jax.grad(cached)(table),
                                jax.grad(uncached)(table), atol=1e-5)

  def test_swap_with_own_code_equals_normal_render(self):
    rays = sampler_lib.image_rays(self.exp.scene.train, 1)
    normal = self.exp.render(self.state, rays)
    own = self.state.codes['appearance'][int(rays.code_ids[0, 0])]
    swapped = inference.render_with_code(self.exp, self.state.params, rays,
                                         own)
    for key in ('rgb', 'depth', 'acc'):
      np.testing.assert_array_equal(normal[key], swapped[key])

  def test_interpolation_endpoints(self):
    rays = scribbles.view_rays(self.frames, 0)
    table = np.asarray(jax.device_get(self.state.codes['appearance']))
    sweep = inference.interpolation_sweep(self.exp, self.state.params, rays,
                                          table[0], table[1], num=3)
    self.assertLen(sweep, 3)
    for code, image in ((table[0], sweep[0]), (table[1], sweep[-1])):
      want = inference.render_with_code(self.exp, self.state.params, rays,
                                        code)
      np.testing.assert_allclose(image, want['rgb'], atol=1e-6)

  def test_batched_codes_equal_single_renders(self):
    rays = scribbles.view_rays(self.frames, 1)
    table = np.asarray(jax.device_get(self.state.codes['appearance']))
    table = np.concatenate([table, table.mean(0, keepdims=True)])
    batched = inference.render_codes(self.exp, self.state.params, rays,
                                     table, chunk=100)  # several chunks.
    self.assertEqual(batched['rgb'].shape, (len(table),) + rays.shape + (3,))
    for code, rgb in zip(table, batched['rgb']):
      single = inference.render_with_code(self.exp, self.state.params, rays,
                                          code)
      # The vmapped color head may block its matmuls differently: equal up
      # to a few float32 ulps (values are ~1; 1/255 is 4e-3).
      np.testing.assert_allclose(rgb, single['rgb'], rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(batched['depth'], single['depth'], atol=1e-5)
      np.testing.assert_allclose(batched['acc'], single['acc'], atol=1e-6)

  def test_fit_recovers_training_code(self):
    frames = self.exp.scene.train
    table = np.asarray(jax.device_get(self.state.codes['appearance']))
    views = [0, 1]
    renders = [self.exp.render(self.state, sampler_lib.image_rays(frames, v))
               for v in views]
    codes, _ = optimize.fit(self.exp, self.state, frames, views,
                            images=[r['rgb'] for r in renders], steps=300,
                            learning_rate=5e-2)
    for i, (v, render) in enumerate(zip(views, renders)):
      code = codes_lib.row(codes, i)
      refit = inference.render_with_code(
          self.exp, self.state.params, sampler_lib.image_rays(frames, v),
          code)
      self.assertGreaterEqual(
          float(metrics_lib.psnr(refit['rgb'], render['rgb'])), 35.0,
          f'view {v}, true code {table[frames.appearance_ids[v]]}')

  def test_solve_look_leaves_a_latent_head_alone(self):
    code = codes_lib.mean_code(jax.device_get(self.state.codes))
    solved = linear.solve_look(self.exp, self.state.params, code,
                               self._scribble())
    chex.assert_trees_all_equal(solved, jax.tree.map(np.asarray, code))
    self.assertEqual(linear.gradient_entries(code), ('appearance',))

  def test_weight_baselines_report_their_changes(self):
    batch = self._scribble()
    rays = scribbles.view_rays(self.frames, 1)
    code = codes_lib.mean_code(self.state.codes)
    before = inference.render_with_code(self.exp, self.state.params, rays,
                                        code)
    for method in ('color_head', 'adapter', 'hybrid', 'full'):
      result = methods.run_edit(self.exp, self.state, batch, method,
                                steps=20)
      self.assertLess(result.info.loss_end, result.info.loss_start, method)
      after = result.render(self.exp, rays, code)
      moved_geometry = np.abs(after['acc'] - before['acc']).max()
      if method == 'full':
        self.assertGreater(moved_geometry, 0.0)
      else:
        self.assertEqual(moved_geometry, 0.0, method)
      # Weight-level edits change every appearance, not just the edited one.
      self.assertGreater(np.abs(after['rgb'] - before['rgb']).max(), 0.0)

  def test_repeated_edits_compile_once_and_give_the_same_result(self):
    batch = self._scribble()
    exp, lr = self.exp, 0.0123  # a learning rate no other test compiles.
    first = methods.run_edit(exp, self.state, batch, 'adapter', steps=5,
                             learning_rate=lr)
    again = methods.run_edit(exp, self.state, batch, 'adapter', steps=5,
                             learning_rate=lr)
    other = methods.run_edit(exp, self.state, self._scribble((0.9, 0.1, 0.1)),
                             'adapter', steps=5, learning_rate=lr)
    self.assertGreater(first.info.compile_seconds, 0.05)
    self.assertLess(again.info.compile_seconds, 0.01)
    self.assertLess(other.info.compile_seconds, 0.01)
    for key in ('matrix', 'bias'):
      np.testing.assert_array_equal(first.adapter[key], again.adapter[key])
    self.assertFalse(np.array_equal(first.adapter['bias'],
                                    other.adapter['bias']))
    # Another learning rate is another program.
    slower = methods.run_edit(exp, self.state, batch, 'adapter', steps=5,
                              learning_rate=lr / 2)
    self.assertGreater(slower.info.compile_seconds, 0.05)

  def test_bad_inputs(self):
    height, width = self.frames.images[0].shape[:2]
    with self.assertRaisesRegex(scribbles.EditError, 'mask .* is'):
      scribbles.scribble_batch(self.frames, [0], [np.ones((3, 3), bool)],
                             [(1, 0, 0)])
    with self.assertRaisesRegex(scribbles.EditError, 'empty'):
      scribbles.scribble_batch(self.frames, [0],
                             [np.zeros((height, width), bool)], [(1, 0, 0)])
    with self.assertRaisesRegex(scribbles.EditError, 'out of range'):
      scribbles.scribble_batch(self.frames, [99], [[(0, 0)]], [(1, 0, 0)])
    with self.assertRaisesRegex(scribbles.EditError, 'Cannot parse color'):
      scribbles.parse_color('blue-ish')
    with self.assertRaisesRegex(scribbles.EditError, 'Unknown edit method'):
      methods.run_edit(self.exp, self.state, self._scribble(), 'nope')
    np.testing.assert_allclose(scribbles.parse_color('#3366FF'),
                               [0.2, 0.4, 1.0])
    np.testing.assert_allclose(scribbles.parse_color('51,102,255'),
                               [0.2, 0.4, 1.0])
    np.testing.assert_allclose(scribbles.parse_color('0.2, 0.4, 1.0'),
                               [0.2, 0.4, 1.0])


class BatchedFitDevicesTest(absltest.TestCase):

  def test_eight_device_fit_equals_one_device(self):
    exp1, state = trained_tiny(jax.devices()[:1], steps=20)
    exp8 = experiment_lib.build_experiment(exp1.config, scene=exp1.scene,
                                      mesh=parallel.create_mesh(
                                          jax.devices()[:8]))
    state8 = jax.device_put(jax.device_get(state),
                            parallel.replicated(exp8.mesh))
    frames = exp1.scene.train
    masks = [metrics_lib.masked_region(16, 16, 'left')] * 3
    codes1, _ = optimize.fit(exp1, state, frames, [0, 1, 2], masks, steps=20)
    codes8, _ = optimize.fit(exp8, state8, frames, [0, 1, 2], masks, steps=20)
    chex.assert_trees_all_close(codes1, codes8, atol=1e-5)


class BrushMaskTest(absltest.TestCase):

  def test_matches_a_sampled_stroke(self):
    points = np.array([(2.0, 1.0), (2.0, 8.0), (7.5, 9.0)])
    radius = 1.3
    mask = scribbles.brush_mask(10, 12, points, radius)
    # Reference: distance to many points along the stroke.
    t = np.linspace(0.0, 1.0, 2001)[:, None]
    samples = np.concatenate([a + t * (b - a)
                              for a, b in zip(points[:-1], points[1:])])
    rows, cols = np.mgrid[:10, :12]
    pixels = np.stack([rows, cols], -1).reshape(-1, 1, 2)
    dist = np.sqrt(((pixels - samples)**2).sum(-1)).min(-1).reshape(10, 12)
    clear = np.abs(dist - radius) > 0.01  # away from the brush's edge.
    np.testing.assert_array_equal(mask[clear], (dist <= radius)[clear])
    self.assertGreater(mask.sum(), 20)

  def test_single_point_is_a_dot(self):
    mask = scribbles.brush_mask(5, 5, [(2, 2)], radius=1.0)
    self.assertEqual(mask.sum(), 5)  # the center and its 4 neighbours.
    with self.assertRaisesRegex(scribbles.EditError, 'at least one point'):
      scribbles.brush_mask(5, 5, [])


if __name__ == '__main__':
  absltest.main()
