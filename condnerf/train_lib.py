"""Training: state, the data-parallel step, and the train-and-evaluate loop.

Owns `TrainState`, `build_experiment` (the one place a config becomes a
model, optimizer, mesh and jitted steps — used by train, eval, edit and the
notebooks), `make_train_step` and `train_and_evaluate`. The step is a
per-device function mapped with `jax.shard_map` over the ('data',) mesh and
reduced with one `lax.pmean`, wrapped in `jax.jit`.
"""

import dataclasses
import json
import os
import time
from typing import Any, Callable

from absl import logging
from flax import struct
import jax
from jax import lax
from jax.sharding import PartitionSpec as P
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm

from condnerf import checkpointing
from condnerf import codes as codes_lib
from condnerf import images
from condnerf import inference
from condnerf import losses
from condnerf import metrics as metrics_lib
from condnerf import models
from condnerf import optim
from condnerf import parallel
from condnerf import rendering
from condnerf import structs
from condnerf import train_clock
from condnerf import writers
from condnerf.data import sampler as sampler_lib
from condnerf.data import scenes
from condnerf.evaluators import image_metrics


class TrainingDivergedError(FloatingPointError):
  """The loss or gradients became non-finite."""


@struct.dataclass
class TrainState:
  """Everything a step updates.

  Attributes:
    step: i32[], number of steps taken.
    params: the field's linen 'params' collection.
    codes: {'appearance': f32[num_codes, code_dim]}.
    opt_state: optax state over {'params': ..., 'codes': ...}.
  """
  step: jnp.ndarray
  params: Any
  codes: Any
  opt_state: Any

  def as_dict(self):
    return {'step': self.step, 'params': self.params, 'codes': self.codes,
            'opt_state': self.opt_state}


def create_train_state(model, optimizer, key, num_codes, code_dim,
                       code_init_scale):
  """Initialises params, codes and optimizer state.

  Args:
    model: unbound `models.ConditionalNeRF`.
    optimizer: optax transform over {'params', 'codes'}.
    key: jax random key.
    num_codes: rows of the appearance-code table.
    code_dim: width of each code.
    code_init_scale: std of the initial code entries.
  Returns:
    `TrainState` at step 0.
  """
  init_key, code_key = jax.random.split(key)
  rays = structs.dummy_rays(1, jnp)
  params = model.init(init_key, rays, jnp.zeros((1, code_dim)))['params']
  codes = codes_lib.init_codes(code_key, num_codes, code_dim, code_init_scale)
  opt_state = optimizer.init({'params': params, 'codes': codes})
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, codes=codes,
                    opt_state=opt_state)


def make_loss_fn(model, coarse_loss_weight, interlevel_loss_weight,
                 code_prior_weight):
  """`loss_fn(trainable, batch, noise, background=None) -> (loss, metrics)`.

  The loss of one device's share of the batch.

  Args:
    model: unbound `models.ConditionalNeRF`.
    coarse_loss_weight: photometric weight of non-final colored levels.
    interlevel_loss_weight: weight of the proposal loss (proposal sampler).
    code_prior_weight: weight of the L2 code prior.
  Returns:
    The loss function; `trainable` is {'params', 'codes'}, `batch` a
    `structs.Batch`, `noise` None or f32[num_rays, noise_dim], and
    `background` None (the scene's background) or f32[num_rays, 3]: each
    ray's target and rendering are both re-composited on this color, using
    `batch.alpha` and the rendered opacity. A background the model cannot
    predict leaves it no way to paint it into empty space.
  """
  colored = model.colored_levels()

  def loss_fn(trainable, batch, noise, background=None):
    code_vecs = codes_lib.lookup(trainable['codes'], batch.rays.code_ids)
    outputs = model.apply({'params': trainable['params']}, batch.rays,
                          code_vecs, noise)
    scene_bg = jnp.asarray(model.background, jnp.float32)

    def on_background(rgb, acc):
      if background is None:
        return rgb
      return rendering.swap_background(rgb, acc, scene_bg, background)

    def color(output):
      return on_background(output.rgb, output.acc)

    target = on_background(batch.rgb, batch.alpha)
    final = outputs[-1]
    mse = losses.photometric(color(final), target, batch.weight)
    loss = mse
    for i in colored[:-1]:
      loss += coarse_loss_weight * losses.photometric(
          color(outputs[i]), target, batch.weight)
    proposals = [(o.tdist, o.weights) for i, o in enumerate(outputs)
                 if i not in colored]
    if proposals:
      loss += interlevel_loss_weight * losses.interlevel(
          final.tdist, final.weights, proposals, batch.weight)
    if code_prior_weight:
      loss += code_prior_weight * losses.code_prior(
          trainable['codes'], batch.rays.code_ids, batch.weight)
    return loss, {'loss': loss, 'mse': mse}

  return loss_fn


