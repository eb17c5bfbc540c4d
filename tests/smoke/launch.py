"""Whole runs of experiments.main: a tiny scene, one or several local
processes (gloo, 127.0.0.1)."""

import os
import socket
import subprocess
import sys

from condnerf.data import chair_files

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def main_command(*args):
  return [sys.executable, '-m', 'experiments.main', *args]


def devices_env(count):
  """The environment of a process with `count` forced CPU devices."""
  return dict(os.environ,
              XLA_FLAGS=f'--xla_force_host_platform_device_count={count}')


def run_processes(args, per_process=((), ()), devices=2, timeout=600):
  """Runs main with `args` on len(per_process) processes, process i adding
  `per_process[i]`; returns [(returncode, stderr)] once all have ended
  (none is left behind, even when one hangs or fails)."""
  port = free_port()
  count = len(per_process)
  procs = [subprocess.Popen(
      main_command(*args, *extra, f'--coordinator=127.0.0.1:{port}',
                   f'--num_processes={count}', f'--process_id={i}',
                   '--init_timeout=60'),
      cwd=REPO, env=devices_env(devices), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for i, extra in enumerate(per_process)]
  try:
    outputs = [p.communicate(timeout=timeout) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
      p.communicate()
  return [(p.returncode, err) for p, (_, err) in zip(procs, outputs)]


def tiny_chair(root, num_test=2):
  """Writes a 16 px Blender-format chair (4 train, 1 val) under `root`;
  returns the `--config` arguments of lego.py:runlocal on it."""
  data = os.path.join(root, 'chair')
  chair_files.write_chair_dataset(data, resolution=16, num_train=4,
                                  num_val=1, num_test=num_test)
  return ['--config=experiments/configs/lego.py:runlocal',
          f'--config.data.path={data}']
