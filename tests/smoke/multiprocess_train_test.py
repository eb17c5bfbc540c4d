"""Training across processes, and checkpoints that move between topologies.

The same command trains on 1 process x 1 device, 1 x 4 and 2 processes x 2
devices (gloo on 127.0.0.1); every global batch and per-ray key is the
same, so the parameters agree. With `train.frame_shards=2` each of the two
processes reads only half of the training frames (its shard's block of
every batch), and the palette head's start, a mean color over all training
pixels, is summed across them. A checkpoint written by the 2 x 2 run
resumes on 1 x 4 and on 1 x 1 and continues to what the uninterrupted
1 x 4 run reached.
"""

import os
import shutil
import subprocess
import tempfile
import time

from absl.testing import absltest
import jax
import numpy as np

from condnerf import experiment as experiment_lib
from condnerf import runs
from tests.smoke import launch

STEPS = 6  # checkpoints every 2 steps (runlocal).


def trained_state(workdir):
  """The run's latest checkpoint, restored on this test's devices."""
  config = runs.load_config(workdir)
  _, state = experiment_lib.load_trained(config, workdir)
  return jax.device_get(state)


class MultiProcessTrainTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.TemporaryDirectory()
    cls.config = [*launch.tiny_chair(cls.tmp.name),
                  f'--config.train.steps={STEPS}',
                  '--config.train.frame_shards=2',
                  '--config.model.head.kind=palette',
                  '--config.train.val_every=0', '--mode=train']
    cls.runs = {}
    for name, devices in (('1x1', 1), ('1x4', 4)):
      cls.runs[name] = os.path.join(cls.tmp.name, name)
      cls.run_one(cls.runs[name], devices)
    cls.runs['2x2'] = os.path.join(cls.tmp.name, '2x2')
    cls.run_two(cls.runs['2x2'])

  @classmethod
  def tearDownClass(cls):
    cls.tmp.cleanup()
    super().tearDownClass()

  @classmethod
  def run_one(cls, workdir, devices):
    proc = subprocess.run(
        launch.main_command(*cls.config, f'--workdir={workdir}'),
        cwd=launch.REPO, env=launch.devices_env(devices), capture_output=True,
        text=True, timeout=600, check=False)
    if proc.returncode:
      raise AssertionError(proc.stderr[-3000:])

  @classmethod
  def run_two(cls, workdir):
    cls.stderr = []
    for code, err in launch.run_processes(
        [*cls.config, f'--workdir={workdir}']):
      if code:
        raise AssertionError(err[-3000:])
      cls.stderr.append(err)

  def assert_same_state(self, a, b):
    self.assertEqual(int(a.step), int(b.step))
    for x, y in zip(jax.tree.leaves((a.params, a.codes)),
                    jax.tree.leaves((b.params, b.codes))):
      np.testing.assert_allclose(x, y, atol=1e-5)

  def test_two_processes_train_what_one_process_trains(self):
    reference = trained_state(self.runs['1x4'])
    self.assertEqual(int(reference.step), STEPS)
    for name in ('2x2', '1x1'):
      with self.subTest(name):
        self.assert_same_state(trained_state(self.runs[name]), reference)

  def test_each_process_read_only_its_shard_of_the_training_frames(self):
    for index, err in enumerate(self.stderr):
      self.assertIn(f'Process {index} of 2 reads 2 of the 4 training frames '
                    f'(shards {index}-{index} of train.frame_shards=2)', err)

  def test_checkpoint_of_2x2_resumes_on_other_topologies(self):
    reference = trained_state(self.runs['1x4'])
    for devices in (4, 1):
      workdir = os.path.join(self.tmp.name, f'resume_on_1x{devices}')
      shutil.copytree(self.runs['2x2'], workdir)
      # Preempted after step 4: the last checkpoint is gone.
      shutil.rmtree(os.path.join(workdir, 'checkpoints', str(STEPS)))
      self.run_one(workdir, devices)
      with self.subTest(f'1x{devices}'):
        self.assert_same_state(trained_state(workdir), reference)


class KilledWorkerTest(absltest.TestCase):

  def test_survivor_fails_in_bounded_time_and_checkpoints_restore(self):
    with tempfile.TemporaryDirectory() as tmp:
      config = launch.tiny_chair(tmp)
      workdir = os.path.join(tmp, 'run')
      port = launch.free_port()
      procs = [subprocess.Popen(
          launch.main_command(*config, '--config.train.steps=100000',
                       '--config.train.val_every=0', '--mode=train',
                       f'--workdir={workdir}',
                       f'--coordinator=127.0.0.1:{port}',
                       '--num_processes=2', f'--process_id={i}',
                       '--init_timeout=60', '--heartbeat_timeout=10'),
          cwd=launch.REPO, env=launch.devices_env(2),
          stdout=subprocess.DEVNULL,
          stderr=subprocess.PIPE, text=True) for i in range(2)]
      try:
        deadline = time.time() + 300
        ckpt_dir = os.path.join(workdir, 'checkpoints')
        while not (os.path.isdir(ckpt_dir) and any(
            n.isdigit() and int(n) >= 4 for n in os.listdir(ckpt_dir))):
          self.assertLess(time.time(), deadline, 'no checkpoint was written')
          if procs[0].poll() is not None:
            self.fail(procs[0].stderr.read()[-2000:])
          time.sleep(0.5)
        procs[1].kill()
        killed = time.time()
        procs[0].wait(timeout=120)
        waited = time.time() - killed
      finally:
        for p in procs:
          if p.poll() is None:
            p.kill()
          p.communicate()
      self.assertNotEqual(procs[0].returncode, 0)
      self.assertLess(waited, 60)  # the 10 s heartbeat, and some slack.
      state = trained_state(workdir)  # the last good checkpoint restores.
      self.assertGreaterEqual(int(state.step), 4)


if __name__ == '__main__':
  absltest.main()
