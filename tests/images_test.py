"""Tests for condnerf.images."""

import io
import os
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
from PIL import Image

from condnerf import images


def _random_image(shape, seed=0):
  return np.random.default_rng(seed).random(shape).astype(np.float32)


class PngTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = self.enter_context(tempfile.TemporaryDirectory())

  @parameterized.parameters(((5, 7, 3), 3), ((5, 7), 1), ((5, 7, 1), 1),
                            ((5, 7, 4), 4))
  def test_round_trip(self, shape, channels):
    image = _random_image(shape)
    path = os.path.join(self.dir, 'sub', 'img.png')
    images.save_png(path, image)
    loaded = images.load_png(path)
    self.assertEqual(loaded.dtype, np.float32)
    self.assertEqual(loaded.shape, shape[:2] + (channels,))
    np.testing.assert_allclose(loaded.reshape(shape), image, atol=0.5 / 255)
    self.assertEqual(os.listdir(os.path.dirname(path)), ['img.png'])

  def test_clips_out_of_range_and_nan(self):
    path = os.path.join(self.dir, 'img.png')
    images.save_png(path, np.array([[[-1.0, 0.5, 2.0], [np.nan, 1.0, 0.0]]]))
    np.testing.assert_allclose(images.load_png(path),
                               [[[0.0, 128 / 255, 1.0], [0.0, 1.0, 0.0]]])

  def test_failed_write_keeps_old_file(self):
    path = os.path.join(self.dir, 'img.png')
    images.save_png(path, np.zeros((2, 2, 3)))
    with self.assertRaises(ValueError):
      images.save_png(path, np.zeros((2, 2, 5)))
    np.testing.assert_array_equal(images.load_png(path), np.zeros((2, 2, 3)))
    self.assertEqual(os.listdir(self.dir), ['img.png'])

  def test_load_16_bit(self):
    path = os.path.join(self.dir, 'depth.png')
    Image.fromarray(np.array([[0, 65535]], np.uint16)).save(path)
    np.testing.assert_allclose(images.load_png(path), [[[0.0], [1.0]]])


class ColorizeDepthTest(absltest.TestCase):

  def test_viridis_anchors(self):
    # matplotlib's viridis at 0, 1/4, 1/2, 3/4 and 1.
    anchors = ['440154', '3b528b', '21918c', '5ec962', 'fde725']
    expected = [[int(h[i:i + 2], 16) / 255 for i in (0, 2, 4)]
                for h in anchors]
    np.testing.assert_allclose(
        images.viridis(np.linspace(0, 1, 5)), expected, atol=0.02)

  def test_near_far_and_background(self):
    depth = np.array([[1.0, 2.0, 3.0], [2.0, 2.0, 2.0]], np.float32)
    acc = np.array([[1.0, 1.0, 1.0], [0.0, 0.5, 1.0]], np.float32)
    rgb = images.colorize_depth(depth, acc, near=1.0, far=3.0)
    self.assertEqual(rgb.shape, (2, 3, 3))
    self.assertEqual(rgb.dtype, np.float32)
    np.testing.assert_allclose(rgb[0], images.viridis([0.0, 0.5, 1.0]),
                               atol=1e-6)
    np.testing.assert_allclose(rgb[1, 0], [1.0, 1.0, 1.0])
    np.testing.assert_allclose(
        rgb[1, 1], 0.5 * images.viridis(0.5) + 0.5, atol=1e-6)

  def test_default_range_ignores_background(self):
    depth = np.array([[1.0, 2.0, 3.0, 100.0, np.inf]], np.float32)
    acc = np.array([[1.0, 1.0, 1.0, 0.0, 0.0]], np.float32)
    rgb = images.colorize_depth(depth, acc)
    self.assertTrue(np.isfinite(rgb).all())
    # The far-away background pixel does not stretch the range.
    np.testing.assert_allclose(rgb[0, 1], images.viridis(0.5), atol=0.02)
    np.testing.assert_allclose(rgb[0, 3:], np.ones((2, 3)))

  def test_constant_depth(self):
    rgb = images.colorize_depth(np.full((2, 2), 4.0))
    self.assertTrue(np.isfinite(rgb).all())


class ContactSheetTest(absltest.TestCase):

  def test_layout(self):
    a = np.zeros((4, 5, 3), np.float32)
    b = np.full((3, 2), 0.5, np.float32)
    sheet = images.contact_sheet([[a, b], [a]], pad=1)
    self.assertEqual(sheet.shape, (2 * (4 + 1) + 1, 2 * (5 + 1) + 1, 3))
    np.testing.assert_array_equal(sheet[1:5, 1:6], a)
    np.testing.assert_array_equal(sheet[1:4, 7:9], 0.5)
    # Padding and the missing cell are white.
    self.assertTrue((sheet[0] == 1.0).all())
    self.assertTrue((sheet[6:10, 7:12] == 1.0).all())

  def test_labels_add_a_strip_with_text(self):
    a = np.full((8, 30, 3), 0.5, np.float32)
    plain = images.contact_sheet([[a, a]])
    labelled = images.contact_sheet([[a, a]], labels=[['gt', None]])
    self.assertGreater(labelled.shape[0], plain.shape[0])
    self.assertEqual(labelled.shape[1], plain.shape[1])
    strip = labelled[:labelled.shape[0] - plain.shape[0] + 2]
    first, second = strip[:, :32], strip[:, 32:]
    self.assertLess(first.min(), 0.5)  # Dark text pixels.
    self.assertTrue((second == 1.0).all())

  def test_empty_raises(self):
    with self.assertRaises(ValueError):
      images.contact_sheet([[None]])


