"""Image files and visualisations, on host numpy arrays.

Owns PNG and GIF reading and writing (files are written to a temporary name
and renamed, so a crash never leaves a half-written image; `encode_png` and
`encode_gif` give the same bytes in memory), the depth colormap, difference
images, nearest-neighbour upscaling and contact sheets that tile images into
a labelled grid. Images
are float arrays in [0, 1], `f32[H, W, 3]` unless stated otherwise; values
outside [0, 1] are clipped when written.

It does not own image metrics (`metrics.py`), dataset decoding (`data/`), or
writing to TensorBoard (`writers.py`).
"""

import io
import os

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont

from condnerf import workdir as workdir_lib

# Polynomial fit of matplotlib's viridis colormap, c[k] the coefficient of
# t**k for (r, g, b); it stays within 0.02 of the published colors.
_VIRIDIS_COEFFS = np.array([
    [0.2777273272234177, 0.005407344544966578, 0.3340998053353061],
    [0.1050930431085774, 1.404613529898575, 1.384590162594685],
    [-0.3308618287255563, 0.214847559468213, 0.09509516302823659],
    [-4.634230498983486, -5.799100973351585, -19.33244095627987],
    [6.228269936347081, 14.17993336680509, 56.69055260068105],
    [4.776384997670288, -13.74514537774601, -65.35303263337234],
    [-5.435455855934631, 4.645852612178535, 26.3124352495832],
])

_LABEL_COLOR = (0, 0, 0)
_BACKGROUND = 1.0  # White, for padding, missing cells and empty space.


def _to_uint8(image):
  """f32[H, W] or f32[H, W, C] in [0, 1] -> uint8, NaN mapped to 0."""
  image = np.nan_to_num(np.asarray(image, np.float32), nan=0.0)
  return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def _pil_image(image):
  """Wraps an [H, W], [H, W, 1], [H, W, 3] or [H, W, 4] float image."""
  image = np.asarray(image)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  if image.ndim not in (2, 3) or (image.ndim == 3 and
                                  image.shape[-1] not in (3, 4)):
    raise ValueError('expected an image of shape [H, W], [H, W, 1], '
                     f'[H, W, 3] or [H, W, 4], got {image.shape}.')
  return Image.fromarray(_to_uint8(image))


def save_png(path, image):
  """Writes an image to a PNG file, atomically; parent folders are created.

  Args:
    path: destination file.
    image: f32[H, W, 3] (also [H, W], [H, W, 1] or [H, W, 4]) in [0, 1];
      clipped, and quantised to 8 bits.
  """
  data = encode_png(image)
  workdir_lib.write_atomic(os.fspath(path), lambda f: f.write(data),
                           binary=True)


def encode_png(image):
  """PNG file contents of an image (as `save_png` writes them).

  Args:
    image: f32[H, W, 3] (also [H, W], [H, W, 1] or [H, W, 4]) in [0, 1].
  Returns:
    bytes.
  """
  buffer = io.BytesIO()
  _pil_image(image).save(buffer, format='PNG')
  return buffer.getvalue()


def load_png(path):
  """Reads a PNG (or any format Pillow knows) as floats in [0, 1].

  Args:
    path: image file.

  Returns:
    f32[H, W, C]: C is 1 for grayscale, 2 for grayscale + alpha, 3 for RGB
    and 4 for RGBA; palette images are expanded to RGB(A). 16-bit images are
    scaled by 1/65535, 8-bit ones by 1/255.
  """
  with Image.open(path) as pil_image:
    if pil_image.mode in ('I;16', 'I;16B', 'I;16L', 'I'):
      image = np.asarray(pil_image, np.float32) / 65535.0
    else:
      if pil_image.mode not in ('L', 'LA', 'RGB', 'RGBA'):
        has_alpha = 'A' in pil_image.mode or 'transparency' in pil_image.info
        pil_image = pil_image.convert('RGBA' if has_alpha else 'RGB')
      image = np.asarray(pil_image, np.float32) / 255.0
  if image.ndim == 2:
    image = image[..., None]
  return image


