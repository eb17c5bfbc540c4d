"""The periodic actions of the training loop ("when"), apart from its step.

Owns `StepLog` (per-step metrics read in step order by the divergence guard
and averaged into logging windows with a progress bar), the checkpoint
decision `save` (never from a suspect stretch, never a non-finite state),
`StopSignals` (SIGINT/SIGTERM finish the step, save it, then stop with
`TrainingInterrupted`), `Profiler` (a trace of a few steps) and `say`, the
user's one-line messages. The loop itself is `train_lib.train_and_evaluate`.
"""

import math
import signal
import sys
import threading
import time

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np
import tqdm

from condnerf import divergence
from condnerf import metrics as metrics_lib
from condnerf import train_clock


class TrainingInterrupted(KeyboardInterrupt):
  """SIGINT or SIGTERM stopped the training after saving its current step.

  Attributes:
    signum: the signal received.
  """

  def __init__(self, message, signum):
    super().__init__(message)
    self.signum = signum


def say(message):
  """One line for the user, on stderr, outside the progress bar."""
  tqdm.tqdm.write(message, file=sys.stderr)


def save(ckpt, guard, workdir, clock, state, step, force=False):
  """Checkpoints `step` unless the guard saw a suspect step in its window.

  Returns:
    Whether `step` is (being) saved.
  """
  if not guard.clean(step):
    say(f'Not saving a checkpoint at step {step}: {guard.why_not_clean()}; '
         f'the latest checkpoint stays step {ckpt.latest_step()}.')
    return False
  check_state_finite(state, step)
  ckpt.save(step, state.as_dict(), force=force)
  if jax.process_index() == 0:
    train_clock.write_clock(workdir, step, clock.elapsed())
  return True


def discard_suspect(ckpt, first_suspect):
  """Deletes checkpoints whose parameters fed a diverging stretch.

  The metrics of step s are computed with the parameters saved at s - 1, so
  when the stretch that diverged began at `first_suspect`, every checkpoint
  from `first_suspect - 1` on is suspect (an update that killed the network
  at once looks clean until the next step).

  Args:
    ckpt: the run's `checkpointing.Checkpointer`.
    first_suspect: the first suspect step, or None (nothing to discard).
  """
  if first_suspect is None:
    return
  try:
    ckpt.wait_until_finished()
  except Exception:  # pylint: disable=broad-exception-caught
    pass  # a failed save leaves no step behind; the older ones stay.
  for step in ckpt.all_steps():
    if step >= first_suspect - 1:
      ckpt.delete(step)
      if jax.process_index() == 0:
        say(f'Deleted checkpoint step {step}: its parameters gave suspect '
            f'metrics at step {step + 1}.')


def stop(saved, ckpt, step, signum):
  """Raises TrainingInterrupted once the save of `step` is written."""
  ckpt.wait_until_finished()
  where = f'saved it in {ckpt.directory}' if saved else 'did not save it'
  raise TrainingInterrupted(
      f'Interrupted at step {step}; {where}. Run the same command to resume.',
      signum)


@jax.jit
def _all_finite(tree):
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x))
                            for x in jax.tree.leaves(tree)]))


def check_state_finite(state, step):
  if not bool(_all_finite((state.params, state.codes))):
    raise divergence.TrainingDivergedError(
        f'Training diverged at step {step}: the parameters are not finite. '
        'The last good checkpoint is kept; lower optim.lr_init or enable '
        'optim.clip_grad_norm and restart from it.')


