"""Training: state, the data-parallel step, and the train-and-evaluate loop.

Owns `TrainState`, `make_loss_fn`, `make_train_step` and
`train_and_evaluate`. The step is a per-device function mapped with
`jax.shard_map` over the ('data',) mesh and reduced with one `lax.pmean`,
wrapped in `jax.jit`. The loop says what happens each step; when to log,
check, checkpoint and stop is in `train_hooks`, and the config becomes an
`Experiment` in `experiment`.
"""

import contextlib
import functools
import json
import os
from typing import Any

from absl import logging
from flax import struct
import jax
from jax import lax
from jax.sharding import PartitionSpec as P
import jax.numpy as jnp
import numpy as np
import optax

from condnerf import checkpointing
from condnerf import codes as codes_lib
from condnerf import divergence
from condnerf import images
from condnerf import losses
from condnerf import metrics as metrics_lib
from condnerf import parallel
from condnerf import rendering
from condnerf import structs
from condnerf import train_clock
from condnerf import train_hooks
from condnerf import workdir as workdir_lib
from condnerf import writers
from condnerf.data import sampler as sampler_lib
from condnerf.evaluators import image_metrics


# Kept here too: callers catch train_lib.TrainingDivergedError.
TrainingDivergedError = divergence.TrainingDivergedError


