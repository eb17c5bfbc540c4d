"""Tests for condnerf.occupancy: the grid's update, marching and packing,
and packed rendering against the dense quadrature."""

import functools

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from condnerf import occupancy
from condnerf import rendering
from condnerf import sampling

HALF = 1.0


def _ball(points, radius=0.4):
  """f32[n]: density 50 inside a centred ball, 0 outside."""
  return jnp.where(jnp.linalg.norm(points, axis=-1) < radius, 50.0, 0.0)


def _rays(num, seed=0):
  """Rays from a sphere of radius 3 towards points near the centre."""
  rng = np.random.default_rng(seed)
  origins = rng.normal(size=(num, 3))
  origins = 3.0 * origins / np.linalg.norm(origins, axis=-1, keepdims=True)
  targets = rng.uniform(-0.5, 0.5, size=(num, 3))
  directions = targets - origins
  directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
  origins, directions = (jnp.asarray(x, jnp.float32)
                         for x in (origins, directions))
  near, far = sampling.clip_to_box(origins, directions,
                                   jnp.full((num, 1), 0.1),
                                   jnp.full((num, 1), 6.0), HALF)
  return origins, directions, near, far


@functools.cache
def _trained_grid(resolution=16, updates=8, step_size=0.02):
  """The grid after `updates` updates (4 of warm-up) on `_ball`."""
  grid = occupancy.init_grid(resolution)
  step = jax.jit(occupancy.update, static_argnums=(1, 5, 6))
  for i in range(updates):
    grid = step(grid, _ball, jax.random.key(i), step_size, HALF,
                resolution ** 3, i < 4)
  return grid


class GridTest(absltest.TestCase):

  def test_updates_find_the_ball_and_empty_the_rest(self):
    resolution = 16
    grid = _trained_grid(resolution)
    centers = ((np.stack(np.meshgrid(*[np.arange(resolution)] * 3,
                                     indexing='ij'), -1) + 0.5)
               / resolution * 2 - 1) * HALF
    radius = np.linalg.norm(centers, axis=-1)
    occupied = np.asarray(occupancy.occupied(grid))
    # Well inside the ball: occupied (each cell is drawn at least once in 8
    # updates of R^3 draws with high probability); outside: never.
    self.assertTrue(occupied[radius < 0.25].all())
    self.assertFalse(occupied[radius > 0.6].any())
    self.assertGreater(occupied[radius > 0.6].size, 1000)

  def test_a_drawn_cell_keeps_the_larger_of_decayed_and_fresh(self):
    grid = jnp.full((4, 4, 4), 0.5)
    # Density 0 everywhere: every drawn cell decays once per update.
    new = occupancy.update(grid, lambda p: jnp.zeros(p.shape[:-1]),
                           jax.random.key(0), 0.1, HALF, num_cells=48)
    new = np.asarray(new)
    decayed = np.isclose(new, 0.5 * occupancy.DECAY)
    self.assertTrue((decayed | (new == 0.5)).all())
    self.assertTrue(decayed.any() and not decayed.all())  # 48 draws of 64.
    # A density above the decayed value replaces it.
    new = np.asarray(occupancy.update(
        grid, lambda p: jnp.full(p.shape[:-1], 10.0), jax.random.key(0),
        0.1, HALF, num_cells=48))
    self.assertTrue((np.isclose(new, 1.0) | (new == 0.5)).all())
    np.testing.assert_array_equal(np.isclose(new, 1.0), decayed)

  def test_a_warmup_of_every_cell_updates_each_once(self):
    grid = jnp.full((4, 4, 4), 0.5)
    zero = lambda p: jnp.zeros(p.shape[:-1])
    new = occupancy.update(grid, zero, jax.random.key(0), 0.1, HALF,
                           num_cells=64)
    np.testing.assert_allclose(new, 0.5 * occupancy.DECAY)
    # In chunks (the padding past the last cell writes nothing).
    counted = []

    def density(points):
      counted.append(points.shape[0])
      return jnp.zeros(points.shape[:-1])

    chunked = occupancy._in_chunks(density, jnp.zeros((10, 3)), chunk=4)
    self.assertEqual((chunked.shape, counted), ((10,), [4]))

  def test_update_is_a_pure_function_of_its_key(self):
    grid = occupancy.init_grid(8)
    run = jax.jit(lambda g, k: occupancy.update(
        g, _ball, k, 0.02, HALF, num_cells=256, warmup=False))
    a = run(grid, jax.random.key(3))
    np.testing.assert_array_equal(a, run(grid, jax.random.key(3)))
    self.assertFalse(np.array_equal(a, run(grid, jax.random.key(4))))


class MarchTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.grid = _trained_grid()
    self.rays = _rays(32)

  def _march(self, budget, **kwargs):
    return occupancy.march(*self.rays, self.grid, HALF, 0.02, 200, budget,
                           **kwargs)

  def test_samples_match_a_brute_force_march(self):
    samples = self._march(budget=4096)
    origins, directions, near, far = (np.asarray(x) for x in self.rays)
    occupied = np.asarray(occupancy.occupied(self.grid))
    expected = []
    for r in range(len(origins)):
      for i in range(200):
        t0 = near[r, 0] + i * 0.02
        if t0 >= far[r, 0]:
          break
        t1 = min(t0 + 0.02, far[r, 0])
        point = origins[r] + 0.5 * (t0 + t1) * directions[r]
        cell = np.clip(np.floor((point + HALF) / (2 * HALF) * 16), 0,
                       15).astype(int)
        if np.all(np.abs(point) <= HALF) and occupied[tuple(cell)]:
          expected.append((r, t0, t1))
    valid = np.asarray(samples.valid)
    self.assertEqual(int(samples.count), len(expected))
    self.assertEqual(valid.sum(), len(expected))
    self.assertGreater(len(expected), 100)  # the rays do cross the ball.
    got = np.stack([np.asarray(samples.ray)[valid],
                    np.asarray(samples.t_start)[valid],
                    np.asarray(samples.t_end)[valid]], -1)
    np.testing.assert_allclose(got, np.asarray(expected), atol=1e-5)
    # Unused slots point one past the last ray.
    self.assertTrue((np.asarray(samples.ray)[~valid] == 32).all())

  def test_a_small_budget_keeps_the_first_samples_and_counts_all(self):
    full, small = self._march(budget=4096), self._march(budget=64)
    self.assertTrue(np.asarray(small.valid).all())
    self.assertEqual(int(small.count), int(full.count))
    np.testing.assert_array_equal(small.ray, np.asarray(full.ray)[:64])
    np.testing.assert_array_equal(small.t_start,
                                  np.asarray(full.t_start)[:64])

  def test_jitter_shifts_the_steps(self):
    jitter = jnp.full((32, 1), 0.5)
    plain, shifted = self._march(4096), self._march(4096, jitter=jitter)
    first = np.asarray(self.rays[2])[:, 0]
    for samples, offset in ((plain, 0.0), (shifted, 0.5)):
      valid = np.asarray(samples.valid)
      steps = ((np.asarray(samples.t_start)[valid]
                - first[np.asarray(samples.ray)[valid]]) / 0.02 - offset)
      np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)

  def test_marching_compiles_to_static_shapes(self):
    run = jax.jit(lambda *a: occupancy.march(*a, HALF, 0.02, 200, 512))
    samples = run(*self.rays, self.grid)
    self.assertEqual(samples.ray.shape, (512,))
    other = _rays(32, seed=1)
    self.assertEqual(run(*other, self.grid).t_start.shape, (512,))


@jax.jit
def _dense(density, rgb, edges, background):
  weights, _, _ = rendering.compute_alpha_weights(density, edges)
  return weights, rendering.composite(rgb, weights, edges, background)