def viridis(t):
  """Maps values in [0, 1] to viridis colors.

  Args:
    t: f32[...], clipped to [0, 1].

  Returns:
    f32[..., 3], RGB in [0, 1].
  """
  t = np.clip(np.asarray(t, np.float32), 0.0, 1.0)[..., None]
  rgb = np.zeros(t.shape[:-1] + (3,), np.float32)
  for coeff in _VIRIDIS_COEFFS[::-1]:  # Horner's rule.
    rgb = rgb * t + coeff.astype(np.float32)
  return np.clip(rgb, 0.0, 1.0)


def colorize_depth(depth, acc=None, near=None, far=None, min_acc=0.5):
  """Colors a depth map with viridis, on a white background.

  Depth is mapped linearly: `near` is dark purple and `far` is yellow.
  Without `near`/`far`, the 1st and 99th percentiles of the depths of pixels
  with `acc >= min_acc` (all finite depths if there are none) are used.

  Args:
    depth: f32[H, W], distance along each ray (e.g. `RenderOutput.depth`).
    acc: optional f32[H, W], accumulated opacity in [0, 1]; the color is
      blended towards white by `1 - acc`, so empty space shows white.
    near: optional depth shown as the start of the colormap.
    far: optional depth shown as the end of the colormap.
    min_acc: opacity above which a pixel's depth counts for the percentiles.

  Returns:
    f32[H, W, 3], RGB in [0, 1].
  """
  depth = np.asarray(depth, np.float32)
  if depth.ndim == 3 and depth.shape[-1] == 1:
    depth = depth[..., 0]
  if acc is not None:
    acc = np.clip(np.nan_to_num(np.asarray(acc, np.float32)), 0.0, 1.0)
    acc = acc.reshape(depth.shape)
  finite = np.isfinite(depth)
  if near is None or far is None:
    selected = finite if acc is None else finite & (acc >= min_acc)
    if not selected.any():
      selected = finite
    values = depth[selected] if selected.any() else np.zeros(1, np.float32)
    lo, hi = np.percentile(values, [1.0, 99.0])
    near = lo if near is None else near
    far = hi if far is None else far
  span = float(far) - float(near)
  if span == 0.0:
    span = 1.0
  t = (np.where(finite, depth, far) - float(near)) / span
  rgb = viridis(t)
  if acc is not None:
    rgb = rgb * acc[..., None] + _BACKGROUND * (1.0 - acc[..., None])
  return rgb.astype(np.float32)


def _as_rgb(image):
  image = np.asarray(image, np.float32)
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3 or image.shape[-1] not in (1, 3):
    raise ValueError(f'expected [H, W], [H, W, 1] or [H, W, 3], got '
                     f'{image.shape}.')
  return np.broadcast_to(image, image.shape[:2] + (3,))


def contact_sheet(rows, labels=None, pad=2):
  """Tiles images into a grid, optionally with a text label above each.

  Every cell is as large as the largest image; smaller images sit in the top
  left of their cell. Short rows and missing images (None) leave white cells.

  Args:
    rows: list of rows, each a list of f32[H, W, 3] (or [H, W]) images, or
      None for an empty cell.
    labels: optional list of rows of strings (or None), shaped like `rows`;
      drawn in black with Pillow's default font.
    pad: white margin in pixels around and between cells.

  Returns:
    f32[rows * (cell_h + label_h + pad) + pad,
        cols * (cell_w + pad) + pad, 3], on a white background.
  """
  images = [[None if im is None else _as_rgb(im) for im in row]
            for row in rows]
  present = [im for row in images for im in row if im is not None]
  if not present:
    raise ValueError('contact_sheet needs at least one image.')
  cell_h = max(im.shape[0] for im in present)
  cell_w = max(im.shape[1] for im in present)
  num_cols = max(len(row) for row in images)
  font = None
  label_h = 0
  if labels is not None and any(text for row in labels for text in row):
    font = ImageFont.load_default()
    bottom = font.getbbox('Ag')[3]
    label_h = int(bottom) + 2
  step_h = label_h + cell_h + pad
  step_w = cell_w + pad
  sheet = np.full((len(images) * step_h + pad, num_cols * step_w + pad, 3),
                  _BACKGROUND, np.float32)
  for r, row in enumerate(images):
    for c, image in enumerate(row):
      if image is not None:
        y = pad + r * step_h + label_h
        x = pad + c * step_w
        sheet[y:y + image.shape[0], x:x + image.shape[1]] = image
  if font is None:
    return sheet
  pil_sheet = Image.fromarray(_to_uint8(sheet))
  draw = ImageDraw.Draw(pil_sheet)
  for r, row in enumerate(labels):
    for c, text in enumerate(row):
      if text:
        draw.text((pad + c * step_w, pad + r * step_h), str(text),
                  fill=_LABEL_COLOR, font=font)
  return np.asarray(pil_sheet, np.float32) / 255.0


