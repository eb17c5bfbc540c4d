"""Reading dataset files: json, straight-alpha images, masks; box downsampling.

Every file-based loader (`blender`, `nerfstudio`, `llff`) and the dataset
writers' readers (`variants`, `materials`) read through these, so a missing or
malformed file gives the same `base.DataError` everywhere. Images are read as
straight (un-premultiplied) color plus alpha and composited on a background
here; downsampling averages boxes of pixels (compositing is linear, so the
order does not matter). Owns no dataset format and no jax.
"""

import json
import os

import numpy as np
from PIL import Image

from condnerf.data import base


def read_json(path):
  """Reads a json file; raises `base.DataError` when missing or malformed."""
  if not os.path.isfile(path):
    raise base.DataError(f'{path} does not exist; check the dataset path.')
  try:
    with open(path, encoding='utf-8') as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise base.DataError(
        f'{path} is not valid JSON (line {e.lineno}, column {e.colno}: '
        f'{e.msg}); fix the file.') from e
  except UnicodeDecodeError as e:
    raise base.DataError(f'{path} is not UTF-8 text; fix the file.') from e


def _read_with(path, read):
  """`read(image)` of an opened image file.

  Args:
    path: image file (any format Pillow reads).
    read: function of the open `PIL.Image.Image`.
  Raises:
    DataError: when the file is missing or cannot be read as an image.
  """
  if not os.path.isfile(path):
    raise base.DataError(f'Image {path} does not exist.')
  try:
    with Image.open(path) as image:
      return read(image)
  except (OSError, ValueError) as e:
    raise base.DataError(f'Cannot read image {path}: {e}') from e


def _straight_rgba(image):
  """(u8[H, W, 3 or 4], has_alpha) of an open image."""
  has_alpha = 'A' in image.getbands() or 'transparency' in image.info
  return np.asarray(image.convert('RGBA' if has_alpha else 'RGB')), has_alpha


def read_image(path):
  """Reads an image file as straight color and optional alpha.

  Args:
    path: image file (any format Pillow reads).
  Returns:
    rgb: f32[H, W, 3] straight color in [0, 1].
    alpha: f32[H, W] in [0, 1], or None when the file has no alpha channel.
  Raises:
    DataError: when the file is missing or not an image.
  """
  array, has_alpha = _read_with(path, _straight_rgba)
  array = array.astype(np.float32) / 255.0
  if has_alpha:
    return array[..., :3], array[..., 3]
  return array, None


def image_size(path):
  """(height, width) of an image file, read from its header only."""
  width, height = _read_with(path, lambda image: image.size)
  return height, width


def read_gray(path):
  """f32[H, W] in [0, 1]: an image file read as luminance (e.g. a mask)."""
  array = _read_with(path, lambda image: np.asarray(image.convert('L')))
  return array.astype(np.float32) / 255.0


def composite(rgb, alpha, background):
  """f32[..., 3]: straight color `rgb` over `background`, opacity `alpha`.

  Args:
    rgb: f32[..., 3] straight (un-premultiplied) color.
    alpha: f32[...] opacity in [0, 1].
    background: f32[3] background color.
  """
  alpha = alpha[..., None]
  return rgb * alpha + np.asarray(background, np.float32) * (1.0 - alpha)


def box_downsample(image, factor):
  """Averages `factor` x `factor` pixel blocks.

  Compositing is linear, so box-averaging a composited image equals compositing
  the box-averaged premultiplied color and alpha.

  Args:
    image: f32[H, W, ...].
    factor: positive int; rows and columns past a multiple of it are cropped.
  Returns:
    f32[H // factor, W // factor, ...].
  """
  if factor == 1:
    return image
  height, width = image.shape[0] // factor, image.shape[1] // factor
  image = image[:height * factor, :width * factor]
  blocks = image.reshape(height, factor, width, factor, *image.shape[2:])
  return blocks.mean(axis=(1, 3), dtype=np.float32)


def downsample_depth(depth, factor):
  """f32[H // factor, W // factor]: mean finite depth per block, inf if none."""
  if factor == 1:
    return depth
  height, width = depth.shape[0] // factor, depth.shape[1] // factor
  blocks = depth[:height * factor, :width * factor].reshape(
      height, factor, width, factor)
  finite = np.isfinite(blocks)
  total = np.where(finite, blocks, 0.0).sum(axis=(1, 3))
  count = finite.sum(axis=(1, 3))
  with np.errstate(invalid='ignore', divide='ignore'):
    mean = total / count
  return np.where(count > 0, mean, np.inf).astype(np.float32)
