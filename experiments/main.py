r"""condnerf runner: train, evaluate or render from an ml_collections config.

  python -m experiments.main --config=experiments/configs/demo.py:runlocal \
      --workdir=runs/demo --mode=train
  python -m experiments.main --config=... --workdir=... --mode=eval
  python -m experiments.main --config=... --workdir=... --mode=render
  python -m experiments.main --config=... --workdir=... --mode=edit \
      --config.edit.pixels="30,32;31,32" --config.edit.color="#2f5cff"
Multi-process (each process runs the same command): add
  --coordinator=HOST:PORT --num_processes=N --process_id=I
or set $JAX_COORDINATOR_ADDRESS/$JAX_NUM_PROCESSES/$JAX_PROCESS_ID; on TPU
pods and SLURM pass --distributed to auto-detect them.
Override any field with `--config.section.key=value`; the config is locked,
so a key that does not exist is an error. Errors in the input (data, config,
edit, checkpoint, run folder, start-up) print one line and exit with code 2;
`--verbosity=1` shows the traceback. A resumed training whose config changed
needs `--allow_config_change`.
"""

# pylint: disable=g-bad-import-order
from experiments import cli  # first: sets up CPU devices before jax loads.

import json

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from condnerf import eval_lib
from condnerf import parallel
from condnerf import train_lib
from condnerf import workdir as workdir_lib
from condnerf.edit import operations
from condnerf.evaluators import image_metrics

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file, optionally with :args.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Folder of the run.')
_MODE = flags.DEFINE_enum('mode', 'train',
                          ['train', 'eval', 'render', 'edit'], 'What to do.')
_COORDINATOR = flags.DEFINE_string(
    'coordinator', None, 'HOST:PORT of process 0 for a multi-process run '
    '(default: $JAX_COORDINATOR_ADDRESS).')
_NUM_PROCESSES = flags.DEFINE_integer(
    'num_processes', None, 'Processes in the run (default: '
    '$JAX_NUM_PROCESSES).')
_PROCESS_ID = flags.DEFINE_integer(
    'process_id', None, 'This process (default: $JAX_PROCESS_ID).')
_DISTRIBUTED = flags.DEFINE_bool(
    'distributed', False, 'Start the multi-process runtime with cluster '
    'auto-detection (TPU pods, SLURM) when no coordinator is given.')
_INIT_TIMEOUT = flags.DEFINE_integer(
    'init_timeout', 120, 'Seconds to wait for all processes to connect.')
_HEARTBEAT_TIMEOUT = flags.DEFINE_integer(
    'heartbeat_timeout', 60, 'Seconds after which a silent process is '
    'declared dead and the run fails.')
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    'allow_config_change', False, 'Resume a training whose config differs '
    'from the one recorded in WORKDIR/config.json (the old one is kept in '
    'its history); without it such a resume is refused.')
_PROFILE = flags.DEFINE_integer(
    'profile', 0, '--mode=train: write a JAX profiler trace of this many '
    'steps, after the first (compiling) one, to WORKDIR/profile/ '
    '(`tensorboard --logdir WORKDIR/profile` opens it).')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  parallel.initialize_distributed(
      _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
      auto=_DISTRIBUTED.value, init_timeout=_INIT_TIMEOUT.value,
      heartbeat_timeout=_HEARTBEAT_TIMEOUT.value)
  logging.info('Devices: %d global, %d local, process %d of %d.',
               jax.device_count(), jax.local_device_count(),
               jax.process_index(), jax.process_count())
  config, workdir = _CONFIG.value, _WORKDIR.value
  workdir_lib.check_workdir(workdir)
  parallel.check_same_config({'config': json.loads(config.to_json()),
                              'mode': _MODE.value})
  if _MODE.value == 'train':
    results = train_lib.train_and_evaluate(
        config, workdir, allow_config_change=_ALLOW_CONFIG_CHANGE.value,
        profile_steps=_PROFILE.value)
  elif _MODE.value == 'eval':
    results = eval_lib.evaluate(config, workdir)
  elif _MODE.value == 'edit':
    out_dir = operations.run(config, workdir)
    print(f'Edit {config.edit.operation!r} written to {out_dir}')
    _print_viewer_command(workdir)
    return
  else:
    print(f'Wrote {eval_lib.render_path(config, workdir)}')
    return
  for name, result in results.items():
    if 'psnr' in result:  # image metrics.
      print(f'{workdir}/{name}: {image_metrics.summary(result)}.')
    else:
      print(f'{workdir}/{name}: written.')
  if _MODE.value == 'train':
    _print_viewer_command(workdir)


def _print_viewer_command(workdir):
  """Says how to look at the run in a browser (process 0 only)."""
  if jax.process_index() == 0:
    print(f'View it in a browser: python -m experiments.view '
          f'--workdir={workdir}')


if __name__ == '__main__':
  cli.run(main)
