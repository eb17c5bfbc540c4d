"""Appearance variants of an RGBA scene, for training and ground-truth edits.

An appearance is `a = (theta, s, g)`: hue rotation `theta` in [0, 2pi), chroma
scale `s` in [0.5, 1.5] and gain `g` in [0.6, 1.4]. It maps a straight
(un-premultiplied) foreground color as
  rgb' = clip(g * (P + s * R_theta (I - P)) rgb, 0, 1),
with `P` the projector on the gray axis u = (1, 1, 1) / sqrt(3) and `R_theta`
the rotation by `theta` about u. Since R_theta fixes u,
R_theta (I - P) = cos(theta) (I - P) + sin(theta) [u]_x (Rodrigues). The
result is composited over the background with the source alpha.

Owns the transform, the seeded sampling of appearances, writing a variant
dataset in the Blender format (`make_variants`: per-frame `appearance_id` and
`appearance`, top-level `appearances`, `variants_seed`, `variants_source`) and
rendering the ground truth of any source view under any appearance
(`variant_image`, `ground_truth_images`). Reading datasets is `blender`'s job;
checking the output folder and spreading ids over frames `dataset_writing`'s.
"""

import os
import shutil

import numpy as np
from PIL import Image

from condnerf import workdir as workdir_lib
from condnerf.data import base
from condnerf.data import dataset_writing
from condnerf.data import image_io
from condnerf.data import transforms_json

THETA_RANGE = (0.0, 2.0 * np.pi)
S_RANGE = (0.5, 1.5)
G_RANGE = (0.6, 1.4)
IDENTITY = (0.0, 1.0, 1.0)


def appearance_matrix(theta, s, g, xnp=np):
  """The color matrix `g * (P + s * R_theta (I - P))`.

  Args:
    theta: f32[...] hue rotation about the gray axis, radians.
    s: f32[...] chroma scale.
    g: f32[...] gain.
    xnp: numpy or jax.numpy.
  Returns:
    f32[..., 3, 3], acting on column vectors of straight color.
  """
  theta = xnp.asarray(theta, xnp.float32)[..., None, None]
  s = xnp.asarray(s, xnp.float32)[..., None, None]
  g = xnp.asarray(g, xnp.float32)[..., None, None]
  u = 1.0 / np.sqrt(3.0)
  gray = np.full((3, 3), 1.0 / 3.0, np.float32)  # P = u u^T.
  cross = np.array([[0.0, -u, u], [u, 0.0, -u], [-u, u, 0.0]], np.float32)
  chroma = xnp.cos(theta) * (np.eye(3, dtype=np.float32) - gray) + (
      xnp.sin(theta) * cross)
  return g * (gray + s * chroma)


def apply_appearance(rgb, theta, s, g, xnp=np):
  """Applies an appearance to straight color.

  Args:
    rgb: f32[..., 3] straight (un-premultiplied) color in [0, 1].
    theta: f32 scalar, or f32[...] broadcastable to `rgb.shape[:-1]`.
    s: like `theta`, chroma scale.
    g: like `theta`, gain.
    xnp: numpy or jax.numpy.
  Returns:
    f32[..., 3] transformed straight color, clipped to [0, 1].
  """
  matrix = appearance_matrix(theta, s, g, xnp)
  rgb = xnp.asarray(rgb, xnp.float32)
  return xnp.clip((matrix @ rgb[..., None])[..., 0], 0.0, 1.0)


def sample_appearances(num, seed):
  """f32[num, 3] appearances (theta, s, g), uniform in their ranges."""
  rng = np.random.default_rng(seed)
  theta = rng.uniform(*THETA_RANGE, num).astype(np.float32)
  # Keep theta < 2pi after rounding to float32.
  theta = np.minimum(theta, np.nextafter(np.float32(THETA_RANGE[1]),
                                         np.float32(0)))
  s = rng.uniform(*S_RANGE, num).astype(np.float32)
  g = rng.uniform(*G_RANGE, num).astype(np.float32)
  return np.stack([theta, s, g], -1)


def variant_image(rgb, alpha, appearance, background=(1.0, 1.0, 1.0),
                  xnp=np):
  """A view under an appearance, composited on the background.

  Args:
    rgb: f32[..., 3] straight color of the source view.
    alpha: f32[...] its alpha.
    appearance: f32[3], (theta, s, g).
    background: f32[3] background color.
    xnp: numpy or jax.numpy.
  Returns:
    f32[..., 3] composited color.
  """
  theta, s, g = (appearance[i] for i in range(3))
  color = apply_appearance(rgb, theta, s, g, xnp)
  alpha = xnp.asarray(alpha, xnp.float32)[..., None]
  return color * alpha + xnp.asarray(background, xnp.float32) * (1.0 - alpha)


