"""Trained runs from Python: open one by its folder, or make a small one.

Owns what a notebook needs before it can look at a model:
  `load_config(workdir)`   the config a run recorded in `config.json`, on top
                           of today's defaults (fields added since then keep
                           their defaults).
  `load_run(workdir)`      that config, its dataset and latest checkpoint, as
                           a `Run`.
  `train_run(config, workdir)`   train (resuming) and evaluate, then the `Run`.
  `open_demo(workdir, small)`    the demo run when it exists; otherwise (or
                           when `small`) a tiny demo trained now in a
                           temporary folder, with a note saying so.
  `ensure_chair_scene`     the procedural chair's appearance dataset (material
                           or image-space variants; shared with
                           `experiments/demo.py`).
  `small_requested()`      the `CONDNERF_NOTEBOOK_SMALL` switch notebooks read
                           in their first cell (set by the tests).
It does not own training, evaluation or checkpoint formats (`train_lib`,
`eval_lib`, `checkpointing`).
"""

import dataclasses
import os
import tempfile
from typing import Any

import jax
import ml_collections
import numpy as np

from condnerf import codes as codes_lib
from condnerf import config_record
from condnerf import experiment as experiment_lib
from condnerf import train_lib
from condnerf import workdir as workdir_lib
from condnerf.configs import base
from condnerf.configs import demo as demo_config
from condnerf.data import chair_files
from condnerf.data import materials as materials_lib
from condnerf.data import variants

SMALL_ENV = 'CONDNERF_NOTEBOOK_SMALL'


def small_requested(environ=None):
  """True when `CONDNERF_NOTEBOOK_SMALL` is set to 1/true/yes.

  Args:
    environ: mapping to read (default: `os.environ`).
  Raises:
    ValueError: for a value that is not a boolean.
  """
  environ = os.environ if environ is None else environ
  value = str(environ.get(SMALL_ENV, '')).strip().lower()
  if value in ('', '0', 'false', 'no'):
    return False
  if value in ('1', 'true', 'yes'):
    return True
  raise ValueError(f'{SMALL_ENV}={value!r} is not a boolean; use 1 or 0.')


def scratch_dir(name):
  """A new empty folder under the system temp dir, for throwaway runs."""
  return tempfile.mkdtemp(prefix=f'condnerf_{name}_')


def ensure_chair_scene(data_dir, resolution=64, num_train=100, num_val=4,
                       num_test=16, num_appearances=8, supersample=3, seed=0,
                       materials=False, light_cone=0.0):
  """Writes the procedural chair's appearance dataset unless present.

  Args:
    data_dir: folder for the datasets.
    resolution: image side in pixels.
    num_train, num_val, num_test: frames per split.
    num_appearances: distinct looks.
    supersample: odd rays per pixel side (antialiasing).
    seed: camera poses and looks.
    materials: write a material dataset (`data.materials`: per-look part
      colors and light, re-rendered exactly) to `chair_materials/`; else the
      plain chair (`chair/`) and its image-space variants
      (`chair_variants/`, `data.variants`).
    light_cone: materials only, half-angle in degrees of the light
      directions (0 = one fixed light).
  Returns:
    The path of the dataset to train on (Blender format, appearance ids).
  """
  sizes = dict(resolution=resolution, num_train=num_train, num_val=num_val,
               num_test=num_test, seed=seed, supersample=supersample)
  if materials:
    out = os.path.join(data_dir, 'chair_materials')
    if not os.path.exists(os.path.join(out, 'transforms_train.json')):
      materials_lib.write_material_dataset(
          out, num_appearances=num_appearances, light_cone_deg=light_cone,
          overwrite=True, **sizes)
    return out
  plain = os.path.join(data_dir, 'chair')
  varied = os.path.join(data_dir, 'chair_variants')
  if not os.path.exists(os.path.join(plain, 'transforms_train.json')):
    chair_files.write_chair_dataset(plain, **sizes)
  if not os.path.exists(os.path.join(varied, 'transforms_train.json')):
    variants.make_variants(plain, varied, seed=seed,
                           num_appearances=num_appearances)
  return varied


@dataclasses.dataclass
class Run:
  """A trained run, ready to render and edit.

  Attributes:
    workdir: the run's folder (checkpoints/, eval/, edit/codes.npz).
    experiment: `experiment_lib.Experiment` built from the run's config.
    state: the restored `train_step.TrainState`.
    note: one line saying where the run came from.
    metrics: the final evaluations when the run was trained here, evaluator
      name -> results (`metrics['eval']['psnr']`; see `evaluators`), else
      None.
  """
  workdir: str
  experiment: Any
  state: Any
  note: str = ''
  metrics: Any = None

  @property
  def config(self):
    return self.experiment.config

  @property
  def scene(self):
    return self.experiment.scene

  @property
  def bank(self):
    """The run's code bank file, `<workdir>/edit/codes.npz`."""
    return workdir_lib.bank_path(self.workdir)

  @property
  def step(self):
    return int(jax.device_get(self.state.step))

  @property
  def codes(self):
    """The trained code table (pytree of numpy arrays, see `codes.py`)."""
    return jax.tree.map(np.asarray, jax.device_get(self.state.codes))

  def code(self, index):
    """Row `index` of the code table: one trained look."""
    return codes_lib.row(self.codes, index)


