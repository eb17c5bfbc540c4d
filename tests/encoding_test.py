"""Encodings: positional encoding and the hash grid against slow references."""

import itertools

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from condnerf import encoding


def slow_hash_grid(x, tables, resolutions):
  """Loop-based trilinear hash-grid lookup, one point at a time."""
  num_levels, table_size, num_features = tables.shape
  primes = (1, 2654435761, 805459861)
  out = np.zeros((x.shape[0], num_levels * num_features))
  for p, point in enumerate(np.asarray(x, np.float64)):
    for level, res in enumerate(resolutions):
      scaled = point * res
      base = np.minimum(np.floor(scaled).astype(np.int64), res - 1)
      frac = scaled - base
      feat = np.zeros(num_features)
      for corner in itertools.product((0, 1), repeat=3):
        c = base + np.array(corner)
        w = np.prod([frac[k] if corner[k] else 1 - frac[k] for k in range(3)])
        if (res + 1)**3 <= table_size:
          idx = c[0] + (res + 1) * (c[1] + (res + 1) * c[2])
        else:
          idx = 0
          for k in range(3):
            idx ^= (int(c[k]) * primes[k]) & 0xFFFFFFFF
        feat += w * np.asarray(tables[level, idx % table_size])
      out[p, level * num_features:(level + 1) * num_features] = feat
  return out


def autodiff_hash_grid(x, tables, resolutions):
  """Vectorised lookup differentiated by plain autodiff: 8 indexed corners
  weighted by products of fractions (the textbook formulation)."""
  num_levels, table_size, num_features = tables.shape
  scaled = x[..., None, :] * jnp.asarray(resolutions, x.dtype)[:, None]
  base = jnp.minimum(jnp.floor(scaled).astype(jnp.int32),
                     jnp.asarray(resolutions, jnp.int32)[:, None] - 1)
  frac = scaled - base
  offsets = np.array(list(itertools.product((0, 1), repeat=3)), np.int32)
  corners = base[..., None, :] + offsets  # [..., L, 8, 3]
  idx = encoding.hash_grid_indices(corners, resolutions, table_size)
  w = jnp.prod(jnp.where(offsets == 1, frac[..., None, :],
                         1.0 - frac[..., None, :]), axis=-1)
  feats = tables[jnp.arange(num_levels)[:, None], idx]  # [..., L, 8, F]
  out = jnp.sum(w[..., None] * feats, axis=-2)
  return out.reshape(x.shape[:-1] + (num_levels * num_features,))


class EncodingTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.resolutions = (4, 11, 40)  # dense, dense, hashed for 2**10 rows.
    self.tables = jax.random.normal(jax.random.key(0), (3, 2**10, 2))

  def test_hash_grid_matches_slow_reference(self):
    x = jax.random.uniform(jax.random.key(1), (50, 3))
    x = x.at[0].set(jnp.array([1.0, 1.0, 1.0]))  # far corner of the cube.
    got = encoding.hash_grid_encode(x, self.tables, self.resolutions)
    want = slow_hash_grid(x, self.tables, self.resolutions)
    np.testing.assert_allclose(got, want, atol=2e-5)

  def test_gradients_match_autodiff_reference(self):
    # The hand-written VJP gives the same table and position gradients as
    # autodiff through the textbook lookup.
    x = jax.random.uniform(jax.random.key(3), (4, 7, 3), minval=0.01,
                           maxval=0.99)
    probe = jax.random.normal(jax.random.key(4), (6, 5))

    def loss(fn):
      return lambda t, x: jnp.sum(jnp.tanh(fn(x, t, self.resolutions) @ probe))

    got = jax.grad(loss(encoding.hash_grid_encode), (0, 1))(self.tables, x)
    want = jax.grad(loss(autodiff_hash_grid), (0, 1))(self.tables, x)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-4, atol=1e-3)
    self.assertGreater(float(jnp.max(jnp.abs(want[1]))), 1.0)

  def test_exact_at_grid_vertices(self):
    # At a vertex of the finest level the lookup returns that vertex's row.
    res = self.resolutions[-1]
    vertex = np.array([7, 3, 12])
    x = jnp.asarray(vertex / res, jnp.float32)[None]
    got = encoding.hash_grid_encode(x, self.tables, self.resolutions)[0, -2:]
    idx = encoding.hash_grid_indices(jnp.asarray(vertex)[None, None],
                                     self.resolutions[-1:], 2**10)[0, 0]
    np.testing.assert_allclose(got, self.tables[-1, idx], atol=1e-5)

  def test_gradient_touches_only_used_rows(self):
    x = jax.random.uniform(jax.random.key(2), (3, 3))
    grad = jax.grad(lambda t: encoding.hash_grid_encode(
        x, t, self.resolutions).sum())(self.tables)
    touched = np.asarray(jnp.any(grad != 0, axis=-1))  # [levels, rows]
    for level, res in enumerate(self.resolutions):
      base = np.minimum(np.floor(np.asarray(x) * res).astype(int), res - 1)
      corners = base[:, None] + np.array(list(itertools.product((0, 1),
                                                                repeat=3)))
      rows = np.asarray(encoding.hash_grid_indices(
          jnp.asarray(corners)[:, None], (res,), 2**10))
      expected = np.zeros(2**10, bool)
      expected[rows.ravel()] = True
      np.testing.assert_array_equal(touched[level], expected)
    # Trilinear weights of one point sum to one: d(sum)/d(table) sums to 3
    # points per level and feature.
    np.testing.assert_allclose(grad.sum(axis=1), np.full((3, 2), 3.0),
                               rtol=1e-5)

  def test_posenc_shape_and_values(self):
    x = jnp.array([[0.5, -1.0, 2.0]])
    enc = encoding.posenc(x, 0, 3)
    self.assertEqual(enc.shape, (1, encoding.posenc_dim(3, 0, 3)))
    np.testing.assert_allclose(enc[0, :3], x[0])
    np.testing.assert_allclose(enc[0, 3:12], np.sin(
        np.outer([1, 2, 4], x[0]).ravel()), atol=1e-6)
    np.testing.assert_allclose(enc[0, 12:], np.cos(
        np.outer([1, 2, 4], x[0]).ravel()), atol=1e-5)

  def test_contraction_bounded(self):
    x = jax.random.normal(jax.random.key(3), (100, 3)) * 100
    c = encoding.contract(x)
    self.assertTrue(np.all(np.linalg.norm(c, axis=-1) <= 2.0 + 1e-5))
    inside = jnp.array([[0.1, 0.2, -0.3]])
    np.testing.assert_allclose(encoding.contract(inside), inside)

  def test_contraction_identity_inside_and_radius_two_at_infinity(self):
    x = jax.random.normal(jax.random.key(4), (64, 3))
    x = x / jnp.linalg.norm(x, axis=-1, keepdims=True)
    for radius in (0.0, 0.3, 0.999, 1.0):
      np.testing.assert_allclose(encoding.contract(radius * x), radius * x,
                                 atol=1e-7)
    # Radius r maps to radius 2 - 1/r along the same direction: 2 at
    # infinity.
    for radius in (1.5, 10.0, 1e3, 1e7):
      c = encoding.contract(radius * x)
      np.testing.assert_allclose(np.linalg.norm(c, axis=-1), 2 - 1 / radius,
                                 rtol=1e-6)
      np.testing.assert_allclose(c / np.linalg.norm(c, axis=-1,
                                                    keepdims=True), x,
                                 atol=1e-6)

  def test_contraction_jacobian_matches_autodiff(self):
    """Normals of a contracted field differentiate through the contraction.

    Outside the unit ball, with r = |x| and u = x / r, the Jacobian is
    u u^T / r^2 (radial) + (2 - 1/r) / r (I - u u^T) (tangential); inside
    it is the identity, and both agree on the sphere (C^1 there).
    """
    def analytic(x):
      r = np.linalg.norm(x)
      if r <= 1.0:
        return np.eye(3)
      u = x / r
      radial = np.outer(u, u)
      return radial / r**2 + (2 - 1 / r) / r * (np.eye(3) - radial)

    jacobian = jax.jit(jax.vmap(jax.jacfwd(encoding.contract)))
    x = np.array(jax.random.normal(jax.random.key(5), (32, 3)) * 3,
                 np.float64)
    x[0] = [0.2, -0.1, 0.3]  # inside
    x[1] = [0.0, 1.0001, 0.0]  # just outside the sphere
    got = np.asarray(jacobian(jnp.asarray(x, jnp.float32)))
    for i in range(len(x)):
      np.testing.assert_allclose(got[i], analytic(x[i]), atol=2e-5)
    np.testing.assert_allclose(analytic(np.array([0.0, 1.0 + 1e-9, 0.0])),
                               np.eye(3), atol=1e-8)


if __name__ == '__main__':
  absltest.main()
