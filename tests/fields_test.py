"""Field modules: the per-ray first layer equals the concatenated one."""

from absl.testing import absltest
from absl.testing import parameterized
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from condnerf import encoding
from condnerf import fields


def concat_head(params, feature, directions, code, conditioning, depth,
                dir_deg):
  """The color head written with explicit concatenation, from its params."""
  num_samples = feature.shape[-2]
  dir_enc = encoding.direction_encoding(directions, dir_deg)
  expand = lambda v: jnp.broadcast_to(v[:, None], (v.shape[0], num_samples,
                                                   v.shape[-1]))
  dense = lambda p, x: x @ p['kernel'] + p['bias']
  h = jnp.concatenate([feature, expand(dir_enc)], axis=-1)
  if conditioning == 'film':
    for i in range(depth):
      h = dense(params[f'Dense_{2 * i}'], h)
      scale, shift = jnp.split(
          expand(dense(params[f'Dense_{2 * i + 1}'], code)), 2, axis=-1)
      h = jax.nn.relu(h * (1.0 + scale) + shift)
    last = 2 * depth
  else:
    if conditioning == 'concat':
      h = jnp.concatenate([h, expand(code)], axis=-1)
    for i in range(depth):
      h = jax.nn.relu(dense(params['MLP_0'][f'Dense_{i}'], h))
    last = 0
  return jax.nn.sigmoid(dense(params[f'Dense_{last}'], h))


class FieldsTest(parameterized.TestCase):

  def test_broadcast_dense_is_dense_of_concatenation(self):
    x = jax.random.normal(jax.random.key(0), (5, 7, 3))
    ray_x = jax.random.normal(jax.random.key(1), (5, 4))
    layer = fields.BroadcastDense(6)
    params = layer.init(jax.random.key(2), x, ray_x)
    self.assertEqual(params['params']['kernel'].shape, (7, 6))
    params = jax.tree.map(  # nonzero bias, so its broadcast is checked.
        lambda p: p + 0.3, params)
    got = layer.apply(params, x, ray_x)
    both = jnp.concatenate([x, jnp.broadcast_to(ray_x[:, None], (5, 7, 4))],
                           axis=-1)
    want = nn.Dense(6).apply(params, both)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

  @parameterized.parameters(('concat', 2), ('film', 2), ('none', 1),
                            ('concat', 0), ('film', 0))
  def test_color_head_equals_concatenated_head(self, conditioning, depth):
    feature = jax.random.normal(jax.random.key(0), (6, 9, 5))
    directions = jax.random.normal(jax.random.key(1), (6, 3))
    directions /= jnp.linalg.norm(directions, axis=-1, keepdims=True)
    code = jax.random.normal(jax.random.key(2), (6, 4))
    head = fields.ColorHead(conditioning=conditioning, width=8, depth=depth,
                            dir_deg=2)
    params = head.init(jax.random.key(3), feature, directions, code)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(4), len(leaves))
    params = jax.tree.unflatten(treedef, [  # FiLM's code layer starts at 0.
        p + 0.2 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])
    got = head.apply(params, feature, directions, code)
    want = concat_head(params['params'], feature, directions, code,
                       conditioning, depth, 2)
    self.assertEqual(got.shape, (6, 9, 3))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


if __name__ == '__main__':
  absltest.main()
