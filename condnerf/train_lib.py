"""Training: the train-and-evaluate loop and the step runner it drives.

Owns `StepRunner` (batches, keys, one step in flight) and
`train_and_evaluate` (start or resume, step, checkpoint, validate,
evaluate). The loop says what happens each step; when to log, check,
checkpoint and stop is in `train_hooks`; the step itself is `train_step`'s,
built into an `Experiment` by `experiment`; the evaluators at the end are
those `config.evals` names (`evaluators.build`).
"""

import contextlib
import functools
import json
import os

from absl import logging
import jax
import numpy as np

from condnerf import checkpointing
from condnerf import config_record
from condnerf import divergence
from condnerf import evaluators
from condnerf import experiment as experiment_lib
from condnerf import images
from condnerf import metrics as metrics_lib
from condnerf import parallel
from condnerf import train_clock
from condnerf import train_hooks
from condnerf import train_lock
from condnerf import workdir as workdir_lib
from condnerf import writers
from condnerf.data import base
from condnerf.data import sampler as sampler_lib


# Kept here too: callers catch train_lib.TrainingDivergedError.
TrainingDivergedError = divergence.TrainingDivergedError


class StepRunner:
  """Takes training steps one at a time: the sampler, per-step keys, and one
  step in flight.

  The batch of step s is `sampler.batch(s)` and its key
  `fold_in(train_key, s)`, so a run resumed at any step draws what an
  uninterrupted one would. The training loop and the benchmark's `Trainer`
  step through this.

  Attributes:
    step: the number of steps taken (the next step's index).
    sampler: `data.sampler.RaySampler` of the training split.
  """

  def __init__(self, exp, train_key, start=0, step_fn=None, prefetch=True,
               seed=None):
    """Args:
      exp: `experiment.Experiment`.
      train_key: the run's training key.
      start: the step to continue from.
      step_fn: the step to call (default `exp.train_step`; the benchmark
        passes its compiled one).
      prefetch: prepare the next batch while a step runs (training); False
        leaves it to `prepare` or the next call (per-step timings).
      seed: the sampler's seed (default `config.seed`).
    """
    self.exp, self.train_key, self.step = exp, train_key, start
    self.step_fn = exp.train_step if step_fn is None else step_fn
    self._own_step = step_fn is None  # a given step_fn takes every step.
    self.prefetch = prefetch
    self.sampler = sampler_lib.RaySampler(
        exp.scene.train, exp.config.train.batch_size,
        exp.config.seed if seed is None else seed, jax.process_index(),
        jax.process_count(), exp.config.train.frame_shards)
    self._next = None

  def batch(self, step):
    """`structs.Batch` of step `step`, sharded over the mesh."""
    return parallel.shard_batch(self.sampler.batch(step), self.exp.mesh)

  def prepare(self):
    """Makes the next step's batch now and waits until it is on the devices
    (so that a timed call times the step alone); returns it."""
    if self._next is None:
      self._next = jax.block_until_ready(self.batch(self.step))
    return self._next

  def call_size(self):
    """Steps the next call takes: `train.steps_per_call` K from a multiple
    of K with K steps left (so the periodic actions, at multiples of K,
    land between calls), else 1 (a run resumed off a multiple, the last
    steps)."""
    k = self.exp.config.train.get('steps_per_call', 1)
    if (k > 1 and self._own_step and self.exp.train_steps is not None
        and self.step % k == 0
        and self.step + k <= self.exp.config.train.steps):
      return k
    return 1

  def __call__(self, state, progress=None):
    """Takes step `self.step` (or `call_size()` steps from it in one call);
    returns (state, metrics) once they are done; `progress` is the budget's
    share used, for every step of the call.

    Only one call is ever in flight: queuing many steps of a multi-device
    program can deadlock XLA:CPU's collectives (devices share one thread
    pool), and the wait costs nothing once the next batch is ready.
    """
    count = self.call_size()
    if count > 1:
      batches = tuple(self.batch(self.step + i) for i in range(count))
      keys = tuple(jax.random.fold_in(self.train_key, self.step + i)
                   for i in range(count))
      state, metrics = self.exp.train_steps(
          state, batches, keys,
          None if progress is None else (progress,) * count)
      self._next = None
    else:
      batch = self._next if self._next is not None else self.batch(self.step)
      state, metrics = self.step_fn(
          state, batch, jax.random.fold_in(self.train_key, self.step),
          progress)
      self._next = None
    if (self.prefetch and self.step + count < self.exp.config.train.steps
        and count == 1):
      self._next = self.batch(self.step + 1)
    jax.block_until_ready((state, metrics) if not self.prefetch else metrics)
    self.step += count
    return state, metrics


