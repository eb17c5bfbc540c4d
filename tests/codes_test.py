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

  def test_palettes_start_near_each_appearances_object_color(self):
    red, blue = np.array([0.8, 0.1, 0.1]), np.array([0.1, 0.2, 0.9])
    images = [np.ones((4, 4, 3)) for _ in range(3)]  # white background.
    images[0][:2] = red
    images[1][1:3] = red * 0.5
    images[2][:2] = blue
    alphas = [np.zeros((4, 4)) for _ in range(3)]
    alphas[0][:2] = alphas[1][1:3] = alphas[2][:2] = 1.0
    centers = codes.palette_centers(images, alphas, np.array([0, 0, 2]), 4)
    np.testing.assert_allclose(centers[0], 0.75 * red, atol=1e-6)
    np.testing.assert_allclose(centers[2], blue, atol=1e-6)
    np.testing.assert_allclose(centers[1], 0.5)  # no frame: gray.
    np.testing.assert_allclose(centers[3], 0.5)
    without = codes.palette_centers(images, None, np.array([0, -1, 2]), 3)
    np.testing.assert_allclose(without[2], 0.5 * blue + 0.5, atol=1e-6)
    table = codes.init_codes(jax.random.key(0), 4, 2, palette_size=5,
                             palette_center=centers, palette_spread=0.05)
    offsets = np.asarray(table['palette']) - centers[:, None]
    self.assertLessEqual(np.abs(offsets).max(), 0.05 + 1e-6)
    # Entries still differ (they must, or the weights cannot tell parts
    # apart), within a code and across codes.
    self.assertGreater(np.ptp(np.asarray(table['palette'][0]), axis=0).min(),
                       0.01)

  def test_init_rejects_empty_table(self):
    with self.assertRaisesRegex(ValueError, 'num_codes'):
      codes.init_codes(jax.random.key(0), 0, 4)


if __name__ == '__main__':
  absltest.main()
