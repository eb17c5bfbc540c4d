"""experiments.accel_check: the GPU-loan script, in its CPU dry run."""

import json
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest

from condnerf.data import chair_files
from experiments import accel_check

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


class AccelCheckTest(absltest.TestCase):

  def test_dry_run_writes_one_json_with_every_part(self):
    with tempfile.TemporaryDirectory() as tmp:
      lego = os.path.join(tmp, 'chair')  # any Blender scene serves.
      chair_files.write_chair_dataset(lego, resolution=16, num_train=4,
                                      num_val=1, num_test=2)
      out = os.path.join(tmp, 'sub', 'accel.json')
      env = dict(os.environ,
                 XLA_FLAGS='--xla_force_host_platform_device_count=2')
      proc = subprocess.run(
          [sys.executable, '-m', 'experiments.accel_check', '--dry_run',
           f'--out={out}', f'--lego={lego}'], cwd=REPO, env=env,
          capture_output=True, text=True, timeout=900, check=False)
      self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
      with open(out) as f:
        report = json.load(f)
    self.assertTrue(report['dry_run'])
    self.assertTrue(report['tests']['ok'])
    self.assertGreater(report['tests']['counts']['passed'], 0)
    self.assertNotIn('failed', report['tests']['counts'])
    self.assertTrue(report['bench']['ok'])
    self.assertEqual(report['bench']['result']['suite'], 'full')
    self.assertTrue(report['lego']['ok'])
    self.assertNotEmpty(report['lego']['result']['curve'])
    # The lego curve's JSON and plot lie beside --out.
    self.assertEqual(report['lego']['result']['plot'],
                     os.path.join(tmp, 'sub', 'accel_lego.png'))
    self.assertEqual(report['env']['backend'], 'cpu')
    figures = report['headline']
    self.assertGreater(figures['fast_train_rays_per_s'], 0)
    self.assertEqual(figures['goal_train_rays_per_s'], 1_000_000)
    # The last stdout line is the headline, as JSON.
    self.assertEqual(json.loads(proc.stdout.strip().splitlines()[-1]),
                     figures)

  def test_minutes_to_reads_the_first_point_at_the_target(self):
    curve = [{'minutes': 1.0, 'psnr': 25.0}, {'minutes': 2.0, 'psnr': 28.0},
             {'minutes': 3.0, 'psnr': 29.0}]
    self.assertEqual(accel_check.minutes_to(curve, 28.0), 2.0)
    self.assertIsNone(accel_check.minutes_to(curve, 30.0))

  def test_pytest_summary_counts(self):
    self.assertEqual(
        accel_check.pytest_counts('3 failed, 495 passed, 27 subtests passed '
                                  'in 594.24s (0:09:54)'),
        {'failed': 3, 'passed': 495, 'subtests': 27})

  def test_a_part_past_its_timeout_keeps_what_it_printed(self):
    # (An H200 loan found this: the killed part's output came back as bytes.)
    code, out, err, seconds = accel_check.run_part(
        ['-c', 'import time; print("started", flush=True); time.sleep(30)'],
        timeout=3)
    self.assertIsNone(code)
    self.assertEqual(out, 'started\n')
    self.assertEqual(err, 'timed out after 3 s')
    self.assertLess(seconds, 20)


if __name__ == '__main__':
  absltest.main()
