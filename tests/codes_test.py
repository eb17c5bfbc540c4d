"""The code table: lookup with the mean-code row, blends and code banks."""

import os
import tempfile

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from condnerf import codes


class CodesTest(absltest.TestCase):

  def test_lookup_rows_and_mean(self):
    table = codes.init_codes(jax.random.key(0), 3, 4, scale=1.0)
    got = codes.lookup(table, jnp.array([2, -1, 0]))['appearance']
    np.testing.assert_array_equal(got[0], table['appearance'][2])
    np.testing.assert_allclose(got[1], table['appearance'].mean(0), rtol=1e-6)
    np.testing.assert_array_equal(got[2], table['appearance'][0])

  def test_interpolate_and_mix(self):
    a, b = jnp.zeros(4), jnp.ones(4)
    blends = codes.interpolate(a, b, jnp.array([0.0, 0.25, 1.0]))
    np.testing.assert_allclose(blends[:, 0], [0.0, 0.25, 1.0])
    table = jnp.stack([a, b])
    np.testing.assert_allclose(codes.mix(table, jnp.array([0.5, 0.5])),
                               np.full(4, 0.5))

  def test_bank_round_trip_and_missing_name(self):
    with tempfile.TemporaryDirectory() as tmp:
      path = os.path.join(tmp, 'bank.npz')
      codes.save_bank(path, {'blue': np.arange(4.0)})
      codes.save_bank(path, {'red': np.ones(4)})  # keeps 'blue'.
      self.assertEqual(sorted(codes.load_bank(path)), ['blue', 'red'])
      np.testing.assert_array_equal(
          codes.bank_code(path, 'blue')['appearance'], np.arange(4.0))
      with self.assertRaisesRegex(codes.CodeBankError, "'green' is not in"):
        codes.bank_code(path, 'green')
      with self.assertRaisesRegex(codes.CodeBankError, 'No code bank'):
        codes.load_bank(os.path.join(tmp, 'nope.npz'))

  def test_palette_entries_travel_with_every_operation(self):
    table = codes.init_codes(jax.random.key(0), 3, 4, palette_size=5)
    self.assertEqual(table['palette'].shape, (3, 5, 3))
    self.assertEqual(codes.num_rows(table), 3)
    got = codes.lookup(table, jnp.array([[1, -1]]))
    self.assertEqual(got['palette'].shape, (1, 2, 5, 3))
    np.testing.assert_array_equal(got['palette'][0, 0], table['palette'][1])
    np.testing.assert_allclose(got['palette'][0, 1],
                               table['palette'].mean(0), rtol=1e-6)
    a, b = codes.row(table, 0), codes.row(table, 2)
    half = codes.interpolate(a, b, 0.5)
    for key in ('appearance', 'palette'):
      np.testing.assert_allclose(half[key], 0.5 * (a[key] + b[key]),
                                 rtol=1e-6)
    mixed = codes.mix(table, jnp.array([0.0, 0.0, 1.0]))
    np.testing.assert_allclose(mixed['palette'], b['palette'])
    # Without a palette the table (and its random values) is as before.
    plain = codes.init_codes(jax.random.key(0), 3, 4)
    self.assertEqual(set(plain), {'appearance'})
    np.testing.assert_array_equal(plain['appearance'], table['appearance'])
    with tempfile.TemporaryDirectory() as tmp:
      path = os.path.join(tmp, 'bank.npz')
      codes.save_bank(path, {'look': a, 'latent': np.ones(4)})
      bank = codes.load_bank(path)
      np.testing.assert_array_equal(bank['look']['palette'], a['palette'])
      self.assertEqual(set(bank['latent']), {'appearance'})
      with self.assertRaisesRegex(codes.CodeBankError, 'palette size'):
        codes.bank_code(path, 'latent', like=a)

  def test_init_rejects_empty_table(self):
    with self.assertRaisesRegex(ValueError, 'num_codes'):
      codes.init_codes(jax.random.key(0), 0, 4)


if __name__ == '__main__':
  absltest.main()