def make_train_step(model, optimizer, mesh, loss_fn, randomized=True,
                    random_background=False):
  """Jitted `train_step(state, batch, key, progress=None) -> (state, metrics)`.

  The batch is split over the mesh; each device computes gradients of its
  share, which one `lax.pmean` averages. Sampling noise is drawn for the
  global batch before the split, so results do not depend on the number of
  devices. The state argument is donated.

  Args:
    model: unbound `models.ConditionalNeRF`.
    optimizer: optax transform over {'params', 'codes'}.
    mesh: the data mesh.
    loss_fn: from `make_loss_fn`.
    randomized: jitter the samples (training); False is deterministic.
    random_background: compare each ray on a uniformly random background
      color (needs `batch.alpha`; see `make_loss_fn`).
  Returns:
    The jitted step. `progress` is None (the learning rate follows the step
    count) or f32[], the fraction of a wall-clock budget used (see
    `optim.make_schedule`). `metrics` holds f32[] loss, mse, psnr and
    grad_norm.
  """
  noise_dim = model.noise_dim()

  def per_device(state, batch, noise, background, progress):
    trainable = {'params': state.params, 'codes': state.codes}
    # Mark the replicated weights as per-device values, so each device's
    # gradient stays its own (pmap semantics) until the one explicit pmean;
    # otherwise shard_map's transpose would already psum them.
    local = lax.pcast(trainable, parallel.AXIS, to='varying')
    grads, metrics = jax.grad(loss_fn, has_aux=True)(local, batch, noise,
                                                     background)
    grads, metrics = lax.pmean((grads, metrics), parallel.AXIS)
    updates, opt_state = optimizer.update(grads, state.opt_state, trainable,
                                          progress=progress)
    trainable = optax.apply_updates(trainable, updates)
    metrics['grad_norm'] = optax.tree.norm(grads)
    metrics['psnr'] = metrics_lib.mse_to_psnr(metrics['mse'])
    new_state = state.replace(step=state.step + 1, params=trainable['params'],
                              codes=trainable['codes'], opt_state=opt_state)
    return new_state, metrics

  mapped = jax.shard_map(
      per_device, mesh=mesh,
      in_specs=(P(), P(parallel.AXIS), P(parallel.AXIS), P(parallel.AXIS),
                P()),
      out_specs=(P(), P()))

  def train_step(state, batch, key, progress=None):
    noise = background = None
    if randomized:
      noise = jax.random.uniform(key, (batch.rgb.shape[0], noise_dim))
      noise = lax.with_sharding_constraint(noise, parallel.data_sharding(mesh))
    if random_background:
      background = jax.random.uniform(jax.random.fold_in(key, 1),
                                      batch.rgb.shape)
      background = lax.with_sharding_constraint(
          background, parallel.data_sharding(mesh))
    if progress is not None:
      progress = jnp.asarray(progress, jnp.float32)
    return mapped(state, batch, noise, background, progress)

  return jax.jit(train_step, donate_argnums=0)


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
      holdout=data_cfg.holdout, share=share)


def build_experiment(config, scene=None, mesh=None):
  """Turns a config into everything a run needs.

  Args:
    config: ConfigDict from `configs.base.get_config` (or a diff of it).
    scene: an already loaded scene (else loaded from `config.data`).
    mesh: a mesh (default: all devices).
  Returns:
    `Experiment`.
  """
  scene = load_scene(config.data) if scene is None else scene
  mesh = parallel.create_mesh() if mesh is None else mesh
  parallel.check_divisible(config.train.batch_size, mesh, 'train.batch_size')
  model_cfg = config.model.to_dict()
  for section in ('field', 'proposal_field'):
    if not model_cfg[section]['scene_bound']:
      model_cfg[section]['scene_bound'] = float(scene.scene_bound)
  model = models.build_model(config.model_name, model_cfg, scene.background)
  freeze = [p.strip() for p in config.train.freeze.split(',') if p.strip()]
  optimizer = optim.make_optimizer(config.optim, config.train.steps, freeze)
  init_state = jax.jit(
      lambda key: create_train_state(model, optimizer, key, scene.num_codes,
                                     config.codes.dim,
                                     config.codes.init_scale),
      out_shardings=parallel.replicated(mesh))
  loss_fn = make_loss_fn(model, config.train.coarse_loss_weight,
                         config.train.interlevel_loss_weight,
                         config.codes.prior_weight)
  if config.train.random_background and scene.train.alphas is None:
    raise ValueError(
        'train.random_background needs training images with an alpha '
        f'channel, and the {config.data.name!r} scene at '
        f'{config.data.path!r} has none; set '
        '--config.train.random_background=False.')
  train_step = make_train_step(model, optimizer, mesh, loss_fn,
                               config.train.randomized,
                               config.train.random_background)
  return Experiment(config=config, scene=scene, model=model,
                    optimizer=optimizer, mesh=mesh, init_state=init_state,
                    train_step=train_step,
                    render_step=inference.make_render_step(model, mesh),
                    codes_render_step=inference.make_codes_render_step(
                        model, mesh))


