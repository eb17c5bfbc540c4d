r"""The demo over several seeds: every figure as mean ± std, against its bar.

  python -m experiments.demo_seeds --seeds=0,1,2 --out=runs/demo_seeds
Runs `experiments.demo` once per seed (`--config.seed=S`: the scene's looks,
the model's start and the batches; the edit benchmark's targets and pixels
keep `edit.seed`), each in its own process and folder `OUT/seed_S/`, then
writes `OUT/summary.json` and `OUT/summary.md`: per figure the per-seed
values, mean and standard deviation, and where README.md's headline figures
set a bar (`demo_summary.BARS`), whether mean minus one standard deviation
clears it.
A seed whose folder already holds a finished report is not run again
(`--rerun` runs it anyway), so an interrupted sweep resumes.
`--override=SECTION.KEY=VALUE` (repeatable) is passed to every run as
`--config.SECTION.KEY=VALUE`.
"""

# pylint: disable=g-bad-import-order
from experiments import cli  # first: sets up CPU devices before jax loads.

import json
import os
import subprocess
import sys
import time

from absl import app
from absl import flags

from condnerf import errors
from condnerf import workdir as workdir_lib
from experiments import demo_summary

_SEEDS = flags.DEFINE_list('seeds', ['0', '1', '2'], 'Seeds to run.')
_OUT = flags.DEFINE_string('out', 'runs/demo_seeds', 'Output folder.')
_RERUN = flags.DEFINE_bool('rerun', False, 'Run seeds that already have a '
                           'report again.')
_CONFIG = flags.DEFINE_string(
    'config', '', 'The demo config file[:ARGS] (default: the demo\'s own, '
    'experiments/configs/demo.py).')
_OVERRIDE = flags.DEFINE_multi_string(
    'override', [], 'SECTION.KEY=VALUE passed to every run as '
    '--config.SECTION.KEY=VALUE.')



def run_seed(seed, workdir, config, overrides):
  """Runs the demo for one seed; returns its wall minutes."""
  command = [sys.executable, '-m', 'experiments.demo', f'--workdir={workdir}',
             *config, f'--config.seed={seed}', *overrides]
  print(f'seed {seed}: {" ".join(command[1:])}', flush=True)
  start = time.time()
  code = subprocess.run(command, check=False).returncode
  if code:
    raise errors.UserError(
        f'The demo of seed {seed} failed (exit {code}; its message is '
        f'above); seeds already finished stay in {_OUT.value}, and running '
        'this again resumes there.')
  minutes = (time.time() - start) / 60
  workdir_lib.write_json(os.path.join(workdir, 'seed_minutes.json'),
                         {'minutes': minutes})
  return minutes


def _read(workdir):
  with open(os.path.join(workdir, 'eval', 'metrics.json')) as f:
    metrics = json.load(f)
  with open(os.path.join(workdir, 'edit', 'report.json')) as f:
    report = json.load(f)
  path = os.path.join(workdir, 'seed_minutes.json')
  minutes = None
  if os.path.exists(path):
    with open(path) as f:
      minutes = json.load(f)['minutes']
  return metrics, report, minutes, report['train_step']


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  for item in _OVERRIDE.value:
    if '=' not in item:
      raise app.UsageError(f'--override={item!r}: use SECTION.KEY=VALUE.')
  overrides = [f'--config.{item}' for item in _OVERRIDE.value]
  config = [f'--config={_CONFIG.value}'] if _CONFIG.value else []
  seeds = [str(int(s)) for s in _SEEDS.value]
  per_seed = {}
  for seed in seeds:
    workdir = os.path.join(_OUT.value, f'seed_{seed}')
    done = os.path.exists(os.path.join(workdir, 'edit', 'report.json'))
    if _RERUN.value or not done:
      run_seed(seed, workdir, config, overrides)
    per_seed[seed] = demo_summary.figures(*_read(workdir))
  summary = demo_summary.summarize(per_seed)
  command = ' '.join(['python -m experiments.demo_seeds',
                      f'--seeds={",".join(seeds)}', f'--out={_OUT.value}',
                      *([f'--config={_CONFIG.value}'] if _CONFIG.value
                        else []),
                      *(f'--override={o}' for o in _OVERRIDE.value)])
  workdir_lib.write_json(os.path.join(_OUT.value, 'summary.json'),
                         {'command': command, 'per_seed': per_seed,
                          'summary': summary})
  text = demo_summary.markdown(summary, seeds, command)
  workdir_lib.write_text(os.path.join(_OUT.value, 'summary.md'), text)
  print(text)


if __name__ == '__main__':
  cli.run(main)
