"""The model contract: shapes, parameter tree, and geometry that ignores codes."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from condnerf import models
from condnerf import ndc
from condnerf import sampling
from condnerf import structs
from condnerf.configs import base


def tiny_model(sampler='hierarchical', encoding='posenc',
               conditioning='concat'):
  config = base.get_config('runlocal')
  config.model.sampler = sampler
  config.model.field.encoding = encoding
  config.model.head.conditioning = conditioning
  cfg = config.model.to_dict()
  cfg['field']['scene_bound'] = cfg['proposal_field']['scene_bound'] = 1.5
  return models.build_model('conditional_nerf', cfg, (1.0, 1.0, 1.0)), config


def random_rays(num, key):
  k1, k2 = jax.random.split(key)
  origins = jax.random.normal(k1, (num, 3)) * 0.1 + jnp.array([0., 0., 4.])
  directions = jax.random.normal(k2, (num, 3)) * 0.1 + jnp.array([0., 0., -1.])
  directions /= jnp.linalg.norm(directions, axis=-1, keepdims=True)
  return structs.Rays(origins=origins, directions=directions,
                      near=jnp.full((num, 1), 2.0), far=jnp.full((num, 1), 6.0),
                      code_ids=jnp.zeros((num,), jnp.int32))


class ModelTest(parameterized.TestCase):

  @parameterized.product(sampler=['hierarchical', 'proposal'],
                         encoding=['posenc', 'hashgrid'],
                         conditioning=['concat', 'film', 'none'])
  def test_shapes_and_param_tree(self, sampler, encoding, conditioning):
    model, config = tiny_model(sampler, encoding, conditioning)
    rays = random_rays(16, jax.random.key(0))
    code_dim = config.codes.dim
    params = model.init(jax.random.key(1), rays, jnp.zeros((16, code_dim)))
    self.assertEqual(list(params), ['params'])
    num_levels = len(config.model.num_samples)
    expected = {f'fields_{i}' for i in range(num_levels)}
    heads = num_levels if sampler == 'hierarchical' else 1
    expected |= {f'heads_{i}' for i in range(heads)}
    self.assertEqual(set(params['params']), expected)
    for name in expected:
      if name.startswith('heads'):
        continue
      has_grid = 'HashGrid_0' in params['params'][name]
      self.assertEqual(has_grid, encoding == 'hashgrid' or (
          sampler == 'proposal' and name != f'fields_{num_levels - 1}'))
    noise = jax.random.uniform(jax.random.key(2), (16, model.noise_dim()))
    outs = model.apply(params, rays, jnp.ones((16, code_dim)), noise)
    self.assertLen(outs, num_levels)
    final = outs[-1]
    self.assertEqual(final.rgb.shape, (16, 3))
    self.assertEqual(final.depth.shape, (16,))
    self.assertEqual(final.acc.shape, (16,))
    self.assertEqual(final.tdist.shape, (16, config.model.num_samples[-1] + 1))
    self.assertTrue(np.all((final.rgb >= 0) & (final.rgb <= 1)))

  @parameterized.product(sampler=['hierarchical', 'proposal'],
                         conditioning=['concat', 'film'])
  def test_geometry_is_independent_of_code(self, sampler, conditioning):
    model, config = tiny_model(sampler, 'hashgrid', conditioning)
    rays = random_rays(32, jax.random.key(0))
    code_dim = config.codes.dim
    params = model.init(jax.random.key(1), rays, jnp.zeros((32, code_dim)))
    # Perturb every weight: FiLM starts as the identity (zero-initialised
    # code projection), which would make the color check below vacuous.
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(5), len(leaves))
    params = jax.tree.unflatten(treedef, [
        p + 0.1 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])
    noise = jax.random.uniform(jax.random.key(2), (32, model.noise_dim()))
    code_a = jax.random.normal(jax.random.key(3), (32, code_dim))
    code_b = jax.random.normal(jax.random.key(4), (32, code_dim)) * 5
    out_a = model.apply(params, rays, code_a, noise)
    out_b = model.apply(params, rays, code_b, noise)
    for a, b in zip(out_a, out_b):
      np.testing.assert_array_equal(a.weights, b.weights)
      np.testing.assert_array_equal(a.tdist, b.tdist)
      np.testing.assert_array_equal(a.acc, b.acc)
      if a.depth is not None:
        np.testing.assert_array_equal(a.depth, b.depth)
    # The colors do depend on the code (otherwise the test would be vacuous).
    self.assertGreater(np.abs(out_a[-1].rgb - out_b[-1].rgb).max(), 1e-4)

    def geometry_sum(code):
      outs = model.apply(params, rays, code, noise)
      return sum(jnp.sum(o.weights) + jnp.sum(o.acc) for o in outs) + sum(
          jnp.sum(o.depth) for o in outs if o.depth is not None)

    grad = jax.grad(geometry_sum)(code_a)
    np.testing.assert_array_equal(grad, np.zeros_like(grad))

    def density_sum(code):
      del code  # geometry() has no code argument at all.
      levels = model.apply(params, rays, noise, method='geometry')
      return sum(jnp.sum(level['density']) for level in levels)

    self.assertEqual(jax.grad(density_sum)(code_a).sum(), 0.0)

  @parameterized.parameters('hierarchical', 'proposal')
  def test_palette_weights_and_geometry_are_independent_of_code(self,
                                                                sampler):
    model, config = tiny_model(sampler, 'hashgrid', 'concat')
    model = model.clone(head_kind='palette',
                        head=dict(model.head, palette_size=5))
    rays = random_rays(24, jax.random.key(0))
    code_dim = config.codes.dim

    def code(seed, scale):
      k1, k2 = jax.random.split(jax.random.key(seed))
      return {'appearance': scale * jax.random.normal(k1, (24, code_dim)),
              'palette': jax.random.uniform(k2, (24, 5, 3))}

    params = model.init(jax.random.key(1), rays, code(3, 1.0))
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(5), len(leaves))
    params = jax.tree.unflatten(treedef, [
        p + 0.1 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])
    noise = jax.random.uniform(jax.random.key(2), (24, model.noise_dim()))
    code_a, code_b = code(3, 1.0), code(4, 5.0)
    out_a = model.apply(params, rays, code_a, noise)
    out_b = model.apply(params, rays, code_b, noise)
    for a, b in zip(out_a, out_b):
      for name in ('weights', 'tdist', 'acc', 'depth'):
        if getattr(a, name) is not None:
          np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    self.assertGreater(np.abs(out_a[-1].rgb - out_b[-1].rgb).max(), 1e-4)
    level = model.apply(params, rays, noise, method='geometry')[-1]
    terms_a = model.apply(params, level, rays.directions, code_a,
                          method='palette_terms')
    terms_b = model.apply(params, level, rays.directions, code_b,
                          method='palette_terms')
    for name in ('weights', 'intensity'):  # the palette's code-free part.
      np.testing.assert_array_equal(terms_a[name], terms_b[name])

  def test_palette_weight_logit_scale_sharpens_the_same_weights(self):
    # The scale multiplies the weight logits: with the same parameters the
    # weights at scale 2 are w**2 / sum(w**2) of those at scale 1.
    model, config = tiny_model('proposal', 'hashgrid', 'concat')
    config.model.head.update(kind='palette', palette_size=5)
    cfg = config.model.to_dict()
    cfg['field']['scene_bound'] = cfg['proposal_field']['scene_bound'] = 1.5
    plain = models.build_model('conditional_nerf', cfg, (1.0, 1.0, 1.0))
    cfg['head']['weight_logit_scale'] = 2.0
    sharp = models.build_model('conditional_nerf', cfg, (1.0, 1.0, 1.0))
    rays = random_rays(8, jax.random.key(0))
    code = {'appearance': jnp.zeros((8, config.codes.dim)),
            'palette': jax.random.uniform(jax.random.key(4), (8, 5, 3))}
    params = plain.init(jax.random.key(1), rays, code)
    level = plain.apply(params, rays, method='geometry')[-1]
    w1 = plain.apply(params, level, rays.directions, code,
                     method='palette_terms')['weights']
    w2 = sharp.apply(params, level, rays.directions, code,
                     method='palette_terms')['weights']
    self.assertGreater(float(jnp.abs(w2 - w1).max()), 1e-4)
    np.testing.assert_allclose(
        w2, w1**2 / jnp.sum(w1**2, axis=-1, keepdims=True), rtol=1e-4,
        atol=1e-7)
    cfg['head']['weight_logit_scale'] = 0.0
    with self.assertRaisesRegex(ValueError, 'weight_logit_scale=0.0 must '):
      models.build_model('conditional_nerf', cfg, (1.0, 1.0, 1.0))

  def test_clip_to_bound_keeps_samples_in_the_box(self):
    model, config = tiny_model('proposal', 'hashgrid')
    model = model.clone(clip_to_bound=True)
    rays = random_rays(16, jax.random.key(0))
    # Rays start at z ~ 4 and run to t = 6: the box [-1.5, 1.5]^3 holds only
    # t in about [2.5, 5.5] of them.
    code = jnp.zeros((16, config.codes.dim))
    params = model.init(jax.random.key(1), rays, code)
    for level in model.apply(params, rays, method=model.geometry):
      points = sampling.positions(rays.origins, rays.directions,
                                  level['tdist'])
      self.assertTrue(np.all(np.abs(points) <= 1.5 + 1e-4))
      self.assertGreater(float(level['tdist'][:, 0].min()), 2.0)
      self.assertLess(float(level['tdist'][:, -1].max()), 6.0)

  def test_ndc_samples_in_ndc_and_reports_depth_in_world_units(self):
    model, config = tiny_model('proposal', 'hashgrid')
    projection = ndc.Projection(1.5, 1.5, 1.0)
    model = model.clone(ndc=tuple(projection))
    rays = random_rays(16, jax.random.key(0))
    rays = rays.replace(origins=rays.origins - jnp.array([0.0, 0.0, 4.0]))
    code = jnp.zeros((16, config.codes.dim))
    params = model.init(jax.random.key(1), rays, code)
    o, d = ndc.rays_to_ndc(rays.origins, rays.directions, projection)
    for level in model.apply(params, rays, method=model.geometry):
      tdist = level['tdist']
      self.assertEqual(float(tdist.min()), 0.0)  # the near plane ...
      self.assertEqual(float(tdist.max()), 1.0)  # ... to infinity.
      np.testing.assert_allclose(
          level['world_tdist'],
          ndc.world_distance(tdist, o[:, None], d[:, None],
                             rays.origins[:, None], projection), rtol=1e-6)
      # Edge 0 is where the ray meets z = -1.
      np.testing.assert_allclose(
          level['world_tdist'][:, 0],
          -(1.0 + rays.origins[:, 2]) / rays.directions[:, 2], rtol=1e-5)
    final = model.apply(params, rays, code)[-1]
    levels = model.apply(params, rays, method=model.geometry)
    world = levels[-1]['world_tdist']
    self.assertTrue(np.all(final.depth >= world[:, 0] - 1e-5))
    self.assertTrue(np.all(final.depth <= world[:, -1] + 1e-5))
    self.assertGreater(float(final.depth.max()), 1.0)  # not t' in [0, 1].

  def test_unknown_model_name_lists_choices(self):
    config = base.get_config('runlocal')
    with self.assertRaisesRegex(ValueError, 'conditional_nerf'):
      models.build_model('nope', config.model, (1, 1, 1))


if __name__ == '__main__':
  absltest.main()