def variant_rgba(rgba, appearance):
  """u8[H, W, 4] -> u8[H, W, 4]: transformed straight color, same alpha.

  This is exactly what `make_variants` writes, so ground truth built from it
  matches the variant files bit for bit.
  """
  rgb = rgba[..., :3].astype(np.float32) / 255.0
  color = apply_appearance(rgb, *(float(v) for v in appearance))
  color = np.round(color * 255.0).astype(np.uint8)
  return np.concatenate([color, rgba[..., 3:]], -1)


def _read_rgba(path):
  try:
    with Image.open(path) as image:
      return np.asarray(image.convert('RGBA'))
  except (OSError, ValueError) as e:
    raise base.DataError(f'Cannot read image {path}: {e}') from e


def _read_split(src, split):
  """(json path, meta, frames) of a split; val falls back to test."""
  json_path = os.path.join(src, f'transforms_{split}.json')
  if split == 'val' and not os.path.isfile(json_path):
    json_path = os.path.join(src, 'transforms_test.json')
  meta = image_io.read_json(json_path)
  return json_path, meta, transforms_json.get_frames(meta, json_path)


def ground_truth_images(src, split, appearance, background=(1.0, 1.0, 1.0),
                        factor=1, max_frames=0):
  """Every view of a source split rendered under one appearance.

  The images equal what `blender.load_blender` returns for a variant dataset
  made by `make_variants` from `src` whose frames carry `appearance`.

  Args:
    src: folder of the source Blender-format RGBA dataset.
    split: 'train', 'val' or 'test'.
    appearance: f32[3], (theta, s, g).
    background: 3 floats in [0, 1].
    factor: int box-downsampling factor, as in `load_blender`.
    max_frames: when > 0, only the first `max_frames` views.
  Returns:
    list of f32[H, W, 3] composited images.
  """
  src = os.fspath(src)
  background = base.check_background(background)
  factor = base.check_positive_int(factor, 'factor')
  json_path, _, frames = _read_split(src, split)
  if max_frames:
    frames = frames[:max_frames]
  images = []
  for i, frame in enumerate(frames):
    where = f'{json_path} frame {i}'
    path = transforms_json.resolve_image(src, frame['file_path'], where)
    rgba = variant_rgba(_read_rgba(path), appearance).astype(np.float32)
    rgba /= 255.0
    image = image_io.composite(rgba[..., :3], rgba[..., 3], background)
    images.append(image_io.box_downsample(image, factor))
  return images


def _inside(folder, file_path, where):
  """`file_path` relative to `folder`; refuses paths that leave it."""
  rel = os.path.relpath(file_path, folder)
  if rel.startswith(os.pardir) or os.path.isabs(rel):
    raise base.DataError(
        f'{where}: {file_path} lies outside the source folder {folder}; '
        'make_variants only copies files inside it.')
  return rel


def _read_sources(src, num_appearances):
  """Dict split -> (json path, meta, frames) of a source dataset, checked.

  Raises:
    DataError: when the source already is a variant dataset, or has fewer
      training frames than `num_appearances`.
  """
  splits = {}
  for split in base.SPLITS:
    json_path = os.path.join(src, f'transforms_{split}.json')
    if split == 'val' and not os.path.isfile(json_path):
      continue
    meta = image_io.read_json(json_path)
    frames = transforms_json.get_frames(meta, json_path)
    if 'appearances' in meta or any('appearance' in f for f in frames):
      raise base.DataError(
          f'{json_path} already is an appearance-variant dataset; make '
          'variants of its source (variants_source) instead.')
    splits[split] = (json_path, meta, frames)
  num_train = len(splits['train'][2])
  if num_train < num_appearances:
    raise base.DataError(
        f'{src} has {num_train} training frames, fewer than num_appearances='
        f'{num_appearances}; every appearance must occur in training.')
  return splits


def _copy_depth(src, tmp, frame, where):
  """Copies a frame's `depth_file_path` file to the same place in `tmp`."""
  depth = os.path.join(src, frame['depth_file_path'])
  if not os.path.isfile(depth):
    raise base.DataError(f'{where}: depth file {depth} does not exist.')
  target = os.path.join(tmp, _inside(src, os.path.normpath(depth), where))
  os.makedirs(os.path.dirname(target), exist_ok=True)
  shutil.copyfile(depth, target)