class GifTest(absltest.TestCase):

  def test_save_gif(self):
    directory = self.enter_context(tempfile.TemporaryDirectory())
    path = os.path.join(directory, 'video.gif')
    frames = [np.full((6, 8, 3), v, np.float32) for v in (0.0, 0.5, 1.0)]
    images.save_gif(path, frames, fps=20)
    with Image.open(path) as gif:
      self.assertEqual(gif.n_frames, 3)
      self.assertEqual(gif.size, (8, 6))
      self.assertEqual(gif.info['duration'], 50)
      gif.seek(2)
      np.testing.assert_allclose(
          np.asarray(gif.convert('RGB'), np.float32) / 255, frames[2])
    self.assertEqual(os.listdir(directory), ['video.gif'])

  def test_mismatched_frames_raise(self):
    with self.assertRaisesRegex(ValueError, 'same size'):
      images.save_gif('unused.gif', [np.zeros((2, 2, 3)), np.zeros((3, 2, 3))])


class EncodeTest(absltest.TestCase):

  def test_encode_png_matches_saved_file(self):
    directory = self.enter_context(tempfile.TemporaryDirectory())
    image = _random_image((5, 7, 3))
    path = os.path.join(directory, 'img.png')
    images.save_png(path, image)
    with open(path, 'rb') as f:
      self.assertEqual(images.encode_png(image), f.read())

  def test_encode_gif_frames(self):
    frames = [np.full((4, 6, 3), v, np.float32) for v in (0.0, 1.0)]
    data = images.encode_gif(frames, fps=10)
    self.assertTrue(data.startswith(b'GIF8'))
    with Image.open(io.BytesIO(data)) as gif:
      self.assertEqual((gif.n_frames, gif.size), (2, (6, 4)))

  def test_encode_gif_needs_frames(self):
    with self.assertRaisesRegex(ValueError, 'at least one frame'):
      images.encode_gif([])


class UpscalePaintTest(absltest.TestCase):

  def test_upscale_repeats_pixels(self):
    image = _random_image((2, 3, 3))
    big = images.upscale(image, 3)
    self.assertEqual(big.shape, (6, 9, 3))
    np.testing.assert_array_equal(big[::3, ::3], image)
    np.testing.assert_array_equal(big[2::3, 2::3], image)
    np.testing.assert_array_equal(images.upscale(image, 1), image)
    with self.assertRaisesRegex(ValueError, '>= 1'):
      images.upscale(image, 0)

  def test_paint_mask(self):
    image = np.zeros((3, 4, 3), np.float32)
    mask = np.zeros((3, 4), bool)
    mask[1, 2] = True
    out = images.paint_mask(image, mask, (0.2, 0.4, 1.0))
    np.testing.assert_allclose(out[1, 2], [0.2, 0.4, 1.0])
    self.assertEqual(np.count_nonzero(out.any(-1)), 1)
    self.assertEqual(np.count_nonzero(image), 0)  # the input is untouched.
    with self.assertRaisesRegex(ValueError, 'does not match'):
      images.paint_mask(image, mask[:2], (1, 1, 1))


class DifferenceImageTest(absltest.TestCase):

  def test_equal_inputs_are_dark_and_zero(self):
    depth = np.array([[1.0, np.inf], [np.nan, 2.0]], np.float32)
    colored, largest = images.difference_image(depth, depth.copy())
    self.assertEqual(largest, 0.0)
    self.assertEqual(colored.shape, (2, 2, 3))
    np.testing.assert_allclose(colored, np.broadcast_to(images.viridis(0.0),
                                                        (2, 2, 3)))

  def test_scale_and_max_over_channels(self):
    a = np.zeros((1, 3, 3), np.float32)
    b = a.copy()
    b[0, 1, 2] = 0.5
    b[0, 2, 0] = -0.25
    colored, largest = images.difference_image(a, b)
    self.assertEqual(largest, 0.5)
    np.testing.assert_allclose(colored[0, 0], images.viridis(0.0))
    np.testing.assert_allclose(colored[0, 1], images.viridis(1.0))
    np.testing.assert_allclose(colored[0, 2], images.viridis(0.5))
    fixed, _ = images.difference_image(a, b, vmax=1.0)
    np.testing.assert_allclose(fixed[0, 1], images.viridis(0.5))

  def test_non_finite_change_is_infinite(self):
    a = np.array([[1.0, 1.0]], np.float32)
    b = np.array([[np.inf, 1.5]], np.float32)
    colored, largest = images.difference_image(a, b)
    self.assertEqual(largest, np.inf)
    np.testing.assert_allclose(colored[0, 0], images.viridis(1.0))
    np.testing.assert_allclose(colored[0, 1], images.viridis(1.0))

  def test_shape_mismatch_raises(self):
    with self.assertRaisesRegex(ValueError, 'cannot compare'):
      images.difference_image(np.zeros((2, 2)), np.zeros((2, 3)))


if __name__ == '__main__':
  absltest.main()
