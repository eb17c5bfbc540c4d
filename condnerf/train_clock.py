"""The wall-clock training budget (`train.minutes`) and its record on disk.

`TrainClock` counts training time and turns it into the progress the
learning-rate decay follows; `read_clock`/`write_clock` keep it across
resumes in `CLOCK_FILE`, next to the checkpoints. Used by the train loop
(`train_lib`) and the benchmark's Trainer.
"""

import json
import os
import time

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np

from condnerf import workdir as workdir_lib


class TrainClock:
  """Training time against the `train.minutes` budget.

  Counts wall time inside the train loop from the end of a session's first
  step (so compilation is not counted; nor are validation renders and
  checkpoint writes), plus the time of earlier sessions of a resumed run
  (`CLOCK_FILE` in the workdir).
  `progress(step)` is the fraction of the budget used,
  `max(step / steps, seconds / budget)`, which the learning-rate decay
  follows (see `optim.make_schedule`); with no time budget it is None and
  the decay follows the step count. With several processes, process 0's
  time is broadcast every `sync_every` steps, so every process uses the same
  learning rate and all stop at the same step.
  """

  def __init__(self, steps, minutes, seconds=0.0, sync_every=1):
    self.steps = max(int(steps), 1)
    self.budget = 60.0 * float(minutes)
    self.seconds = float(seconds)  # accumulated, excluding a running span.
    self.shared = float(seconds)  # the value every process agrees on.
    self.sync_every = max(int(sync_every), 1)
    self._since = None

  def resume(self):
    if self._since is None:
      self._since = time.perf_counter()

  def pause(self):
    if self._since is not None:
      self.seconds += time.perf_counter() - self._since
      self._since = None

  def elapsed(self):
    """Seconds of training so far (this process's own clock)."""
    running = 0.0 if self._since is None else time.perf_counter() - self._since
    return self.seconds + running

  def sync(self, step):
    """Refreshes the shared time (every step with one process)."""
    if jax.process_count() == 1 or not self.budget:
      self.shared = self.elapsed()
    elif step % self.sync_every == 0:
      self.shared = float(multihost_utils.broadcast_one_to_all(
          np.float32(self.elapsed())))

  def progress(self, step):
    """f32-able fraction of the budget used, or None without a time budget."""
    if not self.budget:
      return None
    return min(1.0, max(step / self.steps, self.shared / self.budget))

  def done(self, step):
    return step >= self.steps or bool(self.budget and
                                      self.shared >= self.budget)


CLOCK_FILE = 'train_clock.json'


def read_clock(workdir, step):
  """Training seconds recorded with the checkpoint of `step` (else 0)."""
  path = os.path.join(workdir, CLOCK_FILE)
  if step == 0 or not os.path.exists(path):
    return 0.0
  try:
    with open(path, encoding='utf-8') as f:
      record = json.load(f)
    recorded_step, seconds = record['step'], float(record['seconds'])
  except (OSError, ValueError, KeyError, TypeError) as e:
    logging.warning('Cannot read %s (%s): training time restarts from 0.',
                    path, e)
    return 0.0
  if recorded_step != step:
    logging.warning('%s is for step %s but the checkpoint is step %d: '
                    'training time restarts from 0.', path, recorded_step,
                    step)
    return 0.0
  return seconds


def write_clock(workdir, step, seconds):
  """Records `seconds` of training at `step` (atomically) in the workdir."""
  workdir_lib.write_json(os.path.join(workdir, CLOCK_FILE),
                         {'step': int(step), 'seconds': float(seconds)})
