"""NDC rays: the near plane and infinity, straight lines, depth back in
world units, and the forward-facing check."""

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from condnerf import ndc

PROJECTION = ndc.Projection(sx=1.6, sy=2.1, near=1.0)


def _point_to_ndc(p, projection):
  """The NDC image of world points f64[..., 3] (the map itself)."""
  sx, sy, near = projection
  x, y, z = p[..., 0], p[..., 1], p[..., 2]
  return np.stack([-sx * x / z, -sy * y / z, 1 + 2 * near / z], -1)


def _rays(n=16, seed=0):
  """World rays from near the origin, looking roughly down -z."""
  rng = np.random.default_rng(seed)
  origins = rng.uniform(-0.3, 0.3, (n, 3))
  directions = np.concatenate([rng.uniform(-0.4, 0.4, (n, 2)),
                               -np.ones((n, 1))], -1)
  directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
  return origins, directions


class NdcTest(absltest.TestCase):

  def test_near_plane_goes_to_minus_one_and_infinity_to_plus_one(self):
    origins, directions = _rays()
    o, d = ndc.rays_to_ndc(origins, directions, PROJECTION)
    np.testing.assert_allclose(o[:, 2], -1.0, atol=1e-12)
    np.testing.assert_allclose((o + d)[:, 2], 1.0, atol=1e-12)
    # The NDC origin is the image of where the ray meets z = -near.
    t_near = -(1.0 + origins[:, 2]) / directions[:, 2]
    on_plane = origins + t_near[:, None] * directions
    np.testing.assert_allclose(on_plane[:, 2], -1.0)
    np.testing.assert_allclose(o, _point_to_ndc(on_plane, PROJECTION),
                               atol=1e-12)
    # t' = 1 is the ray's vanishing point: far world points tend to it.
    far = origins + 1e9 * directions
    np.testing.assert_allclose(o + d, _point_to_ndc(far, PROJECTION),
                               atol=1e-6)

  def test_world_rays_stay_straight_and_depth_converts_back(self):
    origins, directions = _rays()
    o, d = ndc.rays_to_ndc(origins, directions, PROJECTION)
    t_near = -(1.0 + origins[:, 2]) / directions[:, 2]
    for extra in (0.0, 0.5, 3.0, 40.0):
      t_world = t_near + extra
      p = _point_to_ndc(origins + t_world[:, None] * directions, PROJECTION)
      # The image lies on the NDC ray, at t' = (z' + 1) / 2 (d'_z = 2).
      t_ndc = (p[:, 2] - o[:, 2]) / d[:, 2]
      np.testing.assert_allclose(o + t_ndc[:, None] * d, p, atol=1e-9)
      self.assertTrue(np.all((t_ndc >= 0) & (t_ndc < 1)))
      np.testing.assert_allclose(
          ndc.world_distance(t_ndc, o, d, origins, PROJECTION), t_world,
          rtol=1e-9)
    np.testing.assert_allclose(
        ndc.to_world(_point_to_ndc(origins[:1] - 2.0, PROJECTION),
                     PROJECTION), origins[:1] - 2.0)

  def test_jax_and_numpy_agree(self):
    origins, directions = _rays()
    o, d = ndc.rays_to_ndc(origins, directions, PROJECTION)
    jo, jd = jax.jit(ndc.rays_to_ndc, static_argnums=2)(
        jnp.asarray(origins, jnp.float32), jnp.asarray(directions,
                                                       jnp.float32),
        PROJECTION)
    np.testing.assert_allclose(jo, o, atol=1e-5)
    np.testing.assert_allclose(jd, d, atol=1e-5)

  def test_cameras_that_do_not_face_one_way_are_refused(self):
    poses = np.tile(np.eye(4), (3, 1, 1))
    ndc.check_forward_facing(poses, near=1.0)  # all look down -z.
    turned = poses.copy()
    angle = np.radians(80)
    turned[1, :3, :3] = [[np.cos(angle), 0, np.sin(angle)], [0, 1, 0],
                         [-np.sin(angle), 0, np.cos(angle)]]
    with self.assertRaisesRegex(ValueError, 'camera 1 looks 80 degrees '
                                'away.*use_contraction=True'):
      ndc.check_forward_facing(turned, near=1.0)
    deep = poses.copy()
    deep[2, 2, 3] = -1.5
    with self.assertRaisesRegex(ValueError, 'camera 2 stands at z = -1.50'):
      ndc.check_forward_facing(deep, near=1.0)


if __name__ == '__main__':
  absltest.main()
