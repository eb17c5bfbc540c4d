"""Loader for the Blender-synthetic format, and the frame reading it shares.

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

This module also owns what the other file-based loaders (`nerfstudio`, `llff`)
reuse: loading frame entries into `base.Frames` (values parsed by
`transforms_json`, files read through `image_io`), and turning the
appearance ids read from files into code rows (`assign_codes`). It owns
no pose normalisation (see `llff`) and no jax.
"""

import dataclasses
import os

import numpy as np

from condnerf.data import base
from condnerf.data import image_io
from condnerf.data import transforms_json

SPLITS = ('train', 'val', 'test')
DEFAULT_NEAR = 2.0
DEFAULT_FAR = 6.0
DEFAULT_SCENE_BOUND = 1.5
def _load_depth(folder, frame, shape, where):
  path = os.path.normpath(os.path.join(folder, frame['depth_file_path']))
  if not os.path.isfile(path):
    raise base.DataError(f'{where}: depth file {path} does not exist; fix '
                         '"depth_file_path".')
  try:
    depth = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise base.DataError(f'{where}: cannot read depth file {path}: {e}') from e
  if depth.shape != shape:
    raise base.DataError(
        f'{where}: depth {path} has shape {depth.shape} but the image is '
        f'{shape}; they must match.')
  return depth.astype(np.float32)


def load_frames(meta, frames, folder, where, background, factor, near, far):
  """Reads frame entries into `Frames` whose ids are still the file ids.

  Args:
    meta: dict, top level of the transforms json (global intrinsics).
    frames: list of frame dicts (see `get_frames`).
    folder: folder that `file_path`s are relative to.
    where: name of the json for error messages.
    background: f32[3], color to composite on.
    factor: int downsampling factor (box average).
    near: near distance of the split.
    far: far distance of the split.
  Returns:
    `base.Frames`; `appearance_ids` i32[N] are the files' `appearance_id`s
    (-1 where absent), to be turned into code rows by `assign_codes`.
  """
  images, alphas, poses, intrinsics, ids, names = [], [], [], [], [], []
  depths, appearances = [], []
  any_alpha = False
  shared_size, shared_name = None, None
  has_depth = ['depth_file_path' in frame for frame in frames]
  has_look = ['appearance' in frame for frame in frames]
  for flags, key in ((has_depth, 'depth_file_path'), (has_look, 'appearance')):
    if any(flags) and not all(flags):
      first = frames[flags.index(False)]['file_path']
      raise base.DataError(
          f'{where}: some frames have "{key}" and frame {first!r} does not; '
          'give it to every frame of the split or to none.')
  for i, frame in enumerate(frames):
    frame_where = f'{where} frame {i} ({frame["file_path"]!r})'
    pose = transforms_json.parse_pose(frame['transform_matrix'], frame_where)
    image_path = transforms_json.resolve_image(folder, frame['file_path'],
                                               frame_where)
    rgb, alpha = image_io.read_image(image_path)
    height, width = rgb.shape[:2]
    if height < factor or width < factor:
      raise base.DataError(f'{frame_where}: image {width}x{height} is smaller '
                           f'than the downsampling factor {factor}.')
    intr, own = transforms_json.frame_intrinsics(meta, frame, width, height,
                                                 frame_where)
    if not own:
      if shared_size is None:
        shared_size, shared_name = (height, width), image_path
      elif shared_size != (height, width):
        raise base.DataError(
            f'{frame_where}: image {image_path} is {width}x{height} but '
            f'{shared_name} is {shared_size[1]}x{shared_size[0]}; images of '
            'a split must share one size unless frames give their own '
            'intrinsics ("fl_x", "fl_y", "cx", "cy", "w", "h").')
    any_alpha = any_alpha or alpha is not None
    alpha = np.ones((height, width), np.float32) if alpha is None else alpha
    if has_depth[i]:
      depth = _load_depth(folder, frame, (height, width), frame_where)
      depths.append(image_io.downsample_depth(depth, factor))
    if has_look[i]:
      appearances.append(transforms_json.appearance_values(frame, frame_where))
    images.append(image_io.box_downsample(
        image_io.composite(rgb, alpha, background), factor))
    alphas.append(image_io.box_downsample(alpha, factor))
    intr = intr.copy()
    intr /= factor
    poses.append(pose)
    intrinsics.append(intr)
    ids.append(transforms_json.appearance_id(frame, frame_where))
    names.append(os.path.relpath(image_path, folder))
  return base.Frames(
      images=images,
      alphas=alphas if any_alpha else None,
      poses=np.asarray(poses, np.float32).reshape(-1, 4, 4),
      intrinsics=np.asarray(intrinsics, np.float32).reshape(-1, 4),
      appearance_ids=np.asarray(ids, np.int32).reshape(-1),
      names=names, near=float(near), far=float(far),
      depths=depths if any(has_depth) else None,
      appearances=np.stack(appearances) if any(has_look) else None)


def load_share(split, entries, share, load):
  """`load(entries)`, or only `share`'s part of them for an eval split.

  Args:
    split: the split's name.
    entries: list describing every frame of the split.
    share: None or `base.Share`.
    load: list of entries -> `base.Frames`.
  Returns:
    `base.Frames`, tagged with global positions when shared.
  """
  if share is None or split not in base.EVAL_SPLITS:
    return load(entries)
  mine, positions = share.take(entries)
  return share.mark(load(mine), positions, len(entries))


