"""Sweep loading, diff validation, workdir claims and summaries."""

import json
import os
import tempfile
import textwrap

from absl.testing import absltest

from condnerf import ablation
from condnerf.configs import base


def write_sweep(folder, variants, name='toy'):
  path = os.path.join(folder, f'{name}.py')
  with open(path, 'w') as f:
    f.write(textwrap.dedent(f'''
        from condnerf.configs import base

        def get_sweep(arg=None):
          return dict(name={name!r}, base=base.get_config('runlocal'),
                      variants={variants!r}, seeds=(0, 1))
        '''))
  return path


class AblationTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    tmp = tempfile.TemporaryDirectory()
    self.addCleanup(tmp.cleanup)
    self.tmp = tmp.name

  def test_apply_diff_sets_nested_keys_on_a_copy(self):
    config = base.get_config('runlocal')
    changed = ablation.apply_diff(
        config, {'model.head.conditioning': 'film', 'codes.dim': 4}, 'x')
    self.assertEqual(changed.model.head.conditioning, 'film')
    self.assertEqual(changed.codes.dim, 4)
    self.assertEqual(config.model.head.conditioning, 'concat')

  def test_unknown_key_names_key_and_entry(self):
    path = write_sweep(self.tmp, [
        {'name': 'good', 'codes.dim': 4},
        {'name': 'typo', 'model.head.conditionnig': 'film'}])
    with self.assertRaisesRegex(ablation.SweepError,
                                r"typo.*model\.head\.conditionnig"):
      ablation.load_sweep(path)

  def test_wrong_type_and_duplicate_names_fail(self):
    with self.assertRaisesRegex(ablation.SweepError, 'codes.dim'):
      ablation.load_sweep(write_sweep(
          self.tmp, [{'name': 'a', 'codes.dim': 'big'}], 'wrongtype'))
    with self.assertRaisesRegex(ablation.SweepError, 'duplicate'):
      ablation.load_sweep(write_sweep(
          self.tmp, [{'name': 'a'}, {'name': 'a'}], 'dup'))

  def test_plan_sets_seeds_and_folders(self):
    sweep = ablation.load_sweep(write_sweep(
        self.tmp, [{'name': 'a'}, {'name': 'b', 'codes.dim': 4}]))
    trials = ablation.plan(sweep, '/w')
    self.assertEqual([(t.variant, t.seed) for t in trials],
                     [('a', 0), ('a', 1), ('b', 0), ('b', 1)])
    self.assertEqual(trials[3].workdir, '/w/b/seed_1')
    self.assertEqual(trials[3].config.seed, 1)
    self.assertEqual(trials[3].config.codes.dim, 4)
    self.assertEqual(trials[0].config.codes.dim, 8)

  def test_workdir_of_another_sweep_is_refused(self):
    workdir = os.path.join(self.tmp, 'sweep')
    first = ablation.load_sweep(write_sweep(self.tmp, [{'name': 'a'}], 'one'))
    ablation.claim_workdir(first, workdir)
    ablation.claim_workdir(first, workdir)  # the same sweep may resume.
    other = ablation.load_sweep(write_sweep(self.tmp, [{'name': 'b'}], 'two'))
    with self.assertRaisesRegex(ablation.SweepError, 'one'):
      ablation.claim_workdir(other, workdir)
    with open(os.path.join(workdir, 'sweep.json')) as f:
      self.assertEqual(json.load(f)['name'], 'one')  # untouched.

  def test_parse_shard(self):
    self.assertEqual(ablation.parse_shard('1/3'), (1, 3))
    for bad in ('3/3', 'x', '1/0', '-1/2'):
      with self.assertRaises(ablation.SweepError):
        ablation.parse_shard(bad)

  def test_summary_mean_and_sample_std(self):
    rows = [dict(variant='a', seed=s, psnr=p, ssim=0.9, seconds=60.0)
            for s, p in ((0, 20.0), (1, 22.0))]
    rows.append(dict(variant='b', seed=0, psnr=25.0, ssim=0.8, seconds=30.0))
    table = ablation.summarize(rows, ['b', 'a', 'c'])
    self.assertEqual([e['variant'] for e in table], ['b', 'a'])
    self.assertEqual(table[1]['psnr'], (21.0, 2.0 ** 0.5))
    self.assertEqual(table[0]['psnr'], (25.0, 0.0))
    self.assertEqual(table[1]['seeds'], 2)


if __name__ == '__main__':
  absltest.main()
