r"""Benchmarks: matmul rate, train/render throughput, MFU, edit times, curves.

  python -m experiments.bench --suite=quick           # small sizes, minutes
  python -m experiments.bench --suite=full --out=runs/bench/full.json
  python -m experiments.bench --suite=full --data=../shared/data/lego
  python -m experiments.bench --suite=lego --data=../shared/data/lego \
      --config=fast --minutes=30 --out=runs/bench/lego_fast.json
Prints one JSON document on stdout (progress goes to stderr) and writes the
same document to --out when given.

quick / full suites:
  matmul.<width>     f32 `x[rows, w] @ W[w, w]` under jit, rows split over
                     every device like a train batch (median over repeats);
                     `gflops_one_device` is the same product on one device.
  matmul_gflops      the rate at width 256 (the vanilla NeRF trunk), the
                     reference of every `mfu_vs_256`.
  configs.<name>     `nerf` = experiments/configs/lego.py, `fast` =
                     lego.py:fast, trained on a procedural chair with
                     appearance variants (or on --data). train_step_ms is the
                     median of --steps steps after compilation; every step is
                     waited for before the next is dispatched.
                     model_flops_per_ray is XLA's `cost_analysis()` flop
                     count of the compiled train step (forward + backward +
                     optimizer update of one device's program) divided by the
                     rays one device processes per step. mfu = model flops/s
                     over the matmul rate at the config's trunk width;
                     mfu_vs_256 uses `matmul_gflops`. render_rays_per_s times
                     `inference.render_rays` (compilation excluded).
                     peak_rss_mb is the process's peak resident memory so far.
  edit_seconds       the `fast` config trained --edit_train_steps steps on
                     the chair variants, then `edit.methods.run_edit` per
                     method on --scribbles foreground pixels (alpha > 0.99) of
                     test view 0 with target #2f5cff: info.seconds and
                     info.compile_seconds of each method.
  precision          the PSNR cost of `model.dtype='bfloat16'`: the fast
                     config's bfloat16 twin trained as many steps from the
                     same seed, both scored on every test view
                     (psnr_cost_db = float32 - bfloat16). On CPUs bfloat16
                     matmuls are emulated, so only the PSNR is meaningful
                     there; step times matter on GPU/TPU.
lego suite: trains --config on --data with a budget of --minutes of training
time (`train.minutes`, so the learning rate decays over it) and evaluates
PSNR/SSIM over --eval_images evenly spaced test views at --points times
evenly spaced on that clock (evaluation is not counted), giving
`curve: [{minutes, step, psnr, ssim, samples_per_ray, train_rays_per_s,
field_evals_per_s}]` and a PNG of PSNR against minutes next to --out
(`<out without .json>.png`, else bench_curve.png in the cwd). With
--reference=CONFIG that config trains first, in the same process, under
`reference`, and `ratios` compares the two (`bench_lego`):
  python -m experiments.bench --suite=lego --data=../shared/data/lego \
      --config=occupancy --reference=fast --minutes=10
real suite: fern, statue_of_liberty and ethiopian_head under --data_root,
each trained with its experiment config for --minutes like the lego suite,
plus the statue's NeRF-W half-image PSNR at each point, and renders
(`bench_real`):
  python -m experiments.bench --suite=real --minutes=10 --out=runs/bench/real.json
"""

# pylint: disable=g-bad-import-order
from experiments import cli  # first: sets up CPU devices before jax loads.

import contextlib
import os
import json
import sys
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np

from condnerf import experiment as experiment_lib
from condnerf import inference
from condnerf import parallel
from condnerf.data import chair_files
from condnerf.data import sampler as sampler_lib
from condnerf.data import variants
from condnerf.edit import methods as methods_lib
from condnerf.edit import scribbles
from experiments import bench_lego
from experiments import bench_lib
from experiments import bench_real
# pylint: enable=g-import-not-at-top,wrong-import-position

_SUITE = flags.DEFINE_enum('suite', 'quick', ['quick', 'full', 'lego', 'real'],
                           'Which benchmark to run (see the module doc).')