def assign_codes(splits, mode, num_codes):
  """Turns file appearance ids into code rows for every split.

  Mode 'auto' is resolved once, from the training split: file ids when every
  training frame has one, else one code per training frame. In 'ids' mode
  val/test frames without an id get -1 (the mean code).

  Args:
    splits: dict split name -> `Frames` with file ids (-1 = none).
    mode: 'auto', 'ids', 'per_frame' or 'shared' (see
      `base.assign_appearance_ids`).
    num_codes: rows of the code table; <= 0 infers max train row + 1.
  Returns:
    (dict split name -> `Frames` with code rows, num_codes).
  Raises:
    DataError: on partial ids in training, or an id outside the table, or
      (when num_codes is inferred) a val/test id never seen in training.
  """
  train = splits['train']
  have = train.appearance_ids >= 0
  if have.any() and not have.all():
    missing = train.names[int(np.argmin(have))]
    present = train.names[int(np.argmax(have))]
    raise base.DataError(
        f'Training frame {missing!r} has no "appearance_id" but {present!r} '
        'has one; give every training frame an appearance_id, or none.')
  if mode == 'auto':
    mode = 'ids' if have.size and have.all() else 'per_frame'
  out = {}
  for split, frames in splits.items():
    raw = frames.appearance_ids
    ids = raw if (split != 'train' or (raw >= 0).any()) else None
    codes = base.assign_appearance_ids(ids, len(frames), mode, split)
    out[split] = dataclasses.replace(frames, appearance_ids=codes)
  inferred = num_codes <= 0
  if inferred:
    num_codes = max(1, int(out['train'].appearance_ids.max(initial=-1)) + 1)
  seen = set(out['train'].appearance_ids.tolist())
  for split, frames in out.items():
    for name, code in zip(frames.names, frames.appearance_ids.tolist()):
      if code >= num_codes:
        raise base.DataError(
            f'{split} frame {name!r} has appearance_id {code}, outside the '
            f'code table [0, {num_codes}); renumber the ids or pass a larger '
            'num_codes.')
      if inferred and code >= 0 and code not in seen:
        raise base.DataError(
            f'{split} frame {name!r} has appearance_id {code}, which no '
            'training frame uses, so it would get no trained code; use a '
            'training id, drop the id, or pass num_codes explicitly.')
  return out, int(num_codes)


def scene_range(meta, where, default_near, default_far):
  """(near, far) from a json's top-level keys, checked."""
  near = transforms_json.get_number(meta, 'near', default_near, where)
  far = transforms_json.get_number(meta, 'far', default_far, where)
  if near < 0 or far <= near:
    raise base.DataError(
        f'{where}: need 0 <= "near" < "far", got near={near}, far={far}.')
  return near, far


def _appearance_table(meta, where):
  try:
    table = np.asarray(meta['appearances'], np.float32)
  except (TypeError, ValueError):
    table = None
  if table is None or table.ndim != 2 or table.shape[1] != 3:
    raise base.DataError(
        f'{where}: "appearances" must be a list of [theta, s, g].')
  return table


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
    share: None, or a `base.Share`: of the val and test splits, read only
      the frames this process evaluates.
  Returns:
    A validated `base.Scene`: near/far from the json's top-level `near`/`far`
    (default 2 and 6), `scene_bound` (default 1.5), up = +z.
  Raises:
    DataError: on missing or malformed files, naming the file and the fix.
  """
  path = os.fspath(path)
  if not os.path.isdir(path):
    raise base.DataError(
        f'Blender dataset folder {path} does not exist; pass the folder that '
        'holds transforms_train.json.')
  factor = transforms_json.check_positive_int(factor, 'factor')
  max_frames = transforms_json.check_positive_int(max_frames, 'max_frames',
                                                  minimum=0)
  background = transforms_json.check_background(background)
  json_paths, metas = {}, {}
  for split in SPLITS:
    json_path = os.path.join(path, f'transforms_{split}.json')
    if split == 'val' and not os.path.isfile(json_path):
      continue
    if not os.path.isfile(json_path):
      raise base.DataError(
          f'{json_path} does not exist; a Blender dataset needs '
          'transforms_train.json and transforms_test.json '
          '(transforms_val.json is optional).')
    json_paths[split], metas[split] = json_path, image_io.read_json(json_path)
  train_meta = metas['train']
  if not isinstance(train_meta, dict):
    raise base.DataError(f'{json_paths["train"]} must hold a JSON object.')
  where = json_paths['train']
  near, far = scene_range(train_meta, where, DEFAULT_NEAR, DEFAULT_FAR)
  scene_bound = transforms_json.get_number(
      train_meta, 'scene_bound', DEFAULT_SCENE_BOUND, where, positive=True)
  splits = {}
  for split in json_paths:
    frames = transforms_json.get_frames(metas[split], json_paths[split])
    if split == 'train' and not frames:
      raise base.DataError(
          f'{json_paths[split]} has an empty "frames" list; a scene needs '
          'training frames (add them, or point data.path at another '
          'dataset).')
    if max_frames:
      frames = frames[:max_frames]
    splits[split] = load_share(
        split, frames, share, lambda entries, s=split: load_frames(
            metas[s], entries, path, os.path.basename(json_paths[s]),
            background, factor, near, far))
  if 'val' not in splits:
    splits['val'] = splits['test']
  splits, num_codes = assign_codes(splits, appearance, num_codes)
  metadata = {'format': 'blender', 'source': os.path.abspath(path),
              'factor': factor}
  for key in ('variants_seed', 'variants_source', 'procedural', 'parts',
              'materials', 'material_distributions'):
    if key in train_meta:
      metadata[key] = train_meta[key]
  if 'appearances' in train_meta:
    metadata['appearances'] = _appearance_table(train_meta, where)
  scene = base.Scene(
      train=splits['train'], val=splits['val'], test=splits['test'],
      num_codes=num_codes, background=background,
      scene_bound=scene_bound, up=np.array([0.0, 0.0, 1.0], np.float32),
      metadata=metadata)
  return base.validate_scene(scene)