def save_gif(path, frames, fps=10):
  """Writes frames to a looping GIF, atomically.

  Args:
    path: destination file.
    frames: list of f32[H, W, 3] images in [0, 1], all the same size.
    fps: frames per second. GIF stores delays in hundredths of a second, so
      the rate is rounded accordingly.
  """
  data = encode_gif(frames, fps)
  workdir_lib.write_atomic(os.fspath(path), lambda f: f.write(data),
                           binary=True)


def encode_gif(frames, fps=10):
  """Looping GIF file contents of frames (as `save_gif` writes them).

  Args:
    frames: list of f32[H, W, 3] images in [0, 1], all the same size.
    fps: frames per second (GIF delays are hundredths of a second).
  Returns:
    bytes.
  """
  if not len(frames):
    raise ValueError('a GIF needs at least one frame.')
  pil_frames = [_pil_image(frame).convert('RGB') for frame in frames]
  if len({im.size for im in pil_frames}) != 1:
    raise ValueError('all GIF frames must have the same size.')
  duration_ms = max(10, int(round(1000.0 / fps)))
  buffer = io.BytesIO()
  pil_frames[0].save(buffer, format='GIF', save_all=True,
                     append_images=pil_frames[1:], duration=duration_ms,
                     loop=0)
  return buffer.getvalue()


def upscale(image, factor):
  """Nearest-neighbour enlargement, so small renders stay crisp on screen.

  Args:
    image: f32[H, W, ...].
    factor: integer >= 1.
  Returns:
    f32[H * factor, W * factor, ...].
  """
  factor = int(factor)
  if factor < 1:
    raise ValueError(f'upscale factor must be an integer >= 1, got {factor}.')
  image = np.asarray(image)
  return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def paint_mask(image, mask, color):
  """An image with the pixels of a mask painted one color (scribbles).

  Args:
    image: f32[H, W, 3].
    mask: bool[H, W].
    color: f32[3] in [0, 1].
  Returns:
    f32[H, W, 3], a copy.
  """
  out = np.array(_as_rgb(image), np.float32)
  mask = np.asarray(mask, bool)
  if mask.shape != out.shape[:2]:
    raise ValueError(f'mask {mask.shape} does not match image '
                     f'{out.shape[:2]}.')
  out[mask] = np.asarray(color, np.float32)
  return out


def difference_image(a, b, vmax=None):
  """Colors |a - b| with viridis: dark purple = equal, yellow = `vmax`.

  Args:
    a: f32[H, W] or f32[H, W, C] (an image, a depth or an opacity map).
    b: same shape as `a`. Entries equal to `a`'s (inf and NaN included)
      differ by 0; a non-finite entry that is not equal differs by inf.
    vmax: difference shown as the top of the colormap; None = the largest
      finite difference (1 when there is none, so equal inputs stay dark).
  Returns:
    (f32[H, W, 3] colored difference (max over channels), float max |a - b|
    over every pixel and channel).
  """
  a = np.asarray(a, np.float32)
  b = np.asarray(b, np.float32)
  if a.shape != b.shape:
    raise ValueError(f'cannot compare shapes {a.shape} and {b.shape}.')
  same = (a == b) | (np.isnan(a) & np.isnan(b))
  with np.errstate(invalid='ignore'):
    diff = np.where(same, 0.0, np.abs(a - b))
  diff = np.nan_to_num(diff, nan=np.inf, posinf=np.inf)
  if diff.ndim == 3:
    diff = diff.max(-1)
  largest = float(diff.max()) if diff.size else 0.0
  if vmax is None:
    vmax = float(diff[np.isfinite(diff)].max(initial=0.0)) or 1.0
  colored = viridis(np.where(np.isfinite(diff), diff / vmax, 1.0))
  return colored, largest