_CONFIGS = flags.DEFINE_list('configs', ['nerf', 'fast'],
                             'quick/full: configs to benchmark.')
_CONFIG = flags.DEFINE_enum('config', 'fast', list(bench_lib.CONFIG_ARGS),
                            'lego: the config to train.')
_REFERENCE = flags.DEFINE_enum(
    'reference', '', [''] + list(bench_lib.CONFIG_ARGS),
    'lego: a config trained first in the same process, for ratios.')
_DATA = flags.DEFINE_string(
    'data', '', 'Blender-format scene folder (required by --suite=lego); '
    'quick/full train on it instead of the procedural chair.')
_OUT = flags.DEFINE_string('out', '', 'Also write the JSON here.')
_OVERRIDE = flags.DEFINE_multi_string(
    'override', [], 'Config override SECTION.KEY=VALUE (Python literal), '
    'applied to every benchmarked config; repeatable.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of scene, init and batches.')
_SCRIBBLES = flags.DEFINE_integer('scribbles', 64, 'Edit scribble pixels.')
_COLOR = flags.DEFINE_string('color', '#2f5cff', 'Edit target color.')
_MINUTES = flags.DEFINE_float('minutes', 10.0, 'lego: training minutes.')
_EVAL_IMAGES = flags.DEFINE_integer('eval_images', 25,
                                    'lego: test views per evaluation.')
_POINTS = flags.DEFINE_integer('points', 5,
                               'lego, real: evaluations on the curve.')
_DATA_ROOT = flags.DEFINE_string(
    'data_root', '../shared/data', 'real: the folder holding the scenes.')
_SCENES = flags.DEFINE_list('scenes', list(bench_real.SCENES),
                            'real: the scenes to train, in order.')

# Suite sizes; a flag of the same name given on the command line wins.
# batch_size 0 keeps the config's own batch size.
SUITES = {
    'quick': dict(resolution=32, steps=5, batch_size=256,
                  edit_train_steps=50, edit_steps=20, matmul_rows=16384,
                  repeats=3, render_rays=1024, num_train=16, num_test=2,
                  num_appearances=4),
    'full': dict(resolution=64, steps=20, batch_size=0,
                 edit_train_steps=300, edit_steps=200, matmul_rows=65536,
                 repeats=10, render_rays=4096, num_train=100, num_test=16,
                 num_appearances=8),
}
SUITES['lego'] = dict(SUITES['full'])
_SIZE_FLAGS = {
    'resolution': 'Procedural chair image size in pixels.',
    'steps': 'Timed train steps per config (after compilation).',
    'batch_size': "Rays per train step (0 = the config's).",
    'edit_train_steps': 'Train steps of the fast config before editing.',
    'edit_steps': 'Optimization steps of each edit method.',
    'matmul_rows': 'Rows of the timed matmul.',
    'repeats': 'Repeats of the matmul and render timings.',
    'render_rays': 'Rays of the timed render.',
}
for _name, _help in _SIZE_FLAGS.items():
  flags.DEFINE_integer(_name, None, f'{_help} Default: per suite.')
FLAGS = flags.FLAGS
FLOPS_NOTE = ('XLA cost_analysis() flops of the compiled train step '
              "(forward + backward + optimizer, one device's program) per "
              "ray of that device's share of the batch.")


def settings_for(suite):
  """The suite's sizes with command-line flags applied."""
  sizes = dict(SUITES[suite])
  for name in _SIZE_FLAGS:
    if FLAGS[name].value is not None:
      sizes[name] = FLAGS[name].value
  return sizes


