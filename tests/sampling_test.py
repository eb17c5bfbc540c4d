"""Stratified and PDF sampling: sorted, inside bounds, right distribution."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from condnerf import sampling


class SamplingTest(parameterized.TestCase):

  @parameterized.parameters(False, True)
  def test_stratified_sorted_and_bounded(self, lindisp):
    near = jnp.full((128, 1), 2.0)
    far = jnp.full((128, 1), 6.0)
    jitter = jax.random.uniform(jax.random.key(0), (128, 33))
    for j in (None, jitter):
      t = sampling.stratified(near, far, 32, lindisp, j)
      self.assertEqual(t.shape, (128, 33))
      self.assertTrue(np.all(np.diff(t, axis=-1) >= 0))
      np.testing.assert_allclose(t[:, 0], 2.0, rtol=1e-6)
      np.testing.assert_allclose(t[:, -1], 6.0, rtol=1e-6)

  def test_pdf_sorted_bounded_and_follows_weights(self):
    tdist = jnp.broadcast_to(jnp.linspace(2.0, 6.0, 9), (256, 9))
    weights = jnp.zeros((256, 8)).at[:, 5].set(1.0)  # all mass in [4.5, 5)
    jitter = jax.random.uniform(jax.random.key(1), (256, 65))
    for j in (None, jitter):
      # Without padding every interior edge lands inside the only non-empty
      # bin (the end quantiles 0 and 1 may sit anywhere on flat CDF parts).
      t = sampling.sample_pdf(tdist, weights, 64, padding=0.0, jitter=j)
      self.assertTrue(np.all(np.diff(t, axis=-1) >= 0))
      inner = t[:, 1:-1]
      self.assertTrue(np.all((inner >= 4.5 - 1e-6) & (inner <= 5.0 + 1e-6)))
      # With padding the new edges span the whole ray, most inside the bin.
      t = sampling.sample_pdf(tdist, weights, 64, padding=0.01, jitter=j)
      self.assertTrue(np.all(np.diff(t, axis=-1) >= 0))
      np.testing.assert_allclose(t[:, 0], 2.0)
      np.testing.assert_allclose(t[:, -1], 6.0)
      inside = (t >= 4.5) & (t <= 5.0)
      self.assertGreater(inside.mean(), 0.9)

  def test_invert_cdf_matches_numpy_interp(self):
    rng = np.random.default_rng(0)
    tdist = np.sort(rng.uniform(0, 1, (4, 11)), -1)
    cdf = np.concatenate([np.zeros((4, 1)),
                          np.cumsum(rng.uniform(0.1, 1, (4, 10)), -1)], -1)
    cdf /= cdf[:, -1:]
    u = np.sort(rng.uniform(0, 1, (4, 50)), -1)
    got = sampling.invert_cdf(jnp.asarray(u), jnp.asarray(tdist),
                              jnp.asarray(cdf))
    for i in range(4):
      np.testing.assert_allclose(got[i], np.interp(u[i], cdf[i], tdist[i]),
                                 atol=1e-5)

  def test_clip_to_box_matches_dense_reference(self):
    rng = np.random.default_rng(0)
    origins = rng.uniform(-3.0, 3.0, (256, 3)).astype(np.float32)
    directions = rng.normal(size=(256, 3)).astype(np.float32)
    directions[:8, 1:] = 0.0  # axis-aligned rays: zero direction components.
    directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
    near = np.full((256, 1), 0.5, np.float32)
    far = np.full((256, 1), 6.0, np.float32)
    got_near, got_far = sampling.clip_to_box(
        jnp.asarray(origins), jnp.asarray(directions), jnp.asarray(near),
        jnp.asarray(far), 1.0)
    # Reference: the inside-the-box part of a dense set of ray points.
    t = np.linspace(0.5, 6.0, 20001, dtype=np.float32)
    points = origins[:, None] + t[None, :, None] * directions[:, None]
    inside = np.all(np.abs(points) <= 1.0, axis=-1)
    step = t[1] - t[0]
    hit = inside.any(axis=-1)
    self.assertTrue(hit.any() and not hit.all())
    first = t[np.argmax(inside, axis=-1)]
    last = t[len(t) - 1 - np.argmax(inside[:, ::-1], axis=-1)]
    np.testing.assert_allclose(got_near[hit, 0], first[hit], atol=2 * step)
    np.testing.assert_allclose(got_far[hit, 0], last[hit], atol=2 * step)
    # Misses get an empty range inside [near, far].
    np.testing.assert_allclose(got_near[~hit, 0], got_far[~hit, 0],
                               atol=2 * step)
    self.assertTrue(np.all(got_near >= near) and np.all(got_far <= far))
    self.assertTrue(np.all(got_far >= got_near))

  def test_empty_weights_fall_back_to_uniform(self):
    tdist = jnp.broadcast_to(jnp.linspace(2.0, 6.0, 9), (2, 9))
    t = sampling.sample_pdf(tdist, jnp.zeros((2, 8)), 4)
    np.testing.assert_allclose(t, np.broadcast_to(np.linspace(2, 6, 5),
                                                  (2, 5)), atol=1e-5)


if __name__ == '__main__':
  absltest.main()
