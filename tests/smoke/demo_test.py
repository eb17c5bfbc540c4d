"""The main job (`experiments.demo`) end to end on the tiny demo: it trains
a fixed number of steps, README.md's `make demo` writes what the README
lists, and the seeds command runs and summarizes runs as mean ± std against
the bars."""

import glob
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile

from absl.testing import absltest

from condnerf.configs import common
from experiments import demo_summary
from tests import markdown
from tests.smoke import cli_test

CONFIG = 'experiments/configs/demo.py:runlocal'
ONE_METHOD = "evals.edit.methods=('palette',)"


def _run(*args):
  proc = subprocess.run([sys.executable, '-m', *args], cwd=cli_test.REPO,
                        env=cli_test.env(), capture_output=True, text=True,
                        timeout=900)
  if proc.returncode:
    raise AssertionError(f'{args} failed:\n{proc.stderr[-3000:]}')
  return proc


def make_demo(workdir, *flags):
  """README.md's `make demo`, as its opening block quotes it, into `workdir`
  with `flags` for experiments.demo (the Makefile's DEMO and DEMO_FLAGS).
  `-o install` skips the install step and PY is this interpreter: the test
  already runs in the installed environment."""
  command = shlex.split(markdown.opening_command('make demo'))
  proc = subprocess.run(
      [*command, '-o', 'install', f'PY={sys.executable}', f'DEMO={workdir}',
       f'DEMO_FLAGS={shlex.join(flags)}'],
      cwd=cli_test.REPO, env=cli_test.env(), capture_output=True, text=True,
      timeout=900, check=False)
  if proc.returncode:
    raise AssertionError(f'{command} failed:\n{proc.stderr[-3000:]}')
  return proc


def readme_outputs():
  """The paths README.md says `make demo` writes under runs/demo/, as glob
  patterns relative to the run folder."""
  patterns = []
  for _, body in markdown.fenced_blocks(markdown.read(markdown.README)):
    for line in body.splitlines():
      if not line.startswith('runs/demo/'):
        continue
      column = re.split(r'\s{2,}', line.strip())[0]  # before the comment.
      for path in column[len('runs/demo/'):].split(', '):
        path = path.replace('NNN', '[0-9]' * 3)
        braces = re.search(r'\{([^}]*)\}', path)
        options = braces.group(1).split(',') if braces else ['']
        patterns += [path.replace(braces.group(0), o) if braces else path
                     for o in options]
  return patterns


class SummaryTest(absltest.TestCase):

  def test_mean_minus_std_is_held_against_each_bar(self):
    per_seed = {'0': {'test_psnr': 30.4, 'steps': 1800, 'swap_psnr': None},
                '1': {'test_psnr': 30.0, 'steps': 1800, 'swap_psnr': 29.0}}
    summary = demo_summary.summarize(per_seed)
    self.assertAlmostEqual(summary['test_psnr']['mean'], 30.2)
    self.assertAlmostEqual(summary['test_psnr']['std'], 0.2)
    self.assertTrue(summary['test_psnr']['clears'])  # 30.0 >= 30.
    self.assertEqual(summary['swap_psnr']['values'], [29.0])  # None left out.
    self.assertIsNone(summary['steps']['clears'])  # no bar.
    per_seed['1']['test_psnr'] = 29.9
    summary = demo_summary.summarize(per_seed)
    self.assertFalse(summary['test_psnr']['clears'])
    table = demo_summary.markdown(summary, ['0', '1'], 'CMD')
    self.assertIn('| test_psnr | 30.40 / 29.90 | 30.15 ± 0.25 | 30: NO '
                  '(29.90) |', table)
    self.assertIn('| steps | 1800 / 1800 | 1800 ± 0.00 | - |', table)


class DemoTest(absltest.TestCase):

  def test_the_demo_trains_steps_not_minutes(self):
    config = common.config_from_file('experiments/configs/demo.py')
    self.assertEqual(config.train.minutes, 0.0)  # no wall-clock budget.
    self.assertGreater(config.train.steps, 0)

  def test_seeds_run_once_and_summarize(self):
    tmp = self.enter_context(tempfile.TemporaryDirectory())
    out = os.path.join(tmp, 'seeds')
    # One edit method keeps the benchmark short (the suite's time); the
    # summary reads whatever the report holds.
    proc = _run('experiments.demo_seeds', '--seeds=0', f'--out={out}',
                f'--config={CONFIG}', f'--override={ONE_METHOD}')
    self.assertEqual(proc.stdout.count('seed 0: '), 1)
    seed_0 = os.path.join(out, 'seed_0')
    with open(os.path.join(seed_0, 'eval', 'metrics.json')) as f:
      metrics = json.load(f)
    with open(os.path.join(seed_0, 'edit', 'report.json')) as f:
      report = json.load(f)
    self.assertEqual(report['train_step'], 4)  # runlocal's steps.
    # README.md's `make demo` with seed 0 stands in for seed 1: it writes
    # every file the README lists, and a seed whose folder holds a finished
    # report is not run again, so the summary of two runs nothing (and a
    # seed gives the same figures through either command).
    seed_1 = os.path.join(out, 'seed_1')
    make_demo(seed_1, f'--config={CONFIG}', '--config.seed=0',
              f'--config.{ONE_METHOD}')
    outputs = readme_outputs()
    self.assertIn('edit/report.json', outputs)
    for pattern in outputs:
      self.assertNotEqual(glob.glob(os.path.join(seed_1, pattern)), [],
                          pattern)
    proc = _run('experiments.demo_seeds', '--seeds=0,1', f'--out={out}',
                f'--config={CONFIG}', f'--override={ONE_METHOD}')
    self.assertNotIn('seed 0: ', proc.stdout)
    self.assertNotIn('seed 1: ', proc.stdout)
    with open(os.path.join(out, 'summary.json')) as f:
      summary = json.load(f)
    test_psnr = summary['summary']['test_psnr']
    self.assertEqual(test_psnr['values'], [metrics['psnr']] * 2)
    self.assertEqual(test_psnr['std'], 0.0)
    self.assertEqual(test_psnr['bar'], 30.0)
    self.assertFalse(test_psnr['clears'])  # 4 steps of a 16 px chair.
    with open(os.path.join(out, 'summary.md')) as f:
      table = f.read()
    self.assertIn('| test_psnr |', table)
    self.assertIn(f'--config={CONFIG}', table)
    self.assertIn('| ood_recolor/palette |', table)


if __name__ == '__main__':
  absltest.main()
