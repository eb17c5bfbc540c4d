"""Tests of the palette regularizers in `losses`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from condnerf import losses

# Three entries: red, green, blue.
_PALETTE = np.eye(3, dtype=np.float32)


def _assignment(logits, target, usage=None, along=None, weight=None,
                min_share=0.02):
  """palette_assignment of rays whose samples all have the same logits."""
  logits = jnp.asarray(logits, jnp.float32)
  num_rays = logits.shape[0]
  log_w = jax.nn.log_softmax(logits)[:, None, :].repeat(2, axis=1)
  if along is None:
    along = jnp.full((num_rays, 2), 0.5)
  if usage is None:
    usage = jnp.full((num_rays, 3), 1.0 / 3)
  if weight is None:
    weight = jnp.ones(num_rays)
  palette = jnp.broadcast_to(_PALETTE, (num_rays, 3, 3))
  return losses.palette_assignment(log_w, along, jnp.asarray(usage), palette,
                                   jnp.asarray(target, jnp.float32), weight,
                                   min_share)


def test_assignment_is_the_cross_entropy_against_the_best_fitting_entry():
  logits = np.array([[0.0, 1.0, 2.0], [3.0, 0.0, -1.0]], np.float32)
  # A dark green and a bright blue-ish target: brightness does not count.
  target = np.array([[0.05, 0.3, 0.0], [0.1, 0.0, 0.9]], np.float32)
  log_w = jax.nn.log_softmax(jnp.asarray(logits))
  expected = -(log_w[0, 1] + log_w[1, 2]) / 2
  np.testing.assert_allclose(_assignment(logits, target), expected, rtol=1e-6)


def test_assignment_skips_entries_the_batch_does_not_use():
  logits = np.zeros((2, 3), np.float32)
  logits[:, 0] = 1.0
  target = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]], np.float32)
  # Blue paints 1% of the batch: the targets fall on the next best entry,
  # red and green tie on a blue target and argmin takes the first.
  usage = np.array([[0.5, 0.49, 0.01], [0.5, 0.49, 0.01]], np.float32)
  log_w = jax.nn.log_softmax(jnp.asarray(logits[0]))
  np.testing.assert_allclose(_assignment(logits, target, usage), -log_w[0],
                             rtol=1e-6)
  np.testing.assert_allclose(
      _assignment(logits, target, usage, min_share=0.005), -log_w[2],
      rtol=1e-6)


def test_assignment_gradient_does_not_vanish_on_a_dead_entry():
  """The case it exists for: w on the right entry has underflowed."""
  target = np.array([[0.0, 0.0, 0.7]], np.float32)

  def loss(logits):
    return _assignment(logits, target)

  logits = jnp.array([[0.0, 200.0, 0.0]])  # w_blue = exp(-200) = 0 in f32
  assert float(jax.nn.softmax(logits)[0, 2]) == 0.0
  grad = jax.grad(loss)(logits)
  np.testing.assert_allclose(grad, [[0.0, 1.0, -1.0]], atol=1e-6)


def test_assignment_moves_neither_density_nor_palette_nor_targets():
  log_w = jax.nn.log_softmax(jnp.array([[[0.0, 1.0, 0.0]] * 2]))
  along = jnp.array([[0.2, 0.7]])
  usage = jnp.full((1, 3), 1.0 / 3)
  palette = jnp.asarray(_PALETTE)[None]
  target = jnp.array([[0.0, 0.0, 1.0]])
  grads = jax.grad(
      lambda a, u, p, t: losses.palette_assignment(log_w, a, u, p, t,
                                                   jnp.ones(1)),
      argnums=(0, 1, 2, 3))(along, usage, palette, target)
  for grad in grads:
    np.testing.assert_array_equal(grad, 0.0)


def test_assignment_ignores_rays_of_weight_zero():
  logits = np.array([[0.0, 0.0, 5.0], [5.0, 0.0, 0.0]], np.float32)
  target = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]], np.float32)
  both = float(_assignment(logits, target))
  first = float(_assignment(logits, target, weight=jnp.array([1.0, 0.0])))
  assert first == pytest.approx(
      -float(jax.nn.log_softmax(jnp.asarray(logits[0]))[2]), rel=1e-6)
  assert both > first


def test_usage_is_zero_when_even_and_positive_otherwise():
  even = jnp.full((4, 3), 1.0 / 3)
  assert float(losses.palette_usage(even, jnp.ones(4))) == pytest.approx(
      0.0, abs=1e-7)
  one = jnp.tile(jnp.array([[1.0, 0.0, 0.0]]), (4, 1))
  assert float(losses.palette_usage(one, jnp.ones(4))) == pytest.approx(
      np.log(3.0), rel=1e-6)


# Outer measure and interlevel loss. Convention of `losses._searchsorted`:
# source interval j = [s_j, s_{j+1}) is half-open and target interval
# [t_i, t_{i+1}] closed, so a source interval that starts exactly at a
# target's right end counts as overlapping it, and one that ends exactly at
# its left end does not.


def _outer_reference(t_target, t_source, w_source):
  """Loop over all interval pairs: source mass overlapping each target."""
  out = np.zeros(len(t_target) - 1)
  for i in range(len(t_target) - 1):
    for j in range(len(t_source) - 1):
      if t_source[j] <= t_target[i + 1] and t_source[j + 1] > t_target[i]:
        out[i] += w_source[j]
  return out


def _outer_reference_batched(t_target, t_source, w_source):
  flat = [_outer_reference(a, b, c) for a, b, c in zip(
      t_target.reshape(-1, t_target.shape[-1]),
      t_source.reshape(-1, t_source.shape[-1]),
      w_source.reshape(-1, w_source.shape[-1]))]
  return np.stack(flat).reshape(t_target.shape[:-1] + (-1,))


@pytest.mark.parametrize('m, n', [(1, 1), (3, 8), (8, 3), (16, 16)])
def test_outer_measure_matches_brute_force_on_random_edges(m, n):
  rng = np.random.default_rng(m * 100 + n)
  # Source edges span [0, 1]; target edges reach past both ends.
  t_target = np.sort(rng.uniform(-0.2, 1.2, (2, 5, m + 1)), axis=-1)
  t_source = np.sort(rng.uniform(0.0, 1.0, (2, 5, n + 1)), axis=-1)
  w_source = rng.uniform(0.0, 1.0, (2, 5, n))
  t_target, t_source, w_source = (
      x.astype(np.float32) for x in (t_target, t_source, w_source))
  got = losses.outer_measure(t_target, t_source, w_source)
  assert got.shape == (2, 5, m)
  np.testing.assert_allclose(
      got, _outer_reference_batched(t_target, t_source, w_source),
      rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('seed', range(4))
def test_outer_measure_matches_brute_force_with_shared_and_repeated_edges(
    seed):
  # Edges on a coarse integer grid: targets and sources share edges,
  # intervals touch, and repeated edges make empty intervals.
  rng = np.random.default_rng(seed)
  t_target = np.sort(rng.integers(-1, 8, (64, 7)), axis=-1)
  t_source = np.sort(rng.integers(0, 7, (64, 6)), axis=-1)
  w_source = rng.integers(0, 5, (64, 5))
  assert np.any(t_target[..., :, None] == t_source[..., None, :])
  assert np.any(np.diff(t_source, axis=-1) == 0)
  t_target, t_source, w_source = (
      x.astype(np.float32) for x in (t_target, t_source, w_source))
  # Integer weights: the cumulative sums are exact.
  np.testing.assert_array_equal(
      losses.outer_measure(t_target, t_source, w_source),
      _outer_reference_batched(t_target, t_source, w_source))


@pytest.mark.parametrize('t_target, expected', [
    ([0.5, 1.5], [3.0]),  # inside [0, 1) and [1, 2).
    ([1.2, 1.8], [2.0]),  # strictly inside [1, 2).
    ([1.0, 2.0], [6.0]),  # [1, 2) and [2, 3), which starts at 2; not [0, 1).
    ([-1.0, 0.0], [1.0]),  # [0, 1) starts at the target's right end.
    ([3.0, 4.0], [0.0]),  # [2, 3) ends at the target's left end.
    ([-2.0, -1.0, 4.0, 5.0], [0.0, 7.0, 0.0]),
    ([0.0, 1.0, 2.0, 3.0], [3.0, 6.0, 4.0]),
])
def test_outer_measure_hand_cases(t_target, expected):
  t_source = np.array([0.0, 1.0, 2.0, 3.0], np.float32)
  w_source = np.array([1.0, 2.0, 4.0], np.float32)
  np.testing.assert_array_equal(
      losses.outer_measure(np.asarray(t_target, np.float32), t_source,
                           w_source), expected)
  np.testing.assert_array_equal(
      _outer_reference(t_target, t_source, w_source), expected)


def test_outer_measure_bounds_the_mass_on_a_coarser_grid():
  # Fine weights resampled onto a coarser grid that shares its edges: the
  # outer measure of the fine intervals covers their own mass.
  rng = np.random.default_rng(7)
  t_fine = np.sort(rng.uniform(0.0, 1.0, (16, 13)), axis=-1).astype(
      np.float32)
  w_fine = rng.uniform(0.0, 1.0, (16, 12)).astype(np.float32)
  t_coarse = t_fine[:, ::3]
  w_coarse = w_fine.reshape(16, 4, 3).sum(-1)
  bound = np.asarray(losses.outer_measure(t_fine, t_coarse, w_coarse))
  assert np.all(bound >= w_fine)
  # ...but no more than two coarse intervals' worth.
  assert np.all(bound <= w_coarse.max(-1, keepdims=True) * 2 + 1e-6)


def _ray_distributions(num_rays=8, n=16, seed=0):
  rng = np.random.default_rng(seed)
  tdist = np.sort(rng.uniform(2.0, 6.0, (num_rays, n + 1)), axis=-1)
  weights = rng.uniform(0.0, 1.0, (num_rays, n))
  weights /= weights.sum(-1, keepdims=True)
  return jnp.asarray(tdist, jnp.float32), jnp.asarray(weights, jnp.float32)


def test_interlevel_is_zero_when_the_proposal_equals_the_final_level():
  tdist, weights = _ray_distributions()
  loss = losses.interlevel(tdist, weights, [(tdist, weights)])
  assert float(loss) == pytest.approx(0.0, abs=1e-9)
  # Also with per-ray weights and several (equal) proposal levels.
  loss = losses.interlevel(tdist, weights, [(tdist, weights)] * 2,
                           weight=jnp.arange(8.0))
  assert float(loss) == pytest.approx(0.0, abs=1e-9)


def test_interlevel_is_zero_for_a_coarser_proposal_holding_the_same_mass():
  tdist, weights = _ray_distributions(n=12)
  coarse_t = tdist[:, ::4]
  coarse_w = weights.reshape(8, 3, 4).sum(-1)
  loss = losses.interlevel(tdist, weights, [(coarse_t, coarse_w)])
  assert float(loss) == pytest.approx(0.0, abs=1e-9)


def _missing_mass_rays():
  """Ray 0: all final mass in [1, 2), proposal mass in [3, 4); ray 1 agrees."""
  tdist = jnp.tile(jnp.arange(5.0), (2, 1))
  final = jnp.array([[0.0, 1.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
  proposal = jnp.array([[0.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0]])
  return tdist, final, proposal


def test_interlevel_is_positive_when_the_proposal_misses_mass():
  tdist, final, proposal = _missing_mass_rays()
  missed = 1.0 / (1.0 + 1e-7)  # (w - 0)^2 / (w + eps) with w = 1.
  loss = losses.interlevel(tdist, final, [(tdist, proposal)])
  assert float(loss) == pytest.approx(missed / 2, rel=1e-6)
  per_ray = [float(losses.interlevel(tdist, final, [(tdist, proposal)],
                                     weight=jnp.array(w)))
             for w in ([1.0, 0.0], [0.0, 1.0])]
  assert per_ray == pytest.approx([missed, 0.0], rel=1e-6, abs=1e-9)
  # Each proposal level adds its own term.
  two = losses.interlevel(tdist, final, [(tdist, proposal)] * 2)
  assert float(two) == pytest.approx(missed, rel=1e-6)


def test_interlevel_gradient_reaches_only_the_proposal_weights():
  tdist, final, proposal = _missing_mass_rays()
  grad_final, grad_proposal = jax.grad(
      lambda f, p: losses.interlevel(tdist, f, [(tdist, p)]),
      argnums=(0, 1))(final, proposal)
  np.testing.assert_array_equal(grad_final, 0.0)
  # d/dp of mean_rays (1 - p_1 - p_2)^2 / (1 + eps) at p = 0 on ray 0: the
  # bound of [1, 2) is p_1 + p_2 ([2, 3) starts at its right end).
  expected = np.zeros((2, 4), np.float32)
  expected[0, 1:3] = -1.0 / (1.0 + 1e-7)
  np.testing.assert_allclose(grad_proposal, expected, rtol=1e-6)


def test_light_prior_is_the_mean_squared_distance_of_each_rays_light():
  rng = np.random.default_rng(0)
  lights = jnp.asarray(rng.normal(size=(3, 9, 3)), jnp.float32)
  anchor = jnp.asarray(rng.normal(size=(3, 9, 3)), jnp.float32)
  ids = jnp.array([0, 2, 2, -1])
  weight = jnp.array([1.0, 1.0, 0.5, 1.0])
  got = losses.light_prior({'light': lights}, anchor, ids, weight)
  gap = np.asarray(((lights - anchor)**2).sum(axis=(1, 2)))
  # Rays of code -1 (the mean code) count as zero; weights average.
  want = (gap[0] + gap[2] + 0.5 * gap[2] + 0.0) / 3.5
  np.testing.assert_allclose(got, want, rtol=1e-5)
  assert float(losses.light_prior({'light': anchor}, anchor, ids,
                                  weight)) == 0.0
