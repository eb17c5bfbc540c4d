"""Edit inputs: the pixels to change, their target colors, and their rays.

The first stage of `condnerf.edit` (scribbles -> optimize -> methods ->
scoring -> operations). Owns `EditError`, `EditBatch` and everything that
turns user input into one: colors (`parse_color`), pixel lists
(`parse_pixels`), view lists (`parse_views`), scribble masks from PNGs
(`load_mask`) or brush strokes (`brush_mask`), the one seeded sampler of
pixels from a mask (`sample_pixels`, for benchmark scribbles and fits) and
`scribble_batch`, which casts the rays of chosen pixels. Host-side numpy;
no model.

Symbols: `num_rays` scribbled rays; pixels are (row, col).
"""

import os
import re
from typing import Any

from flax import struct
import jax
import numpy as np

from condnerf import errors
from condnerf import images
from condnerf.data import sampler as sampler_lib


class EditError(errors.UserError, ValueError):
  """Bad edit input; the message names the problem and the fix."""


@struct.dataclass
class EditBatch:
  """Rays to edit with their targets (numpy on the host).

  Attributes:
    rays: `structs.Rays` [num_rays]; `code_ids` index the optimized table.
    target: f32[num_rays, 3] target colors.
    weight: f32[num_rays] loss weight (0 = padding).
  """
  rays: Any
  target: Any
  weight: Any


def parse_color(text):
  """Parses '#RRGGBB', 'R,G,B' (0-255) or 'r,g,b' (0-1 floats) to f32[3].

  Raises:
    EditError: when the text is none of these.
  """
  text = str(text).strip()
  if re.fullmatch(r'#?[0-9a-fA-F]{6}', text):
    text = text.lstrip('#')
    return np.array([int(text[i:i + 2], 16) for i in (0, 2, 4)],
                    np.float32) / 255.0
  parts = [p.strip() for p in text.split(',')]
  try:
    values = np.array([float(p) for p in parts], np.float32)
  except ValueError:
    values = None
  if values is not None and not np.all(np.isfinite(values)):
    raise EditError(f'Color {text!r} is not finite; use #RRGGBB, R,G,B with '
                    'integers 0-255, or r,g,b with floats in [0, 1].')
  if values is None or values.shape != (3,) or np.any(values < 0):
    raise EditError(f'Cannot parse color {text!r}; use #RRGGBB, R,G,B with '
                    'integers 0-255, or r,g,b with floats in [0, 1].')
  is_float = any('.' in p for p in parts)
  if is_float:
    if np.any(values > 1):
      raise EditError(f'Color {text!r} has float components above 1; use '
                      'floats in [0, 1] or integers 0-255.')
    return values
  if np.any(values > 255):
    raise EditError(f'Color {text!r} has components above 255.')
  return values / 255.0


def parse_pixels(text):
  """'r,c;r,c' -> i32[n, 2]; raises EditError on malformed text."""
  pixels = []
  for item in text.split(';'):
    if not item.strip():
      continue
    values = item.split(',')
    try:
      pixel = [int(v) for v in values]
    except ValueError:
      pixel = []
    if len(pixel) != 2:
      raise EditError(
          f'Cannot parse edit.pixels={text!r}: {item.strip()!r} is not one '
          '"row,col" pair; use "row,col;row,col;...".')
    pixels.append(pixel)
  return np.asarray(pixels, np.int32).reshape(-1, 2)


def parse_views(views):
  """`edit.views` as a list of ints; raises EditError for anything else."""
  try:
    return [int(v) for v in views]
  except (TypeError, ValueError) as e:
    raise EditError(
        f'edit.views={tuple(views)!r} must be view indices, e.g. '
        '--config.edit.views="(0,3)".') from e


def load_mask(path, frames, view):
  """bool[H, W] scribble mask from a PNG (any channel > 0.5 is a scribble).

  Raises:
    EditError: a missing file or a size that does not match the view.
  """
  if not os.path.exists(path):
    raise EditError(f'Mask file {path} does not exist.')
  try:
    mask = images.load_png(path)
  except (OSError, ValueError) as e:
    raise EditError(
        f'Mask file {path} is not an image Pillow can read ({e}); save the '
        'mask as a PNG, white where the scribble is.') from e
  mask = mask[..., :3].max(-1) if mask.ndim == 3 else mask
  height, width = frames.images[view].shape[:2]
  if mask.shape != (height, width):
    raise EditError(
        f'Mask {path} is {mask.shape[1]}x{mask.shape[0]} but view {view} is '
        f'{width}x{height}; draw the mask at the view\'s resolution.')
  return mask > 0.5


