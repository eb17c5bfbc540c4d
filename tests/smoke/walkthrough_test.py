"""docs/captures.md's "Bring your own capture" walkthrough, run as
written."""

import os
import subprocess
import sys
import tempfile

from absl.testing import absltest
import numpy as np

from tests import markdown
from tests import scenes
from tests.smoke import launch

GUIDE = os.path.join(launch.REPO, 'docs', 'captures.md')


def walkthrough_script():
  """The shell commands between the guide's walkthrough markers."""
  return markdown.between_markers(GUIDE, 'walkthrough')


class WalkthroughTest(absltest.TestCase):

  def test_capture_walkthrough_runs_as_written(self):
    script = walkthrough_script()
    self.assertIn('--config.train.init_from=$OTHER_RUN', script)
    with tempfile.TemporaryDirectory() as tmp:
      capture = scenes.write_nerfstudio_capture(os.path.join(tmp, 'capture'))
      other = scenes.write_nerfstudio_capture(os.path.join(tmp, 'other'),
                                              seed=1)
      config = 'experiments/configs/capture.py:runlocal'
      env = dict(launch.devices_env(2), CONFIG=config, CAPTURE=capture,
                 RUNS=os.path.join(tmp, 'runs'),
                 OTHER_RUN=os.path.join(tmp, 'other_run'),
                 PATH=os.path.dirname(sys.executable) + os.pathsep +
                 os.environ.get('PATH', ''))
      # Another scene's model of the same config, for step 3.
      source = subprocess.run(
          launch.main_command(f'--config={config}',
                              f'--config.data.path={other}',
                              f'--workdir={env["OTHER_RUN"]}'),
          cwd=launch.REPO, env=env, capture_output=True, text=True,
          timeout=600, check=False)
      self.assertEqual(source.returncode, 0, source.stderr[-3000:])
      proc = subprocess.run(['bash', '-eu', '-c', script], cwd=launch.REPO,
                            env=env, capture_output=True, text=True,
                            timeout=1200, check=False)
      self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
      runs = env['RUNS']
      for path in ('capture/eval/metrics.json', 'capture/edit/codes.npz',
                   'capture_transfer/checkpoints'):
        self.assertTrue(os.path.exists(os.path.join(runs, path)), path)
      with np.load(os.path.join(runs, 'capture', 'edit', 'codes.npz')) as bank:
        self.assertTrue(any('new_test_0' in key for key in bank.files),
                        bank.files)
      swapped = os.listdir(os.path.join(runs, 'capture', 'edit', 'runs',
                                        'new_look'))
      self.assertIn('swap_000.png', swapped)


if __name__ == '__main__':
  absltest.main()
