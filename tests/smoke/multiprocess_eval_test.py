"""Evaluation and batched fits on 2 processes equal the single-process ones.

Each process has 2 forced CPU devices, talks gloo through a coordinator on
127.0.0.1, reads only its share of the 3 test images and renders it on its
own devices; process 0 gathers and writes.
"""

import csv
import json
import os
import shutil
import tempfile
import time

from absl.testing import absltest
import numpy as np

from condnerf import codes
from tests.smoke import launch
from tests.smoke.cli_test import assert_one_line_error
from tests.smoke.cli_test import run_main  # same 2-device env.

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
ENV = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2')


def read_metrics(workdir):
  with open(os.path.join(workdir, 'eval', 'metrics.json')) as f:
    return json.load(f)


class MultiProcessEvalTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.TemporaryDirectory()
    cls.config = [*launch.tiny_chair(cls.tmp.name, num_test=3),
                  '--config.eval.max_images=0']
    cls.workdir = os.path.join(cls.tmp.name, 'run')
    run_main(*cls.config, f'--workdir={cls.workdir}', '--mode=train')

  @classmethod
  def tearDownClass(cls):
    cls.tmp.cleanup()
    super().tearDownClass()

  def test_two_processes_equal_one(self):
    run_main(*self.config, f'--workdir={self.workdir}', '--mode=eval')
    single = read_metrics(self.workdir)
    shutil.rmtree(os.path.join(self.workdir, 'eval'))

    self.run_two('--mode=eval')
    multi = read_metrics(self.workdir)

    self.assertEqual(multi['num_images'], 3)  # odd count: nothing dropped.
    self.assertEqual([r['name'] for r in multi['per_image']],
                     [r['name'] for r in single['per_image']])
    self.assertEqual([r['index'] for r in multi['per_image']], [0, 1, 2])
    for a, b in zip(multi['per_image'], single['per_image']):
      self.assertAlmostEqual(a['psnr'], b['psnr'], delta=1e-6)
      self.assertAlmostEqual(a['ssim'], b['ssim'], delta=1e-6)
    with open(os.path.join(self.workdir, 'eval', 'per_image.csv')) as f:
      rows = list(csv.DictReader(f))
    self.assertLen(rows, 3)
    for i in range(3):
      self.assertTrue(os.path.exists(
          os.path.join(self.workdir, 'eval', f'rgb_{i:03d}.png')))

  def test_processes_with_different_configs_fail_naming_the_keys(self):
    workdir = os.path.join(self.tmp.name, 'mismatch')
    outputs = self.run_two('--mode=train', expect_ok=False, workdir=workdir,
                           extra=(['--config.train.steps=4'],
                                  ['--config.train.steps=6']))
    for code, err in outputs:
      self.assertEqual(code, 2, err[-2000:])
      assert_one_line_error(
          self, err, 'The 2 processes were started with different configs '
          '(config.train.steps: 4 on process 0, 6 on process 1)')
    # Refused before anything was written.
    self.assertFalse(os.path.exists(workdir))

  def run_two(self, *args, expect_ok=True, workdir=None, extra=((), ())):
    """Runs main on 2 processes; returns [(returncode, stderr)]."""
    outputs = launch.run_processes(
        [*self.config, f'--workdir={workdir or self.workdir}', *args], extra)
    if expect_ok:
      for code, err in outputs:
        self.assertEqual(code, 0, err[-3000:])
    return outputs

  def test_batched_fit_on_two_processes_equals_one(self):
    fit = ['--mode=edit', '--config.edit.operation=fit',
           '--config.edit.views=(0,1,2)', '--config.edit.steps=30']
    run_main(*self.config, f'--workdir={self.workdir}', *fit,
             '--config.edit.name=one')
    self.run_two(*fit, '--config.edit.name=two')
    bank = codes.load_bank(os.path.join(self.workdir, 'edit', 'codes.npz'))
    for view in range(3):
      np.testing.assert_allclose(bank[f'two_test_{view}']['appearance'],
                                 bank[f'one_test_{view}']['appearance'],
                                 atol=1e-4)

  def test_unreachable_coordinator_fails_in_bounded_time(self):
    address = f'127.0.0.1:{launch.free_port()}'  # nobody listens there.
    start = time.time()
    proc = run_main(*self.config, f'--workdir={self.workdir}', '--mode=eval',
                    f'--coordinator={address}', '--num_processes=2',
                    '--process_id=1', '--init_timeout=5', expect_ok=False)
    self.assertNotEqual(proc.returncode, 0)
    self.assertIn(address, proc.stderr)
    self.assertLess(time.time() - start, 90)

  def test_process_0_without_peers_exits_with_a_message(self):
    start = time.time()
    proc = run_main(*self.config, f'--workdir={self.workdir}', '--mode=eval',
                    f'--coordinator=127.0.0.1:{launch.free_port()}',
                    '--num_processes=2', '--process_id=0',
                    '--init_timeout=5', expect_ok=False)
    # Not the runtime's native abort (SIGABRT): a message and code 2.
    self.assertEqual(proc.returncode, 2, proc.stderr[-2000:])
    assert_one_line_error(self, proc.stderr,
                          'not all 2 processes connected to the coordinator')
    self.assertLess(time.time() - start, 90)


if __name__ == '__main__':
  absltest.main()
