"""Tests for condnerf.workdir: names, staged outputs, the lock, the config."""

import json
import multiprocessing
import os
import socket
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from condnerf import config_record
from condnerf import train_lock
from condnerf import workdir as workdir_lib


def _hold_lock(workdir, ready, release):
  """Runs in a child process: holds the lock until `release` is set."""
  with train_lock.WorkdirLock(workdir, message_fn=lambda _: None):
    ready.set()
    release.wait(60)


class _TmpMixin:

  def _tmp(self):
    return self.enter_context(tempfile.TemporaryDirectory())


class NamesTest(_TmpMixin, parameterized.TestCase):

  @parameterized.parameters('..', '.', '', '  ', 'a/b', '/abs', 'x\0y')
  def test_bad_names_are_refused(self, name):
    parent = self._tmp()
    with self.assertRaisesRegex(workdir_lib.WorkdirError, 'edit.name'):
      workdir_lib.child(parent, name, 'edit.name')

  def test_plain_name_stays_inside(self):
    parent = self._tmp()
    self.assertEqual(workdir_lib.child(parent, 'blue_2', 'edit.name'),
                     os.path.join(parent, 'blue_2'))

  def test_symlink_out_of_parent_is_refused(self):
    parent = self._tmp()
    os.symlink(tempfile.gettempdir(), os.path.join(parent, 'link'))
    with self.assertRaisesRegex(workdir_lib.WorkdirError, 'outside'):
      workdir_lib.child(parent, 'link', 'edit.name')


class StagedDirTest(_TmpMixin, absltest.TestCase):

  def test_replaces_only_when_complete(self):
    parent = self._tmp()
    out = os.path.join(parent, 'out')
    os.makedirs(out)
    with open(os.path.join(out, 'old.txt'), 'w') as f:
      f.write('old')
    with self.assertRaisesRegex(RuntimeError, 'boom'):
      with workdir_lib.staged_dir(out) as tmp:
        workdir_lib.write_text(os.path.join(tmp, 'new.txt'), 'new')
        raise RuntimeError('boom')
    self.assertEqual(os.listdir(out), ['old.txt'])  # untouched.
    self.assertEqual(os.listdir(parent), ['out'])  # no leftovers.
    with workdir_lib.staged_dir(out) as tmp:
      workdir_lib.write_text(os.path.join(tmp, 'new.txt'), 'new')
      self.assertEqual(os.listdir(out), ['old.txt'])  # still the old one.
    self.assertEqual(os.listdir(out), ['new.txt'])
    self.assertEqual(os.listdir(parent), ['out'])

  def test_write_json_failure_keeps_old_file(self):
    path = os.path.join(self._tmp(), 'r.json')
    workdir_lib.write_json(path, {'a': np.float32(1.5)})
    with self.assertRaises(TypeError):
      workdir_lib.write_json(path, {'a': object()})
    with open(path) as f:
      self.assertEqual(json.load(f), {'a': 1.5})
    self.assertEqual(os.listdir(os.path.dirname(path)), ['r.json'])


class LockTest(_TmpMixin, absltest.TestCase):

  def test_second_holder_is_refused_and_names_the_first(self):
    workdir = self._tmp()
    ctx = multiprocessing.get_context('spawn')
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(workdir, ready, release))
    holder.start()
    try:
      self.assertTrue(ready.wait(60))
      self.assertEqual(train_lock.read_lock(workdir)['pid'], holder.pid)
      with self.assertRaisesRegex(train_lock.WorkdirLockedError,
                                  f'pid {holder.pid} on '
                                  f'{socket.gethostname()}'):
        train_lock.WorkdirLock(workdir).acquire()
    finally:
      release.set()
      holder.join(60)
    self.assertIsNone(train_lock.read_lock(workdir))  # released, removed.
    messages = []
    with train_lock.WorkdirLock(workdir, messages.append):
      pass
    self.assertEqual(messages, [])

  def test_stale_lock_of_dead_process_is_taken_over(self):
    workdir = self._tmp()
    ctx = multiprocessing.get_context('spawn')
    dead = ctx.Process(target=int)
    dead.start()
    dead.join()
    with open(os.path.join(workdir, train_lock.LOCK_FILE), 'w') as f:
      json.dump({'pid': dead.pid, 'host': socket.gethostname(),
                 'started': '2026-01-01T00:00:00'}, f)
    self.assertIsNone(train_lock.read_lock(workdir))  # nobody holds it.
    messages = []
    with train_lock.WorkdirLock(workdir, messages.append):
      with open(os.path.join(workdir, train_lock.LOCK_FILE)) as f:
        self.assertEqual(json.load(f)['pid'], os.getpid())
    self.assertLen(messages, 1)
    self.assertIn('stale lock', messages[0])
    self.assertIn(f'pid {dead.pid}', messages[0])

  def test_record_of_another_host_is_refused(self):
    workdir = self._tmp()
    with open(os.path.join(workdir, train_lock.LOCK_FILE), 'w') as f:
      json.dump({'pid': 1, 'host': 'elsewhere', 'started': 'then'}, f)
    with self.assertRaisesRegex(train_lock.WorkdirLockedError,
                                'pid 1 on elsewhere'):
      train_lock.WorkdirLock(workdir).acquire()


