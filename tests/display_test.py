"""Inline display helpers: Markdown tables, and what show/show_gif emit."""

import contextlib
import io
import os
import tempfile

from absl.testing import absltest
import numpy as np
from PIL import Image

from condnerf import display
from condnerf import images


class MarkdownTableTest(absltest.TestCase):

  def test_columns_formats_and_missing_cells(self):
    rows = [{'method': 'code', 'psnr': 31.23456, 'steps': 200},
            {'method': 'a|b', 'psnr': float('inf'), 'ok': True}]
    self.assertEqual(display.markdown_table(rows, digits=3).splitlines(), [
        '| method | psnr | steps | ok |',
        '|---|---|---|---|',
        '| code | 31.2 | 200 |  |',
        '| a\\|b | inf |  | True |',
    ])

  def test_explicit_columns_and_numpy_values(self):
    rows = [{'x': np.float32(0.000123456), 'y': np.int64(3), 'z': 'skip'}]
    self.assertEqual(display.markdown_table(rows, columns=['y', 'x']),
                     '| y | x |\n|---|---|\n| 3 | 0.000123 |')


class ShowTest(absltest.TestCase):
  """Outside a kernel IPython's display prints a repr; the bytes are real."""

  def setUp(self):
    super().setUp()
    self.dir = self.enter_context(tempfile.TemporaryDirectory())
    self.enter_context(contextlib.redirect_stdout(io.StringIO()))

  def test_show_a_row_scaled_and_saved(self):
    row = [np.zeros((4, 5, 3), np.float32), np.ones((4, 5, 3), np.float32)]
    path = os.path.join(self.dir, 'row.png')
    data = display.show(row, labels=None, scale=2, save_to=path)
    expected = images.upscale(images.contact_sheet([row]), 2)
    self.assertEqual(data, images.encode_png(expected))
    np.testing.assert_allclose(images.load_png(path), expected, atol=1 / 255)

  def test_show_one_image_without_saving(self):
    image = np.full((3, 3, 3), 0.5, np.float32)
    data = display.show(image)
    with Image.open(io.BytesIO(data)) as png:
      self.assertEqual(png.size, (3, 3))
    self.assertEqual(os.listdir(self.dir), [])

  def test_show_gif(self):
    frames = [np.full((2, 3, 3), v, np.float32) for v in (0.0, 1.0)]
    path = os.path.join(self.dir, 'a.gif')
    data = display.show_gif(frames, fps=5, scale=2, save_to=path)
    with open(path, 'rb') as f:
      self.assertEqual(f.read(), data)
    with Image.open(io.BytesIO(data)) as gif:
      self.assertEqual((gif.n_frames, gif.size), (2, (6, 4)))

  def test_show_table_saves_markdown(self):
    path = os.path.join(self.dir, 'sub', 't.md')
    text = display.show_table([{'a': 1}], save_to=path)
    with open(path) as f:
      self.assertEqual(f.read(), text + '\n')


if __name__ == '__main__':
  absltest.main()