def train_and_evaluate(config, workdir, experiment=None,
                       allow_config_change=False, profile_steps=0):
  """Trains (resuming if possible), checkpoints, validates and evaluates.

  The run folder is protected: the data loads before any folder is made, a
  training holds `train_lock.WorkdirLock` while it runs, and a resumed run whose
  config differs from the recorded one is refused unless
  `allow_config_change` (`config_record.record_config`).

  Args:
    config: the resolved ConfigDict.
    workdir: output folder (checkpoints, metrics.jsonl, tb/, val/, and one
      folder per evaluator of `config.evals`, such as eval/).
    experiment: an `Experiment` for this config (built if None).
    allow_config_change: resume with a config that differs from the
      recorded one (the old one is kept in config.json's history).
    profile_steps: write a JAX profiler trace of this many steps, after
      the first one of this session (which compiles), to
      `<workdir>/profile/` (TensorBoard's profile plugin reads it).
  Returns:
    dict evaluator name -> its results (`results['eval']['psnr']`; see
    `evaluators`).
  Raises:
    divergence.TrainingDivergedError: the run diverged (the last good
      checkpoint is kept).
    TrainingInterrupted: SIGINT/SIGTERM; the current step was saved first.
    train_lock.WorkdirLockedError, config_record.ConfigChangedError: see above.
  """
  is_main = jax.process_index() == 0
  exp = (experiment_lib.build_experiment(config) if experiment is None
         else experiment)
  os.makedirs(workdir, exist_ok=True)
  lock = train_lock.WorkdirLock(workdir, train_hooks.say) if is_main else None
  with lock or contextlib.nullcontext():
    init_key, train_key = jax.random.split(jax.random.key(config.seed))
    ckpt = checkpointing.Checkpointer(
        workdir_lib.checkpoint_dir(workdir),
        max_to_keep=config.train.keep_checkpoints)
    writer = None
    try:
      state = _start(exp, ckpt, workdir, init_key, allow_config_change)
      writer = writers.MetricWriter(workdir, enabled=is_main)
      try:
        state = _train_loop(exp, state, ckpt, writer, workdir, train_key,
                            train_hooks.Profiler(
                                os.path.join(workdir, 'profile'),
                                profile_steps))
      except divergence.TrainingDivergedError as e:
        train_hooks.discard_suspect(ckpt, e.first_suspect)
        raise
      results = evaluators.run(evaluators.build(config, exp), state, workdir)
      _write_eval_scalars(writer, int(jax.device_get(state.step)), results)
    finally:
      if writer is not None:
        writer.close()
      ckpt.close()
  return results


def _start(exp, ckpt, workdir, init_key, allow_config_change):
  """The state to train from (restored or new), with the config recorded."""
  is_main = jax.process_index() == 0
  state, restored = experiment_lib.restore_or_init(exp, ckpt, init_key)
  start = int(jax.device_get(state.step))
  config_record.record_config(
      workdir, json.loads(exp.config.to_json()), start if restored else None,
      allow_config_change, write=is_main)
  if restored and is_main:
    writers.drop_rows_after(workdir, start)
    train_hooks.say(f'Resumed from step {start} of {exp.config.train.steps} '
                    f'in {ckpt.directory}.')
  return state


def _write_eval_scalars(writer, step, results):
  """Logs each evaluator's image metrics under its name (split 'eval')."""
  for name, result in results.items():
    scalars = {k: result[k] for k in ('psnr', 'ssim', 'lpips')
               if isinstance(result.get(k), float)}
    if scalars:
      writer.write_scalars(step, scalars, split=name)


def _train_loop(exp, state, ckpt, writer, workdir, train_key, profiler):
  """Steps until train.steps or train.minutes; returns the final state.

  Each pass is one step (`StepRunner`); the periodic actions (log, check,
  checkpoint, validate, stop on a signal) are `train_hooks`', and the
  checkpoints and validations are kept off the training clock.
  """
  tc = exp.config.train
  writer.write_hparams(json.loads(exp.config.to_json()))
  runner = StepRunner(exp, train_key, start=int(jax.device_get(state.step)))
  train = exp.scene.train
  if train.global_indices is not None:
    held = base.Share(jax.process_index(), jax.process_count(),
                      train_shards=tc.frame_shards).train_shard_range()
    train_hooks.say(
        f'Process {jax.process_index()} of {jax.process_count()} reads '
        f'{len(train)} of the {train.split_size} training frames (shards '
        f'{held.start}-{held.stop - 1} of train.frame_shards='
        f'{tc.frame_shards}).')
  clock = train_clock.TrainClock(
      tc.steps, tc.minutes, train_clock.read_clock(workdir, runner.step),
      sync_every=tc.log_every)
  if clock.budget and runner.step:
    logging.info('Resuming with %.1f of %.1f training minutes used.',
                 clock.seconds / 60.0, tc.minutes)
  guard = divergence.DivergenceGuard(**tc.guard.to_dict())
  log = train_hooks.StepLog(writer, tc, clock, runner.step)
  save = functools.partial(train_hooks.save, ckpt, guard, workdir, clock)
  # The clock starts after the first step (compilation) of this session.
  with train_hooks.StopSignals() as stop:
    while not clock.done(runner.step):
      state, step_metrics = runner(state, clock.progress(runner.step))
      step = runner.step
      profiler.after_step(step_metrics)
      clock.sync(step)
      log.add(step, step_metrics)
      if step % tc.log_every == 0 or step == tc.steps:
        log.write(guard, step)
      clock.pause()
      _checkpoint_and_validate(exp, state, step, log, guard, save, writer,
                               workdir)
      clock.resume()
      if stop.requested(step, tc.log_every):
        log.observe(guard)
        train_hooks.stop(save(state, step, force=True), ckpt, step, stop.signum)
  clock.pause()
  profiler.stop()
  log.close()
  log.observe(guard)
  if ckpt.latest_step() != runner.step:
    save(state, runner.step, force=True)
  ckpt.wait_until_finished()
  writer.flush()
  if clock.budget and runner.step < tc.steps:
    logging.info('Time budget of %.1f min used at step %d of %d.',
                 tc.minutes, runner.step, tc.steps)
  return state


def _checkpoint_and_validate(exp, state, step, log, guard, save, writer,
                             workdir):
  """The periodic actions off the training clock: checkpoint, validate."""
  tc = exp.config.train
  if tc.checkpoint_every and step % tc.checkpoint_every == 0:
    log.observe(guard)
    save(state, step)
  if tc.val_every and step % tc.val_every == 0:
    _validate(exp, state, step, workdir, writer, jax.process_index() == 0)


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