def restore_or_init(experiment, ckpt, key):
  """Latest good checkpoint of `ckpt`, else a fresh state.

  Returns:
    (TrainState, restored: bool).
  Raises:
    checkpointing.CheckpointMismatchError: the checkpoint is of another model.
  """
  abstract = experiment.abstract_state()
  restored, step = ckpt.restore(abstract.as_dict())
  if restored is None:
    state = experiment.init_state(key)
    source = experiment.config.train.init_from
    if source:
      state = state.replace(params=transfer_params(experiment, source))
    return state, False
  logging.info('Resuming from checkpoint step %d.', step)
  return TrainState(**restored), True


def transfer_params(experiment, source_workdir):
  """Field weights of another run's latest checkpoint, for a new run.

  The source model must have the same field architecture; its codes and
  optimizer state are not used (the new scene has its own codes).

  Raises:
    FileNotFoundError: the source has no checkpoint.
    checkpointing.CheckpointMismatchError: the architectures differ.
  """
  src_dir = os.path.join(source_workdir, 'checkpoints')
  if not os.path.isdir(src_dir):
    raise FileNotFoundError(f'train.init_from={source_workdir} has no '
                            'checkpoints/ folder to start from.')
  src = checkpointing.Checkpointer(src_dir)
  try:
    params, step = src.restore_entry('params',
                                     experiment.abstract_state().params)
  finally:
    src.close()
  if params is None:
    raise FileNotFoundError(f'train.init_from={source_workdir} has no '
                            'checkpoint to start from.')
  logging.info('Starting from the field weights of %s step %d.',
               source_workdir, step)
  return parallel.replicate(params, experiment.mesh)


def train_and_evaluate(config, workdir, experiment=None):
  """Trains (resuming if possible), checkpoints, validates and evaluates.

  Args:
    config: the resolved ConfigDict.
    workdir: output folder (checkpoints, metrics.jsonl, tb/, val/, eval/).
    experiment: an `Experiment` for this config (built if None).
  Returns:
    dict of the final evaluation metrics (see `evaluators.image_metrics`).
  Raises:
    TrainingDivergedError: the loss became NaN/inf (the last good checkpoint
      is kept).
  """
  os.makedirs(workdir, exist_ok=True)
  is_main = jax.process_index() == 0
  exp = build_experiment(config) if experiment is None else experiment
  rng = jax.random.key(config.seed)
  init_key, train_key = jax.random.split(rng)
  ckpt = checkpointing.Checkpointer(
      os.path.join(workdir, 'checkpoints'),
      max_to_keep=config.train.keep_checkpoints)
  state, _ = restore_or_init(exp, ckpt, init_key)
  if is_main:
    checkpointing.save_config_json(workdir, json.loads(config.to_json()))
  writer = writers.MetricWriter(workdir, enabled=is_main)
  try:
    state = _train_loop(exp, state, ckpt, writer, workdir, train_key)
    evaluator = image_metrics.Evaluator(exp, split=config.eval.split,
                                        max_images=config.eval.max_images,
                                        save_images=config.eval.save_images)
    results = evaluator.run(state, os.path.join(workdir, 'eval'))
    writer.write_scalars(int(jax.device_get(state.step)),
                         {'psnr': results['psnr'], 'ssim': results['ssim']},
                         split='eval')
  finally:
    writer.close()
    ckpt.close()
  return results