def _overlay(config, values):
  """Writes nested `values` into `config`; lists become tuples like defaults."""
  for key, value in values.items():
    current = config.get(key)
    if isinstance(current, ml_collections.ConfigDict) and isinstance(
        value, dict):
      _overlay(current, value)
    elif isinstance(current, tuple) and isinstance(value, list):
      config[key] = tuple(value)
    else:
      config[key] = value


def load_config(workdir):
  """The config a run was trained with, from `<workdir>/config.json`.

  The recorded values are written over `base.get_config()`, so fields added
  to the base config after the run keep their defaults.

  Raises:
    config_record.ConfigRecordError: the run has no config.json, or it is
      damaged.
  """
  recorded = config_record.load_config_json(workdir)
  if recorded is None:
    raise config_record.ConfigRecordError(
        f'No {workdir_lib.CONFIG_FILE} in {workdir}; is it a run '
        'folder (made by train_and_evaluate / experiments.main)?')
  config = base.get_config()
  _overlay(config, recorded)
  return config


def resolve_data_path(path, workdir):
  """Finds a run's relative dataset path from another working directory.

  A relative `data.path` is relative to the folder the run was started in.
  It is tried against the current directory, then against each folder above
  the run (nearest first), since runs are started from one of them.

  Args:
    path: the recorded `config.data.path`.
    workdir: the run's folder.
  Returns:
    An existing path.
  Raises:
    FileNotFoundError: none of those exists (the message lists them).
  """
  if os.path.isabs(path) or os.path.exists(path):
    return path
  tried = [path]
  folder = os.path.abspath(workdir)
  while True:
    candidate = os.path.join(folder, path)
    if os.path.exists(candidate):
      return candidate
    tried.append(candidate)
    parent = os.path.dirname(folder)
    if parent == folder:
      break
    folder = parent
  raise FileNotFoundError(f'The dataset {path!r} of run {workdir} is not at '
                          f'any of {tried}; set config.data.path.')


def load_run(workdir, config=None, experiment=None):
  """Loads a trained run: its config, dataset and latest good checkpoint.

  Args:
    workdir: the run's folder.
    config: the config to use instead of the recorded one (its data.path is
      used as given).
    experiment: a prebuilt `Experiment` of that config (its compiled steps
      are reused), else one is built.
  Returns:
    `Run`.
  Raises:
    experiment_lib.NoCheckpointError: the run has no checkpoint.
  """
  if config is None:
    config = load_config(workdir)
    config.data.path = resolve_data_path(config.data.path, workdir)
  exp, state = experiment_lib.load_trained(config, workdir, experiment)
  run = Run(workdir, exp, state)
  run.note = f'Loaded {workdir} at step {run.step}.'
  return run


def train_run(config, workdir, note=''):
  """Trains `config` in `workdir` (resuming), evaluates, returns the `Run`.

  Progress shows as a tqdm bar; the evaluation writes `<workdir>/eval/`.

  Returns:
    `Run` whose `experiment` is the one that trained (nothing recompiles).
  """
  exp = experiment_lib.build_experiment(config)
  metrics = train_lib.train_and_evaluate(config, workdir, exp)
  _, state = experiment_lib.load_trained(config, workdir, exp)
  return Run(workdir, exp, state, note=note or f'Trained {workdir}.',
             metrics=metrics)


def train_demo(workdir, arg='small'):
  """Generates the demo scene under `<workdir>/data` and trains on it.

  Args:
    workdir: output folder.
    arg: variant of `configs/demo.py` ('small', '' for the full demo).
  Returns:
    `Run`.
  """
  config = demo_config.get_config(arg)
  config.data.path = ensure_chair_scene(
      os.path.join(workdir, 'data'), seed=config.seed,
      **config.data.procedural.to_dict())
  return train_run(config, workdir)


def has_checkpoint(workdir):
  """True when `<workdir>/checkpoints` holds at least one step."""
  ckpt_dir = workdir_lib.checkpoint_dir(workdir)
  return os.path.isdir(ckpt_dir) and any(
      name.isdigit() for name in os.listdir(ckpt_dir))


def open_demo(workdir='runs/demo', small=False):
  """The demo run at `workdir`, or a tiny demo trained now.

  Args:
    workdir: the demo's folder (made by `make demo`).
    small: train the tiny demo (`configs/demo.py:small`) in a temporary
      folder even if `workdir` has a checkpoint (tests, quick looks).
  Returns:
    `Run`; its `note` says which one it is.
  """
  if not small and has_checkpoint(workdir):
    return load_run(workdir)
  why = ('small=True' if small else f'{workdir} has no checkpoint (`make demo` '
         'trains the full demo there)')
  tmp = scratch_dir('demo_small')
  run = train_demo(tmp, 'small')
  run.note = (f'{why}: trained a tiny demo ({run.step} steps, '
              f'{run.scene.num_codes} appearances) in {tmp}.')
  return run
