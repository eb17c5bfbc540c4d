"""Fault injection: every kind of file a run folder holds x every kind of
damage x the modes that read it.

One tiny run (checkpoints at steps 2 and 4, a code bank, an edit) is
trained once; each case copies it, damages one file or folder, runs one
mode in process (the same entry points as `experiments.main`, on prebuilt
experiments so nothing recompiles) and asserts the documented outcome:
  ok        the mode runs (the damaged file is rewritten or not needed);
  fallback  the mode runs on the previous readable checkpoint (step 2), a
            rebuilt clock, or a bank moved aside as `codes.npz.damaged`;
  error     a one-line error (a `UserError`, or a file-system error naming
            the path, which `experiments.cli` prints as one line) naming
            the damaged file.
In every case no file that was intact before changes or disappears, except
the outputs the mode writes by design (`WRITES`). A new kind of file is one
more row of `FILES`; its outcomes are `expected`'s rules.
"""

import dataclasses
import hashlib
import os
import shutil
import tempfile

from absl import logging
from absl.testing import absltest
import numpy as np

from condnerf import codes as codes_lib
from condnerf import errors
from condnerf import eval_lib
from condnerf import experiment as experiment_lib
from condnerf import runs
from condnerf import train_lib
from condnerf.configs import common
from condnerf.data import chair_files
from condnerf.edit import operations

DAMAGES = ('zero', 'truncated', 'random', 'deleted', 'folder', 'readonly')
FOLDER_DAMAGES = ('deleted', 'file', 'readonly')
# Permission bits bind everyone but root (CI and this machine run as root).
PERMISSIONS_BIND = os.geteuid() != 0


@dataclasses.dataclass(frozen=True)
class FileKind:
  """A kind of file of a run folder: where, which modes read it."""
  path: str  # relative to the run; a folder if `folder`.
  modes: tuple
  folder: bool = False


# The latest checkpoint is step 4; step 2 is the one to fall back to.
CHECKPOINT_MODES = ('train', 'eval', 'render', 'edit', 'load_run')
FILES = {
    'checkpoint_metadata': FileKind('checkpoints/4/state/_METADATA',
                                    CHECKPOINT_MODES),
    'checkpoint_arrays': FileKind('checkpoints/4/state/d', CHECKPOINT_MODES),
    'checkpoint_step_file': FileKind('checkpoints/4/_CHECKPOINT_METADATA',
                                     CHECKPOINT_MODES),
    'checkpoint_step': FileKind('checkpoints/4', CHECKPOINT_MODES,
                                folder=True),
    'config': FileKind('config.json', ('train', 'load_run')),
    'clock': FileKind('train_clock.json', ('train',)),
    'metrics': FileKind('metrics.jsonl', ('train',)),
    'lock': FileKind('train.lock', ('train',)),
    'bank': FileKind('edit/codes.npz', ('edit', 'swap')),
    'edit_output': FileKind('edit/runs/look/report.json', ('edit',)),
    'edit_folder': FileKind('edit', ('edit',), folder=True),
    'tensorboard': FileKind('tb', ('train',), folder=True),
}

# What each mode may write (prefixes of paths relative to the run).
WRITES = {
    'train': ('config.json', 'train_clock.json', 'metrics.jsonl', 'tb/',
              'val/', 'eval/', 'train.lock', 'checkpoints/'),
    'eval': ('eval/',),
    'render': ('render/',),
    'edit': ('edit/codes.npz', 'edit/.codes.npz.lock', 'edit/runs/look/'),
    'swap': ('edit/runs/swapped/',),
    'load_run': (),
}


def expected(name, damage, mode):
  """The documented outcome of one case: 'ok', 'fallback' or 'error'."""
  if damage == 'readonly':
    # Files are replaced whole (written beside, then renamed; metrics.jsonl
    # too, cut back to the resumed step), so only the lock (written in
    # place) and a folder written into need write access.
    return 'error' if name in ('lock', 'edit_folder', 'tensorboard') else 'ok'
  if name == 'checkpoint_step_file':
    return 'ok'  # orbax's per-step record: read only for its timestamp.
  if name == 'checkpoint_step' and damage in ('deleted', 'file'):
    return 'ok'  # step 2 is then simply the latest (a file is no step).
  if name.startswith('checkpoint'):
    return 'fallback'
  if name == 'config':
    return 'error'  # never read as "no changes" (nor guessed by a notebook).
  if name == 'clock':
    return 'error' if damage == 'folder' else 'fallback'
  if name in ('metrics', 'lock'):
    return 'error' if damage == 'folder' else 'ok'
  if name == 'bank':
    if mode == 'swap':  # reads the code by name.
      return 'error'
    return 'ok' if damage == 'deleted' else 'fallback'
  if name in ('edit_folder', 'tensorboard'):
    return 'error' if damage == 'file' else 'ok'
  return 'ok'  # an edit's own output: replaced.


