"""Evaluators, and the one way a run builds them from `config.evals`.

Each module of this package is an evaluator type and exposes
`Evaluator(experiment, **args)` with `run(state, out_dir) -> results`
(`image_metrics`: PSNR / SSIM / LPIPS of a split; `edit_benchmark`: every
edit method on every family of edits). `config.evals` names the evaluators
a run uses, `{name: {'type': module, **args}}`, in the manner of
big_vision's `config.evals`; each writes to `<workdir>/<name>/`. `build`
turns that section into evaluators for the end of training, `--mode=eval`
and the demo, and `build_one` serves callers that set the arguments
themselves (the edit CLI's `benchmark` operation). Modules are imported
when used, so naming an evaluator costs nothing until it runs.
"""

import importlib
import inspect
import os
import pkgutil

import jax

from condnerf import errors
from condnerf import workdir as workdir_lib


def types():
  """The evaluator types: the modules of this package."""
  return sorted(m.name for m in pkgutil.iter_modules(__path__))


def _module(kind, where):
  if kind not in types():
    raise errors.ConfigError(
        f'{where}: unknown evaluator type {kind!r}; choose one of {types()}.')
  return importlib.import_module(f'{__name__}.{kind}')


def _check_args(module, args, where):
  """Refuses arguments the type's Evaluator does not take, naming those it
  does."""
  params = list(inspect.signature(module.Evaluator).parameters)[1:]
  unknown = sorted(set(args) - set(params))
  if unknown:
    raise errors.ConfigError(
        f'{where}: {module.__name__.rsplit(".", 1)[-1]} takes no argument '
        f'{", ".join(unknown)}; it takes {", ".join(params)}.')


def specs(config, names=None):
  """[(name, type, args)] of `config.evals`: those in `names` ('a,b'), or
  all in name order."""
  evals = config.evals.to_dict()
  chosen = list(evals) if not names else [n.strip() for n in names.split(',')
                                          if n.strip()]
  missing = [n for n in chosen if n not in evals]
  if missing:
    raise errors.ConfigError(
        f'eval.names: no evaluator {", ".join(missing)} in config.evals; it '
        f'has {", ".join(evals) or "none"}.')
  specs = []
  for name in chosen:
    args = dict(evals[name])
    if 'type' not in args:
      raise errors.ConfigError(
          f"evals.{name} has no 'type'; set --config.evals.{name}.type to one "
          f'of {types()}.')
    specs.append((name, args.pop('type'), args))
  return specs


def check(config):
  """Refuses an evaluator `config.evals` cannot build, before data loads.

  Raises:
    errors.ConfigError: unknown type or argument, or an `eval.names` entry
      that `config.evals` lacks.
    workdir.WorkdirError: a name whose folder is the training's own.
  """
  for name, kind, args in specs(config, config.eval.get('names', '')):
    workdir_lib.check_evaluator_name(name)
    _check_args(_module(kind, f'evals.{name}'), args, f'evals.{name}')


def build_one(experiment, kind, where='evaluator', **args):
  """An evaluator of type `kind` (a module of this package) with `args`."""
  module = _module(kind, where)
  _check_args(module, args, where)
  return module.Evaluator(experiment, **args)


def build(config, experiment, names=None):
  """The evaluators `config.evals` names, in its order.

  Args:
    config: the resolved ConfigDict.
    experiment: `experiment.Experiment` they evaluate.
    names: 'a,b' to build only those (default: all).
  Returns:
    dict name -> Evaluator.
  """
  return {name: build_one(experiment, kind, f'evals.{name}', **args)
          for name, kind, args in specs(config, names)}


def run(evaluators, state, workdir):
  """Runs each evaluator on `state`, writing to `<workdir>/<name>/`.

  Each writes into a fresh folder that replaces the old one only once it is
  complete (`workdir.staged_dir`), so no output of an earlier evaluation
  (another split, more images) is left beside the new one. `edit`'s folder
  also holds the code bank and the edits: there only the evaluator's own
  files are replaced. Processes other than 0 write nothing.

  Returns:
    dict name -> that evaluator's results.
  """
  results = {}
  for name, evaluator in evaluators.items():
    out_dir = os.path.join(workdir, name)
    if jax.process_index() != 0:
      results[name] = evaluator.run(state, out_dir)
      continue
    with workdir_lib.staged_dir(out_dir,
                                shared=name == workdir_lib.EDIT) as tmp:
      results[name] = evaluator.run(state, tmp)
  return results
