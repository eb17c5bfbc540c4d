"""Volume rendering against closed forms and invariants."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from condnerf import rendering
from condnerf import sampling


class RenderingTest(parameterized.TestCase):

  @parameterized.parameters(0.1, 1.0, 5.0)
  def test_constant_density_matches_closed_form(self, sigma):
    # Uniform density sigma over [near, far]: acc = 1 - exp(-sigma (far-near))
    # and the expected depth has a closed form, for any sampling of edges.
    near, far = 2.0, 6.0
    tdist = jnp.sort(jax.random.uniform(jax.random.key(0), (4, 257),
                                        minval=near, maxval=far), axis=-1)
    tdist = tdist.at[:, 0].set(near).at[:, -1].set(far)
    density = jnp.full((4, 256), sigma)
    weights, _, _ = rendering.compute_alpha_weights(density, tdist)
    acc = weights.sum(-1)
    np.testing.assert_allclose(acc, 1 - np.exp(-sigma * (far - near)),
                               rtol=1e-5)
    # Per interval, weight = T(t0) (1 - exp(-sigma dt)) exactly.
    t0 = tdist[:, :-1]
    expected = np.exp(-sigma * (t0 - near)) * (
        1 - np.exp(-sigma * np.diff(tdist, axis=-1)))
    np.testing.assert_allclose(weights, expected, rtol=1e-4, atol=1e-7)

  def test_opaque_wall(self):
    # An opaque slab starting at t=3: depth 3 (midpoint of the hit
    # interval), acc 1, color of the wall; background does not leak.
    tdist = jnp.linspace(2.0, 6.0, 401)[None]  # intervals of 0.01
    mids = sampling.midpoints(tdist)
    density = jnp.where(mids >= 3.0, 1e5, 0.0)
    weights, _, _ = rendering.compute_alpha_weights(density, tdist)
    rgb = jnp.broadcast_to(jnp.array([0.2, 0.4, 0.6]), (1, 400, 3))
    out = rendering.composite(rgb, weights, tdist, jnp.ones(3))
    np.testing.assert_allclose(out.acc, [1.0], atol=1e-6)
    np.testing.assert_allclose(out.depth, [3.005], atol=1e-3)
    np.testing.assert_allclose(out.rgb, [[0.2, 0.4, 0.6]], atol=1e-5)

  def test_empty_ray_shows_background_at_far(self):
    tdist = jnp.linspace(2.0, 6.0, 9)[None]
    weights, _, _ = rendering.compute_alpha_weights(jnp.zeros((1, 8)), tdist)
    out = rendering.composite(jnp.zeros((1, 8, 3)), weights, tdist,
                              jnp.array([0.1, 0.5, 0.9]))
    np.testing.assert_allclose(out.rgb, [[0.1, 0.5, 0.9]])
    np.testing.assert_allclose(out.depth, [6.0])
    np.testing.assert_allclose(out.acc, [0.0])

  def test_swap_background_equals_compositing_on_the_new_one(self):
    key1, key2, key3 = jax.random.split(jax.random.key(3), 3)
    density = jax.random.exponential(key1, (16, 8))
    tdist = jnp.broadcast_to(jnp.linspace(2.0, 6.0, 9), (16, 9))
    rgb = jax.random.uniform(key2, (16, 8, 3))
    new = jax.random.uniform(key3, (16, 3))
    weights = rendering.compute_alpha_weights(density, tdist)[0]
    white = rendering.composite(rgb, weights, tdist, jnp.ones(3))
    expected = rendering.composite(rgb, weights, tdist, new)
    swapped = rendering.swap_background(white.rgb, white.acc, jnp.ones(3), new)
    self.assertGreater(float(jnp.abs(expected.rgb - white.rgb).max()), 0.05)
    np.testing.assert_allclose(swapped, expected.rgb, atol=1e-6)

  def test_weights_sum_at_most_one_and_grads_finite(self):
    key1, key2 = jax.random.split(jax.random.key(1))
    density = jax.random.exponential(key1, (64, 32)) * 10
    tdist = jnp.sort(jax.random.uniform(key2, (64, 33), minval=2, maxval=6),
                     -1)

    def total(d):
      return rendering.compute_alpha_weights(d, tdist)[0].sum()

    weights, _, _ = rendering.compute_alpha_weights(density, tdist)
    self.assertTrue(np.all(weights >= 0))
    self.assertTrue(np.all(weights.sum(-1) <= 1 + 1e-6))
    self.assertTrue(np.all(np.isfinite(jax.grad(total)(density))))


if __name__ == '__main__':
  absltest.main()
