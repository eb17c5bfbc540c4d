"""The run folder's guarantees against lost work (#32): edit names that
clash with the run's files, concurrent bank saves, the clock across a crash
mid-save, a damaged config record, file modes, and shared output folders."""

import json
import multiprocessing
import os
import stat
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from condnerf import codes
from condnerf import config_record
from condnerf import train_clock
from condnerf import workdir as workdir_lib


class _TmpMixin:

  def _tmp(self):
    return self.enter_context(tempfile.TemporaryDirectory())


def _tree(folder):
  """{relative path: bytes} of every file under `folder`."""
  out = {}
  for root, _, names in os.walk(folder):
    for name in names:
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        out[os.path.relpath(path, folder)] = f.read()
  return out


class EditNamesTest(_TmpMixin, parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.run = self._tmp()
    edit = workdir_lib.edit_dir(self.run)
    codes.save_bank(workdir_lib.bank_path(self.run), {'kept': np.ones(4)})
    workdir_lib.write_json(os.path.join(edit, 'report.json'), {'psnr': 30})
    workdir_lib.write_text(os.path.join(edit, 'scribble_mask.png'), 'png')

  @parameterized.parameters('codes.npz', 'report.json', 'scribble_mask.png',
                            'runs', '.codes.npz.lock', '.outputs.json')
  def test_a_name_of_the_runs_own_files_is_refused(self, name):
    before = _tree(self.run)
    with self.assertRaisesRegex(workdir_lib.WorkdirError,
                                f'edit.name={name!r} is the name of .*owns'):
      workdir_lib.edit_output(self.run, name)
    self.assertEqual(_tree(self.run), before)

  def test_outputs_live_under_runs_and_old_layout_is_found(self):
    out = workdir_lib.edit_output(self.run, 'blue')
    self.assertEqual(out, os.path.join(self.run, 'edit', 'runs', 'blue'))
    with workdir_lib.staged_dir(out) as tmp:
      workdir_lib.write_json(os.path.join(tmp, 'report.json'), {})
    # An edit of the layout before edit/runs/.
    old = os.path.join(self.run, 'edit', 'red')
    workdir_lib.write_json(os.path.join(old, 'report.json'), {})
    self.assertEqual(workdir_lib.find_edit(self.run, 'blue'), out)
    self.assertEqual(workdir_lib.find_edit(self.run, 'red'), old)
    self.assertEqual(workdir_lib.list_edits(self.run), ['blue', 'red'])
    # Writing an old-layout name again goes to the new place.
    self.assertEqual(workdir_lib.edit_output(self.run, 'red'),
                     os.path.join(self.run, 'edit', 'runs', 'red'))
    with self.assertRaisesRegex(workdir_lib.WorkdirError,
                                r"No edit 'green'.*\['blue', 'red'\]"):
      workdir_lib.find_edit(self.run, 'green')

  def test_a_file_in_runs_is_not_replaced(self):
    workdir_lib.write_text(os.path.join(self.run, 'edit', 'runs', 'notes'),
                           'mine')
    with self.assertRaisesRegex(workdir_lib.WorkdirError, 'is not an edit'):
      workdir_lib.edit_output(self.run, 'notes')

  def test_a_name_too_long_for_the_file_system_is_refused(self):
    with self.assertRaisesRegex(workdir_lib.WorkdirError,
                                'edit.name is 300 bytes long'):
      workdir_lib.edit_output(self.run, 'n' * 300)


def _save_many(path, prefix, count, start):
  start.wait(30)
  for i in range(count):
    # Wide codes make each read-merge-write slow enough to overlap: without
    # the lock, 52 to 73 of the 80 codes were kept in three tries.
    codes.save_bank(path, {f'{prefix}{i}': np.full(2048, i, np.float32)})


class BankLockTest(_TmpMixin, absltest.TestCase):

  def test_two_processes_saving_at_once_keep_every_code(self):
    path = os.path.join(self._tmp(), 'edit', 'codes.npz')
    ctx = multiprocessing.get_context('spawn')
    start = ctx.Event()
    procs = [ctx.Process(target=_save_many, args=(path, p, 40, start))
             for p in ('a', 'b')]
    for p in procs:
      p.start()
    start.set()
    for p in procs:
      p.join(120)
      self.assertEqual(p.exitcode, 0)
    bank = codes.load_bank(path)
    self.assertLen(bank, 80)
    np.testing.assert_array_equal(bank['b39']['appearance'],
                                  np.full(2048, 39))

  def test_a_damaged_bank_is_named_then_moved_aside_by_a_save(self):
    path = os.path.join(self._tmp(), 'codes.npz')
    codes.save_bank(path, {'a': np.ones(4)})
    with open(path, 'rb') as f:
      data = f.read()
    with open(path, 'wb') as f:
      f.write(data[:len(data) // 2])  # truncated.
    with self.assertRaisesRegex(codes.DamagedBankError,
                                f'The code bank {path} is damaged'):
      codes.load_bank(path)
    with self.assertLogs(level='WARNING') as logs:
      codes.save_bank(path, {'b': np.zeros(4)})
    self.assertIn('codes.npz.damaged', ''.join(logs.output))
    self.assertEqual(sorted(codes.load_bank(path)), ['b'])
    with open(path + '.damaged', 'rb') as f:
      self.assertEqual(f.read(), data[:len(data) // 2])  # kept as it was.

  def test_a_bank_that_is_a_folder_is_moved_aside(self):
    path = os.path.join(self._tmp(), 'codes.npz')
    os.makedirs(os.path.join(path, 'inside'))
    with self.assertRaisesRegex(codes.DamagedBankError, 'damaged'):
      codes.load_bank(path)
    with self.assertLogs(level='WARNING'):
      codes.save_bank(path, {'b': np.zeros(4)})
    self.assertTrue(os.path.isdir(path + '.damaged/inside'))
    self.assertEqual(sorted(codes.load_bank(path)), ['b'])

  def test_a_code_that_is_not_finite_is_named(self):
    path = os.path.join(self._tmp(), 'codes.npz')
    like = {'appearance': np.zeros(4), 'light': np.zeros((9, 3))}
    light = np.zeros((9, 3))
    light[2, 1] = np.nan
    codes.save_bank(path, {'dark': {'appearance': np.zeros(4),
                                    'light': light}})
    with self.assertRaisesRegex(
        codes.CodeBankError,
        "Code 'dark' is not finite: 1 of the 27 values of its 'light'"):
      codes.bank_code(path, 'dark', like=like)


class ClockTest(_TmpMixin, absltest.TestCase):

  def test_a_crash_mid_save_resumes_with_the_committed_steps_time(self):
    run = self._tmp()
    train_clock.write_clock(run, 100, 50.0)  # committed.
    train_clock.write_clock(run, 200, 100.0)  # save started, then a crash.
    self.assertEqual(train_clock.read_clock(run, 100), 50.0)
    self.assertEqual(train_clock.read_clock(run, 200), 100.0)

  def test_records_are_kept_for_recent_steps_only(self):
    run = self._tmp()
    for step in range(1, 41):
      train_clock.write_clock(run, step * 10, float(step))
    with open(os.path.join(run, train_clock.CLOCK_FILE)) as f:
      kept = sorted(int(k) for k in json.load(f)['steps'])
    self.assertEqual(kept, list(range(250, 410, 10)))
    # A resume from 300 that writes 310 again forgets the later steps.
    train_clock.write_clock(run, 310, 99.0)
    self.assertEqual(train_clock.read_clock(run, 310), 99.0)
    with open(os.path.join(run, train_clock.CLOCK_FILE)) as f:
      self.assertEqual(max(int(k) for k in json.load(f)['steps']), 310)

  def test_the_format_of_one_record_is_still_read(self):
    run = self._tmp()
    workdir_lib.write_json(os.path.join(run, train_clock.CLOCK_FILE),
                           {'step': 40, 'seconds': 12.5})
    self.assertEqual(train_clock.read_clock(run, 40), 12.5)

  def test_a_damaged_clock_is_rebuilt_from_the_metrics(self):
    run = self._tmp()
    with open(os.path.join(run, 'metrics.jsonl'), 'w') as f:
      for step, minutes in ((50, 0.5), (100, 1.0), (150, 1.5)):
        f.write(json.dumps({'step': step, 'split': 'train',
                            'train_minutes': minutes}) + '\n')
      f.write('not json\n')
      f.write(json.dumps({'step': 100, 'split': 'eval', 'psnr': 20}) + '\n')
    with open(os.path.join(run, train_clock.CLOCK_FILE), 'w') as f:
      f.write('{"steps": {"100": ')  # truncated.
    with self.assertLogs(level='WARNING') as logs:
      self.assertEqual(train_clock.read_clock(run, 120), 60.0)
    self.assertIn('rebuilt from metrics.jsonl as 1.0 min',
                  ''.join(logs.output))


class ConfigRecordTest(_TmpMixin, parameterized.TestCase):

  CONFIG = {'data': {'path': 'x'}, 'model': {'width': 8},
            'optim': {'lr_init': 0.01}, 'train': {'steps': 4}, 'seed': 0,
            'eval': {'split': 'test'}}

  @parameterized.named_parameters(
      ('empty_object', '{}', 'lacks data, model, optim, seed, train'),
      ('truncated', '{"data": {"path": ', 'is not valid JSON'),
      ('empty', '', 'is not valid JSON'),
      ('list', '[1, 2]', 'holds a JSON list, not a config object'),
      ('missing_section', json.dumps({'data': {'path': 'x'}, 'seed': 0}),
       'lacks model, optim, train'))
  def test_a_damaged_record_refuses_resume_then_is_recorded_afresh(
      self, text, message):
    run = self._tmp()
    path = os.path.join(run, 'config.json')
    with open(path, 'w') as f:
      f.write(text)
    changed = json.loads(json.dumps(self.CONFIG))
    changed['optim']['lr_init'] = 0.02
    with self.assertRaisesRegex(config_record.ConfigRecordError,
                                f'{path} .*{message}.*--allow_config_change'):
      config_record.record_config(run, changed, resumed_step=2)
    with open(path) as f:
      self.assertEqual(f.read(), text)  # nothing written.
    config_record.record_config(run, changed, resumed_step=2,
                                allow_change=True)
    self.assertEqual(config_record.load_config_json(run), changed)
    with open(path + '.damaged') as f:
      self.assertEqual(f.read(), text)
    history = config_record.config_history(run)
    self.assertEqual(history[0]['step'], 2)
    self.assertIn('recorded afresh', history[0]['note'])

  def test_a_fresh_run_overwrites_whatever_was_there(self):
    run = self._tmp()
    with open(os.path.join(run, 'config.json'), 'w') as f:
      f.write('[]')
    config_record.record_config(run, self.CONFIG)
    self.assertEqual(config_record.load_config_json(run), self.CONFIG)


class ModesTest(_TmpMixin, parameterized.TestCase):

  @parameterized.parameters(0o022, 0o002, 0o077)
  def test_files_and_folders_follow_the_umask(self, mask):
    old = os.umask(mask)
    try:
      folder = self._tmp()
      path = workdir_lib.write_text(os.path.join(folder, 'a', 'f.json'), '1')
      with workdir_lib.staged_dir(os.path.join(folder, 'out')) as tmp:
        workdir_lib.write_text(os.path.join(tmp, 'g.txt'), '2')
    finally:
      os.umask(old)
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)
    self.assertEqual(mode(path), 0o666 & ~mask)
    self.assertEqual(mode(os.path.join(folder, 'out')), 0o777 & ~mask)
    self.assertEqual(mode(os.path.join(folder, 'out', 'g.txt')),
                     0o666 & ~mask)

  def test_umask_is_read_without_changing_it(self):
    old = os.umask(0o027)
    try:
      self.assertEqual(workdir_lib.umask(), 0o027)
      self.assertEqual(workdir_lib.umask(), 0o027)
    finally:
      os.umask(old)


class SharedFolderTest(_TmpMixin, absltest.TestCase):

  def test_only_the_staged_entries_are_replaced(self):
    edit = os.path.join(self._tmp(), 'edit')
    codes.save_bank(os.path.join(edit, 'codes.npz'), {'a': np.ones(4)})
    workdir_lib.write_json(os.path.join(edit, 'runs', 'blue', 'report.json'),
                           {})
    with workdir_lib.staged_dir(edit, shared=True) as tmp:
      workdir_lib.write_json(os.path.join(tmp, 'report.json'), {'n': 1})
      workdir_lib.write_text(os.path.join(tmp, 'strip_000.png'), 'x')
      workdir_lib.write_text(os.path.join(tmp, 'sub', 'y.txt'), 'y')
    others = {'codes.npz', 'runs/blue/report.json'}
    self.assertContainsSubset(others | {'report.json', 'strip_000.png',
                                        'sub/y.txt'}, _tree(edit))
    # The next write lacks the strip and the folder: they go, nothing else.
    with workdir_lib.staged_dir(edit, shared=True) as tmp:
      workdir_lib.write_json(os.path.join(tmp, 'report.json'), {'n': 2})
    self.assertEqual(set(_tree(edit)) - {'.outputs.json', '.codes.npz.lock'},
                     others | {'report.json'})
    with open(os.path.join(edit, 'report.json')) as f:
      self.assertEqual(json.load(f), {'n': 2})
    self.assertEqual(sorted(codes.load_bank(os.path.join(edit, 'codes.npz'))),
                     ['a'])


if __name__ == '__main__':
  absltest.main()
