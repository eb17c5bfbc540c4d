"""The divergence guard: stop a training that has gone wrong, save only good.

Owns `DivergenceGuard`, which reads every step's loss and gradient norm (on
the host, in step order) and recognises four ways a run fails:
  non-finite   the loss or the gradient norm is NaN or inf (at once);
  dead         the gradient norm is 0 (at most `DEAD_NORM`, i.e. zero but
               for float rounding): a network whose units all switched off
               learns nothing more;
  loss rise    the loss is above `loss_factor` x its running minimum;
  explosion    the gradient norm is above `grad_factor` x the median of its
               recent normal values.
The last three stop the run when they held in at least `hold` (a fraction)
of the last `window` steps, so a stray normal step does not hide a dead or
diverging run. A step that meets any condition is *suspect*; `clean(step)`
is False while a suspect step lies within the last `window` steps, and the
loop writes no checkpoint then, so a diverging stretch never produces a
checkpoint and never rotates good ones out. The guard does not own the loop, the checkpoints or
the metrics (`train_lib`).
"""

import collections
import math

import numpy as np

from condnerf import errors

_HINT = ('The last good checkpoint is kept; lower optim.lr_init (or set '
         'optim.clip_grad_norm) and resume, or start a new --workdir.')


class TrainingDivergedError(errors.UserError, FloatingPointError):
  """The training diverged (non-finite, dead, rising loss, exploding grads).

  Attributes:
    first_suspect: the first suspect step of the stretch that diverged. The
      parameters of every step from `first_suspect - 1` on produced suspect
      metrics, so a checkpoint of such a step is not a good one.
  """

  def __init__(self, message, first_suspect=None):
    super().__init__(message)
    self.first_suspect = first_suspect


DEAD_NORM = 1e-9  # gradient norms at most this count as zero.


class DivergenceGuard:
  """Watches per-step loss and gradient norm; raises when a run diverges.

  Example:
    guard = DivergenceGuard(window=50)
    for step, loss, grad_norm in ...:
      guard.observe(step, loss, grad_norm)   # raises TrainingDivergedError
    if guard.clean(step): save()
  """

  def __init__(self, window=50, hold=0.8, loss_factor=10.0, grad_factor=1e3,
               history=200):
    """Sets the thresholds (see the module docstring).

    Args:
      window: steps over which a condition must hold to stop the run; also
        how long a suspect step blocks checkpoints.
      hold: fraction of those steps in which it must hold, in (0, 1].
      loss_factor: loss / running minimum above which a step is suspect.
      grad_factor: gradient norm / median of recent normal norms above which
        a step is suspect.
      history: normal gradient norms kept for the median.
    """
    if (window < 1 or not 0 < hold <= 1 or loss_factor <= 1 or
        grad_factor <= 1 or history < 1):
      raise errors.ConfigError(
          'train.guard needs window >= 1, 0 < hold <= 1, loss_factor > 1, '
          f'grad_factor > 1 and history >= 1; got window={window}, '
          f'hold={hold}, loss_factor={loss_factor}, grad_factor={grad_factor},'
          f' history={history}.')
    self.window = int(window)
    self.hold = float(hold)
    self.loss_factor = float(loss_factor)
    self.grad_factor = float(grad_factor)
    self._norms = collections.deque(maxlen=int(history))
    self._min_loss = math.inf
    self._flags = {name: collections.deque(maxlen=self.window)
                   for name in ('dead', 'loss', 'grad')}
    self._last_suspect = None
    self._stretch_start = None  # first suspect step after a clean window.

  def observe(self, step, loss, grad_norm):
    """Reads one step's metrics.

    Args:
      step: the step number after the update (1-based).
      loss: the step's loss (the loop passes the photometric loss).
      grad_norm: the global norm of its (averaged) gradients.
    Raises:
      TrainingDivergedError: a condition held in `hold` of the last
        `window` steps, or a value is not finite.
    """
    loss, grad_norm = float(loss), float(grad_norm)
    if not (np.isfinite(loss) and np.isfinite(grad_norm)):
      self._suspect(step)
      raise TrainingDivergedError(
          f'Training diverged at step {step}: loss {loss}, gradient norm '
          f'{grad_norm} (not finite). {_HINT}', self._stretch_start)
    median = float(np.median(self._norms)) if len(self._norms) else None
    flags = {
        'dead': grad_norm <= DEAD_NORM,
        'loss': loss > self.loss_factor * max(self._min_loss, 1e-12),
        'grad': (median is not None and median > 0 and
                 len(self._norms) >= min(self.window, self._norms.maxlen) and
                 grad_norm > self.grad_factor * median),
    }
    for name, flagged in flags.items():
      self._flags[name].append(flagged)
    if any(flags.values()):
      self._suspect(step)
    else:
      self._norms.append(grad_norm)
    self._min_loss = min(self._min_loss, loss)
    self._raise_if_diverged(step, loss, grad_norm, median)

  def _suspect(self, step):
    if self.clean(step - 1):
      self._stretch_start = step
    self._last_suspect = step

  def _held(self, name):
    """How many of the last `window` steps met condition `name`, if enough."""
    count = sum(self._flags[name])
    if len(self._flags[name]) == self.window and count >= (
        self.hold * self.window):
      return count
    return 0

  def _raise_if_diverged(self, step, loss, grad_norm, median):
    steps = f'of the last {self.window} steps ({step - self.window + 1}-{step})'
    if count := self._held('dead'):
      raise TrainingDivergedError(
          f'Training diverged at step {step}: the gradient norm was 0 in '
          f'{count} {steps}; the network is dead (no unit responds any '
          f'more). {_HINT}', self._stretch_start)
    if count := self._held('loss'):
      raise TrainingDivergedError(
          f'Training diverged at step {step}: the loss was above '
          f'{self.loss_factor:g}x its minimum ({self._min_loss:.4g}) in '
          f'{count} {steps}; now {loss:.4g}. {_HINT}', self._stretch_start)
    if count := self._held('grad'):
      raise TrainingDivergedError(
          f'Training diverged at step {step}: the gradient norm was above '
          f'{self.grad_factor:g}x its median ({median:.4g}) in {count} '
          f'{steps}; now {grad_norm:.4g}: the gradients are exploding. '
          f'{_HINT}', self._stretch_start)

  def clean(self, step):
    """Whether a checkpoint of `step` may be written (no recent suspect)."""
    return self._last_suspect is None or step - self._last_suspect >= (
        self.window)

  def why_not_clean(self):
    """A short reason `clean` is False, for the log."""
    active = [name for name, flags in self._flags.items() if flags and
              flags[-1]]
    what = {'dead': 'zero gradient norm', 'loss': 'loss far above its '
            'minimum', 'grad': 'exploding gradient norm'}
    reasons = ', '.join(what[a] for a in active) or 'a recent suspect step'
    return f'step {self._last_suspect} was suspect ({reasons})'
