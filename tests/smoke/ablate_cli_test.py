"""`python -m experiments.ablate` end to end on a seconds-long sweep."""

import csv
import os
import subprocess
import sys
import tempfile
import textwrap

from absl.testing import absltest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

SWEEP = '''
from condnerf.configs import demo

def get_sweep(arg=None):
  base = demo.get_config('small,latent')
  base.train.update(steps=2, val_every=0, checkpoint_every=0)
  base.eval.update(max_images=1, save_images=False)
  return dict(name='tiny', base=base, seeds=(0,),
              variants=[{{'name': 'concat'}},
                        {{'name': 'film', 'model.head.conditioning': 'film'}},
                        {EXTRA}])
'''


def ablate(sweep, workdir, *args):
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2')
  return subprocess.run(
      [sys.executable, '-m', 'experiments.ablate', f'--sweep={sweep}',
       f'--workdir={workdir}', *args], cwd=REPO, env=env, capture_output=True,
      text=True, timeout=600, check=False)


class AblateCliTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    tmp = tempfile.TemporaryDirectory()
    self.addCleanup(tmp.cleanup)
    self.tmp = tmp.name

  def write(self, name, extra=''):
    path = os.path.join(self.tmp, f'{name}.py')
    with open(path, 'w') as f:
      f.write(textwrap.dedent(SWEEP.format(EXTRA=extra)))
    return path

  def test_runs_summarises_and_skips_finished(self):
    sweep, workdir = self.write('tiny'), os.path.join(self.tmp, 'abl')
    proc = ablate(sweep, workdir)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    for name in ('results.csv', 'results.md', 'results.png', 'sweep.json'):
      self.assertTrue(os.path.exists(os.path.join(workdir, name)), name)
    with open(os.path.join(workdir, 'results.csv')) as f:
      rows = list(csv.DictReader(f))
    self.assertEqual([r['variant'] for r in rows], ['concat', 'film'])
    with open(os.path.join(workdir, 'results.md')) as f:
      table = f.read()
    self.assertIn('| film |', table)
    self.assertIn('±', table)

    again = ablate(sweep, workdir)
    self.assertEqual(again.returncode, 0, again.stderr[-3000:])
    self.assertEqual(again.stdout.count('done, skipped'), 2)

  def test_invalid_key_fails_before_training(self):
    sweep = self.write('bad', "{'name': 'oops', 'model.head.widht': 3}")
    workdir = os.path.join(self.tmp, 'bad_run')
    proc = ablate(sweep, workdir)
    self.assertNotEqual(proc.returncode, 0)
    self.assertIn('model.head.widht', proc.stderr)
    self.assertIn('oops', proc.stderr)
    self.assertFalse(os.path.exists(workdir))  # nothing trained or written.

  def test_other_sweep_in_workdir_is_refused(self):
    workdir = os.path.join(self.tmp, 'abl')
    os.makedirs(workdir)
    with open(os.path.join(workdir, 'sweep.json'), 'w') as f:
      f.write('{"name": "something_else", "variants": [], "seeds": [0]}')
    proc = ablate(self.write('tiny'), workdir)
    self.assertNotEqual(proc.returncode, 0)
    self.assertIn('something_else', proc.stderr)


if __name__ == '__main__':
  absltest.main()
