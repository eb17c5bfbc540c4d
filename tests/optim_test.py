"""Learning-rate schedules by step count or by budget used, and the clock."""

from absl.testing import absltest
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from condnerf import optim
from condnerf import train_clock


def optax_reference(lr_init, lr_final, total_steps, warmup_steps):
  """The step-count schedule written with optax's own building blocks."""
  decay = optax.exponential_decay(
      init_value=lr_init, transition_steps=total_steps - warmup_steps,
      decay_rate=lr_final / lr_init, end_value=lr_final)
  warmup = optax.linear_schedule(0.0, lr_init, warmup_steps)
  return optax.join_schedules([warmup, decay], [warmup_steps])


def optim_config():
  return ml_collections.ConfigDict(dict(
      lr_init=1e-2, lr_final=1e-3, warmup_steps=5, clip_grad_norm=0.0, b1=0.9,
      b2=0.99, eps=1e-15, codes_lr_init=1e-1, codes_lr_final=1e-2))


class ScheduleTest(absltest.TestCase):

  def test_step_schedule_matches_optax(self):
    ours = optim.make_schedule(1e-2, 1e-3, 50, 5)
    ref = optax_reference(1e-2, 1e-3, 50, 5)
    for count in [0, 1, 4, 5, 6, 20, 49, 50, 60]:
      np.testing.assert_allclose(ours(count), ref(count), rtol=1e-5,
                                 err_msg=f'count {count}')

  def test_progress_drives_the_decay(self):
    ours = optim.make_schedule(1e-2, 1e-3, 100, 10)
    # Past warm-up, the step count no longer matters, only the budget used.
    np.testing.assert_allclose(ours(20, 1.0), 1e-3, rtol=1e-5)
    np.testing.assert_allclose(ours(20, 0.1), 1e-2, rtol=1e-5)
    np.testing.assert_allclose(ours(20, 0.55), 1e-2 * 0.1**0.5, rtol=1e-5)
    # Warm-up is counted in steps even when the budget runs out first.
    np.testing.assert_allclose(ours(2, 1.0), 1e-3 * 0.2, rtol=1e-5)

  def test_optimizer_state_has_optax_adam_layout(self):
    # Checkpoints written with optax.adam's state (a scheduled rate) keep
    # restoring.
    params = {'params': {'w': jnp.ones((3,))}, 'codes': {'a': jnp.ones((2,))}}
    ours = optim.make_optimizer(optim_config(), 50).init(params)
    adam = lambda: optax.chain(optax.adam(optax.constant_schedule(1e-3)))
    ref = optax.multi_transform(
        {'field': adam(), 'codes': adam(), 'frozen': optax.set_to_zero()},
        optim.make_labels()).init(params)
    self.assertEqual(jax.tree.structure(ours), jax.tree.structure(ref))

  def test_update_uses_progress(self):
    params = {'params': {'w': jnp.ones((3,))}, 'codes': {'a': jnp.ones((2,))}}
    grads = jax.tree.map(jnp.ones_like, params)
    tx = optim.make_optimizer(optim_config(), 1000)
    state = tx.init(params)
    for _ in range(6):  # past warm-up.
      _, state = tx.update(grads, state, params)
    early, _ = tx.update(grads, state, params, progress=jnp.float32(0.0))
    late, _ = tx.update(grads, state, params, progress=jnp.float32(1.0))
    # Adam's normalised step is ~1 for constant gradients: the update is -lr.
    np.testing.assert_allclose(early['params']['w'], -1e-2, rtol=1e-3)
    np.testing.assert_allclose(late['params']['w'], -1e-3, rtol=1e-3)
    np.testing.assert_allclose(late['codes']['a'], -1e-2, rtol=1e-3)


class TrainClockTest(absltest.TestCase):

  def test_progress_is_the_larger_share_of_the_budget(self):
    clock = train_clock.TrainClock(steps=100, minutes=2.0, seconds=30.0)
    self.assertAlmostEqual(clock.progress(10), 0.25)  # time binds.
    self.assertAlmostEqual(clock.progress(50), 0.5)  # steps bind.
    self.assertFalse(clock.done(99))
    clock.shared = 120.0
    self.assertEqual(clock.progress(10), 1.0)
    self.assertTrue(clock.done(10))
    self.assertTrue(train_clock.TrainClock(100, 0.0).done(100))

  def test_no_time_budget_means_step_schedule(self):
    clock = train_clock.TrainClock(steps=100, minutes=0.0)
    self.assertIsNone(clock.progress(10))
    clock.shared = 1e9
    self.assertFalse(clock.done(10))

  def test_clock_counts_only_running_spans(self):
    clock = train_clock.TrainClock(steps=10, minutes=1.0)
    clock.resume()
    clock.pause()
    paused = clock.elapsed()
    self.assertEqual(clock.elapsed(), paused)  # no time passes while paused.
    clock.sync(1)
    self.assertEqual(clock.shared, paused)


if __name__ == '__main__':
  absltest.main()
