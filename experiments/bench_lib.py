"""Pieces shared by the benchmark suites of `experiments/bench.py`.

Owns the step-at-a-time `Trainer` (compiled train step, training clock), the
config builder with command-line overrides, the environment and memory
reports, and the lego time-to-PSNR curve (`train_curve`, `plot_curve`).
Nothing here reads flags: bench.py passes values in.
"""

import ast
import os
import platform
import resource
import sys
import time

from absl import app
from absl import logging
import jax
import jaxlib
import numpy as np

from condnerf import experiment as experiment_lib
from condnerf import metrics as metrics_lib
from condnerf import train_clock
from condnerf import train_lib
from condnerf.configs import common
from condnerf.data import sampler as sampler_lib
from experiments.configs import lego

CONFIG_ARGS = {'nerf': '', 'fast': 'fast', 'occupancy': 'fast,occupancy'}


def config_file(name):
  """'experiments/configs/lego.py[:ARGS]' of a benchmarked config name."""
  arg = CONFIG_ARGS[name]
  return 'experiments/configs/lego.py' + (f':{arg}' if arg else '')


def environment():
  """What ran: versions, devices, XLA flags."""
  devices = jax.devices()
  return {
      'jax_version': jax.__version__,
      'jaxlib_version': jaxlib.__version__,
      'python': platform.python_version(),
      'backend': jax.default_backend(),
      'device_kind': devices[0].device_kind,
      'device_count': jax.device_count(),
      'local_device_count': jax.local_device_count(),
      'process_count': jax.process_count(),
      'cpu_count': os.cpu_count(),
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
  }


def peak_rss_mb():
  """Peak resident memory of this process so far, in MiB (Linux: KiB)."""
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return rss / (1 << 20) if sys.platform == 'darwin' else rss / 1024.0


def peak_device_mb():
  """Peak memory of the first device in MiB, or None where not reported."""
  stats = jax.devices()[0].memory_stats()
  if not stats or 'peak_bytes_in_use' not in stats:
    return None
  return stats['peak_bytes_in_use'] / (1 << 20)


def parse_overrides(items):
  """['a.b=1', ...] -> {'a.b': 1, ...}; values are Python literals or str."""
  out = {}
  for item in items:
    key, has_value, text = item.partition('=')
    if not has_value or not key.strip():
      raise app.UsageError(f'--override={item!r}: use SECTION.KEY=VALUE.')
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    out[key.strip()] = value
  return out


def make_config(name, data_path, appearance, batch_size, overrides):
  """lego.py[:fast] with the benchmark's fields changed.

  Returns:
    (ConfigDict, dict of every field changed from the config file).
  """
  config = lego.get_config(CONFIG_ARGS[name])
  applied = {'data.path': data_path}
  if appearance:
    applied['data.appearance'] = appearance
  if batch_size:
    applied['train.batch_size'] = batch_size
  applied.update(overrides)
  try:
    config = common.with_overrides(config, applied)
  except (KeyError, ValueError) as e:
    raise app.UsageError(f'--override: {e.args[0]}.') from e
  return config, applied


def median_seconds(fn, repeats):
  """Median wall time of `fn()` (which must block) after one warm-up call."""
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


class Trainer:
  """A state and its compiled train step, stepped one step at a time.

  Steps through `train_lib.StepRunner` (the training loop's batches and
  keys) and keeps a `train_clock.TrainClock` of training time (steps and
  batch preparation; compilation happens before): with `train.minutes` set,
  the learning rate decays over that budget, as in `experiments.main`.
  With `train.init_from` set, the field weights start from that run's
  (`experiment.start_from`, as in `experiments.main`), so a transfer is
  timed like a fresh start.
  """

  def __init__(self, exp, seed):
    self.exp = exp
    self.batch_size = exp.config.train.batch_size
    init_key, train_key = jax.random.split(jax.random.key(seed))
    self.state = exp.init_state(init_key)
    self.state = experiment_lib.start_from(exp, self.state)
    self.metrics = None
    self.clock = train_clock.TrainClock(exp.config.train.steps,
                                        exp.config.train.minutes)
    self.runner = train_lib.StepRunner(exp, train_key, prefetch=False,
                                       seed=seed)
    start = time.perf_counter()
    self.compiled = exp.train_step.lower(
        self.state, self.runner.prepare(),
        jax.random.fold_in(train_key, 0), self.clock.progress(0)).compile()
    self.compile_seconds = time.perf_counter() - start
    self.runner.step_fn = self.compiled

  @property
  def step(self):
    """Steps taken."""
    return self.runner.step

  def flops_per_ray(self):
    """XLA's flops of one device's step over that device's rays."""
    cost = self.compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
      cost = cost[0]
    rays_per_device = self.batch_size / self.exp.mesh.devices.size
    return float(cost['flops']) / rays_per_device

  def run(self, num_steps, until_seconds=None):
    """Takes up to `num_steps` steps, stopping once the clock passes
    `until_seconds` of training or the run's own budget is used.

    Returns:
      list of per-step seconds, excluding batch preparation.
    """
    times = []
    for _ in range(num_steps):
      if self.clock.done(self.step) or (
          until_seconds is not None and self.clock.shared >= until_seconds):
        break
      self.clock.resume()
      self.runner.prepare()
      start = time.perf_counter()
      self.state, self.metrics = self.runner(self.state,
                                             self.clock.progress(self.step))
      times.append(time.perf_counter() - start)
      self.clock.pause()
      self.clock.sync(self.step)
    return times

  def loss(self):
    """The last step's loss (None before any step); raises if not finite."""
    if self.metrics is None:
      return None
    loss = float(jax.device_get(self.metrics['loss']))
    if not np.isfinite(loss):
      raise train_lib.TrainingDivergedError(
          f'Loss became {loss} by step {self.step}.')
    return loss


