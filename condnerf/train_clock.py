"""The wall-clock training budget (`train.minutes`) and its record on disk.

`TrainClock` counts training time and turns it into the progress the
learning-rate decay follows; `read_clock`/`write_clock` keep it across
resumes in `CLOCK_FILE`, next to the checkpoints: the time of each recent
checkpointed step, so a resume from the last committed checkpoint finds its
time even when a later save was cut short. Used by the train loop
(`train_lib`) and the benchmark's Trainer.
"""

import json
import os
import time

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np

from condnerf import errors
from condnerf import workdir as workdir_lib
from condnerf import writers


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
KEEP_RECORDS = 16  # steps remembered: more than checkpoints kept or in flight.


def _read_records(path):
  """{step: seconds} of `CLOCK_FILE`; the format before records per step
  ({'step', 'seconds'}) reads as one record. Raises ValueError if damaged."""
  with open(path, encoding='utf-8') as f:
    record = json.load(f)
  if not isinstance(record, dict):
    raise ValueError(f'a JSON {type(record).__name__}, not an object')
  if 'steps' not in record:  # the format of one record.
    record = {'steps': {str(record['step']): record['seconds']}}
  return {int(k): float(v) for k, v in record['steps'].items()}


def _from_metrics(workdir, step):
  """Training seconds at `step` rebuilt from metrics.jsonl's train_minutes
  (its last training row at or before `step`), or None."""
  seconds = None
  path = os.path.join(workdir, writers.METRICS_FILENAME)
  try:
    with open(path, encoding='utf-8') as f:
      for line in f:
        try:
          row = json.loads(line)
          if (row.get('split', 'train') == 'train' and
              row['step'] <= step and 'train_minutes' in row):
            seconds = 60.0 * float(row['train_minutes'])
        except (ValueError, KeyError, TypeError, AttributeError):
          continue
  except (OSError, UnicodeDecodeError):
    return None
  return seconds


def read_clock(workdir, step):
  """Training seconds recorded with the checkpoint of `step`.

  `write_clock` records the time of every step it is called for, before the
  checkpoint of that step is committed, so after a crash mid-save the
  committed step a run resumes from still finds its own time. A missing or
  damaged record (or none for `step`) is rebuilt from metrics.jsonl, with a
  message; only when that fails too does the time restart from 0.

  Raises:
    workdir.WorkdirError: a folder stands where the record belongs.
  """
  if step == 0:
    return 0.0
  path = os.path.join(workdir, CLOCK_FILE)
  if os.path.isdir(path):  # it would stop the first checkpoint's record.
    raise workdir_lib.WorkdirError(
        f'{path} is a folder, where the run records its training time; move '
        'it aside and resume again.')
  why = None
  try:
    records = _read_records(path)
    if step in records:
      return records[step]
    why = f'{path} has no record of step {step} (it has {sorted(records)})'
  except FileNotFoundError:
    why = f'there is no {path}'
  except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
    why = f'{path} is damaged ({errors.one_line(e)})'
  seconds = _from_metrics(workdir, step)
  if seconds is None:
    logging.warning('%s: training time restarts from 0.', why)
    return 0.0
  logging.warning('%s: training time rebuilt from %s as %.1f min.', why,
                  writers.METRICS_FILENAME, seconds / 60.0)
  return seconds


def write_clock(workdir, step, seconds):
  """Records `seconds` of training at `step` (atomically) in the workdir,
  keeping the records of the last `KEEP_RECORDS` steps."""
  path = os.path.join(workdir, CLOCK_FILE)
  try:
    records = _read_records(path)
  except (OSError, ValueError, KeyError, TypeError, AttributeError):
    records = {}  # none yet, or damaged: the new record starts it afresh.
  records = {k: v for k, v in records.items() if k < int(step)}
  records[int(step)] = float(seconds)
  kept = sorted(records)[-KEEP_RECORDS:]
  workdir_lib.write_json(path, {'steps': {str(k): records[k] for k in kept}})