class StepLog:
  """Per-step metrics: read in step order by the guard, averaged into logs."""

  def __init__(self, writer, train_cfg, clock, start):
    self._writer = writer
    self._tc = train_cfg
    self._clock = clock
    self._pending = []  # (step, device metrics) the guard has not read yet.
    self._window = []  # host metrics of the current logging window.
    self._window_start = time.time()
    self._pbar = tqdm.tqdm(total=train_cfg.steps, initial=start,
                           disable=jax.process_index() != 0, desc='train',
                           dynamic_ncols=True)

  def add(self, step, step_metrics):
    self._pending.append((step, step_metrics))
    self._pbar.update(1)

  def observe(self, guard):
    """Fetches pending metrics and shows them to the guard (may raise)."""
    if not self._pending:
      return
    fetched = jax.device_get([m for _, m in self._pending])
    steps = [s for s, _ in self._pending]
    self._pending = []
    for step, values in zip(steps, fetched):
      values = {k: float(v) for k, v in values.items()}
      # The guard watches the photometric loss: regularizers on a schedule
      # (the palette terms) raise the total loss by design as they switch
      # on. A non-finite total loss still stops the run at once.
      watched = (values['mse'] if math.isfinite(values['loss'])
                 else values['loss'])
      guard.observe(step, watched, values['grad_norm'])
      self._window.append(values)

  def write(self, guard, step):
    """Checks and logs the mean metrics of the window ending at `step`."""
    self.observe(guard)
    if not self._window:
      return
    means = {k: float(np.mean([w[k] for w in self._window]))
             for k in self._window[0]}
    elapsed = time.time() - self._window_start
    means['rays_per_s'] = (len(self._window) * self._tc.batch_size /
                           max(elapsed, 1e-9))
    means['psnr'] = float(metrics_lib.mse_to_psnr(means['mse']))
    means['train_minutes'] = self._clock.elapsed() / 60.0
    self._writer.write_scalars(step, means)
    postfix = dict(loss=f"{means['loss']:.4f}", psnr=f"{means['psnr']:.2f}",
                   rays_s=f"{means['rays_per_s']:.0f}")
    if self._clock.budget:  # the bar counts steps; show the binding budget.
      postfix['min'] = f"{means['train_minutes']:.1f}/{self._tc.minutes:g}"
    self._pbar.set_postfix(**postfix)
    self._window, self._window_start = [], time.time()

  def close(self):
    self._pbar.close()


class Profiler:
  """A JAX profiler trace of `num_steps` steps, from the second step of a
  session on (the first compiles), into `out_dir` (0 steps: no trace)."""

  def __init__(self, out_dir, num_steps):
    self.out_dir, self.num_steps = out_dir, num_steps
    self.seen = 0
    self.active = False

  def after_step(self, step_metrics):
    """Starts the trace after the first step, stops it after `num_steps`
    more (waiting for the traced steps to finish)."""
    self.seen += 1
    if self.num_steps and self.seen == 1:
      jax.profiler.start_trace(self.out_dir)
      self.active = True
    elif self.active and self.seen == self.num_steps + 1:
      jax.block_until_ready(step_metrics)
      self.stop()

  def stop(self):
    """Ends the trace if one is running (also when training ends early)."""
    if self.active:
      jax.profiler.stop_trace()
      self.active = False
      say(f'Profiler trace of {self.seen - 1} steps in {self.out_dir} '
          f'(tensorboard --logdir {self.out_dir}).')


class StopSignals:
  """SIGINT/SIGTERM during training: finish the step, save, then stop.

  A second SIGINT stops at once (KeyboardInterrupt), without saving. Only the
  main thread can install handlers; elsewhere signals keep their defaults.
  With several processes, `requested` agrees across them every `every`
  steps, so all of them save the same step together.
  """

  def __init__(self):
    self.signum = None
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    if self.signum == signal.SIGINT and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.signum = signum
    say('Stopping after this step (a checkpoint is written first; press '
         'Ctrl-C again to stop at once).')

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for signum in (signal.SIGINT, signal.SIGTERM):
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc_info):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)

  def requested(self, step, every):
    if jax.process_count() == 1:
      return self.signum is not None
    if step % max(every, 1):
      return False
    received = multihost_utils.process_allgather(np.int32(self.signum or 0))
    if self.signum is None and np.any(received):
      self.signum = int(np.max(received))
    return bool(np.any(received))