def matmul_rate(width, rows, repeats, mesh):
  """Measured f32 matmul GFLOP/s at one layer width.

  Args:
    width: layer width w of `x[rows, w] @ W[w, w]`.
    rows: rows of x (rounded up to a multiple of the device count).
    repeats: timed repeats.
    mesh: the data mesh; x is split over it, W replicated.
  Returns:
    dict: gflops (all devices), gflops_one_device, rows, seconds.
  """
  rows = -(-rows // mesh.devices.size) * mesh.devices.size
  rng = np.random.default_rng(0)
  x = rng.standard_normal((rows, width), np.float32)
  w = rng.standard_normal((width, width), np.float32) / np.sqrt(width)
  matmul = jax.jit(lambda a, b: a @ b)
  flops = 2.0 * rows * width * width
  xs = jax.device_put(x, parallel.data_sharding(mesh))
  ws = parallel.replicate(w, mesh)
  seconds = bench_lib.median_seconds(
      lambda: jax.block_until_ready(matmul(xs, ws)), repeats)
  one = jax.devices()[0]
  x1, w1 = jax.device_put(x, one), jax.device_put(w, one)
  seconds_one = bench_lib.median_seconds(
      lambda: jax.block_until_ready(matmul(x1, w1)), repeats)
  return {'gflops': flops / seconds / 1e9,
          'gflops_one_device': flops / seconds_one / 1e9,
          'rows': rows, 'seconds': seconds}


def render_rate(trainer, num_rays, repeats):
  """Rays per second of `inference.render_rays` on test view 0's rays."""
  exp = trainer.exp
  rays = sampler_lib.image_rays(exp.scene.test, 0)
  rays = rays.reshape(rays.code_ids.size)
  index = np.arange(num_rays) % rays.code_ids.shape[0]
  rays = jax.tree.map(lambda x: x[index], rays)
  chunk = min(exp.config.eval.chunk, num_rays)
  seconds = bench_lib.median_seconds(
      lambda: inference.render_rays(exp.render_step, trainer.state.params,
                                    trainer.state.codes, rays, chunk,
                                    exp.mesh), repeats)
  return num_rays / seconds


def make_chair(root, sizes, seed):
  """Writes the procedural chair and its appearance variants; returns path."""
  plain = os.path.join(root, 'chair')
  varied = os.path.join(root, 'chair_variants')
  chair_files.write_chair_dataset(
      plain, resolution=sizes['resolution'], num_train=sizes['num_train'],
      num_val=1, num_test=sizes['num_test'], seed=seed)
  variants.make_variants(plain, varied, seed=seed,
                         num_appearances=sizes['num_appearances'])
  return varied


def bench_config(name, trainer, sizes, matmul, reference_gflops, applied):
  """Train and render throughput, flops and MFU of one config."""
  config = trainer.exp.config
  logging.info('%s: compiled the train step in %.1f s; timing %d steps.',
               name, trainer.compile_seconds, sizes['steps'])
  trainer.run(1)  # The first run of a fresh executable can be slower.
  times = trainer.run(sizes['steps'])
  step_seconds = float(np.median(times))
  rays_per_s = trainer.batch_size / step_seconds
  flops_per_ray = trainer.flops_per_ray()
  width = config.model.field.width
  achieved = flops_per_ray * rays_per_s
  logging.info('%s: %.1f ms/step; timing render of %d rays.', name,
               1e3 * step_seconds, sizes['render_rays'])
  return {
      'config_file': bench_lib.config_file(name),
      'overrides': applied,
      'trunk_width': width,
      'batch_size': trainer.batch_size,
      'compile_seconds': trainer.compile_seconds,
      'train_step_ms': 1e3 * step_seconds,
      'train_step_ms_min': 1e3 * float(np.min(times)),
      'timed_steps': len(times),
      'train_rays_per_s': rays_per_s,
      'model_flops_per_ray': flops_per_ray,
      'model_flops_source': FLOPS_NOTE,
      'matmul_gflops_at_width': matmul[str(width)]['gflops'],
      'mfu': achieved / (matmul[str(width)]['gflops'] * 1e9),
      'mfu_vs_256': achieved / (reference_gflops * 1e9),
      'render_rays_per_s': render_rate(trainer, sizes['render_rays'],
                                       sizes['repeats']),
      'loss': trainer.loss(),
      'peak_rss_mb': bench_lib.peak_rss_mb(),
      'peak_device_mb': bench_lib.peak_device_mb(),
  }


def bench_edits(trainer, sizes, num_scribbles, color, seed):
  """Times every edit method on a scribble of test view 0."""
  exp = trainer.exp
  trainer.run(max(sizes['edit_train_steps'] - trainer.step, 0))
  frames = exp.scene.test
  if frames.alphas is None:
    raise ValueError('The edit benchmark needs test views with alpha.')
  pixels = scribbles.sample_pixels(frames.alphas[0] > 0.99, num_scribbles,
                                   seed)
  if not len(pixels):
    raise ValueError('Test view 0 has no foreground pixel to scribble on.')
  count = len(pixels)
  batch = scribbles.scribble_batch(frames, [0], [pixels],
                                   [scribbles.parse_color(color)])
  methods = {}
  for method in methods_lib.methods_for(exp.model):
    logging.info('edit: %s, %d steps.', method, sizes['edit_steps'])
    info = methods_lib.run_edit(exp, trainer.state, batch, method,
                                steps=sizes['edit_steps']).info
    methods[method] = {'seconds': info.seconds,
                       'compile_seconds': info.compile_seconds,
                       'steps': info.steps, 'loss_start': info.loss_start,
                       'loss_end': info.loss_end}
  setup = {'config': 'fast', 'train_steps': trainer.step,
           'train_loss': trainer.loss(), 'num_scribbles': count,
           'view': 0, 'color': color, 'steps': sizes['edit_steps']}
  return methods, setup


def bench_precision(trainer, mesh, seed):
  """PSNR cost of bfloat16 compute (float32 params and accumulation).

  Trains the same config with `model.dtype='bfloat16'` from the same seed for
  as many steps as `trainer` (float32) took, then scores both on every test
  view with their own codes.
  """
  exp, steps = trainer.exp, trainer.step
  views = range(len(exp.scene.test))
  results = {}
  config = exp.config.copy_and_resolve_references()
  with config.unlocked():
    config.model.dtype = 'bfloat16'
  low = bench_lib.Trainer(
      experiment_lib.build_experiment(config, scene=exp.scene, mesh=mesh), seed)
  logging.info('precision: training the bfloat16 twin for %d steps.', steps)
  times = low.run(steps)
  low.loss()  # raises if it diverged.
  for name, run, step_times in (('float32', trainer, None),
                                ('bfloat16', low, times)):
    psnr, ssim = bench_lib.evaluate_views(run, views)
    results[name] = {'psnr': psnr, 'ssim': ssim, 'train_step_ms': (
        1e3 * float(np.median(step_times)) if step_times else None)}
  return {'config': 'fast', 'train_steps': steps, 'test_views': len(views),
          **results,
          'psnr_cost_db': results['float32']['psnr'] -
                          results['bfloat16']['psnr']}


def run_throughput(suite):
  """The quick and full suites."""
  sizes = settings_for(suite)
  # Fixed step counts: no wall-clock budget (lego.py:fast sets 10 minutes).
  overrides = {'train.minutes': 0.0}
  overrides.update(bench_lib.parse_overrides(_OVERRIDE.value))
  mesh = parallel.create_mesh()
  unknown = set(_CONFIGS.value) - set(bench_lib.CONFIG_ARGS)
  if unknown:
    raise app.UsageError(f'Unknown --configs {sorted(unknown)}; choose from '
                         f'{sorted(bench_lib.CONFIG_ARGS)}.')
  widths = {256} | {
      bench_lib.make_config(n, '', '', 0, overrides)[0].model.field.width
      for n in _CONFIGS.value}
  result = {'suite': suite, 'settings': sizes, 'env': bench_lib.environment(),
            'matmul': {}}
  for width in sorted(widths):
    logging.info('matmul: width %d, %d rows.', width, sizes['matmul_rows'])
    result['matmul'][str(width)] = matmul_rate(width, sizes['matmul_rows'],
                                               sizes['repeats'], mesh)
  result['matmul_gflops'] = result['matmul']['256']['gflops']
  with tempfile.TemporaryDirectory(prefix='condnerf_bench_') as tmp:
    logging.info('Writing the procedural chair at %dpx.', sizes['resolution'])
    chair = make_chair(tmp, sizes, _SEED.value)
    data = _DATA.value or chair
    result['data'] = _DATA.value or (
        f'procedural chair variants, {sizes["resolution"]}px')
    scenes, fast_trainer = {}, None
    result['configs'] = {}
    for name in _CONFIGS.value:
      config, applied = bench_lib.make_config(
          name, data, '' if _DATA.value else 'ids', sizes['batch_size'],
          overrides)
      key = json.dumps(config.data.to_dict(), sort_keys=True)
      if key not in scenes:
        scenes[key] = experiment_lib.load_scene(config.data)
      exp = experiment_lib.build_experiment(config, scene=scenes[key], mesh=mesh)
      trainer = bench_lib.Trainer(exp, _SEED.value)
      result['configs'][name] = bench_config(
          name, trainer, sizes, result['matmul'], result['matmul_gflops'],
          applied)
      if name == 'fast' and not _DATA.value:
        fast_trainer = trainer  # Already on the chair: keep training it.
      del trainer, exp
    if fast_trainer is None:
      config, applied = bench_lib.make_config('fast', chair, 'ids',
                                              sizes['batch_size'], overrides)
      fast_trainer = bench_lib.Trainer(
          experiment_lib.build_experiment(config, mesh=mesh), _SEED.value)
    else:
      applied = result['configs']['fast']['overrides']
    methods, setup = bench_edits(fast_trainer, sizes, _SCRIBBLES.value,
                                 _COLOR.value, _SEED.value)
    result['precision'] = bench_precision(fast_trainer, mesh, _SEED.value)
  setup['overrides'] = applied
  result['edit_seconds'] = methods
  result['edit'] = setup
  result['peak_rss_mb'] = bench_lib.peak_rss_mb()
  return result


def run_lego():
  """Trains --config (after --reference) for --minutes: `bench_lego`."""
  return bench_lego.run(
      _CONFIG.value, _DATA.value, _MINUTES.value, _POINTS.value,
      _EVAL_IMAGES.value, _SEED.value, settings_for('lego')['batch_size'],
      bench_lib.parse_overrides(_OVERRIDE.value), _OUT.value,
      reference=_REFERENCE.value)


def run_real():
  """Trains every --scenes scene for --minutes (see `bench_real`)."""
  out = _OUT.value or 'runs/bench/real.json'
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  overrides = bench_lib.parse_overrides(_OVERRIDE.value)
  result = {'suite': 'real', 'env': bench_lib.environment(),
            'minutes': _MINUTES.value, 'scenes': {}}
  try:  # every scene's folder and config before anything trains.
    configs = {name: bench_real.scene_config(name, _DATA_ROOT.value,
                                             _MINUTES.value, overrides)
               for name in _SCENES.value}
  except (KeyError, ValueError) as e:
    raise app.UsageError(str(e.args[0])) from e
  for name, (config, applied) in configs.items():
    logging.info('real: %s for %.1f min.', name, _MINUTES.value)
    result['scenes'][name] = bench_real.run_scene(
        name, config, applied, max(1, _POINTS.value), _EVAL_IMAGES.value,
        _SEED.value, f'{os.path.splitext(out)[0]}_{name}')
  return result


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  suite = _SUITE.value
  if suite == 'lego' and not _DATA.value:
    raise app.UsageError('--suite=lego needs --data=PATH, a Blender-format '
                         'scene folder (e.g. ../shared/data/lego).')
  if _DATA.value and not os.path.isdir(_DATA.value):
    raise app.UsageError(f'--data={_DATA.value} is not a folder.')
  if not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.INFO)
  start = time.time()
  # Only the JSON goes to stdout: anything else printed goes to stderr.
  with contextlib.redirect_stdout(sys.stderr):
    runs = {'lego': run_lego, 'real': run_real}
    result = runs[suite]() if suite in runs else run_throughput(suite)
  result['wall_seconds'] = time.time() - start
  text = json.dumps(result, indent=2)
  if _OUT.value:
    os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
    with open(_OUT.value, 'w', encoding='utf-8') as f:
      f.write(text + '\n')
  sys.stdout.write(text + '\n')
  sys.stdout.flush()


if __name__ == '__main__':
  cli.run(main)
