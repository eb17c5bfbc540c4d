"""Tests for the divergence guard on synthetic metric streams."""

from absl.testing import absltest
import numpy as np

from condnerf import divergence
from condnerf import errors


def _feed(guard, values, start=1):
  """Feeds (loss, grad_norm) pairs from step `start`; returns the last step."""
  step = start - 1
  for step, (loss, norm) in enumerate(values, start):
    guard.observe(step, loss, norm)
  return step


def _healthy(num, seed=0):
  """A noisy but healthy run: falling loss, log-normal gradient norms."""
  rng = np.random.default_rng(seed)
  steps = np.arange(num)
  loss = 0.1 * np.exp(-steps / 400) * rng.lognormal(0.0, 0.4, num) + 1e-3
  norm = 0.05 * rng.lognormal(0.0, 0.8, num)
  return list(zip(loss, norm))


class GuardTest(absltest.TestCase):

  def test_healthy_run_never_stops_and_is_always_clean(self):
    guard = divergence.DivergenceGuard(window=50)
    for step, (loss, norm) in enumerate(_healthy(3000), 1):
      guard.observe(step, loss, norm)
      self.assertTrue(guard.clean(step), step)

  def test_non_finite_stops_at_that_step(self):
    guard = divergence.DivergenceGuard(window=5)
    _feed(guard, _healthy(10))
    with self.assertRaisesRegex(divergence.TrainingDivergedError,
                                'diverged at step 11: loss nan'):
      guard.observe(11, float('nan'), 0.1)

  def test_dead_network_stops_after_the_window(self):
    guard = divergence.DivergenceGuard(window=10, hold=0.8)
    _feed(guard, _healthy(20))
    # 7 zero steps of 10 are not enough; with a stray normal step, 8 are.
    _feed(guard, [(0.1, 0.0)] * 7, start=21)
    self.assertFalse(guard.clean(27))
    _feed(guard, [(0.1, 0.05)], start=28)
    with self.assertRaises(divergence.TrainingDivergedError) as raised:
      _feed(guard, [(0.1, 1e-13)], start=29)
    self.assertIn('diverged at step 29: the gradient norm was 0 in 8 of the '
                  'last 10 steps (20-29)', str(raised.exception))
    self.assertEqual(raised.exception.first_suspect, 21)
    self.assertIsInstance(raised.exception, errors.UserError)

  def test_loss_far_above_its_minimum(self):
    guard = divergence.DivergenceGuard(window=5, hold=1.0, loss_factor=10)
    _feed(guard, [(0.01, 0.1)] * 10)
    _feed(guard, [(0.09, 0.1)] * 20, start=11)  # 9x: allowed.
    with self.assertRaisesRegex(divergence.TrainingDivergedError,
                                r'step 35: the loss was above 10x its minimum'
                                r' \(0.01\) in 5 of the last 5'):
      _feed(guard, [(0.2, 0.1)] * 5, start=31)

  def test_exploding_gradients(self):
    guard = divergence.DivergenceGuard(window=5, hold=1.0, grad_factor=1e3)
    _feed(guard, [(0.1, 1.0)] * 10)
    _feed(guard, [(0.1, 1e10)] * 4, start=11)
    self.assertFalse(guard.clean(14))
    self.assertIn('exploding', guard.why_not_clean())
    with self.assertRaisesRegex(divergence.TrainingDivergedError,
                                r'step 15: the gradient norm was above 1000x '
                                r'its median \(1\) in 5 of the last 5 steps'):
      guard.observe(15, 0.1, 1e10)

  def test_single_spike_blocks_checkpoints_for_a_window_only(self):
    guard = divergence.DivergenceGuard(window=5, grad_factor=1e3)
    _feed(guard, [(0.1, 1.0)] * 10)
    guard.observe(11, 0.1, 1e6)
    for step in range(12, 16):
      guard.observe(step, 0.1, 1.0)
      self.assertFalse(guard.clean(step), step)
    guard.observe(16, 0.1, 1.0)
    self.assertTrue(guard.clean(16))

  def test_bad_settings(self):
    for kwargs in ({'window': 0}, {'hold': 0.0}, {'loss_factor': 1.0},
                   {'grad_factor': 0.5}):
      with self.assertRaisesRegex(errors.ConfigError, 'train.guard'):
        divergence.DivergenceGuard(**kwargs)


if __name__ == '__main__':
  absltest.main()
