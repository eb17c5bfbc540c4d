"""End to end through the CLI: train -> eval -> render on a tiny scene."""

import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile

from absl.testing import absltest

from condnerf.data import chair_files

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def env():
  """The runners' environment in these tests: 2 forced CPU devices."""
  return dict(os.environ,
              XLA_FLAGS='--xla_force_host_platform_device_count=2')


def command(*args):
  return [sys.executable, '-m', 'experiments.main', *args]


def run_main(*args, expect_ok=True):
  proc = subprocess.run(
      command(*args), cwd=REPO, env=env(), capture_output=True, text=True,
      timeout=600, check=False)
  if expect_ok and proc.returncode != 0:
    raise AssertionError(f'{args} failed:\n{proc.stderr[-3000:]}')
  return proc


def assert_one_line_error(test, stderr, message):
  """The stderr of a user error: one `error: ...` line holding `message`."""
  lines = [line for line in stderr.splitlines() if line.strip()]
  test.assertNotIn('Traceback', stderr)
  test.assertLen(lines, 1, stderr[-2000:])
  test.assertTrue(lines[0].startswith('error: '), lines[0])
  test.assertIn(message, lines[0])


class CliTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.TemporaryDirectory()
    cls.data = os.path.join(cls.tmp.name, 'chair')
    chair_files.write_chair_dataset(cls.data, resolution=16, num_train=4,
                                   num_val=1, num_test=2)
    cls.config = [
        '--config=experiments/configs/lego.py:runlocal',
        f'--config.data.path={cls.data}',
    ]

  @classmethod
  def tearDownClass(cls):
    cls.tmp.cleanup()
    super().tearDownClass()

  def test_train_eval_render(self):
    workdir = os.path.join(self.tmp.name, 'run')
    proc = run_main(*self.config, f'--workdir={workdir}', '--mode=train',
                    '--profile=2')
    self.assertIn('test PSNR', proc.stdout)
    # A profiler trace of steps 2-3 (runlocal trains 4), for TensorBoard.
    traces = [f for _, _, files in os.walk(os.path.join(workdir, 'profile'))
              for f in files if f.endswith('.xplane.pb')]
    self.assertLen(traces, 1)
    self.assertIn('Profiler trace of 2 steps', proc.stdout + proc.stderr)
    for name in ('config.json', 'metrics.jsonl', 'eval/metrics.json',
                 'eval/rgb_000.png', 'eval/depth_000.png', 'eval/acc_000.png',
                 'eval/contact_sheet.png', 'val/step_0000002.png'):
      self.assertTrue(os.path.exists(os.path.join(workdir, name)), name)
    with open(os.path.join(workdir, 'eval', 'metrics.json')) as f:
      trained = json.load(f)
    self.assertEqual(set(trained), {'psnr', 'ssim', 'lpips', 'lpips_net',
                                    'split', 'num_images', 'seconds',
                                    'per_image'})
    # lego runlocal images are 16 px, below the 31 px LPIPS (alex) takes.
    self.assertIsNone(trained['lpips'])
    self.assertLen(trained['per_image'], 2)
    run_main(*self.config, f'--workdir={workdir}', '--mode=eval')
    with open(os.path.join(workdir, 'eval', 'metrics.json')) as f:
      evaluated = json.load(f)
    self.assertAlmostEqual(evaluated['psnr'], trained['psnr'], places=4)
    run_main(*self.config, f'--workdir={workdir}', '--mode=render')
    self.assertTrue(os.path.exists(os.path.join(workdir, 'render',
                                                'path.gif')))
    # This model has a latent-code head: palette edits are refused.
    proc = run_main(*self.config, f'--workdir={workdir}', '--mode=edit',
                    '--config.edit.method=palette',
                    '--config.edit.pixels=3,3', expect_ok=False)
    self.assertEqual(proc.returncode, 2)
    assert_one_line_error(self, proc.stderr, 'Palette edits need a palette '
                          "head, and this run has model.head.kind='mlp'")

  def test_an_evaluator_added_from_the_command_line(self):
    # docs/command_line.md's way: --config.evals.NAME.type=... with its arguments.
    workdir = os.path.join(self.tmp.name, 'evals')
    run_main(*self.config, f'--workdir={workdir}',
             '--config.evals.val_metrics.type=image_metrics',
             '--config.evals.val_metrics.split=val',
             '--config.evals.val_metrics.max_images=1',
             '--config.evals.val_metrics.save_images=false',
             '--config.evals.eval.max_images=1')
    with open(os.path.join(workdir, 'val_metrics', 'metrics.json')) as f:
      self.assertEqual(json.load(f)['split'], 'val')
    with open(os.path.join(workdir, 'eval', 'metrics.json')) as f:
      self.assertEqual(json.load(f)['num_images'], 1)
    self.assertEqual(os.listdir(os.path.join(workdir, 'val_metrics')),
                     ['metrics.json', 'per_image.csv'])
    # An eval of another split replaces the folder: no test images stay.
    run_main(*self.config, f'--workdir={workdir}', '--mode=eval',
             '--config.eval.names=eval', '--config.eval.split=val')
    with open(os.path.join(workdir, 'eval', 'metrics.json')) as f:
      self.assertEqual(json.load(f)['split'], 'val')
    self.assertNotIn('rgb_001.png', os.listdir(os.path.join(workdir,
                                                             'eval')))
    for args, message in (
        (['--config.evals.x.type=imagemetrics'],
         "evals.x: unknown evaluator type 'imagemetrics'"),
        (['--config.evals.x.type=image_metrics', '--config.evals.x.spilt=val'],
         'image_metrics takes no argument spilt'),
        (['--config.evals.eval.max_images=many'], 'max_images')):
      with self.subTest(args=args):
        proc = run_main(*self.config, f'--workdir={workdir}', '--mode=eval',
                        *args, expect_ok=False)
        self.assertEqual(proc.returncode, 2, proc.stderr[-2000:])
        assert_one_line_error(self, proc.stderr, message)

  def test_unknown_config_key_fails(self):
    proc = run_main(*self.config, '--workdir=/nonexistent/never',
                    '--config.model.no_such_key=3', expect_ok=False)
    self.assertNotEqual(proc.returncode, 0)
    self.assertIn('no_such_key', proc.stderr)
    self.assertFalse(os.path.exists('/nonexistent/never'))

  def test_eval_without_checkpoint_explains(self):
    workdir = os.path.join(self.tmp.name, 'empty')
    proc = run_main(*self.config, f'--workdir={workdir}', '--mode=eval',
                    expect_ok=False)
    self.assertNotEqual(proc.returncode, 0)
    self.assertIn('No checkpoint', proc.stderr)
    self.assertFalse(os.path.exists(workdir))  # nothing created.

  def test_missing_dataset_explains(self):
    proc = run_main('--config=experiments/configs/lego.py:runlocal',
                    '--config.data.path=/nonexistent/data',
                    f'--workdir={self.tmp.name}/x', expect_ok=False)
    self.assertNotEqual(proc.returncode, 0)
    self.assertIn('/nonexistent/data', proc.stderr)
    self.assertFalse(os.path.exists(f'{self.tmp.name}/x'))  # no empty run.

  def test_user_errors_print_one_line(self):
    empty = os.path.join(self.tmp.name, 'empty_train')
    shutil.copytree(self.data, empty)
    path = os.path.join(empty, 'transforms_train.json')
    with open(path) as f:
      meta = json.load(f)
    meta['frames'] = []
    with open(path, 'w') as f:
      json.dump(meta, f)
    workdir = os.path.join(self.tmp.name, 'never')
    # A sample through the CLI; configs_test checks every config message in
    # process.
    cases = [
        (['--config.model.sampler=bogus'], "Unknown model.sampler 'bogus'"),
        (['--config.eval.split=tset'], "eval.split='tset' is not a split"),
        (['--config.optim.lr_init=-0.001'], 'optim.lr_init=-0.001 must be'),
        (['--config.model.no_such_key=3'],
         "unknown config key 'no_such_key' in --config.model.no_such_key=3"),
        ([f'--config.data.path={empty}'], 'empty "frames" list'),
        (['--coordinator=127.0.0.1:1', '--num_processes=2',
          '--process_id=5'], '--process_id=5 is outside [0, 2)'),
        (['--config.train.frame_shards=64'],
         'train.frame_shards=64 is more than the 4 training frames'),
    ]
    for args, message in cases:
      with self.subTest(args=args):
        proc = run_main(*self.config, f'--workdir={workdir}', *args,
                        expect_ok=False)
        self.assertEqual(proc.returncode, 2, proc.stderr[-2000:])
        assert_one_line_error(self, proc.stderr, message)
        self.assertFalse(os.path.exists(workdir))
    # A --workdir that cannot be a run folder (probe B21, B21b).
    afile = os.path.join(self.tmp.name, 'afile')
    with open(afile, 'w') as f:
      f.write('mine')
    dangling = os.path.join(self.tmp.name, 'dangling')
    os.symlink(os.path.join(self.tmp.name, 'gone'), dangling)
    for workdir, message in ((afile, 'is a file, not a folder'),
                             (dangling, 'which does not exist')):
      with self.subTest(workdir=workdir):
        proc = run_main(*self.config, f'--workdir={workdir}',
                        expect_ok=False)
        self.assertEqual(proc.returncode, 2, proc.stderr[-2000:])
        assert_one_line_error(self, proc.stderr, message)
    with open(afile) as f:
      self.assertEqual(f.read(), 'mine')
    self.assertFalse(os.path.lexists(os.path.join(self.tmp.name, 'gone')))
    # The traceback is one flag away.
    proc = run_main(*self.config, f'--workdir={workdir}', '--verbosity=1',
                    '--config.model.sampler=bogus', expect_ok=False)
    self.assertNotEqual(proc.returncode, 0)
    self.assertIn('Traceback', proc.stderr)


