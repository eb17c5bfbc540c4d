"""Light codes: SH projection, rotation, fits, and normals of a density."""

from absl.testing import absltest
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from condnerf import lighting
from condnerf import fields


def _unit(v):
  v = np.asarray(v, np.float64)
  return v / np.linalg.norm(v)


class ProjectionTest(absltest.TestCase):

  def test_directional_light_on_its_own_direction_is_the_closed_form(self):
    # Bands 0-2 of max(0, n.d) are 1/4 + t/2 + 5/16 P2(t): 17/16 at t = 1.
    for d, intensity, ambient in (((0.3, -0.5, 0.8), 0.6, 0.45),
                                  ((0.0, 0.0, 1.0), 1.0, 0.0),
                                  ((-1.0, 2.0, -0.5), 0.25, 0.1)):
      code = lighting.directional(d, intensity, ambient)
      got = lighting.shading(_unit(d)[None], code, np)[0]
      np.testing.assert_allclose(got, ambient + 17 / 16 * intensity,
                                 rtol=1e-6)
      # And opposite it: 1/4 - 1/2 + 5/16 = 1/16.
      got = lighting.shading(-_unit(d)[None], code, np)[0]
      np.testing.assert_allclose(got, ambient + intensity / 16, rtol=1e-5,
                                 atol=1e-7)

  def test_projection_matches_numerical_integration(self):
    # Project a + I max(0, n.d) onto the basis by quadrature on a fine grid.
    d = _unit((0.2, 0.7, -0.4))
    theta = (np.arange(400) + 0.5) * np.pi / 400
    phi = (np.arange(800) + 0.5) * 2 * np.pi / 800
    t, p = np.meshgrid(theta, phi, indexing='ij')
    n = np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)],
                 -1).reshape(-1, 3)
    area = (np.sin(t) * (np.pi / 400) * (2 * np.pi / 800)).reshape(-1)
    f = 0.3 + 0.8 * np.maximum(n @ d, 0.0)
    coeffs = (lighting.sh_basis(n, np) * (f * area)[:, None]).sum(0)
    np.testing.assert_allclose(lighting.directional(d, 0.8, 0.3)[:, 0],
                               coeffs, atol=2e-4)

  def test_rotation_equals_projection_of_rotated_direction(self):
    d = _unit((0.3, -0.5, 0.8))
    code = lighting.directional(d, 0.55, 0.45)
    for axis, degrees in (((0, 0, 1), 40.0), ((1, 2, 0.5), -75.0),
                          ((0, 1, 0), 180.0)):
      rotation = lighting.rotation_matrix(axis, degrees)
      np.testing.assert_allclose(
          lighting.rotate(code, rotation),
          lighting.directional(rotation @ d, 0.55, 0.45), atol=2e-6)
    np.testing.assert_allclose(
        lighting.rotate_about(code, 90.0),
        lighting.directional((-d[1], d[0], d[2]), 0.55, 0.45), atol=2e-6)

  def test_estimate_and_with_direction(self):
    code = lighting.directional((0.3, -0.5, 0.8), 0.55, 0.45)
    found = lighting.estimate(code)
    np.testing.assert_allclose(found['direction'], _unit((0.3, -0.5, 0.8)),
                               atol=5e-3)
    np.testing.assert_allclose(found['intensity'], 0.55, atol=1e-3)
    np.testing.assert_allclose(found['ambient'], 0.45, atol=1e-3)
    moved = lighting.with_direction(code, (1, 0, 0.3))
    np.testing.assert_allclose(
        moved, lighting.directional((1, 0, 0.3), 0.55, 0.45), atol=5e-3)
    np.testing.assert_allclose(lighting.dominant_direction(code),
                               _unit((0.3, -0.5, 0.8)), atol=1e-6)

  def test_bad_input(self):
    with self.assertRaisesRegex(ValueError, 'non-zero length'):
      lighting.directional((0, 0, 0))
    with self.assertRaisesRegex(ValueError, 'non-zero length'):
      lighting.unit((1.0, float('nan'), 0.0))
    with self.assertRaisesRegex(ValueError, r'f32\[9, 3\].*got shape \(4, 3\)'):
      lighting.check_light(np.zeros((4, 3)))


