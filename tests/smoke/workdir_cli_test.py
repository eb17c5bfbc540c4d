"""A running training's folder, through the CLI: readers, a second training,
Ctrl-C and resume.

The training runs in the background on 2 forced CPU devices while other
commands use its folder.
"""

import json
import os
import signal
import subprocess
import tempfile
import time

from absl.testing import absltest

from condnerf import checkpointing
from condnerf import config_record
from condnerf import train_clock
from condnerf import train_lock
from tests.smoke import cli_test
from tests.smoke import launch


def _wait_for(predicate, timeout, what, proc=None):
  deadline = time.monotonic() + timeout
  while not predicate():
    if proc is not None and proc.poll() is not None:
      raise AssertionError(f'the training exited early while waiting for '
                           f'{what}:\n{proc.stderr.read()[-3000:]}')
    if time.monotonic() > deadline:
      raise AssertionError(f'timed out waiting for {what}')
    time.sleep(0.2)


def _logged_steps(workdir):
  """Steps of the training rows in `workdir`/metrics.jsonl so far."""
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  steps = []
  with open(path, encoding='utf-8') as f:
    for line in f:
      try:
        row = json.loads(line)
      except ValueError:  # a row being written right now.
        continue
      if row.get('split') == 'train':
        steps.append(row['step'])
  return steps


def _stop(proc):
  """Kills `proc` if it still runs and closes its pipes (no ResourceWarning
  left for a later test when an assertion ended this one early)."""
  if proc.poll() is None:
    proc.kill()
  proc.communicate()


def _steps(workdir):
  folder = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(folder):
    return []
  return sorted(int(n) for n in os.listdir(folder) if n.isdigit())


def _clock_steps(workdir):
  """Steps the clock record names (either of its formats), or []."""
  try:
    with open(os.path.join(workdir, train_clock.CLOCK_FILE)) as f:
      record = json.load(f)
  except (OSError, ValueError):
    return []
  return ([int(k) for k in record['steps']] if 'steps' in record
          else [record['step']])


class WorkdirCliTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.TemporaryDirectory()
    cls.config = [*launch.tiny_chair(cls.tmp.name),
                  '--config.train.val_every=0',
                  '--config.train.log_every=5']

  @classmethod
  def tearDownClass(cls):
    cls.tmp.cleanup()
    super().tearDownClass()

  def _start(self, workdir, *args):
    return subprocess.Popen(
        cli_test.command(*self.config, f'--workdir={workdir}', *args),
        cwd=cli_test.REPO, env=cli_test.env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)

  def test_readers_and_a_second_training_leave_a_training_alone(self):
    workdir = os.path.join(self.tmp.name, 'busy')
    # Saves every 3 steps (about 0.3 s each here), so the training outlives
    # the readers and they meet its in-flight saves (tmp folders).
    train = self._start(workdir, '--config.train.steps=420',
                        '--config.train.checkpoint_every=3',
                        '--config.train.keep_checkpoints=2')
    try:
      _wait_for(lambda: _steps(workdir), 180, 'a first checkpoint', train)
      self.assertEqual(train_lock.read_lock(workdir)['pid'], train.pid)
      second = cli_test.run_main(*self.config, f'--workdir={workdir}',
                                 expect_ok=False)
      self.assertEqual(second.returncode, 2)
      cli_test.assert_one_line_error(
          self, second.stderr, f'is in use by a training: pid {train.pid}')
      cli_test.run_main(*self.config, f'--workdir={workdir}', '--mode=eval')
      cli_test.run_main(*self.config, f'--workdir={workdir}',
                        '--mode=edit', '--config.edit.operation=swap',
                        '--config.edit.name=during')
      # Every reader ran while the training held its folder.
      self.assertIsNotNone(train_lock.read_lock(workdir),
                           'the training ended before the readers did')
      saved = _steps(workdir)[-1]
      _, err = train.communicate(timeout=600)
    finally:
      _stop(train)
    self.assertEqual(train.returncode, 0, err[-3000:])
    self.assertGreater(_steps(workdir)[-1], saved)  # it kept saving.
    self.assertNotIn('interrupted', err)
    self.assertIsNone(train_lock.read_lock(workdir))
    self.assertFalse(os.path.exists(os.path.join(workdir,
                                                 train_lock.LOCK_FILE)))

  def test_ctrl_c_saves_the_current_step_and_resume_continues(self):
    workdir = os.path.join(self.tmp.name, 'interrupted')
    train = self._start(workdir, '--config.train.steps=1000000',
                        '--config.train.checkpoint_every=1000000')
    try:
      # A logged training row: the loop (and its signal handler) runs;
      # metrics.jsonl itself is made before, during the set-up.
      _wait_for(lambda: _logged_steps(workdir), 180, 'training to log',
                train)
      train.send_signal(signal.SIGINT)
      _, err = train.communicate(timeout=120)
    finally:
      _stop(train)
    self.assertEqual(train.returncode, 128 + signal.SIGINT, err[-3000:])
    lines = [line for line in err.splitlines() if 'Interrupted at' in line]
    self.assertLen(lines, 1, err[-3000:])
    step = int(lines[0].split('Interrupted at step ')[1].split(';')[0])
    self.assertIn(f'saved it in {workdir}/checkpoints', lines[0])
    self.assertEqual(_steps(workdir), [step])  # no periodic save was due.
    ckpt = checkpointing.Checkpointer(os.path.join(workdir, 'checkpoints'),
                                      read_only=True)
    self.assertEqual(ckpt.all_steps(), [step])
    # Resuming for two more steps is a config change, refused without the
    # flag and recorded with it.
    proc = cli_test.run_main(*self.config, f'--workdir={workdir}',
                             f'--config.train.steps={step + 2}',
                             expect_ok=False)
    self.assertEqual(proc.returncode, 2)
    cli_test.assert_one_line_error(self, proc.stderr,
                                   f'train.steps: 1000000 -> {step + 2}')
    proc = cli_test.run_main(*self.config, f'--workdir={workdir}',
                             f'--config.train.steps={step + 2}',
                             '--allow_config_change')
    self.assertIn(f'Resumed from step {step} of {step + 2}', proc.stderr)
    self.assertEqual(_steps(workdir)[-1], step + 2)
    self.assertEqual(
        [h['step'] for h in config_record.config_history(workdir)], [step])
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
      rows = [json.loads(line) for line in f]
    keys = [(r['step'], r['split']) for r in rows]
    self.assertLen(set(keys), len(keys))

  def _kill_during_a_save(self, workdir):
    """Starts a time-budgeted training, kills it (-9) while a checkpoint is
    being written; returns (committed step, in-flight step) or None when
    the kill landed after the save was committed."""
    train = self._start(workdir, '--config.train.steps=1000000',
                        '--config.train.minutes=30',
                        '--config.train.checkpoint_every=3',
                        '--config.train.keep_checkpoints=3')
    folder = os.path.join(workdir, 'checkpoints')
    try:
      _wait_for(lambda: _steps(workdir), 180, 'a first checkpoint', train)
      deadline = time.monotonic() + 120
      while time.monotonic() < deadline:
        pending = [int(n.split('.')[0]) for n in os.listdir(folder)
                   if 'orbax-checkpoint-tmp' in n and
                   n.split('.')[0].isdigit()]
        # The moment that lost the time: the clock already names the step
        # whose save is still being written.
        if pending and pending[0] in _clock_steps(workdir):
          train.kill()
          break
        time.sleep(0.001)
      else:
        raise AssertionError('no save seen in flight')
    finally:
      _stop(train)
    in_flight = pending[0]
    committed = _steps(workdir)[-1]
    return None if committed >= in_flight else (committed, in_flight)

  def test_a_crash_mid_save_keeps_the_committed_steps_training_time(self):
    for attempt in range(5):
      workdir = os.path.join(self.tmp.name, f'crash{attempt}')
      steps = self._kill_during_a_save(workdir)
      if steps:
        break
    else:
      self.fail('every kill landed after its save was committed')
    committed, in_flight = steps
    # Before records per step, the time of `committed` was lost here.
    self.assertGreater(train_clock.read_clock(workdir, committed), 0.0)
    with open(os.path.join(workdir, train_clock.CLOCK_FILE)) as f:
      recorded = {int(k): v for k, v in json.load(f)['steps'].items()}
    self.assertIn(in_flight, recorded)  # recorded when its save started.
    self.assertIn(committed, recorded)
    self.assertGreater(recorded[committed], 0.0)
    self.assertEqual(train_clock.read_clock(workdir, committed),
                     recorded[committed])
    # The resumed run restores the committed step and continues its time.
    proc = cli_test.run_main(*self.config, f'--workdir={workdir}',
                             '--config.train.minutes=30',
                             f'--config.train.steps={committed + 3}',
                             '--config.train.checkpoint_every=3',
                             '--config.train.keep_checkpoints=3',
                             '--allow_config_change')
    self.assertIn(f'Resumed from step {committed} of {committed + 3}',
                  proc.stderr)
    self.assertNotIn('restarts from 0', proc.stderr)
    self.assertGreater(train_clock.read_clock(workdir, committed + 3),
                       recorded[committed])


if __name__ == '__main__':
  absltest.main()
