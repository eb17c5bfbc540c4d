"""The experiment: what train, eval, edit, notebooks and the benchmark share.

Owns `Experiment` (a config turned into scene, model, optimizer, mesh and
jitted steps), `build_experiment`, `load_scene`, starting a run's state
(`restore_or_init`, with transfer of another run's field weights by
`transfer_params`) and `load_trained`, the one way every reader gets a
trained run's latest good state (read-only). It does not own the steps
themselves (`train_step`), the loop (`train_lib.train_and_evaluate`) or the
checkpoint format (`checkpointing`).
"""

import dataclasses
import os
from typing import Any, Callable

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from condnerf import checkpointing
from condnerf import codes as codes_lib
from condnerf import errors
from condnerf import evaluators
from condnerf import inference
from condnerf import lighting
from condnerf import losses
from condnerf import models
from condnerf import optim
from condnerf import parallel
from condnerf import train_step as train_step_lib
from condnerf import workdir as workdir_lib
from condnerf.data import base
from condnerf.data import sampler as sampler_lib
from condnerf.data import scenes


@dataclasses.dataclass
class Experiment:
  """What train, eval, edit and notebooks share, built once from a config.

  Attributes:
    config: the resolved ConfigDict.
    scene: the `data.base.Scene`.
    model: unbound `models.ConditionalNeRF`.
    optimizer: optax transform over {'params', 'codes'}.
    mesh: the ('data',) mesh over all devices.
    init_state: key -> replicated `TrainState` (jitted).
    train_step: from `make_train_step`.
    train_steps: from `make_train_step(..., steps_per_call=K)` when
      `train.steps_per_call` K > 1 (K steps per call), else None.
    render_step: from `inference.make_render_step`.
    codes_render_step: from `inference.make_codes_render_step` (one render
      of the same rays under a whole table of codes).
  """
  config: ml_collections.ConfigDict
  scene: Any
  model: Any
  optimizer: Any
  mesh: Any
  init_state: Callable
  train_step: Callable
  render_step: Callable
  codes_render_step: Callable
  train_steps: Callable | None = None
  _steps: dict = dataclasses.field(default_factory=dict, repr=False)

  def cached_step(self, name, build):
    """A jitted function built once per experiment (edits reuse theirs).

    Args:
      name: its key.
      build: `() -> function`, called the first time.
    """
    if name not in self._steps:
      self._steps[name] = build()
    return self._steps[name]

  def abstract_state(self):
    """Shapes, dtypes and shardings of the state (for checkpoint restore)."""
    return jax.eval_shape(self.init_state, jax.random.key(0))

  def render(self, state, rays, chunk=None):
    """Renders numpy rays [H, W] (or [N]) with the state's params and codes."""
    chunk = chunk or self.config.eval.chunk
    if rays.code_ids.ndim == 2:
      return inference.render_image(self.render_step, state.params,
                                    state.codes, rays, chunk, self.mesh)
    return inference.render_rays(self.render_step, state.params, state.codes,
                                 rays, chunk, self.mesh)


def load_scene(data_cfg, share=None):
  """Loads the dataset named by `config.data` (see `data.scenes`).

  Args:
    data_cfg: the `config.data` section.
    share: None, or a `data.base.Share`: read only this process's frames of
      the val and test splits (multi-process evaluation).
  """
  return scenes.load_scene(
      data_cfg.name, data_cfg.path, appearance=data_cfg.appearance,
      num_codes=data_cfg.num_codes, background=tuple(data_cfg.background),
      factor=data_cfg.factor, max_frames=data_cfg.max_frames,
      holdout=data_cfg.holdout, share=share, ndc=data_cfg.get('ndc', False),
      masks=data_cfg.get('masks', True))


def training_share(config):
  """The `data.base.Share` of the training frames this process reads in a
  multi-process run (`train.frame_shards`), else None (all of them)."""
  if jax.process_count() == 1 or config.train.frame_shards == 1:
    return None
  return base.Share(jax.process_index(), jax.process_count(),
                    train_shards=config.train.frame_shards, evals=False)