def _damage(path, damage, rng):
  """Damages `path` (a file, or every file of a folder for 'arrays')."""
  targets = ([os.path.join(path, n) for n in sorted(os.listdir(path))]
             if os.path.isdir(path) and
             damage not in ('deleted', 'file', 'readonly')
             else [path])
  for target in targets:
    if damage == 'zero':
      open(target, 'wb').close()
    elif damage == 'truncated':
      size = os.path.getsize(target)
      with open(target, 'r+b') as f:
        f.truncate(size // 2)
    elif damage == 'random':
      size = max(os.path.getsize(target), 16)
      with open(target, 'wb') as f:
        f.write(rng.bytes(size))
    elif damage == 'readonly':
      os.chmod(target, 0o555 if os.path.isdir(target) else 0o444)
    elif damage in ('deleted', 'folder', 'file'):
      if os.path.isdir(target):
        shutil.rmtree(target)
      else:
        os.remove(target)
      if damage == 'folder':
        os.makedirs(os.path.join(target, 'inside'))
      elif damage == 'file':
        with open(target, 'w') as f:
          f.write('not a folder')


def _snapshot(root):
  """{relative path: sha1} of every file under `root`."""
  out = {}
  for folder, _, names in os.walk(root):
    for name in names:
      path = os.path.join(folder, name)
      with open(path, 'rb') as f:
        out[os.path.relpath(path, root)] = hashlib.sha1(f.read()).hexdigest()
  return out


class FaultMatrixTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.TemporaryDirectory()
    data = os.path.join(cls.tmp.name, 'chair')
    chair_files.write_chair_dataset(data, resolution=16, num_train=4,
                                    num_val=1, num_test=2)
    config = common.config_from_file(
        'experiments/configs/lego.py:runlocal')
    config.data.path = data
    config.train.update(steps=4, checkpoint_every=2, val_every=0,
                        keep_checkpoints=5)
    config.eval.max_images = 1
    cls.config = config
    cls.exp = experiment_lib.build_experiment(config)
    cls.golden = os.path.join(cls.tmp.name, 'golden')
    train_lib.train_and_evaluate(config, cls.golden, cls.exp)
    cls._edit(cls.golden, 'look')
    with open(os.path.join(cls.golden, 'train.lock'), 'w') as f:
      f.write('{"pid": 999999999, "host": "gone", "started": "then"}\n')
    cls.results = []

  @classmethod
  def tearDownClass(cls):
    counts = {}
    for row in cls.results:
      counts[row[3]] = counts.get(row[3], 0) + 1
    logging.info('Fault matrix: %d cases, %s.', len(cls.results), counts)
    table = os.environ.get('CONDNERF_FAULT_TABLE')
    if table:  # file | damage | mode | outcome, for notes and docs/run_folder.md.
      with open(table, 'w') as f:
        f.write('| file | damage | mode | outcome |\n|---|---|---|---|\n')
        for row in cls.results:
          f.write('| ' + ' | '.join(row) + ' |\n')
        f.write(f'\n{len(cls.results)} cases: {counts}\n')
    cls.tmp.cleanup()
    super().tearDownClass()

  @classmethod
  def _edit_config(cls, name, **edit):
    config = cls.config.copy_and_resolve_references()
    config.edit.update(name=name, **edit)
    return config

  @classmethod
  def _edit(cls, workdir, name):
    """A recolor that saves its code to the bank (`edit/runs/<name>/`)."""
    return operations.run(
        cls._edit_config(name, method='code', pixels='6,6;7,7', steps=2),
        workdir, cls.exp)

  def _run(self, mode, workdir):
    if mode == 'train':  # resumes (from step 2 after a fallback).
      return train_lib.train_and_evaluate(self.config, workdir, self.exp)
    if mode == 'eval':
      return eval_lib.evaluate(self.config, workdir, self.exp)
    if mode == 'render':
      config = self.config.copy_and_resolve_references()
      config.render.num_frames = 1
      return eval_lib.render_path(config, workdir, self.exp)
    if mode == 'edit':
      return self._edit(workdir, 'look')
    if mode == 'swap':
      return operations.run(self._edit_config(
          'swapped', operation='swap', bank_code='look'), workdir, self.exp)
    return runs.load_run(workdir, experiment=self.exp)

  def _case(self, name, kind, damage, mode, rng):
    workdir = os.path.join(self.tmp.name, f'{name}-{damage}-{mode}')
    shutil.copytree(self.golden, workdir, symlinks=True)
    if mode == 'train' and name != 'lock':
      # The golden lock names a process of another host, refused while
      # present: only the lock's own cases keep it.
      os.remove(os.path.join(workdir, 'train.lock'))
    target = os.path.join(workdir, kind.path)
    if name == 'checkpoint_arrays':
      target = os.path.join(workdir, 'checkpoints', '4', 'state')
      data = [os.path.join(r, n) for r, _, ns in os.walk(target)
              for n in ns if os.sep + 'd' + os.sep in os.path.join(r, n)]
      self.assertNotEmpty(data)
    before = _snapshot(workdir)
    damaged = os.path.relpath(target, workdir)
    if name == 'checkpoint_arrays':
      for path in data:
        _damage(path, damage, rng)
    else:
      _damage(target, damage, rng)
    bank_before = self._bank(workdir)
    outcome, message = 'ok', ''
    with self.assertLogs(level='WARNING') as logs:
      logging.warning('case %s %s %s', name, damage, mode)
      try:
        self._run(mode, workdir)
      except errors.UserError as e:
        outcome, message = 'error', errors.one_line(e)
      except OSError as e:
        if not e.filename:
          raise
        outcome, message = 'error', f'{e.strerror}: {e.filename}'
    text = ' '.join(logs.output)
    if outcome == 'ok' and any(w in text for w in (
        'instead of step 4', 'moved to', 'rebuilt from', 'restarts from 0',
        'is corrupt or incomplete')):
      outcome = 'fallback'
    want = expected(name, damage, mode)
    where = f'{name} {damage} {mode}: {outcome} {message} {text[-600:]}'
    self.assertEqual(outcome, want, where)
    if outcome == 'error':
      shown = damaged.split(os.sep)[-1] if name != 'checkpoint_arrays' else (
          'checkpoints')
      self.assertIn(shown, message, where)
    self._assert_nothing_else_changed(workdir, before, damaged, mode)
    if mode in ('edit', 'swap') and outcome != 'error':
      self.assertContainsSubset(bank_before, self._bank(workdir))
    self.results.append((name, damage, mode, outcome))

  def _bank(self, workdir):
    try:
      return set(codes_lib.load_bank(os.path.join(workdir, 'edit',
                                                  'codes.npz')))
    except codes_lib.CodeBankError:
      return set()

  def _assert_nothing_else_changed(self, workdir, before, damaged, mode):
    after = _snapshot(workdir)
    allowed = WRITES[mode]
    for path, digest in before.items():
      if path == damaged or path.startswith(damaged + os.sep):
        continue
      if path.startswith(allowed) and allowed:
        if path.startswith('checkpoints/'):
          # A training adds steps; the intact step 2 stays as it was.
          if path.startswith('checkpoints/2/'):
            self.assertEqual(after.get(path), digest, path)
        continue
      self.assertEqual(after.get(path), digest,
                       f'{mode}: intact {path} changed or vanished')

  def test_the_matrix(self):
    rng = np.random.default_rng(0)
    for name, kind in FILES.items():
      for damage in (FOLDER_DAMAGES if kind.folder else DAMAGES):
        if name == 'checkpoint_arrays' and damage == 'folder':
          continue  # a folder of data files: 'deleted' covers it.
        for mode in kind.modes:
          with self.subTest(file=name, damage=damage, mode=mode):
            if damage == 'readonly' and not PERMISSIONS_BIND:
              self.skipTest('running as root: permission bits do not bind')
            self._case(name, kind, damage, mode, rng)


if __name__ == '__main__':
  absltest.main()
