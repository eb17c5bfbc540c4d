"""--mode=edit through the CLI on a tiny variants scene, and the demo path."""

import json
import os
import shutil
import tempfile

from absl.testing import absltest
import numpy as np

from condnerf import codes
from condnerf import images
from condnerf.data import chair_files
from condnerf.data import variants
from tests.smoke import cli_test


def _files(folder):
  """Every file under `folder` with its size: what a deletion would change."""
  return sorted((os.path.relpath(os.path.join(root, name), folder),
                 os.path.getsize(os.path.join(root, name)))
                for root, _, names in os.walk(folder) for name in names)


class EditCliTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.TemporaryDirectory()
    plain = os.path.join(cls.tmp.name, 'chair')
    cls.data = os.path.join(cls.tmp.name, 'chair_variants')
    chair_files.write_chair_dataset(plain, resolution=16, num_train=8,
                                   num_val=1, num_test=2)
    variants.make_variants(plain, cls.data, seed=0, num_appearances=2)
    cls.workdir = os.path.join(cls.tmp.name, 'run')
    cls.config = ['--config=experiments/configs/demo.py:runlocal',
                  f'--config.data.path={cls.data}',
                  f'--workdir={cls.workdir}']
    cli_test.run_main(*cls.config, '--mode=train')

  @classmethod
  def tearDownClass(cls):
    cls.tmp.cleanup()
    super().tearDownClass()

  def test_relight_and_an_orbit_under_a_turning_light(self):
    # The demo config shades its palette head with light codes.
    cli_test.run_main(*self.config, '--mode=edit', '--config.edit.name=lit',
                      '--config.edit.operation=relight', '--config.edit.init_code=1',
                      '--config.edit.light_direction=1,0,1')
    out = os.path.join(self.workdir, 'edit', 'runs', 'lit')
    with open(os.path.join(out, 'report.json')) as f:
      report = json.load(f)
    self.assertEqual(np.shape(report['light']), (9, 3))
    np.testing.assert_allclose(report['estimated']['direction'],
                               np.array([1, 0, 1]) / np.sqrt(2), atol=0.01)
    banked = codes.load_bank(os.path.join(self.workdir, 'edit', 'codes.npz'))
    np.testing.assert_allclose(banked['lit']['light'], report['light'],
                               rtol=1e-6)
    for name in ('before_000.png', 'after_001.png'):
      self.assertTrue(os.path.exists(os.path.join(out, name)), name)
    for flag, message in (
        ('--config.edit.light_from=5',
         "edit.light_from=5 is not a frame of the 'test' split"),
        ('--config.edit.light_direction=0,0,0', 'non-zero length')):
      proc = cli_test.run_main(*self.config, '--mode=edit',
                               '--config.edit.name=bad',
                               '--config.edit.operation=relight', flag,
                               expect_ok=False)
      self.assertEqual(proc.returncode, 2)
      cli_test.assert_one_line_error(self, proc.stderr, message)
    self.assertFalse(os.path.exists(os.path.join(self.workdir, 'edit',
                                                 'runs', 'bad')))
    # The camera stays, the light turns: every frame differs.
    cli_test.run_main(*self.config, '--mode=render',
                      '--config.render.light_turns=1',
                      '--config.render.fixed_camera=True',
                      '--config.render.num_frames=3')
    frames = [images.load_png(os.path.join(self.workdir, 'render',
                                           f'frame_{i:03d}.png'))
              for i in range(3)]
    self.assertGreater(np.abs(frames[0] - frames[1]).max(), 0.01)
    self.assertGreater(np.abs(frames[1] - frames[2]).max(), 0.01)
    self.assertTrue(os.path.exists(os.path.join(self.workdir, 'render',
                                                'path.gif')))

  def test_recolor_writes_outputs_and_bank_without_touching_checkpoint(self):
    ckpt = os.path.join(self.workdir, 'checkpoints')
    before = sorted(os.listdir(ckpt))
    mask = np.zeros((16, 16), np.float32)
    mask[6:9, 6:9] = 1.0
    mask_path = os.path.join(self.tmp.name, 'mask.png')
    images.save_png(mask_path, mask)
    cli_test.run_main(*self.config, '--mode=edit', '--config.edit.name=blue',
                      f'--config.edit.mask={mask_path}',
                      '--config.edit.color=#2f5cff')
    out = os.path.join(self.workdir, 'edit', 'runs', 'blue')
    with open(os.path.join(out, 'report.json')) as f:
      report = json.load(f)
    self.assertEqual(report['num_pixels'], 9)
    for name in ('before_000.png', 'after_001.png', 'code.npy'):
      self.assertTrue(os.path.exists(os.path.join(out, name)), name)
    bank = os.path.join(self.workdir, 'edit', 'codes.npz')
    self.assertIn('blue', codes.load_bank(bank))
    self.assertEqual(sorted(os.listdir(ckpt)), before)
    # The saved code renders through swap by name.
    cli_test.run_main(*self.config, '--mode=edit', '--config.edit.name=sw',
                      '--config.edit.operation=swap',
                      '--config.edit.bank_code=blue')
    self.assertTrue(os.path.exists(os.path.join(
        self.workdir, 'edit', 'runs', 'sw', 'swap_000.png')))
    # Every table row and bank code on every view, batched.
    cli_test.run_main(*self.config, '--mode=edit', '--config.edit.name=all',
                      '--config.edit.operation=codes')
    out = os.path.join(self.workdir, 'edit', 'runs', 'all')
    with open(os.path.join(out, 'report.json')) as f:
      self.assertEqual(json.load(f)['codes'], ['row_0', 'row_1', 'blue'])
    for name in ('grid.png', 'blue_view001.png', 'row_1_view000.png'):
      self.assertTrue(os.path.exists(os.path.join(out, name)), name)

  def test_bad_edit_inputs_fail_cleanly(self):
    not_an_image = os.path.join(self.tmp.name, 'mask.png.txt')
    with open(not_an_image, 'w') as f:
      f.write('not a picture')
    cases = [
        (['--config.edit.pixels=3,3', '--config.edit.color=bluish'],
         'Cannot parse color'),
        (['--config.edit.pixels=3,3', '--config.edit.views=(7,)'],
         'out of range'),
        (['--config.edit.mask=/nonexistent/mask.png'], 'does not exist'),
        (['--config.edit.operation=swap', '--config.edit.bank_code=nope'],
         ('No code bank', "'nope' is not in")),
        (['--config.edit.operation=swap', '--config.edit.code_a=9'],
         'outside the code table'),
        (['--config.edit.pixels=3,3', '--config.edit.views=abc'],
         "edit.views=('abc',) must be view indices"),
        (['--config.edit.pixels=3;4'],
         "Cannot parse edit.pixels='3;4': '3' is not one \"row,col\" pair"),
        ([f'--config.edit.mask={not_an_image}'],
         f'Mask file {not_an_image} is not an image'),
    ]
    for args, message in cases:
      proc = cli_test.run_main(*self.config, '--mode=edit',
                               '--config.edit.name=bad', *args,
                               expect_ok=False)
      self.assertEqual(proc.returncode, 2, args)
      messages = (message,) if isinstance(message, str) else message
      self.assertTrue(any(m in proc.stderr for m in messages),
                      f'{args}: {proc.stderr[-2000:]}')
      cli_test.assert_one_line_error(self, proc.stderr, '')
      self.assertFalse(os.path.exists(os.path.join(self.workdir, 'edit',
                                                   'runs', 'bad')), args)

  def test_palette_edits_through_the_cli(self):
    run = os.path.join(self.tmp.name, 'palette', 'run')
    shutil.copytree(self.workdir, run)  # its bank is its own.
    config = self.config[:-1] + [f'--workdir={run}']
    cli_test.run_main(*config, '--mode=edit', '--config.edit.name=pal',
                      '--config.edit.method=palette',
                      '--config.edit.pixels=6,6;7,7;8,8',
                      '--config.edit.init_code=1')
    out = os.path.join(run, 'edit', 'runs', 'pal')
    with open(os.path.join(out, 'report.json')) as f:
      report = json.load(f)
    self.assertEqual((report['method'], report['steps']), ('palette', 0))
    self.assertLess(report['loss_end'], report['loss_start'])
    self.assertEqual(np.load(os.path.join(out, 'palette.npy')).shape, (6, 3))
    bank = codes.load_bank(os.path.join(run, 'edit', 'codes.npz'))
    self.assertEqual(bank['pal']['palette'].shape, (6, 3))
    cli_test.run_main(*config, '--mode=edit', '--config.edit.name=set',
                      '--config.edit.operation=palette',
                      '--config.edit.palette=2=#2f5cff;0=0.1,0.2,0.9')
    bank = codes.load_bank(os.path.join(run, 'edit', 'codes.npz'))
    np.testing.assert_allclose(bank['set']['palette'][0], [0.1, 0.2, 0.9],
                               rtol=1e-6)
    for args, message in (
        (['--config.edit.operation=palette', '--config.edit.palette=9=#ff0000'],
         'Palette entries [9] are out of range'),
        (['--config.edit.init_code=7', '--config.edit.pixels=3,3'],
         'edit.init_code=7 is outside the code table')):
      proc = cli_test.run_main(*config, '--mode=edit',
                               '--config.edit.name=bad_palette', *args,
                               expect_ok=False)
      self.assertEqual(proc.returncode, 2, args)
      cli_test.assert_one_line_error(self, proc.stderr, message)

  def test_edit_names_that_leave_their_folder_delete_nothing(self):
    run = os.path.join(self.tmp.name, 'names', 'run')
    shutil.copytree(self.workdir, run)
    config = self.config[:-1] + [f'--workdir={run}']
    # An earlier edit and the bank, which a bad name used to delete.
    cli_test.run_main(*config, '--mode=edit', '--config.edit.name=keep',
                      '--config.edit.pixels=6,6;7,7')
    before = _files(os.path.dirname(run))
    # (tests/workdir_test.py checks every kind of bad name in process.)
    for name in ('..', '', 'a/b'):
      with self.subTest(name=name):
        proc = cli_test.run_main(*config, '--mode=edit',
                                 f'--config.edit.name={name}',
                                 '--config.edit.pixels=6,6', expect_ok=False)
        self.assertEqual(proc.returncode, 2)
        cli_test.assert_one_line_error(self, proc.stderr,
                                       f'edit.name={name!r} is not a plain '
                                       'name')
        self.assertEqual(_files(os.path.dirname(run)), before)
    # Names of files the run owns: the bank, the benchmark report, a mask.
    images.save_png(os.path.join(run, 'edit', 'scribble_mask.png'),
                    np.ones((16, 16), np.float32))
    workdir_report = os.path.join(run, 'edit', 'report.json')
    with open(workdir_report, 'w') as f:
      f.write('{}')
    before = _files(os.path.dirname(run))
    for name in ('codes.npz', 'report.json', 'scribble_mask.png', 'runs'):
      with self.subTest(name=name):
        proc = cli_test.run_main(*config, '--mode=edit',
                                 f'--config.edit.name={name}',
                                 '--config.edit.method=palette',
                                 '--config.edit.pixels=6,6', expect_ok=False)
        self.assertEqual(proc.returncode, 2)
        cli_test.assert_one_line_error(self, proc.stderr,
                                       f'edit.name={name!r} is the name of')
        self.assertEqual(_files(os.path.dirname(run)), before)
    proc = cli_test.run_main(*config, '--mode=edit',
                             f'--config.edit.name={"n" * 300}',
                             '--config.edit.pixels=6,6', expect_ok=False)
    cli_test.assert_one_line_error(self, proc.stderr,
                                   'edit.name is 300 bytes long')
    self.assertEqual(_files(os.path.dirname(run)), before)
    # A later edit that saves a code still finds the bank intact.
    cli_test.run_main(*config, '--mode=edit', '--config.edit.name=after',
                      '--config.edit.method=palette',
                      '--config.edit.pixels=6,6;7,7')
    self.assertContainsSubset(['after', 'keep'], codes.load_bank(
        os.path.join(run, 'edit', 'codes.npz')))

  def test_benchmark_report_has_every_method(self):
    cli_test.run_main(*self.config, '--mode=edit',
                      '--config.edit.operation=benchmark',
                      '--config.edit.name=bench')
    with open(os.path.join(self.workdir, 'edit', 'runs', 'bench',
                           'report.json')) as f:
      report = json.load(f)
    # Image-space variants have ground truth for in-distribution looks only;
    # the demo's palette head adds the closed-form palette method.
    self.assertEqual(list(report['families']), ['in_distribution'])
    rows = report['families']['in_distribution']['methods']
    self.assertEqual(sorted(rows),
                     sorted(['code', 'palette', 'color_head', 'adapter',
                             'full', 'hybrid']))
    for name in ('code', 'palette'):
      code = rows[name]
      self.assertEqual(code['drift_opacity'], 0.0)
      self.assertEqual(code['drift_depth'], 0.0)
      self.assertTrue(code['collateral_identical'])
      self.assertIsNone(code['collateral_psnr'])
    self.assertFalse(rows['color_head']['collateral_identical'])
    self.assertIsNotNone(rows['color_head']['collateral_psnr'])
    for key in ('psnr', 'ssim', 'preservation_psnr', 'seconds',
                'compile_seconds', 'num_params', 'steps'):
      self.assertIn(key, rows['code'])
    self.assertEqual(rows['palette']['num_params'], 6 * 3)
    self.assertIsNotNone(report['swap_psnr'])
    self.assertIsNotNone(report['fit_half_psnr'])


if __name__ == '__main__':
  absltest.main()