def _train_loop(exp, state, ckpt, writer, workdir, train_key):
  """Steps until train.steps or train.minutes; returns the final state."""
  config = exp.config
  is_main = jax.process_index() == 0
  writer.write_hparams(json.loads(config.to_json()))
  tc = config.train
  sampler = sampler_lib.RaySampler(exp.scene.train, tc.batch_size, config.seed,
                                   jax.process_index(), jax.process_count())
  start = int(jax.device_get(state.step))
  clock = train_clock.TrainClock(tc.steps, tc.minutes,
                                 train_clock.read_clock(workdir, start),
                                 sync_every=tc.log_every)
  if clock.budget and start:
    logging.info('Resuming with %.1f of %.1f training minutes used.',
                 clock.seconds / 60.0, tc.minutes)
  pbar = tqdm.tqdm(total=tc.steps, initial=start, disable=not is_main,
                   desc='train', dynamic_ncols=True)
  window, window_start, window_steps = None, time.time(), 0
  step = start
  last_checked = start
  batch = parallel.shard_batch(sampler.batch(step), exp.mesh)
  # The clock starts after the first step (compilation) of this session.
  while not clock.done(step):
    state, step_metrics = exp.train_step(state, batch,
                                         jax.random.fold_in(train_key, step),
                                         clock.progress(step))
    # Prepare the next batch while this step runs, then wait for the step:
    # one step in flight at a time. Queuing many steps of a multi-device
    # program can deadlock XLA:CPU's collectives (devices share one thread
    # pool), and the wait costs nothing once the batch is ready.
    if step + 1 < tc.steps:
      batch = parallel.shard_batch(sampler.batch(step + 1), exp.mesh)
    jax.block_until_ready(step_metrics)
    step += 1
    clock.sync(step)
    window_steps += 1
    window = step_metrics if window is None else jax.tree.map(
        jnp.add, window, step_metrics)
    if step % tc.log_every == 0 or step == tc.steps:
      means = {k: float(v) / window_steps
               for k, v in jax.device_get(window).items()}
      _check_finite(means, step)
      last_checked = step
      elapsed = time.time() - window_start
      means['rays_per_s'] = window_steps * tc.batch_size / max(elapsed, 1e-9)
      means['psnr'] = float(metrics_lib.mse_to_psnr(means['mse']))
      means['train_minutes'] = clock.elapsed() / 60.0
      writer.write_scalars(step, means)
      postfix = dict(loss=f"{means['loss']:.4f}", psnr=f"{means['psnr']:.2f}",
                     rays_s=f"{means['rays_per_s']:.0f}")
      if clock.budget:  # the bar counts steps; show the binding budget too.
        postfix['min'] = f"{means['train_minutes']:.1f}/{tc.minutes:g}"
      pbar.set_postfix(**postfix)
      window, window_start, window_steps = None, time.time(), 0
    pbar.update(1)
    clock.pause()
    if tc.checkpoint_every and step % tc.checkpoint_every == 0:
      _check_finite(jax.device_get(step_metrics), step)
      _check_state_finite(state, step)
      ckpt.save(step, state.as_dict())
      if is_main:
        train_clock.write_clock(workdir, step, clock.elapsed())
    if tc.val_every and step % tc.val_every == 0:
      _validate(exp, state, step, workdir, writer, is_main)
    clock.resume()
  clock.pause()
  pbar.close()
  if last_checked != step and step > start:
    _check_finite(jax.device_get(step_metrics), step)
  if ckpt.latest_step() != step:
    _check_state_finite(state, step)
    ckpt.save(step, state.as_dict(), force=True)
  if is_main:
    train_clock.write_clock(workdir, step, clock.elapsed())
  ckpt.wait_until_finished()
  writer.flush()
  if clock.budget and step < tc.steps:
    logging.info('Time budget of %.1f min used at step %d of %d.',
                 tc.minutes, step, tc.steps)
  return state


def _check_finite(step_metrics, step):
  bad = {k: float(v) for k, v in step_metrics.items()
         if not np.isfinite(float(v))}
  if bad:
    raise TrainingDivergedError(
        f'Training diverged at step {step}: {bad}. The last good checkpoint '
        'is kept; lower optim.lr_init or enable optim.clip_grad_norm and '
        'restart from it.')


@jax.jit
def _all_finite(tree):
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x))
                            for x in jax.tree.leaves(tree)]))


def _check_state_finite(state, step):
  if not bool(_all_finite((state.params, state.codes))):
    raise TrainingDivergedError(
        f'Training diverged at step {step}: the parameters are not finite. '
        'The last good checkpoint is kept; lower optim.lr_init or enable '
        'optim.clip_grad_norm and restart from it.')


def _validate(exp, state, step, workdir, writer, is_main):
  """Renders the first validation view and logs its PSNR and a PNG."""
  frames = exp.scene.val
  if not len(frames):
    return
  out = exp.render(state, sampler_lib.image_rays(frames, 0))
  gt = frames.images[0]
  psnr = float(metrics_lib.psnr(out['rgb'], gt))
  writer.write_scalars(step, {'psnr': psnr}, split='val')
  if is_main:
    row = np.concatenate([gt, out['rgb'],
                          images.colorize_depth(out['depth'], out['acc'])], 1)
    images.save_png(os.path.join(workdir, 'val', f'step_{step:07d}.png'), row)
    writer.write_images(step, {'val/rgb_depth': row})