class CompositeTest(absltest.TestCase):

  def test_packed_rendering_equals_the_dense_quadrature(self):
    rng = np.random.default_rng(0)
    num_rays = 5
    # Ray r has r + 1 samples (ray 0 one, ray 4 five), then empty slots.
    counts = np.arange(1, num_rays + 1)
    ray = np.concatenate([np.full(c, r) for r, c in enumerate(counts)] +
                         [np.full(3, num_rays)])
    budget = len(ray)
    valid = ray < num_rays
    t_start = rng.uniform(0, 1, budget).astype(np.float32)
    for r in range(num_rays):  # increasing edges within each ray.
      t_start[ray == r] = np.sort(t_start[ray == r]) * 2
    t_end = t_start + rng.uniform(0.01, 0.1, budget).astype(np.float32)
    density = rng.uniform(0, 30, budget).astype(np.float32)
    rgb = rng.uniform(0, 1, (budget, 3)).astype(np.float32)
    background = np.array([0.2, 0.5, 1.0], np.float32)
    samples = occupancy.Samples(
        ray=jnp.asarray(ray, jnp.int32), t_start=jnp.asarray(t_start),
        t_end=jnp.asarray(t_end), valid=jnp.asarray(valid),
        count=jnp.asarray(valid.sum()))
    out = jax.jit(occupancy.composite, static_argnums=3)(
        samples, jnp.asarray(density), jnp.asarray(rgb), num_rays, background)
    for r in range(num_rays):
      mine = ray == r
      # The dense quadrature over this ray's intervals, with zero-density
      # gaps between them (they add no thickness).
      edges = np.stack([t_start[mine], t_end[mine]], -1).reshape(-1)
      dense_density = np.zeros(len(edges) - 1, np.float32)
      dense_density[::2] = density[mine]
      dense_rgb = np.zeros((len(edges) - 1, 3), np.float32)
      dense_rgb[::2] = rgb[mine]
      weights, dense = _dense(dense_density, dense_rgb, edges, background)
      np.testing.assert_allclose(out['rgb'][r], dense.rgb, rtol=1e-5,
                                 atol=1e-6)
      np.testing.assert_allclose(out['acc'][r], dense.acc, rtol=1e-5)
      np.testing.assert_allclose(out['weights'][mine], weights[::2],
                                 rtol=1e-5, atol=1e-7)
    self.assertTrue((np.asarray(out['weights'])[~valid] == 0).all())

  def test_rendering_a_ball_through_the_grid(self):
    """Marched and packed, a ball of density 50 renders opaque where the
    rays cross it and clear where they miss; gradients reach the density."""
    grid = _trained_grid()
    origins, directions, near, far = _rays(64, seed=2)

    def render(scale):
      samples = occupancy.march(origins, directions, near, far, grid, HALF,
                                0.01, 400, 8192)
      points = occupancy.positions(samples, origins, directions)
      density = scale * _ball(points)
      out = occupancy.composite(samples, density,
                                jnp.ones(points.shape), 64, jnp.zeros(3))
      return out, samples

    render = jax.jit(render)
    out, samples = render(1.0)
    self.assertLess(int(samples.count), 8192)  # nothing cut.
    # Distance of each ray from the centre decides whether it hits.
    closest = np.linalg.norm(np.cross(np.asarray(directions),
                                      -np.asarray(origins)), axis=-1)
    acc = np.asarray(out['acc'])
    self.assertGreater(acc[closest < 0.3].min(), 0.99)
    self.assertLess(acc[closest > 0.45].max(), 1e-6)
    grad = jax.grad(lambda s: jnp.sum(render(s)[0]['acc']))(0.1)
    self.assertGreater(float(grad), 0.0)


if __name__ == '__main__':
  absltest.main()


class SampleLevelTest(absltest.TestCase):
  """`pack` and `sample_level`: which rays fit, and pruning behind opaque
  surfaces keeps the rendering."""

  def test_pack_marks_the_rays_that_fit_and_those_that_need_nothing(self):
    keep = jnp.asarray([[1, 1, 0], [0, 0, 0], [1, 1, 1], [0, 0, 0],
                        [0, 1, 0]], bool)
    index, valid, complete = occupancy.pack(keep, 4)
    np.testing.assert_array_equal(index, [0, 1, 6, 7])
    np.testing.assert_array_equal(valid, [True] * 4)
    # Ray 2 lost its last step and ray 4 its only one; rays 1 and 3 need
    # no sample, so no budget cuts them.
    np.testing.assert_array_equal(complete, [True, True, False, True, False])
    np.testing.assert_array_equal(
        occupancy.first_steps(keep, 2),
        [[0, 1], [15, 15], [6, 7], [15, 15], [13, 15]])

  def test_pruning_drops_hidden_steps_and_keeps_the_rendering(self):
    grid = _trained_grid()
    origins, directions, near, far = _rays(64, seed=3)

    def evaluate(points):  # f32[B, 1, 3] -> density, feature, normals.
      return _ball(points), jnp.ones(points.shape[:-1] + (1,)), None

    def level(prune, min_alpha=0.0):
      return occupancy.sample_level(
          evaluate, _ball, origins, directions, near, far, grid, HALF, 256,
          64 * 256, prune, min_alpha)

    full = jax.jit(lambda: level(0))()
    for prune, min_alpha in ((256, 0.0), (32, 0.0), (32, 0.05)):
      with self.subTest(prune=prune, min_alpha=min_alpha):
        pruned = jax.jit(lambda p=prune, a=min_alpha: level(p, a))()
        self.assertEqual(float(np.min(pruned['complete'])), 1.0)
        # Steps behind the opaque ball are gone...
        self.assertLess(float(pruned['samples']), 0.8 * float(full['samples']))
        # ... and they carried no weight: the same opacity and depth.
        acc = [np.asarray(jnp.sum(x['weights'], -1)) for x in (full, pruned)]
        np.testing.assert_allclose(acc[1], acc[0], atol=2e-3)
        depth = [np.asarray(rendering.expected_depth(x['weights'],
                                                     x['tdist']))
                 for x in (full, pruned)]
        np.testing.assert_allclose(depth[1], depth[0], atol=2e-3)