def brush_mask(height, width, points, radius=1.5):
  """bool[H, W]: a brush stroke through points, as drawn in a paint program.

  Args:
    height, width: image size in pixels.
    points: f32[n, 2] (row, col) of the stroke's vertices (n >= 1), joined
      by straight segments.
    radius: brush radius in pixels; a pixel is painted when its center is
      within `radius` of the stroke.
  Returns:
    bool[height, width].
  """
  points = np.asarray(points, np.float32).reshape(-1, 2)
  if not len(points):
    raise EditError('A brush stroke needs at least one point.')
  grid = np.stack(np.meshgrid(np.arange(height), np.arange(width),
                              indexing='ij'), -1).astype(np.float32)
  starts = points[:-1] if len(points) > 1 else points
  ends = points[1:] if len(points) > 1 else points
  mask = np.zeros((height, width), bool)
  for a, b in zip(starts, ends):
    seg = b - a
    length2 = float(seg @ seg)
    t = (np.zeros((height, width)) if length2 == 0.0
         else np.clip(((grid - a) @ seg) / length2, 0.0, 1.0))
    nearest = a + t[..., None] * seg
    mask |= np.sum((grid - nearest)**2, -1) <= radius**2
  return mask


def mask_to_pixels(mask):
  """i32[n, 2] (row, col) of the True pixels of bool[H, W]."""
  return np.argwhere(np.asarray(mask, bool)).astype(np.int32)


def sample_pixels(mask, count, seed):
  """At most `count` pixels of a mask, drawn at random (sorted by position).

  The one sampler behind benchmark scribbles, demo scribbles and the pixels
  a fit uses.

  Args:
    mask: bool[H, W] pixels to draw from.
    count: how many (all of them when the mask has fewer; 0 = all).
    seed: int seed, or a `np.random.Generator` to draw from.
  Returns:
    i32[n, 2] (row, col), n = min(count, mask.sum()).
  """
  pixels = mask_to_pixels(mask)
  if not count or len(pixels) <= count:
    return pixels
  rng = (seed if isinstance(seed, np.random.Generator)
         else np.random.default_rng(seed))
  return pixels[np.sort(rng.choice(len(pixels), count, replace=False))]


def scribble_batch(frames, views, pixels, colors, code_id=0):
  """Builds the rays and targets of a scribble edit.

  Args:
    frames: `data.base.Frames` the views index.
    views: list of view indices.
    pixels: list (one per view) of i32[n_v, 2] (row, col) pixels, or
      bool[H, W] masks.
    colors: list (one per view) of f32[3] (one color) or f32[n_v, 3]
      (per pixel) target colors in [0, 1].
    code_id: row of the optimized table the rays read.
  Returns:
    `EditBatch` of numpy arrays.
  Raises:
    EditError: a view out of range, a mask of the wrong size, pixels out of
      the image, or no pixels at all.
  """
  if len(views) != len(pixels) or len(views) != len(colors):
    raise EditError('views, pixels and colors need one entry per view.')
  all_rays, targets = [], []
  for view, pix, color in zip(views, pixels, colors):
    if not 0 <= int(view) < len(frames):
      raise EditError(f'View {view} is out of range: the split has '
                      f'{len(frames)} views (0..{len(frames) - 1}).')
    height, width = frames.images[int(view)].shape[:2]
    pix = np.asarray(pix)
    if pix.dtype == bool:
      if pix.shape != (height, width):
        raise EditError(f'Scribble mask of view {view} is {pix.shape[:2]} '
                        f'but the view is {(height, width)}; draw the mask '
                        'at the view\'s resolution.')
      pix = mask_to_pixels(pix)
    pix = pix.reshape(-1, 2).astype(np.int64)
    if np.any(pix < 0) or np.any(pix[:, 0] >= height) or np.any(
        pix[:, 1] >= width):
      raise EditError(f'Scribble pixels of view {view} fall outside its '
                      f'{height}x{width} image.')
    color = np.asarray(color, np.float32)
    color = np.broadcast_to(color, (len(pix), 3)) if color.ndim == 1 else color
    if color.shape != (len(pix), 3):
      raise EditError(f'View {view}: {len(pix)} pixels but colors of shape '
                      f'{color.shape}.')
    frame = np.full((len(pix),), int(view))
    all_rays.append(sampler_lib.frame_rays(frames, frame,
                                           pix.astype(np.float32)))
    targets.append(color)
  if sum(len(t) for t in targets) == 0:
    raise EditError('The scribble is empty: give at least one pixel.')
  rays = jax.tree.map(lambda *xs: np.concatenate(xs), *all_rays)
  rays = rays.replace(code_ids=np.full(rays.code_ids.shape, code_id,
                                       np.int32))
  target = np.concatenate(targets).astype(np.float32)
  return EditBatch(rays=rays, target=target,
                   weight=np.ones((len(target),), np.float32))


def concat_batches(*batches):
  """One `EditBatch` of several (e.g. scribbles plus keep pixels)."""
  return jax.tree.map(lambda *xs: np.concatenate(xs), *batches)


def view_rays(frames, view):
  """Rays [H, W] of one view (code ids are the frame's)."""
  if not 0 <= int(view) < len(frames):
    raise EditError(f'View {view} is out of range: the split has '
                    f'{len(frames)} views.')
  return sampler_lib.image_rays(frames, int(view))
