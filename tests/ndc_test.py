"""NDC rays: the near plane and infinity, straight lines, depth back in
world units, and the forward-facing check."""

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from condnerf import cameras
from condnerf import eval_lib
from condnerf import experiment as experiment_lib
from condnerf import ndc
from condnerf import train_lib
from condnerf.configs import base as base_config
from condnerf.data import base
from condnerf.data import procedural
from condnerf.data import sampler
from tests import scenes

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


class NdcSceneTest(absltest.TestCase):
  """A forward-facing scene in NDC through the train step and inference."""

  def test_trains_and_renders_depth_in_world_units(self):
    size = 16
    offsets = [(-0.3, -0.2), (0.3, -0.2), (-0.3, 0.2), (0.3, 0.2), (0.0, 0.0)]
    poses = np.stack([cameras.look_at((x, y, 3.0), (0.2 * x, 0.2 * y, 0.0),
                                      up=(0.0, 1.0, 0.0))
                      for x, y in offsets])
    focal = cameras.focal_from_fov(size, 0.9)
    intrinsics = np.tile([focal, focal, size / 2, size / 2],
                         (len(poses), 1)).astype(np.float32)
    rgb, alpha, _ = procedural.render_chair(poses, intrinsics, size, size)
    poses[:, 2, 3] -= 3.0  # cameras near z = 0, the chair at z = -3.
    images = rgb * alpha[..., None] + (1.0 - alpha[..., None])
    frames = base.Frames(
        images=list(images.astype(np.float32)), alphas=list(alpha),
        poses=poses.astype(np.float32), intrinsics=intrinsics,
        appearance_ids=np.zeros(len(poses), np.int32),
        names=[str(i) for i in range(len(poses))], near=1.0, far=10.0)
    projection = ndc.Projection(2 * focal / size, 2 * focal / size, 1.0)
    scene = base.validate_scene(base.Scene(
        train=frames.subset(range(4)), val=frames.subset([4]),
        test=frames.subset([4]), num_codes=1,
        background=np.ones(3, np.float32), scene_bound=1.5,
        up=np.array([0.0, 1.0, 0.0], np.float32), ndc=tuple(projection)))
    config = base_config.get_config('runlocal')
    config.train.batch_size = 64
    exp = experiment_lib.build_experiment(config, scene=scene,
                                          mesh=scenes.small_mesh())
    self.assertEqual(exp.model.ndc, tuple(projection))
    state = exp.init_state(jax.random.key(0))
    runner = train_lib.StepRunner(exp, jax.random.key(1))
    for _ in range(2):
      state, metrics = runner(state)
    self.assertTrue(np.isfinite(float(metrics['loss'])))
    out = exp.render(state, sampler.image_rays(scene.test, 0))
    self.assertEqual(out['rgb'].shape, (size, size, 3))
    # World distances: at least the way to the near plane z = -1 (about
    # 1 from these cameras), not NDC's t' in [0, 1].
    self.assertTrue(np.all(np.isfinite(out['depth'])))
    self.assertGreater(float(out['depth'].min()), 0.99)
    # Camera paths stay in front: a circle in the cameras' plane.
    path = eval_lib.path_poses(scene, 4, radius=4.0, elevation=30.0)
    np.testing.assert_array_equal(path[:, :3, :3],
                                  np.broadcast_to(np.eye(3), (4, 3, 3)))
    np.testing.assert_allclose(np.linalg.norm(path[:, :2, 3], axis=-1),
                               0.15, atol=1e-6)
    np.testing.assert_allclose(path[:, 2, 3], 0.0, atol=1e-6)
