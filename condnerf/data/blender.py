"""Loader for the Blender-synthetic format.

A Blender dataset is a folder with `transforms_{train,val,test}.json`. Each json
holds `frames`, a list of `{file_path, transform_matrix}` (OpenGL
camera-to-world) and either a global `camera_angle_x` or nerfstudio-style
intrinsics `fl_x, fl_y, cx, cy, w, h` (global, or per frame). Images are RGBA
PNGs with straight (un-premultiplied) alpha; they are composited on the scene
background and the alpha is kept. Extensions read here:
  frames[].appearance_id: int, frames sharing an id share an appearance code.
  frames[].appearance: [theta, s, g] of an appearance-variant dataset.
  frames[].depth_file_path: `.npy` f32[H, W] ray distance, inf on background.
  top level `near`, `far`, `scene_bound` (default 2, 6, 1.5), and the variant
    table `appearances`, `variants_seed`, `variants_source` (kept in
    `Scene.metadata`); also kept there as read: the procedural chair's
    `procedural` settings and a material dataset's `parts`, `materials`
    and `material_distributions` (see `materials`).

Owns finding the split jsons, the scene-level keys and the metadata. Reading
the frame entries is `transforms_json.load_frames` (shared with
`nerfstudio`); the share, code assignment and validation are `base`'s. No
pose normalisation (see `poses`) and no jax.
"""

import functools
import os

import numpy as np

from condnerf.data import base
from condnerf.data import image_io
from condnerf.data import transforms_json

DEFAULT_NEAR = 2.0
DEFAULT_FAR = 6.0
DEFAULT_SCENE_BOUND = 1.5
# Top-level keys of the training json kept in `Scene.metadata` as read.
_METADATA_KEYS = ('variants_seed', 'variants_source', 'procedural', 'parts',
                  'materials', 'material_distributions')


def _read_jsons(path):
  """(json paths, metas): dicts split -> file and its content; val optional."""
  json_paths, metas = {}, {}
  for split in base.SPLITS:
    json_path = os.path.join(path, f'transforms_{split}.json')
    if split == 'val' and not os.path.isfile(json_path):
      continue
    if not os.path.isfile(json_path):
      raise base.DataError(
          f'{json_path} does not exist; a Blender dataset needs '
          'transforms_train.json and transforms_test.json '
          '(transforms_val.json is optional).')
    json_paths[split], metas[split] = json_path, image_io.read_json(json_path)
  if not isinstance(metas['train'], dict):
    raise base.DataError(f'{json_paths["train"]} must hold a JSON object.')
  return json_paths, metas


def _appearance_table(meta, where):
  try:
    table = np.asarray(meta['appearances'], np.float32)
  except (TypeError, ValueError):
    table = None
  if table is None or table.ndim != 2 or table.shape[1] != 3:
    raise base.DataError(
        f'{where}: "appearances" must be a list of [theta, s, g].')
  return table


def _metadata(path, factor, train_meta, where):
  """`Scene.metadata`: format, source, factor and the kept top-level keys."""
  metadata = {'format': 'blender', 'source': os.path.abspath(path),
              'factor': factor}
  for key in _METADATA_KEYS:
    if key in train_meta:
      metadata[key] = train_meta[key]
  if 'appearances' in train_meta:
    metadata['appearances'] = _appearance_table(train_meta, where)
  return metadata


def load_blender(path, appearance='auto', num_codes=0,
                 background=(1.0, 1.0, 1.0), factor=1, max_frames=0,
                 share=None):
  """Loads a Blender-format dataset.

  Args:
    path: folder holding `transforms_{train,val,test}.json` (val is optional;
      the test split stands in for it).
    appearance: code assignment mode, see `base.assign_appearance_ids`.
    num_codes: rows of the code table; 0 infers max training code + 1.
    background: 3 floats in [0, 1], color the RGBA images are composited on.
    factor: int >= 1, box-downsampling factor (intrinsics are scaled).
    max_frames: when > 0, keep only the first `max_frames` of every split.
    share: None, or a `base.Share`: of the val and test splits (and of the
      training split when it sets `train_shards`), read only the frames
      this process holds.
  Returns:
    A validated `base.Scene`: near/far from the json's top-level `near`/`far`
    (default 2 and 6), `scene_bound` (default 1.5), up = +z.
  Raises:
    DataError: on missing or malformed files, naming the file and the fix.
  """
  path = base.check_folder(path, 'Blender dataset folder',
                           'transforms_train.json')
  factor, max_frames, background = base.check_options(factor, max_frames,
                                                      background)
  json_paths, metas = _read_jsons(path)
  where = json_paths['train']
  near, far = transforms_json.scene_range(metas['train'], where, DEFAULT_NEAR,
                                          DEFAULT_FAR)
  scene_bound = transforms_json.get_number(
      metas['train'], 'scene_bound', DEFAULT_SCENE_BOUND, where, positive=True)
  splits = {}
  for split, json_path in json_paths.items():
    frames = transforms_json.get_frames(metas[split], json_path)
    if split == 'train' and not frames:
      raise base.DataError(
          f'{json_path} has an empty "frames" list; a scene needs '
          'training frames (add them, or point data.path at another '
          'dataset).')
    load = functools.partial(
        transforms_json.load_frames, metas[split], folder=path,
        where=os.path.basename(json_path), background=background,
        factor=factor, near=near, far=far)
    frames = frames[:max_frames] if max_frames else frames
    splits[split] = base.load_share(
        split, frames, share, load,
        functools.partial(transforms_json.file_ids, frames,
                          os.path.basename(json_path)))
  splits.setdefault('val', splits['test'])
  splits, num_codes = base.assign_codes(splits, appearance, num_codes)
  return base.build_scene(
      splits, num_codes, background, scene_bound,
      up=np.array([0.0, 0.0, 1.0], np.float32),
      metadata=_metadata(path, factor, metas['train'], where))
