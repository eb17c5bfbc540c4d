r"""Ablation runner: train and evaluate every variant of a sweep, summarise.

  python -m experiments.ablate \
      --sweep=experiments/sweeps/conditioning.py:runlocal --workdir=runs/abl
  # spread over machines/processes sharing the folder:
  python -m experiments.ablate --sweep=... --workdir=... --shard=0/2
  python -m experiments.ablate --sweep=... --workdir=... --shard=1/2
A sweep file defines `get_sweep(arg)` (see `condnerf.ablation`). Every diff
key is checked before anything trains. Each trial is an ordinary run folder,
`DIR/<variant>/seed_<s>/`: finished trials are skipped, interrupted ones
resume from their checkpoint. Writes DIR/results.csv, results.md and
results.png from every finished trial (any shard's).
"""

# pylint: disable=g-bad-import-order
from experiments import cli  # first: sets up CPU devices before jax loads.

import os

from absl import app
from absl import flags

from condnerf import ablation
from condnerf import train_lib

_SWEEP = flags.DEFINE_string('sweep', None, 'Sweep file, optionally :arg.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Folder of the sweep.')
_SHARD = flags.DEFINE_string('shard', '0/1',
                             'i/n: run every n-th trial starting at i.')
flags.mark_flags_as_required(['sweep', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  sweep = ablation.load_sweep(_SWEEP.value)  # validates every diff first.
  index, count = ablation.parse_shard(_SHARD.value)
  workdir = _WORKDIR.value
  ablation.claim_workdir(sweep, workdir)
  with sweep.base.unlocked():
    sweep.base.data.path = ablation.prepare_data(sweep.base, workdir)
  trials = ablation.plan(sweep, workdir)
  mine = trials[index::count]
  for i, trial in enumerate(mine):
    label = f'[{i + 1}/{len(mine)}] {trial.variant} seed {trial.seed}'
    if trial.done:
      print(f'{label}: done, skipped ({trial.workdir})')
      continue
    print(f'{label}: training in {trial.workdir}', flush=True)
    ablation.run_trial(trial, train_lib.train_and_evaluate)
  table = ablation.write_results(sweep, trials, workdir)
  with open(os.path.join(workdir, 'results.md')) as f:
    print(f.read())
  finished = sum(e['seeds'] for e in table)
  if finished < len(trials):
    print(f'{len(trials) - finished} trials of other shards are not finished '
          'yet; re-run any shard to refresh the results.')


if __name__ == '__main__':
  cli.run(main)