def build_experiment(config, scene=None, mesh=None):
  """Turns a config into everything a run needs.

  Args:
    config: ConfigDict from `configs.base.get_config` (or a diff of it).
    scene: an already loaded scene (else loaded from `config.data`).
    mesh: a mesh (default: all devices).
  Returns:
    `Experiment`.
  Raises:
    errors.ConfigError: a config value that cannot work (checked before
      the data loads where it can be).
  """
  check_config(config)
  if scene is None:
    scene = load_scene(config.data, share=training_share(config))
  mesh = parallel.create_mesh() if mesh is None else mesh
  parallel.check_divisible(config.train.batch_size, mesh, 'train.batch_size')
  sampler_lib.check_frame_shards(scene.train, config.train.frame_shards)
  if config.train.random_background and scene.train.alphas is None:
    raise errors.ConfigError(
        'train.random_background needs training images with an alpha '
        f'channel, and the {config.data.name!r} scene at '
        f'{config.data.path!r} has none; set '
        '--config.train.random_background=False.')
  model_cfg = config.model.to_dict()
  for section in ('field', 'proposal_field'):
    if not model_cfg[section]['scene_bound']:
      model_cfg[section]['scene_bound'] = float(scene.scene_bound)
  model_cfg['ndc'] = scene.ndc or ()
  if config.train.sample_budget and model_cfg['sampler'] == 'occupancy':
    model_cfg['occupancy']['samples_per_ray'] = max(
        1, config.train.sample_budget // config.train.batch_size)
  model = models.build_model(config.model_name, model_cfg, scene.background)
  if model.sampler == 'occupancy':
    check_sample_budgets(config, model.occupancy_settings(), mesh)
  optimizer = optim.make_optimizer(config.optim, config.train.steps,
                                   freeze_patterns(config.train.freeze))
  palette_center = None
  if model.palette_size() and config.codes.palette_init == 'data':
    total, count = codes_lib.palette_sums(
        scene.train.images, scene.train.alphas, scene.train.appearance_ids,
        scene.num_codes)
    if scene.train.global_indices is not None:  # every process's frames.
      total, count = (parallel.process_sum(x) for x in (total, count))
    palette_center = codes_lib.palette_from_sums(total, count)
  light = (initial_lights(scene, config.codes.light_init)
           if model.needs_normals() else None)
  init_state = jax.jit(
      lambda key: train_step_lib.create_train_state(
          model, optimizer, key, scene.num_codes, config.codes.dim,
          config.codes.init_scale, palette_center, light),
      out_shardings=parallel.replicated(mesh))
  loss_fn = losses.make_loss_fn(
      model, losses.LossWeights.from_config(config, light is not None),
      config.train.steps, None if light is None else jnp.asarray(light))
  steps = {k: train_step_lib.make_train_step(
      model, optimizer, mesh, loss_fn, config.train.randomized,
      config.train.random_background, steps_per_call=k)
           for k in {1, config.train.get('steps_per_call', 1)}}
  per_call = config.train.get('steps_per_call', 1)
  return Experiment(config=config, scene=scene, model=model,
                    optimizer=optimizer, mesh=mesh, init_state=init_state,
                    train_step=steps[1],
                    train_steps=steps[per_call] if per_call > 1 else None,
                    render_step=inference.make_render_step(model, mesh),
                    codes_render_step=inference.make_codes_render_step(
                        model, mesh))


def check_sample_budgets(config, settings, mesh):
  """ConfigError unless each device's training sample budget holds the
  longest ray (`max_steps` samples; a render's budget is never less)."""
  devices, rays = mesh.devices.size, config.train.batch_size
  per_ray = settings['samples_per_ray']
  budget = max(rays // devices, 1) * per_ray
  if budget < settings['max_steps']:
    raise errors.ConfigError(
        f'The occupancy sampler budget of {budget} samples per device '
        f'(train.batch_size={rays} over {devices} devices x {per_ray} '
        'samples per ray) is less than one ray can need '
        f"(model.occupancy.max_steps={settings['max_steps']}); raise "
        'train.batch_size, train.sample_budget (or '
        'model.occupancy.samples_per_ray), or lower max_steps.')


PALETTE_INITS = ('data', 'uniform')
LIGHT_INITS = ('data', 'default')
# The start of light codes without recorded lights: a light from above,
# front and left (the procedural chair's default direction) plus as much
# ambient light. Not straight overhead: a light along the up axis would not
# move when turned about it (`--mode=render` with render.light_turns).
DEFAULT_LIGHT = dict(direction=(-0.4, -0.6, 1.0), intensity=0.5, ambient=0.5)


def initial_lights(scene, how):
  """f32[num_codes, 9, 3]: where the light codes start.

  'data': each appearance's recorded light (a material dataset's
  `materials` table), as the SH code of a directional light; codes with no
  recorded light, and every code with 'default', start at `DEFAULT_LIGHT`.
  Training moves them; the start only fixes the units (a light code and a
  palette could otherwise trade a factor per channel).
  """
  default = lighting.directional(**DEFAULT_LIGHT)
  out = np.repeat(default[None], scene.num_codes, axis=0)
  table = scene.metadata.get('materials') if how == 'data' else None
  for k, entry in enumerate(table or []):
    if k < scene.num_codes and isinstance(entry, dict) and 'light' in entry:
      out[k] = lighting.from_material_light(entry['light'])
  return out
SPLITS = ('train', 'val', 'test')


def freeze_patterns(text):
  """`train.freeze` or `train.init_params` ('a,b') as a list of regular
  expressions."""
  return [p.strip() for p in text.split(',') if p.strip()]


def check_config(config):
  """Refuses config values that would fail later, naming the setting.

  Model names (sampler, encoding, conditioning, ...) are checked by
  `models.build_model`, learning rates and `train.freeze` by
  `optim.make_optimizer`; this checks what no builder reads early.

  Raises:
    errors.ConfigError: the first bad value.
  """
  evaluators.check(config)
  if config.eval.split not in SPLITS:
    raise errors.ConfigError(
        f'eval.split={config.eval.split!r} is not a split; choose one of '
        f'{list(SPLITS)}.')
  if config.train.steps < 1 or config.train.batch_size < 1:
    raise errors.ConfigError(
        f'train.steps={config.train.steps} and train.batch_size='
        f'{config.train.batch_size} must be positive.')
  shards = config.train.frame_shards
  if shards < 1 or config.train.batch_size % shards:
    raise errors.ConfigError(
        f'train.frame_shards={shards} must be >= 1 and divide '
        f'train.batch_size={config.train.batch_size}.')
  for key in ('log_every', 'checkpoint_every', 'val_every'):
    minimum = 1 if key == 'log_every' else 0
    if config.train[key] < minimum:
      raise errors.ConfigError(
          f'train.{key}={config.train[key]} must be >= {minimum}'
          + ('.' if minimum else ' (0 = never).'))
  per_call = config.train.get('steps_per_call', 1)
  bad = [f'{key}={config.train[key]}' for key in
         ('log_every', 'checkpoint_every', 'val_every')
         if config.train[key] % max(1, per_call)]
  if per_call < 1 or bad:
    raise errors.ConfigError(
        f'train.steps_per_call={per_call} must be >= 1 and divide every '
        f"periodic action's interval (train.{', train.'.join(bad)} do "
        'not), so that logs, checkpoints and validations land between '
        'calls.')
  if config.data.get('holdout', 1) < 1:
    raise errors.ConfigError(
        f'data.holdout={config.data.holdout} must be >= 1 (every holdout-th '
        'image is a test view).')
  for name, args in config.evals.to_dict().items():
    if args.get('max_images', 0) < 0:
      raise errors.ConfigError(
          f"evals.{name}.max_images={args['max_images']} must be >= 0 (0 = "
          'every image of the split).')
  if config.train.minutes < 0:
    raise errors.ConfigError(f'train.minutes={config.train.minutes} must be '
                             '>= 0 (0 = no time budget).')
  if config.codes.get('light_init', 'data') not in LIGHT_INITS:
    raise errors.ConfigError(
        f'codes.light_init={config.codes.light_init!r}; choose one of '
        f'{list(LIGHT_INITS)}.')
  if config.codes.palette_init not in PALETTE_INITS:
    raise errors.ConfigError(
        f'codes.palette_init={config.codes.palette_init!r}; choose one of '
        f'{list(PALETTE_INITS)}.')


def check_freeze(text, params):
  """Refuses a `train.freeze` pattern that matches no field parameter (a
  typo would otherwise freeze nothing, silently).

  Args:
    text: `train.freeze`, comma-separated regexes.
    params: the field parameters (arrays or shapes).
  Raises:
    errors.ConfigError: naming the pattern and a few parameter paths.
  """
  patterns = freeze_patterns(text)
  compiled = optim.compile_patterns(patterns, 'train.freeze')
  names = [optim.param_path(path) for path, _ in
           jax.tree_util.tree_flatten_with_path(params)[0]]
  for pattern, regex in zip(patterns, compiled):
    if not any(regex.search(name) for name in names):
      raise errors.ConfigError(
          f'train.freeze pattern {pattern!r} matches none of the field '
          f'parameters, so it would freeze nothing; paths look like '
          f'{", ".join(names[:3])} ({len(names)} in all).')


def restore_or_init(experiment, ckpt, key):
  """Latest good checkpoint of `ckpt`, else a fresh state.

  Returns:
    (TrainState, restored: bool).
  Raises:
    checkpointing.CheckpointMismatchError: the checkpoint is of another model.
  """
  abstract = experiment.abstract_state()
  check_freeze(experiment.config.train.freeze, abstract.params)
  restored, step = ckpt.restore(abstract.as_dict())
  if restored is None:
    return start_from(experiment, experiment.init_state(key)), False
  return train_step_lib.TrainState(**restored), True


def start_from(experiment, state):
  """A fresh `state` with the field weights `train.init_from` names (those
  matching `train.init_params`, or all), or `state` when it names none."""
  train = experiment.config.train
  if not train.init_from:
    return state
  patterns = optim.compile_patterns(
      freeze_patterns(train.get('init_params', '')), 'train.init_params')
  source = transfer_params(experiment, train.init_from)
  if not patterns:
    return state.replace(params=source)
  taken = []

  def pick(path, fresh, loaded):
    name = optim.param_path(path)
    if any(p.search(name) for p in patterns):
      taken.append(name)
      return loaded
    return fresh

  params = jax.tree_util.tree_map_with_path(pick, state.params, source)
  if not taken:
    raise errors.ConfigError(
        f'train.init_params={train.init_params!r} matches none of the field '
        'weights, so nothing would be taken from train.init_from; give '
        "regexes of parameter paths, e.g. 'MLP|Dense' (the decoders).")
  logging.info('Taken from %s: %s.', train.init_from, ', '.join(taken))
  return state.replace(params=params)


def transfer_params(experiment, source_workdir):
  """Field weights of another run's latest checkpoint, for a new run.

  The source model must have the same field architecture; its codes and
  optimizer state are not used (the new scene has its own codes).

  Raises:
    errors.ConfigError: the source has no checkpoint.
    checkpointing.CheckpointMismatchError: the architectures differ.
  """
  src_dir = workdir_lib.checkpoint_dir(source_workdir)
  if not os.path.isdir(src_dir):
    raise errors.ConfigError(f'train.init_from={source_workdir} has no '
                             'checkpoints/ folder to start from.')
  src = checkpointing.Checkpointer(src_dir, read_only=True)
  try:
    params, step = src.restore_entry('params',
                                     experiment.abstract_state().params)
  finally:
    src.close()
  if params is None:
    raise errors.ConfigError(f'train.init_from={source_workdir} has no '
                             'checkpoint to start from.')
  logging.info('Starting from the field weights of %s step %d.',
               source_workdir, step)
  return parallel.replicate(params, experiment.mesh)


class NoCheckpointError(errors.UserError, FileNotFoundError):
  """The workdir has no checkpoint to evaluate or edit."""


def load_trained(config, workdir, experiment=None):
  """Builds the experiment of `config` and restores its latest checkpoint.

  Args:
    config: the ConfigDict the run was trained with.
    workdir: the run's folder.
    experiment: a prebuilt `Experiment` (optional).
  Returns:
    (experiment, state).
  Raises:
    NoCheckpointError: nothing to restore.
    checkpointing.CheckpointMismatchError: the checkpoint is of another model.
  """
  exp = build_experiment(config) if experiment is None else experiment
  ckpt_dir = workdir_lib.checkpoint_dir(workdir)
  if not os.path.isdir(ckpt_dir):  # do not create folders in a wrong path.
    raise NoCheckpointError(
        f'No checkpoint in {ckpt_dir}; train first with --mode=train and the '
        'same --workdir.')
  # Read-only: a training may be writing here right now.
  ckpt = checkpointing.Checkpointer(ckpt_dir, read_only=True)
  try:
    restored, _ = ckpt.restore(exp.abstract_state().as_dict())
  finally:
    ckpt.close()
  if restored is None:
    raise NoCheckpointError(
        f'No checkpoint in {ckpt_dir}; train first with --mode=train and the '
        'same --workdir.')
  return exp, train_step_lib.TrainState(**restored)