class OsMessageTest(absltest.TestCase):
  """File-system errors as one line: the path and the fix (probe B14b/c,
  B22, X2; root ignores permission bits, so these are built by hand)."""

  def test_messages_name_the_path_and_the_fix(self):
    from experiments import cli  # pylint: disable=g-import-not-at-top
    cases = [
        (errno.EROFS, 'Read-only file system', 'copy the run elsewhere'),
        (errno.ENOSPC, 'No space left on device', 'free some space'),
        (errno.EACCES, 'Permission denied', "check the folder's permissions"),
        (errno.ENAMETOOLONG, 'File name too long', 'use a shorter one'),
        (errno.EIO, 'Input/output error', 'check the path'),
    ]
    for code, strerror, hint in cases:
      with self.subTest(errno=code):
        message = cli.os_message(OSError(code, strerror, '/runs/a/eval/x'))
        self.assertEqual(message.count('\n'), 0)
        self.assertTrue(message.startswith(f'{strerror}: /runs/a/eval/x;'),
                        message)
        self.assertIn(hint, message)
    moved = cli.os_message(OSError(errno.EXDEV, 'Invalid cross-device link',
                                   '/a', None, '/b'))
    self.assertIn('/a -> /b', moved)


if __name__ == '__main__':
  absltest.main()