class RecordConfigTest(_TmpMixin, absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.workdir = self._tmp()
    self.config = {'optim': {'lr_init': 0.01}, 'train': {'steps': 4,
                                                          'log_every': 2},
                   'eval': {'split': 'test'}, 'seed': 0}

  def test_fresh_run_writes(self):
    config_record.record_config(self.workdir, self.config)
    self.assertEqual(config_record.load_config_json(self.workdir), self.config)

  def test_changed_config_is_refused_then_accepted_with_history(self):
    config_record.record_config(self.workdir, self.config)
    with open(os.path.join(self.workdir, 'config.json')) as f:
      before = f.read()
    changed = json.loads(json.dumps(self.config))
    changed['optim']['lr_init'] = 0.02
    changed['train']['steps'] = 8
    changed['train']['log_every'] = 1  # how it is watched: always allowed.
    changed['eval']['split'] = 'val'
    with self.assertRaisesRegex(
        config_record.ConfigChangedError,
        r'resuming at step 4: optim.lr_init: 0.01 -> 0.02; '
        r'train.steps: 4 -> 8\. .*--allow_config_change'):
      config_record.record_config(self.workdir, changed, resumed_step=4)
    with open(os.path.join(self.workdir, 'config.json')) as f:
      self.assertEqual(f.read(), before)  # nothing written.
    config_record.record_config(self.workdir, changed, resumed_step=4,
                              allow_change=True)
    self.assertEqual(config_record.load_config_json(self.workdir), changed)
    history = config_record.config_history(self.workdir)
    self.assertLen(history, 1)
    self.assertEqual(history[0]['step'], 4)
    self.assertEqual(history[0]['config'], self.config)
    self.assertEqual(history[0]['changes'], {'optim.lr_init': [0.01, 0.02],
                                             'train.steps': [4, 8]})

  def test_only_watch_keys_or_new_keys_pass(self):
    config_record.record_config(self.workdir, self.config)
    changed = json.loads(json.dumps(self.config))
    changed['train']['log_every'] = 7
    changed['train']['guard'] = {'window': 3}  # a field added since.
    config_record.record_config(self.workdir, changed, resumed_step=2)
    self.assertEqual(config_record.config_history(self.workdir), [])


class ConfigJsonTest(absltest.TestCase):

  def test_round_trip(self):
    workdir = os.path.join(
        self.enter_context(tempfile.TemporaryDirectory()), 'run')
    self.assertIsNone(config_record.load_config_json(workdir))
    config = {'model': {'width': np.int64(64), 'skips': (4,)},
              'optim': {'lr': np.float32(0.5)}, 'seed': 0}
    path = config_record.save_config_json(workdir, config)
    self.assertEqual(path, os.path.join(workdir, 'config.json'))
    expected = {'model': {'width': 64, 'skips': [4]}, 'optim': {'lr': 0.5},
                'seed': 0}
    self.assertEqual(config_record.load_config_json(workdir), expected)
    # Overwrite in place; no temporary files are left behind.
    config_record.save_config_json(workdir, {'seed': 1})
    self.assertEqual(config_record.load_config_json(workdir), {'seed': 1})
    self.assertEqual(os.listdir(workdir), ['config.json'])
    with open(path) as f:
      self.assertEqual(json.load(f), {'seed': 1})

  def test_unserialisable_value_leaves_old_file(self):
    workdir = self.enter_context(tempfile.TemporaryDirectory())
    config_record.save_config_json(workdir, {'seed': 1})
    with self.assertRaises(TypeError):
      config_record.save_config_json(workdir, {'fn': object()})
    self.assertEqual(config_record.load_config_json(workdir), {'seed': 1})
    self.assertEqual(os.listdir(workdir), ['config.json'])

  def test_config_dict_like(self):

    class FakeConfigDict:

      def to_dict(self):
        return {'a': {'b': 1}}

    workdir = self.enter_context(tempfile.TemporaryDirectory())
    config_record.save_config_json(workdir, FakeConfigDict())
    self.assertEqual(config_record.load_config_json(workdir), {'a': {'b': 1}})



if __name__ == '__main__':
  absltest.main()
