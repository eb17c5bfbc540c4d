"""The procedural chair as a Blender-format dataset on disk.

Writes what `procedural` renders: RGBA PNGs (straight alpha, rounded as
`to_rgba8` says), `transforms_{train,val,test}.json` with the camera angle,
near/far, scene bound and per-frame `depth_file_path` (float32 `.npy` ray
distances). `materials` writes its material datasets with the same pieces.
No jax.
"""

import json
import os

import numpy as np
from PIL import Image

from condnerf import cameras
from condnerf.data import procedural


def dataset_intrinsics(resolution):
  """f32[4] (fx, fy, cx, cy) of a square image at the dataset's camera
  angle (`procedural.CAMERA_ANGLE_X`)."""
  focal = cameras.focal_from_fov(resolution, procedural.CAMERA_ANGLE_X)
  return np.array([focal, focal, 0.5 * resolution, 0.5 * resolution],
                  np.float32)


def to_rgba8(rgb, alpha):
  """u8[..., 4]: straight color and alpha, rounded as the dataset PNGs are.

  Args:
    rgb: f32[..., 3] straight color in [0, 1].
    alpha: f32[...] alpha in [0, 1].
  """
  rgba = np.concatenate([rgb, alpha[..., None]], -1)
  return np.round(rgba * 255.0).astype(np.uint8)


def save_frame(out_dir, stem, pose, rgba, depth):
  """Writes one view as `<stem>.png` and `<stem>_depth.npy`.

  Args:
    out_dir: dataset folder.
    stem: path of the view inside it without extension, e.g. 'train/r_0'.
    pose: f32[4, 4] camera-to-world.
    rgba: u8[H, W, 4], see `to_rgba8`.
    depth: f32[H, W] ray distance, inf on background.
  Returns:
    The view's frame entry (`file_path`, `transform_matrix`,
    `depth_file_path`).
  """
  Image.fromarray(rgba).save(os.path.join(out_dir, stem + '.png'))
  np.save(os.path.join(out_dir, stem + '_depth.npy'), depth)
  return {
      'file_path': f'./{stem}',
      'transform_matrix': np.asarray(pose).astype(float).tolist(),
      'depth_file_path': f'./{stem}_depth.npy',
  }


def split_meta(frames, seed, resolution, supersample):
  """Top level of a chair `transforms_<split>.json` holding `frames`."""
  return {'camera_angle_x': procedural.CAMERA_ANGLE_X,
          'near': procedural.NEAR, 'far': procedural.FAR,
          'scene_bound': procedural.SCENE_BOUND,
          'procedural': {'scene': 'chair', 'seed': seed,
                         'resolution': resolution,
                         'supersample': supersample},
          'frames': frames}


def write_chair_dataset(out_dir, resolution=100, num_train=100, num_val=8,
                        num_test=16, seed=0, supersample=1):
  """Renders the chair and writes it as a Blender-format dataset.

  Layout: `<split>/r_<i>.png` (RGBA, straight alpha), `<split>/r_<i>_depth.npy`
  (f32[H, W] ray distance, inf on background) and `transforms_<split>.json`
  with `camera_angle_x`, `near` 2, `far` 6, `scene_bound` 1.5, `procedural`
  (scene, seed, resolution, supersample) and per frame `file_path`,
  `transform_matrix`, `depth_file_path`. Existing files of the same names
  are overwritten.

  Args:
    out_dir: folder to write (created if needed).
    resolution: image width and height in pixels.
    num_train: training frames.
    num_val: validation frames.
    num_test: test frames.
    seed: seed of the camera poses (all splits draw from one stream).
    supersample: odd k, rays per pixel side (antialiasing), see
      `procedural.render_chair`.
  Returns:
    out_dir.
  """
  out_dir = os.fspath(out_dir)
  counts = {'train': num_train, 'val': num_val, 'test': num_test}
  poses = procedural.chair_poses(sum(counts.values()), seed)
  intrinsics = dataset_intrinsics(resolution)
  start = 0
  for split, count in counts.items():
    split_poses = poses[start:start + count]
    start += count
    os.makedirs(os.path.join(out_dir, split), exist_ok=True)
    rgb, alpha, depth = procedural.render_chair(
        split_poses, np.tile(intrinsics, (count, 1)), resolution, resolution,
        supersample)
    rgba = to_rgba8(rgb, alpha)
    frames = [save_frame(out_dir, f'{split}/r_{i}', split_poses[i], rgba[i],
                         depth[i]) for i in range(count)]
    with open(os.path.join(out_dir, f'transforms_{split}.json'), 'w',
              encoding='utf-8') as f:
      json.dump(split_meta(frames, seed, resolution, supersample), f,
                indent=2)
  return out_dir
