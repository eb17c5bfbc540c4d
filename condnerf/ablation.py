"""Ablation studies as named diffs of one base config.

A sweep file (`experiments/sweeps/NAME.py`) defines `get_sweep(arg)`
returning a dict:
  name:      the sweep's identity (a workdir holds one sweep).
  base:      the ConfigDict every variant starts from.
  variants:  list of dicts, each `{'name': str, 'section.key': value, ...}`.
  seeds:     ints each variant is trained with (`config.seed`); default (0,).
Owns loading and validating sweeps (every diff key is checked before anything
trains), the trial plan (`DIR/<variant>/seed_<s>/`, one ordinary run folder
each, so an interrupted trial resumes from its checkpoint and a finished one
is skipped), sharding trials over processes, and the summary outputs
`results.csv` (one row per trial), `results.md` (mean ± std over seeds) and
`results.png` (bar chart). Training and evaluation are `train_lib`'s.
"""

import csv
import dataclasses
import json
import os
import time
from typing import Any

import ml_collections
import numpy as np

from condnerf import errors
from condnerf import runs
from condnerf import workdir as workdir_lib
from condnerf.configs import common

METRICS = ('psnr', 'ssim')
_SWEEP_FILE = 'sweep.json'


class SweepError(errors.UserError, ValueError):
  """A sweep that cannot run; the message names the entry and the fix."""


@dataclasses.dataclass
class Sweep:
  """A loaded, validated sweep.

  Attributes:
    name: identity of the sweep.
    spec: the `--sweep` argument it was loaded from.
    base: the base ConfigDict.
    variants: list of (variant name, {dotted key: value}).
    seeds: tuple of ints.
  """
  name: str
  spec: str
  base: ml_collections.ConfigDict
  variants: list
  seeds: tuple

  def identity(self):
    """What must match for a workdir to belong to this sweep (JSON-able)."""
    return {'name': self.name,
            'variants': [[name, {k: repr(v) for k, v in diff.items()}]
                         for name, diff in self.variants],
            'seeds': list(self.seeds)}


@dataclasses.dataclass
class Trial:
  """One variant trained with one seed."""
  variant: str
  seed: int
  config: Any
  workdir: str

  @property
  def done(self):
    return os.path.exists(os.path.join(self.workdir, 'eval', 'metrics.json'))


def apply_diff(base, diff, where):
  """A locked copy of `base` with the dotted keys of `diff` set.

  Args:
    base: ConfigDict.
    diff: {'section.key': value}.
    where: the sweep entry, for messages.
  Returns:
    ConfigDict.
  Raises:
    SweepError: a key that the config does not have, or a value of the wrong
      type; the message names the key and the entry.
  """
  try:
    return common.with_overrides(base, diff)
  except KeyError as e:
    raise SweepError(f'{where}: {e.args[0]}. Fix the diff in the sweep '
                     'file.') from e
  except ValueError as e:
    raise SweepError(f'{where}: {e}') from e


def load_sweep(spec):
  """Loads and validates `path/to/sweep.py[:arg]`.

  Raises:
    SweepError: a missing file, a malformed sweep, a duplicate variant name
      or any invalid diff — before anything trains.
  """
  path, _, arg = spec.partition(':')
  if not os.path.isfile(path):
    raise SweepError(f'Sweep file {path} does not exist; pass e.g. '
                     '--sweep=experiments/sweeps/conditioning.py:runlocal.')
  module = common.load_file(
      path, f'condnerf_sweep_{os.path.splitext(os.path.basename(path))[0]}')
  if not hasattr(module, 'get_sweep'):
    raise SweepError(f'{path} must define get_sweep(arg) returning a dict '
                     'with name, base, variants and seeds.')
  raw = module.get_sweep(arg or None)
  missing = {'name', 'base', 'variants'} - set(raw)
  if missing:
    raise SweepError(f'{spec}: get_sweep() result lacks {sorted(missing)}.')
  variants, names = [], set()
  for i, entry in enumerate(raw['variants']):
    entry = dict(entry)
    name = entry.pop('name', None)
    where = f'{spec} variant #{i} ({name!r})'
    if not name or not isinstance(name, str) or '/' in name:
      raise SweepError(f'{where}: every variant needs a "name" usable as a '
                       'folder name.')
    if name in names:
      raise SweepError(f'{where}: duplicate variant name {name!r}.')
    names.add(name)
    apply_diff(raw['base'], entry, where)  # validate now, fail fast.
    variants.append((name, entry))
  seeds = tuple(int(s) for s in raw.get('seeds', (0,)))
  if not variants or not seeds:
    raise SweepError(f'{spec}: a sweep needs at least one variant and seed.')
  return Sweep(name=str(raw['name']), spec=spec, base=raw['base'],
               variants=variants, seeds=seeds)


def plan(sweep, workdir):
  """Every trial of the sweep, variants in order, seeds within each."""
  trials = []
  for name, diff in sweep.variants:
    for seed in sweep.seeds:
      config = apply_diff(sweep.base, dict(diff, seed=seed),
                          f'{sweep.spec} variant {name!r}')
      trials.append(Trial(name, seed, config,
                          os.path.join(workdir, name, f'seed_{seed}')))
  return trials


def parse_shard(text):
  """'i/n' -> (i, n), with 0 <= i < n."""
  try:
    index, count = (int(x) for x in text.split('/'))
  except ValueError:
    index, count = -1, 0
  if not 0 <= index < count:
    raise SweepError(f'--shard={text!r} must be i/n with 0 <= i < n, e.g. '
                     '0/2.')
  return index, count