class FitTest(absltest.TestCase):

  def _problem(self, light, seed=0, num_rays=64):
    rng = np.random.default_rng(seed)
    n = rng.normal(size=(num_rays, 5, 3))
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    w = rng.uniform(size=(num_rays, 5))
    albedo = rng.uniform(0.2, 0.9, (num_rays, 5, 3))
    design = np.einsum('rs,rsc,rsi->ric', w, albedo,
                       lighting.sh_basis(n, np))
    offset = rng.uniform(size=(num_rays, 3)) * 0.1
    target = np.einsum('ric,ic->rc', design, light) + offset
    return design, offset, target

  def test_least_squares_recovers_the_light_exactly(self):
    light = np.random.default_rng(3).normal(size=(9, 3)).astype(np.float32)
    design, offset, target = self._problem(light)
    weight = np.ones(len(target))
    got = lighting.fit_linear(design, offset, target, weight,
                              np.zeros((9, 3)), ridge=0.0)
    np.testing.assert_allclose(got, light, atol=1e-5)
    # Padding rows (weight 0) do not count, whatever their target.
    target[-5:] += 3.0
    weight[-5:] = 0.0
    got = lighting.fit_linear(design, offset, target, weight,
                              np.zeros((9, 3)), ridge=0.0)
    np.testing.assert_allclose(got, light, atol=1e-5)

  def test_ridge_keeps_what_the_pixels_do_not_see(self):
    # Every normal faces +z: only the functions that vary along z are seen.
    light = lighting.directional((0.2, 0.1, 1.0), 0.5, 0.4)
    prior = lighting.directional((1.0, 0.0, 0.2), 0.3, 0.2)
    n = np.tile([0.0, 0.0, 1.0], (16, 1, 1))
    design = np.repeat(lighting.sh_basis(n, np)[:, :, :, None], 3,
                       axis=3).sum(1)
    target = np.einsum('ric,ic->rc', design, light)
    got = lighting.fit_linear(design, np.zeros_like(target), target,
                              np.ones(16), prior, ridge=1e-6)
    np.testing.assert_allclose(lighting.shading(n[0], got, np),
                               lighting.shading(n[0], light, np), atol=1e-4)
    unseen = [1, 3, 4, 5, 7, 8]  # y, x, xy, yz, xz, x2-y2 are 0 at +z.
    np.testing.assert_allclose(got[unseen], prior[unseen], atol=1e-6)

  def test_directional_fit_recovers_a_directional_light(self):
    light = lighting.directional((-0.5, 0.4, 0.6), (0.5, 0.6, 0.7), 0.3)
    design, offset, target = self._problem(light, seed=1)
    got, found = lighting.fit_directional(design, offset, target,
                                          np.ones(len(target)))
    angle = np.degrees(np.arccos(np.clip(
        np.dot(found['direction'], _unit((-0.5, 0.4, 0.6))), -1, 1)))
    self.assertLess(angle, 0.5)
    np.testing.assert_allclose(found['intensity'], (0.5, 0.6, 0.7),
                               atol=5e-3)
    np.testing.assert_allclose(found['ambient'], 0.3, atol=5e-3)
    np.testing.assert_allclose(got, light, atol=1e-2)


  def test_direction_fit_finds_the_direction_at_the_given_strength(self):
    light = lighting.directional((-0.5, 0.4, 0.6), 0.6, 0.3)
    design, offset, target = self._problem(light, seed=4)
    info = lighting.estimate(light)
    got, direction = lighting.fit_direction(
        design, offset, target, np.ones(len(target)), info['intensity'],
        info['ambient'])
    angle = np.degrees(np.arccos(np.clip(
        np.dot(direction, _unit((-0.5, 0.4, 0.6))), -1, 1)))
    self.assertLess(angle, 0.5)
    np.testing.assert_allclose(got, light, atol=1e-2)
    # Twice as bright pixels do not make the light brighter.
    brighter, _ = lighting.fit_direction(
        design, offset, 2 * target, np.ones(len(target)), info['intensity'],
        info['ambient'])
    np.testing.assert_allclose(lighting.estimate(brighter)['intensity'],
                               info['intensity'], atol=1e-3)

  def test_white_fit_holds_where_a_channel_is_dark(self):
    # A red albedo: the blue channel sees (almost) nothing, so a
    # per-channel fit can give it any light; a white fit shares one.
    light = lighting.directional((0.4, -0.3, 0.8), 0.6, 0.45)
    design, offset, target = self._problem(light, seed=2)
    design[..., 2] *= 1e-4
    target = np.einsum('ric,ic->rc', design, light) + offset
    got, found = lighting.fit_directional(design, offset, target,
                                          np.ones(len(target)), white=True)
    np.testing.assert_allclose(found['intensity'], [0.6] * 3, atol=5e-3)
    np.testing.assert_allclose(found['ambient'], [0.45] * 3, atol=5e-3)
    np.testing.assert_allclose(got, light, atol=1e-2)
    # The reported error is the weighted mean squared error of the fit.
    fitted = np.einsum('ric,ic->rc', design, got) + offset
    np.testing.assert_allclose(found['error'],
                               np.mean((fitted - target)**2), atol=1e-6)
    self.assertGreaterEqual(found['error'], 0.0)


