"""--mode=edit through the CLI on a tiny variants scene, and the demo path."""

import json
import os
import tempfile

from absl.testing import absltest
import numpy as np

from condnerf import codes
from condnerf import images
from condnerf.data import procedural
from condnerf.data import variants
from tests.smoke import cli_test


class EditCliTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.TemporaryDirectory()
    plain = os.path.join(cls.tmp.name, 'chair')
    cls.data = os.path.join(cls.tmp.name, 'chair_variants')
    procedural.write_chair_dataset(plain, resolution=16, num_train=8,
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
    out = os.path.join(self.workdir, 'edit', 'blue')
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
    self.assertTrue(os.path.exists(os.path.join(self.workdir, 'edit', 'sw',
                                                'swap_000.png')))
    # Every table row and bank code on every view, batched.
    cli_test.run_main(*self.config, '--mode=edit', '--config.edit.name=all',
                      '--config.edit.operation=codes')
    out = os.path.join(self.workdir, 'edit', 'all')
    with open(os.path.join(out, 'report.json')) as f:
      self.assertEqual(json.load(f)['codes'], ['row_0', 'row_1', 'blue'])
    for name in ('grid.png', 'blue_view001.png', 'row_1_view000.png'):
      self.assertTrue(os.path.exists(os.path.join(out, name)), name)

  def test_bad_edit_inputs_fail_cleanly(self):
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
    ]
    for args, message in cases:
      proc = cli_test.run_main(*self.config, '--mode=edit',
                               '--config.edit.name=bad', *args,
                               expect_ok=False)
      self.assertNotEqual(proc.returncode, 0, args)
      messages = (message,) if isinstance(message, str) else message
      self.assertTrue(any(m in proc.stderr for m in messages),
                      f'{args}: {proc.stderr[-2000:]}')
      self.assertFalse(os.path.exists(os.path.join(self.workdir, 'edit',
                                                   'bad')), args)

  def test_benchmark_report_has_every_method(self):
    cli_test.run_main(*self.config, '--mode=edit',
                      '--config.edit.operation=benchmark',
                      '--config.edit.name=bench')
    with open(os.path.join(self.workdir, 'edit', 'bench',
                           'report.json')) as f:
      report = json.load(f)
    self.assertEqual(sorted(report['methods']),
                     sorted(['code', 'color_head', 'adapter', 'full',
                             'hybrid']))
    code = report['methods']['code']
    self.assertEqual(code['drift_opacity'], 0.0)
    self.assertEqual(code['drift_depth'], 0.0)
    self.assertIsNone(code['collateral_psnr'])
    self.assertIsNotNone(report['methods']['color_head']['collateral_psnr'])
    for key in ('psnr', 'ssim', 'seconds', 'compile_seconds', 'steps'):
      self.assertIn(key, code)
    self.assertIsNotNone(report['swap_psnr'])
    self.assertIsNotNone(report['fit_half_psnr'])


if __name__ == '__main__':
  absltest.main()