def claim_workdir(sweep, workdir):
  """Creates `workdir` for the sweep, or checks it already holds this sweep.

  Raises:
    SweepError: the folder holds results of a different sweep (nothing in it
      is touched).
  """
  path = os.path.join(workdir, _SWEEP_FILE)
  identity = sweep.identity()
  if os.path.exists(path):
    with open(path) as f:
      found = json.load(f)
    if found != identity:
      raise SweepError(
          f'{workdir} holds sweep {found.get("name")!r} with other variants '
          f'or seeds than {sweep.spec}; use another --workdir (or delete '
          'that one) instead of mixing results.')
    return
  if os.path.isdir(workdir) and os.listdir(workdir):
    raise SweepError(f'{workdir} is not empty and is not a sweep folder; use '
                     'another --workdir.')
  workdir_lib.write_json(path, identity, sort_keys=False)


def prepare_data(base, workdir):
  """Generates the procedural scene a base config asks for, once per sweep.

  Returns:
    The dataset path to train on (unchanged when the config names no
    procedural scene).
  """
  if 'procedural' not in base.data:
    return base.data.path
  return runs.ensure_chair_scene(os.path.join(workdir, 'data'),
                                 seed=base.seed,
                                 **base.data.procedural.to_dict())


def run_trial(trial, train_fn):
  """Trains and evaluates one trial (resuming), timing it cumulatively.

  `DIR/<variant>/seed_<s>/ablate.json` adds up the wall time of every
  attempt, so a resumed trial reports its whole training time.
  """
  os.makedirs(trial.workdir, exist_ok=True)
  timing = os.path.join(trial.workdir, 'ablate.json')
  seconds = 0.0
  if os.path.exists(timing):
    with open(timing) as f:
      seconds = json.load(f)['seconds']
  start = time.time()
  try:
    train_fn(trial.config, trial.workdir)
  finally:
    workdir_lib.write_json(timing, {'seconds': seconds + time.time() - start})


def collect(trials):
  """One row per finished trial: variant, seed, metrics, seconds, steps."""
  rows = []
  for trial in trials:
    if not trial.done:
      continue
    with open(os.path.join(trial.workdir, 'eval', 'metrics.json')) as f:
      results = json.load(f)
    seconds = float('nan')
    timing = os.path.join(trial.workdir, 'ablate.json')
    if os.path.exists(timing):
      with open(timing) as f:
        seconds = json.load(f)['seconds']
    rows.append(dict({m: results[m] for m in METRICS}, variant=trial.variant,
                     seed=trial.seed, seconds=seconds,
                     num_images=results['num_images']))
  return rows


def summarize(rows, variants):
  """Per variant (in sweep order): seeds done and mean/std of each value."""
  table = []
  for name in variants:
    mine = [r for r in rows if r['variant'] == name]
    if not mine:
      continue
    entry = {'variant': name, 'seeds': len(mine)}
    for key in METRICS + ('seconds',):
      values = np.array([r[key] for r in mine], np.float64)
      entry[key] = (float(values.mean()),
                    float(values.std(ddof=1)) if len(values) > 1 else 0.0)
    table.append(entry)
  return table


def _markdown(sweep, table, total):
  lines = [f'# Sweep `{sweep.name}` ({sweep.spec})', '',
           f'{sum(e["seeds"] for e in table)} of {total} trials finished; '
           'mean ± std over seeds (sample std).', '',
           '| variant | PSNR (dB) | SSIM | train time (min) | seeds |',
           '|---|---|---|---|---|']
  for e in table:
    lines.append(
        f'| {e["variant"]} | {e["psnr"][0]:.2f} ± {e["psnr"][1]:.2f} | '
        f'{e["ssim"][0]:.4f} ± {e["ssim"][1]:.4f} | '
        f'{e["seconds"][0] / 60:.1f} ± {e["seconds"][1] / 60:.1f} | '
        f'{e["seeds"]} |')
  diffs = ['', '## Variants', '']
  for name, diff in sweep.variants:
    text = ', '.join(f'`{k}={v!r}`' for k, v in diff.items()) or '(base)'
    diffs.append(f'- **{name}**: {text}')
  return '\n'.join(lines + diffs) + '\n'


def _plot(table, path, title):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS) + 1,
                                                     3.2))
  names = [e['variant'] for e in table]
  for ax, metric in zip(axes, METRICS):
    means = [e[metric][0] for e in table]
    stds = [e[metric][1] for e in table]
    ax.bar(names, means, yerr=stds, capsize=4, color='#4c72b0')
    low = min(m - s for m, s in zip(means, stds))
    high = max(m + s for m, s in zip(means, stds))
    margin = 0.15 * (high - low) + 1e-3
    ax.set_ylim(max(0.0, low - margin), high + margin)
    ax.set_ylabel(metric.upper())
    ax.tick_params(axis='x', rotation=20)
  fig.suptitle(title)
  fig.tight_layout()
  workdir_lib.write_atomic(
      path, lambda f: fig.savefig(f, format='png', dpi=110), binary=True)
  plt.close(fig)


def write_results(sweep, trials, workdir):
  """Writes results.csv, results.md and results.png of finished trials.

  Returns:
    The per-variant summary (see `summarize`), empty when nothing finished.
  """
  rows = collect(trials)
  fields = ['variant', 'seed'] + list(METRICS) + ['seconds', 'num_images']
  def write_csv(f):
    writer = csv.DictWriter(f, fields)
    writer.writeheader()
    writer.writerows(rows)

  workdir_lib.write_atomic(os.path.join(workdir, 'results.csv'), write_csv)
  table = summarize(rows, [name for name, _ in sweep.variants])
  workdir_lib.write_text(os.path.join(workdir, 'results.md'),
                         _markdown(sweep, table, len(trials)))
  if table:
    _plot(table, os.path.join(workdir, 'results.png'),
          f'{sweep.name}: test metrics, mean ± std over seeds')
  return table