@struct.dataclass
class TrainState:
  """Everything a step updates.

  Attributes:
    step: i32[], number of steps taken.
    params: the field's linen 'params' collection.
    codes: the code table, {'appearance': f32[num_codes, code_dim]} (+
      'palette' f32[num_codes, K, 3] with a palette head).
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
                       code_init_scale, palette_center=None, light=None):
  """Initialises params, codes and optimizer state.

  Args:
    model: unbound `models.ConditionalNeRF`.
    optimizer: optax transform over {'params', 'codes'}.
    key: jax random key.
    num_codes: rows of the appearance-code table.
    code_dim: width of each code.
    code_init_scale: std of the initial code entries.
    palette_center: palette head: None, or f32[num_codes, 3] the color each
      code's palette starts near (see `codes.init_codes`).
    light: shaded head: f32[num_codes, 9, 3] the light codes' start.
  Returns:
    `TrainState` at step 0.
  """
  init_key, code_key = jax.random.split(key)
  rays = structs.dummy_rays(1, jnp)
  codes = codes_lib.init_codes(code_key, num_codes, code_dim, code_init_scale,
                               model.palette_size(), palette_center,
                               light=light)
  params = model.init(init_key, rays,
                      codes_lib.lookup(codes, jnp.zeros((1,), jnp.int32))
                      )['params']
  opt_state = optimizer.init({'params': params, 'codes': codes})
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, codes=codes,
                    opt_state=opt_state)


def make_loss_fn(model, coarse_loss_weight, interlevel_loss_weight,
                 code_prior_weight, residual_weight=0.0,
                 palette_entropy_weight=0.0, palette_usage_weight=0.0,
                 palette_usage_until=0.0, palette_entropy_from=0.0,
                 palette_assignment_weight=0.0, palette_assignment_from=0.0,
                 total_steps=1, normal_weight=0.0, light_prior_weight=0.0,
                 light_anchor=None):
  """`loss_fn(trainable, batch, noise, background, step) -> (loss, metrics)`.

  The loss of one device's share of the batch.

  Args:
    model: unbound `models.ConditionalNeRF`.
    coarse_loss_weight: photometric weight of non-final colored levels.
    interlevel_loss_weight: weight of the proposal loss (proposal sampler).
    code_prior_weight: weight of the L2 code prior.
    residual_weight: palette head: weight of its residual's squared size.
    palette_entropy_weight: palette head: weight of the entropy of its
      palette weights (pushes each point towards one entry).
    palette_usage_weight: palette head: weight of `losses.palette_usage`
      (keeps the batch from using one entry for everything) at the start.
    palette_usage_until: it decays linearly to 0 by this share of training
      (0 = constant): even use breaks the symmetry between entries early,
      then each part settles on the entries that fit it.
    palette_entropy_from: the entropy weight ramps in linearly from this
      share of training to the end (0 = constant): sharpening too early
      lets one entry take every part.
    palette_assignment_weight: palette head: weight of
      `losses.palette_assignment` (pulls each opaque pixel's weights towards
      the entry whose color fits it), from the share
      `palette_assignment_from` of training on (once palettes mean
      something).
    total_steps: the run's steps (training progress when no wall-clock
      budget gives it).
    normal_weight: shaded head with predicted normals: weight of their
      squared gap to the density field's normals (both are trained).
    light_prior_weight: shaded head: weight of `losses.light_prior`, the
      pull of the light codes towards `light_anchor` f32[num_codes, 9, 3]
      (their start).
  Returns:
    The loss function `loss_fn(trainable, batch, noise, background=None,
    step=0, progress=None)`; `trainable` is {'params', 'codes'}, `batch` a
    `structs.Batch`, `step` i32[] the step count, `progress` None or f32[]
    the share of training done (see `optim.make_schedule`), `noise` None or
    f32[num_rays, noise_dim], and
    `background` None (the scene's background) or f32[num_rays, 3]: each
    ray's target and rendering are both re-composited on this color, using
    `batch.alpha` and the rendered opacity. A background the model cannot
    predict leaves it no way to paint it into empty space.
  """
  colored = model.colored_levels()

  def loss_fn(trainable, batch, noise, background=None, step=0,
              progress=None):
    ray_codes = codes_lib.lookup(trainable['codes'], batch.rays.code_ids)
    outputs = model.apply({'params': trainable['params']}, batch.rays,
                          ray_codes, noise)
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
    if light_prior_weight:
      loss += light_prior_weight * losses.light_prior(
          trainable['codes'], light_anchor, batch.rays.code_ids,
          batch.weight)
    done = step / total_steps if progress is None else progress
    usage_scale = (jnp.maximum(0.0, 1.0 - done / palette_usage_until)
                   if palette_usage_until else 1.0)
    entropy_scale = (jnp.clip((done - palette_entropy_from) /
                              (1.0 - palette_entropy_from), 0.0, 1.0)
                     if palette_entropy_from else 1.0)
    for i in colored:
      extras = outputs[i].extras or {}
      for name, weight, scale in (
          ('residual', residual_weight, 1.0),
          ('entropy', palette_entropy_weight, entropy_scale),
          ('normal_error', normal_weight, 1.0)):
        if name in extras and weight:
          loss += weight * scale * losses.weighted_mean(extras[name],
                                                        batch.weight)
      if 'usage' in extras and palette_usage_weight:
        loss += palette_usage_weight * usage_scale * losses.palette_usage(
            extras['usage'], batch.weight)
      if 'log_weights' in extras and palette_assignment_weight:
        acc = jax.lax.stop_gradient(outputs[i].acc)
        opaque = batch.weight * ((batch.alpha > 0.99) & (acc > 0.99))
        loss += palette_assignment_weight * (
            done >= palette_assignment_from) * losses.palette_assignment(
                extras['log_weights'], outputs[i].weights, extras['usage'],
                ray_codes['palette'], batch.rgb, opaque)
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
    grads, metrics = jax.grad(loss_fn, has_aux=True)(
        local, batch, noise, background, state.step, progress)
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


def train_and_evaluate(config, workdir, experiment=None,
                       allow_config_change=False):
  """Trains (resuming if possible), checkpoints, validates and evaluates.

  The run folder is protected: the data loads before any folder is made, a
  training holds `workdir.WorkdirLock` while it runs, and a resumed run whose
  config differs from the recorded one is refused unless
  `allow_config_change` (`workdir.record_config`).

  Args:
    config: the resolved ConfigDict.
    workdir: output folder (checkpoints, metrics.jsonl, tb/, val/, eval/).
    experiment: an `Experiment` for this config (built if None).
    allow_config_change: resume with a config that differs from the
      recorded one (the old one is kept in config.json's history).
  Returns:
    dict of the final evaluation metrics (see `evaluators.image_metrics`).
  Raises:
    divergence.TrainingDivergedError: the run diverged (the last good
      checkpoint is kept).
    TrainingInterrupted: SIGINT/SIGTERM; the current step was saved first.
    workdir.WorkdirLockedError, workdir.ConfigChangedError: see above.
  """
  # Imported here: `experiment` builds on this module's steps.
  from condnerf import experiment as experiment_lib  # pylint: disable=g-import-not-at-top
  is_main = jax.process_index() == 0
  exp = (experiment_lib.build_experiment(config) if experiment is None
         else experiment)
  os.makedirs(workdir, exist_ok=True)
  lock = workdir_lib.WorkdirLock(workdir, train_hooks.say) if is_main else None
  with lock or contextlib.nullcontext():
    init_key, train_key = jax.random.split(jax.random.key(config.seed))
    ckpt = checkpointing.Checkpointer(
        workdir_lib.checkpoint_dir(workdir),
        max_to_keep=config.train.keep_checkpoints)
    writer = None
    try:
      state, restored = experiment_lib.restore_or_init(exp, ckpt, init_key)
      start = int(jax.device_get(state.step))
      workdir_lib.record_config(
          workdir, json.loads(config.to_json()), start if restored else None,
          allow_config_change, write=is_main)
      if restored and is_main:
        writers.drop_rows_after(workdir, start)
        train_hooks.say(f'Resumed from step {start} of {config.train.steps} '
                        f'in {ckpt.directory}.')
      writer = writers.MetricWriter(workdir, enabled=is_main)
      try:
        state = _train_loop(exp, state, ckpt, writer, workdir, train_key)
      except divergence.TrainingDivergedError as e:
        train_hooks.discard_suspect(ckpt, e.first_suspect)
        raise
      evaluator = image_metrics.Evaluator(exp, split=config.eval.split,
                                          max_images=config.eval.max_images,
                                          save_images=config.eval.save_images)
      results = evaluator.run(state, os.path.join(workdir, 'eval'))
      writer.write_scalars(int(jax.device_get(state.step)),
                           {'psnr': results['psnr'], 'ssim': results['ssim']},
                           split='eval')
    finally:
      if writer is not None:
        writer.close()
      ckpt.close()
  return results


def _train_loop(exp, state, ckpt, writer, workdir, train_key):
  """Steps until train.steps or train.minutes; returns the final state."""
  config = exp.config
  tc = config.train
  writer.write_hparams(json.loads(config.to_json()))
  sampler = sampler_lib.RaySampler(exp.scene.train, tc.batch_size, config.seed,
                                   jax.process_index(), jax.process_count())
  step = start = int(jax.device_get(state.step))
  clock = train_clock.TrainClock(tc.steps, tc.minutes,
                                 train_clock.read_clock(workdir, start),
                                 sync_every=tc.log_every)
  if clock.budget and start:
    logging.info('Resuming with %.1f of %.1f training minutes used.',
                 clock.seconds / 60.0, tc.minutes)
  guard = divergence.DivergenceGuard(**tc.guard.to_dict())
  log = train_hooks.StepLog(writer, tc, clock, start)
  save = functools.partial(train_hooks.save, ckpt, guard, workdir, clock)
  batch = parallel.shard_batch(sampler.batch(step), exp.mesh)
  # The clock starts after the first step (compilation) of this session.
  with train_hooks.StopSignals() as stop:
    while not clock.done(step):
      state, step_metrics = exp.train_step(
          state, batch, jax.random.fold_in(train_key, step),
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
      log.add(step, step_metrics)
      if step % tc.log_every == 0 or step == tc.steps:
        log.write(guard, step)
      clock.pause()
      if tc.checkpoint_every and step % tc.checkpoint_every == 0:
        log.observe(guard)
        save(state, step)
      if tc.val_every and step % tc.val_every == 0:
        _validate(exp, state, step, workdir, writer,
                  jax.process_index() == 0)
      clock.resume()
      if stop.requested(step, tc.log_every):
        log.observe(guard)
        train_hooks.stop(save(state, step, force=True), ckpt, step, stop.signum)
  clock.pause()
  log.close()
  log.observe(guard)
  if ckpt.latest_step() != step:
    save(state, step, force=True)
  ckpt.wait_until_finished()
  writer.flush()
  if clock.budget and step < tc.steps:
    logging.info('Time budget of %.1f min used at step %d of %d.',
                 tc.minutes, step, tc.steps)
  return state


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