def _write_frame(src, tmp, frame, look, written, where, suffix):
  """Writes one frame's variant image (and depth) into `tmp`.

  Args:
    src: source dataset folder.
    tmp: folder being written.
    frame: the source frame entry.
    look: f32[3], the frame's appearance (theta, s, g).
    written: set of image paths (relative to `tmp`) written so far; updated.
    where: frame description for error messages.
    suffix: added to the image name when another frame already wrote it.
  Returns:
    The new frame entry: a copy of `frame`, its `file_path` changed when the
    image got `suffix`.
  """
  new = dict(frame)
  image = transforms_json.resolve_image(src, frame['file_path'], where)
  rel = _inside(src, image, where)
  if rel in written:  # An image shared by two frames: keep both looks.
    stem, ext = os.path.splitext(rel)
    rel = f'{stem}{suffix}{ext}'
    new['file_path'] = './' + rel
  written.add(rel)
  target = os.path.join(tmp, rel)
  os.makedirs(os.path.dirname(target), exist_ok=True)
  Image.fromarray(variant_rgba(_read_rgba(image), look)).save(target,
                                                              format='PNG')
  if 'depth_file_path' in frame:
    _copy_depth(src, tmp, frame, where)
  return new


def _write_split(src, tmp, split, source, ids, table, written):
  """Writes one split's images into `tmp`; returns its new json content.

  Args:
    src: source dataset folder.
    tmp: folder being written.
    split: the split's name.
    source: (json path, meta, frames) of the source split.
    ids: i32[N] appearance id of every frame.
    table: f32[num_appearances, 3] appearances.
    written: set of image paths written so far (see `_write_frame`).
  Returns:
    The source meta with the new `frames` (gaining `appearance_id` and
    `appearance`) and the `appearances` table.
  """
  json_path, meta, frames = source
  new_frames = []
  for i, (frame, code) in enumerate(zip(frames, ids.tolist())):
    new = _write_frame(src, tmp, frame, table[code], written,
                       f'{json_path} frame {i}', f'_{split}{i}')
    new['appearance_id'] = code
    new['appearance'] = [float(v) for v in table[code]]
    new_frames.append(new)
  new_meta = dict(meta)
  new_meta['frames'] = new_frames
  new_meta['appearances'] = table.astype(float).tolist()
  return new_meta


def make_variants(src, out, seed=0, num_appearances=8, overwrite=False):
  """Writes an appearance-variant copy of a Blender-format RGBA dataset.

  Appearances are `sample_appearances(num_appearances, seed)`. Every frame of
  every split gets a seeded `appearance_id`, as evenly as possible, so every
  id occurs in train. Images are rewritten (RGBA PNG, same alpha) under their
  original relative paths; `depth_file_path` files are copied; the jsons keep
  every key and gain per frame `appearance_id` and `appearance`
  ([theta, s, g]), and at top level `appearances`, `variants_seed` and
  `variants_source`. Everything is written into a temporary folder beside
  `out` and renamed into place at the end (`workdir.staged_dir`), so a
  failure leaves no partial output.

  Args:
    src: folder of the source dataset (`transforms_{train,val,test}.json`).
    out: folder to create; must be empty or absent unless `overwrite`.
    seed: int seed of appearances and id assignment.
    num_appearances: rows of the appearance table (at most the number of
      training frames).
    overwrite: replace a non-empty `out`.
  Returns:
    out.
  Raises:
    DataError: on a bad source, a non-empty `out`, or a source that already
      is a variant dataset.
  """
  src, out = os.fspath(src), os.fspath(out)
  if not os.path.isdir(src):
    raise base.DataError(f'Source dataset folder {src} does not exist.')
  num_appearances = base.check_positive_int(num_appearances, 'num_appearances')
  dataset_writing.check_out(src, out, overwrite)
  splits = _read_sources(src, num_appearances)
  table = sample_appearances(num_appearances, seed)
  rng = np.random.default_rng([seed, 1])
  with workdir_lib.staged_dir(out) as tmp:
    written = set()
    for split, source in splits.items():
      ids = dataset_writing.balanced_ids(rng, len(source[2]), num_appearances)
      meta = _write_split(src, tmp, split, source, ids, table, written)
      meta['variants_seed'] = int(seed)
      meta['variants_source'] = os.path.abspath(src)
      workdir_lib.write_json(os.path.join(tmp, os.path.basename(source[0])),
                             meta, sort_keys=False)
  return out