def evaluate_views(trainer, views):
  """Mean PSNR and SSIM of test views rendered with their own codes."""
  frames = trainer.exp.scene.test
  psnrs, ssims = [], []
  for view in views:
    out = trainer.exp.render(trainer.state,
                             sampler_lib.image_rays(frames, int(view)))
    psnrs.append(float(metrics_lib.psnr(out['rgb'], frames.images[view])))
    ssims.append(float(metrics_lib.ssim(out['rgb'], frames.images[view])))
  return float(np.mean(psnrs)), float(np.mean(ssims))


def plot_curve(curve, path, title):
  """Writes PSNR against training minutes as a PNG."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6, 4))
  ax.plot([p['minutes'] for p in curve], [p['psnr'] for p in curve],
          marker='o')
  ax.set_xlabel('training minutes')
  ax.set_ylabel('test PSNR (dB)')
  ax.set_title(title)
  ax.grid(True, alpha=0.3)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)


def samples_per_ray(trainer):
  """Field samples per ray of the last step: the occupancy sampler's
  packed samples over the batch's rays (its `samples_per_ray` metric), else
  the samples every level draws (`sum(model.num_samples)`)."""
  metrics = trainer.metrics
  if metrics is not None and 'samples_per_ray' in metrics:
    return float(jax.device_get(metrics['samples_per_ray']))
  return float(sum(trainer.exp.config.model.num_samples))


def train_curve(trainer, views, minutes, points, score=None):
  """Trains within the run's budget, scoring `views` at `points` times.

  Args:
    trainer: a `Trainer`; its config's `train.minutes` is the budget.
    views: test-view indices scored at each point.
    minutes: training minutes of the whole curve.
    points: evaluations, evenly spaced on the training clock (evaluation
      time is not counted).
    score: optional function of the trainer returning a dict of further
      figures for each point (e.g. the statue's NeRF-W half-image PSNR).
  Returns:
    (curve: list of {minutes, step, psnr, ssim, samples_per_ray,
    train_rays_per_s, field_evals_per_s}, per-step seconds). The rates are
    over the training time since the previous point; samples_per_ray is
    the last step's (`samples_per_ray`).
  """
  budget = 60.0 * minutes
  curve, step_times = [], []
  last_step, last_clock = trainer.step, trainer.clock.shared
  for k in range(1, points + 1):
    step_times += trainer.run(trainer.exp.config.train.steps - trainer.step,
                              until_seconds=budget * k / points)
    trainer.loss()
    psnr, ssim = evaluate_views(trainer, views)
    seconds = max(1e-9, trainer.clock.shared - last_clock)
    rays_per_s = (trainer.step - last_step) * trainer.batch_size / seconds
    per_ray = samples_per_ray(trainer)
    last_step, last_clock = trainer.step, trainer.clock.shared
    clock = trainer.clock.shared / 60.0
    curve.append({'minutes': clock, 'step': trainer.step, 'psnr': psnr,
                  'ssim': ssim, 'samples_per_ray': per_ray,
                  'train_rays_per_s': rays_per_s,
                  'field_evals_per_s': per_ray * rays_per_s,
                  **(score(trainer) if score else {})})
    logging.info('curve: %.2f min, step %d: PSNR %.2f, SSIM %.4f, %.1f '
                 'samples/ray, %.0f rays/s.', clock, trainer.step, psnr,
                 ssim, per_ray, rays_per_s)
    if trainer.clock.done(trainer.step):
      break
  return curve, step_times
