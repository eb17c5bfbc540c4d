"""experiments.bench through the CLI: the quick suite at tiny sizes."""

import json
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest

from condnerf.edit import methods
from condnerf.data import chair_files
from tests import scenes

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
# Seconds-long sizes; the override also checks that overrides are applied
# and recorded.
TINY = ['--suite=quick', '--steps=2', '--resolution=16',
        '--edit_train_steps=5', '--edit_steps=3', '--batch_size=64',
        '--render_rays=64', '--matmul_rows=1024', '--repeats=2',
        '--override=model.num_samples=(8, 8)']
CONFIG_FIELDS = ('train_step_ms', 'train_rays_per_s', 'model_flops_per_ray',
                 'mfu', 'mfu_vs_256', 'render_rays_per_s', 'peak_rss_mb',
                 'matmul_gflops_at_width', 'compile_seconds')


def run_bench(*args):
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2')
  return subprocess.run(
      [sys.executable, '-m', 'experiments.bench', *args], cwd=REPO, env=env,
      capture_output=True, text=True, timeout=600, check=False)


class BenchTest(absltest.TestCase):

  def assertPositive(self, value, what):
    self.assertIsInstance(value, (int, float), what)
    self.assertGreater(value, 0, what)

  def test_quick_suite_reports_every_field(self):
    with tempfile.TemporaryDirectory() as tmp:
      out = os.path.join(tmp, 'sub', 'bench.json')
      proc = run_bench(*TINY, f'--out={out}')
      self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
      result = json.loads(proc.stdout)  # stdout is exactly one document.
      with open(out) as f:
        self.assertEqual(json.load(f), result)

    env = result['env']
    self.assertEqual(result['suite'], 'quick')
    self.assertEqual(env['device_count'], 2)
    for key in ('jax_version', 'device_kind', 'backend'):
      self.assertIsInstance(env[key], str, key)
      self.assertNotEmpty(env[key], key)

    self.assertContainsSubset({'256', '64'}, set(result['matmul']))
    for width, row in result['matmul'].items():
      self.assertPositive(row['gflops'], f'matmul {width}')
      self.assertPositive(row['gflops_one_device'], f'matmul {width}')
    self.assertEqual(result['matmul_gflops'],
                     result['matmul']['256']['gflops'])

    self.assertEqual(set(result['configs']), {'nerf', 'fast'})
    for name, row in result['configs'].items():
      for field in CONFIG_FIELDS:
        self.assertPositive(row[field], f'{name}.{field}')
      self.assertEqual(row['batch_size'], 64)
      self.assertEqual(row['overrides']['train.batch_size'], 64)
      self.assertEqual(row['overrides']['model.num_samples'], [8, 8])
      achieved = row['model_flops_per_ray'] * row['train_rays_per_s']
      self.assertAlmostEqual(
          row['mfu'], achieved / (row['matmul_gflops_at_width'] * 1e9),
          delta=1e-6 * row['mfu'])
      self.assertAlmostEqual(
          row['mfu_vs_256'], achieved / (result['matmul_gflops'] * 1e9),
          delta=1e-6 * row['mfu_vs_256'])
    self.assertEqual(result['configs']['nerf']['trunk_width'], 256)
    self.assertEqual(result['configs']['fast']['trunk_width'], 64)
    # Eight 256-wide layers per sample cost more than a small hash-grid MLP.
    self.assertGreater(result['configs']['nerf']['model_flops_per_ray'],
                       result['configs']['fast']['model_flops_per_ray'])

    # The fast config has a latent-code head: every method but the palette
    # and light ones.
    self.assertEqual(set(result['edit_seconds']),
                     set(methods.METHODS) - set(methods.PALETTE_METHODS) -
                     set(methods.LIGHT_METHODS))
    for method, row in result['edit_seconds'].items():
      self.assertPositive(row['seconds'], f'{method}.seconds')
      self.assertPositive(row['compile_seconds'], f'{method}.compile')
      self.assertEqual(row['steps'], 3)
    self.assertEqual(result['edit']['train_steps'], 5)
    self.assertPositive(result['edit']['num_scribbles'], 'num_scribbles')
    self.assertEqual(result['edit']['color'], '#2f5cff')
    self.assertPositive(result['peak_rss_mb'], 'peak_rss_mb')

    precision = result['precision']
    self.assertEqual(precision['train_steps'], 5)
    for dtype in ('float32', 'bfloat16'):
      self.assertBetween(precision[dtype]['psnr'], 0.0, 100.0)
    self.assertPositive(precision['bfloat16']['train_step_ms'], 'bf16 step')
    self.assertAlmostEqual(
        precision['psnr_cost_db'],
        precision['float32']['psnr'] - precision['bfloat16']['psnr'])

  def test_lego_suite_curve_within_time_budget(self):
    with tempfile.TemporaryDirectory() as tmp:
      data = os.path.join(tmp, 'chair')
      chair_files.write_chair_dataset(data, resolution=16, num_train=4,
                                     num_val=1, num_test=3, seed=0)
      out = os.path.join(tmp, 'curve.json')
      proc = run_bench('--suite=lego', f'--data={data}', '--minutes=0.1',
                       '--points=2', '--eval_images=2', '--batch_size=64',
                       '--override=model.num_samples=(8, 8)', f'--out={out}')
      self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
      result = json.loads(proc.stdout)
      self.assertTrue(os.path.exists(os.path.join(tmp, 'curve.png')))
    self.assertEqual(result['overrides']['train.minutes'], 0.1)
    self.assertEqual(result['eval_views'], [0, 2])
    curve = result['curve']
    self.assertLen(curve, 2)
    # Points at half and all of the 6 s budget (one step may overshoot).
    step_s = result['train_step_ms'] / 1e3
    for point, share in zip(curve, (0.5, 1.0)):
      self.assertBetween(point['minutes'] * 60, 6 * share,
                         6 * share + 3 * step_s + 0.5)
      self.assertBetween(point['psnr'], 0.0, 100.0)
    self.assertLess(curve[0]['step'], curve[1]['step'])

  def test_lego_suite_compares_occupancy_with_a_reference(self):
    with tempfile.TemporaryDirectory() as tmp:
      data = os.path.join(tmp, 'chair')
      chair_files.write_chair_dataset(data, resolution=16, num_train=4,
                                     num_val=1, num_test=2, seed=0)
      out = os.path.join(tmp, 'occ.json')
      proc = run_bench('--suite=lego', f'--data={data}', '--minutes=0.05',
                       '--points=1', '--eval_images=1', '--batch_size=64',
                       '--config=occupancy', '--reference=fast',
                       '--override=model.num_samples=(8, 8)',
                       '--override=model.occupancy.resolution=32',
                       '--override=model.occupancy.max_steps=128',
                       f'--out={out}')
      self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
      result = json.loads(proc.stdout)
      for name in ('occ.png', 'occ_fast.png'):
        self.assertTrue(os.path.exists(os.path.join(tmp, name)), name)
    self.assertEqual(result['config'], 'occupancy')
    ref = result['reference']
    self.assertEqual(ref['config'], 'fast')
    # The reference draws 8 + 8 samples per ray; occupancy packs its own.
    self.assertEqual(ref['curve'][-1]['samples_per_ray'], 16.0)
    for run in (result, ref):
      point = run['curve'][-1]
      self.assertPositive(point['samples_per_ray'], run['config'])
      self.assertAlmostEqual(point['field_evals_per_s'],
                             point['samples_per_ray'] *
                             point['train_rays_per_s'], places=3)
    ratios = result['ratios']
    self.assertAlmostEqual(ratios['train_rays_per_s'],
                           result['train_rays_per_s'] /
                           ref['train_rays_per_s'])
    self.assertAlmostEqual(ratios['psnr_db_difference'],
                           result['curve'][-1]['psnr'] -
                           ref['curve'][-1]['psnr'])

  def test_lego_suite_without_data_fails_clearly(self):
    proc = run_bench('--suite=lego', '--minutes=0.01')
    self.assertNotEqual(proc.returncode, 0)
    self.assertIn('--suite=lego needs --data=PATH', proc.stderr)
    self.assertEmpty(proc.stdout)

  def test_real_suite_trains_a_forward_facing_capture(self):
    with tempfile.TemporaryDirectory() as tmp:
      scenes.write_forward_llff(os.path.join(tmp, 'fern'))
      out = os.path.join(tmp, 'real.json')
      proc = run_bench('--suite=real', f'--data_root={tmp}', '--scenes=fern',
                       '--minutes=0.05', '--points=1', '--eval_images=1',
                       '--override=train.batch_size=64',
                       '--override=model.num_samples=(8, 8)',
                       '--override=render.num_frames=2', f'--out={out}')
      self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
      result = json.loads(proc.stdout)
      fern = result['scenes']['fern']
      for key in ('curve_png', 'view0_png', 'orbit_gif'):
        self.assertTrue(os.path.exists(fern[key]), key)
    self.assertEqual(fern['config_file'], 'experiments/configs/llff.py:fast')
    self.assertEqual(fern['overrides']['train.minutes'], 0.05)
    self.assertLen(fern['curve'], 1)
    self.assertBetween(fern['curve'][0]['psnr'], 0.0, 100.0)
    self.assertGreater(fern['train_rays_per_s'], 0)

  def test_real_suite_scores_the_statue_the_nerfw_way_on_each_point(self):
    # A masked capture under the statue's name trains with wild.py: one
    # code per photo, the box from the masks, random backgrounds.
    with tempfile.TemporaryDirectory() as tmp:
      scenes.write_forward_llff(os.path.join(tmp, 'statue_of_liberty'),
                                factor=4, num=9, masks=True)
      proc = run_bench('--suite=real', f'--data_root={tmp}',
                       '--scenes=statue_of_liberty', '--minutes=0.04',
                       '--points=2', '--eval_images=2',
                       '--override=train.batch_size=64',
                       '--override=model.num_samples=(8, 8)',
                       '--override=edit.steps=3',
                       '--override=render.num_frames=2',
                       f'--out={os.path.join(tmp, "real.json")}')
      self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    statue = json.loads(proc.stdout)['scenes']['statue_of_liberty']
    self.assertEqual(statue['config_file'], 'experiments/configs/wild.py')
    self.assertLen(statue['curve'], 2)
    for point in statue['curve']:
      # Test photos 0 and 8 of the 9: both fitted and scored.
      self.assertLen(point['nerfw_per_view'], 2)
      self.assertAlmostEqual(point['nerfw_half_psnr'],
                             sum(point['nerfw_per_view']) / 2, places=4)
    self.assertEqual(statue['nerfw_per_view'],
                     statue['curve'][-1]['nerfw_per_view'])

  def test_real_suite_names_a_missing_scene_folder(self):
    with tempfile.TemporaryDirectory() as tmp:
      proc = run_bench('--suite=real', f'--data_root={tmp}', '--scenes=fern',
                       '--minutes=0.01')
    self.assertNotEqual(proc.returncode, 0)
    self.assertIn('fern is not a folder; pass --data_root', proc.stderr)


if __name__ == '__main__':
  absltest.main()