class _Sphere(nn.Module):
  """Density softplus(20 (0.7 - |s x|)), s = 1 at init: a sphere, whose
  normals point along x / |x| (an ellipsoid once s moves)."""

  @nn.compact
  def __call__(self, x):
    scale = self.param('scale', nn.initializers.ones, (3,))
    r = jnp.linalg.norm(x * scale, axis=-1)
    return jax.nn.softplus(20.0 * (0.7 - r)), jnp.zeros(x.shape[:-1] + (2,))


class _WithNormals(nn.Module):

  @nn.compact
  def __call__(self, x):
    return fields.with_normals(_Sphere(), x)


class NormalsTest(absltest.TestCase):

  def test_normals_of_a_sphere_are_radial(self):
    points = jax.random.normal(jax.random.key(0), (32, 7, 3))
    # Within 0.3 of the surface (radius 0.7), where the density has a
    # gradient (far out it underflows, and so do its normals).
    points = 0.1 + 0.8 * points / jnp.linalg.norm(points, axis=-1,
                                                  keepdims=True)
    module = _WithNormals()
    variables = module.init(jax.random.key(1), points)
    density, _, normals = module.apply(variables, points)
    want = points / jnp.linalg.norm(points, axis=-1, keepdims=True)
    np.testing.assert_allclose(normals, want, atol=1e-5)
    self.assertEqual(density.shape, (32, 7))
    # The normals train the geometry: a loss on them reaches the density's
    # own parameters (through the second derivative), as finite differences
    # of the same loss say.
    def loss(v):
      _, _, n = module.apply(v, points)
      return jnp.sum(n[..., 2])
    grad = jax.grad(loss)(variables)['params']['_Sphere_0']['scale']
    step = 1e-3
    for axis in range(3):
      bump = jnp.zeros(3).at[axis].set(step)
      moved = [loss({'params': {'_Sphere_0': {'scale': jnp.ones(3) + b}}})
               for b in (bump, -bump)]
      np.testing.assert_allclose(grad[axis], (moved[0] - moved[1]) / (2 * step),
                                 rtol=2e-2, atol=1e-2)
    self.assertGreater(float(jnp.abs(grad).max()), 0.1)


if __name__ == '__main__':
  absltest.main()
