"""The procedural scene: a red chair of boxes, ray-traced exactly.

The chair is six axis-aligned boxes (seat, back, four legs) inside
[-1, 1]^3 with +z up, the back on the +y side. Shading is Lambertian with one
fixed directional light plus ambient light and no shadows; every part has its
own reddish color. The background is white. Rendering intersects each pixel
center's ray with every box (slab method, float64, vectorised numpy), so depth
and mask are exact and the result is deterministic; there is no
supersampling, so alpha is 0 or 1.

Owns the scene geometry, the renderer, random hemisphere cameras and writing
the scene as a Blender-format dataset (RGBA PNG, `transforms_*.json` with
per-frame `depth_file_path`). No jax.
"""

import json
import os

import numpy as np
from PIL import Image

from condnerf import cameras

# name -> (lower corner, upper corner, base color); z up, back at +y.
CHAIR_BOXES = {
    'seat': ((-0.55, -0.55, -0.1), (0.55, 0.55, 0.05), (0.85, 0.12, 0.10)),
    'back': ((-0.55, 0.43, 0.05), (0.55, 0.55, 1.0), (0.75, 0.10, 0.14)),
    'leg_front_left': ((-0.55, -0.55, -1.0), (-0.43, -0.43, -0.1),
                       (0.55, 0.08, 0.06)),
    'leg_front_right': ((0.43, -0.55, -1.0), (0.55, -0.43, -0.1),
                        (0.55, 0.08, 0.06)),
    'leg_back_left': ((-0.55, 0.43, -1.0), (-0.43, 0.55, -0.1),
                      (0.60, 0.10, 0.05)),
    'leg_back_right': ((0.43, 0.43, -1.0), (0.55, 0.55, -0.1),
                       (0.60, 0.10, 0.05)),
}
# Unit vector towards the light (from above, front, left).
LIGHT_DIRECTION = tuple(np.array([-0.4, -0.6, 1.0]) /
                        np.linalg.norm([-0.4, -0.6, 1.0]))
AMBIENT = 0.45
DIFFUSE = 0.55
BACKGROUND = (1.0, 1.0, 1.0)
# Horizontal field of view of the written dataset (that of NeRF's lego).
CAMERA_ANGLE_X = 0.6911112070083618
NEAR, FAR, SCENE_BOUND = 2.0, 6.0, 1.5
# Rays traced at once (bounds memory at large resolutions).
_CHUNK = 1 << 16


def _box_arrays():
  lower = np.array([box[0] for box in CHAIR_BOXES.values()], np.float64)
  upper = np.array([box[1] for box in CHAIR_BOXES.values()], np.float64)
  color = np.array([box[2] for box in CHAIR_BOXES.values()], np.float64)
  return lower, upper, color


def intersect_boxes(origins, directions, lower, upper):
  """Nearest hit of rays against axis-aligned boxes (slab method).

  Args:
    origins: f64[R, 3] ray origins, outside every box.
    directions: f64[R, 3] unit ray directions.
    lower: f64[B, 3] lower box corners.
    upper: f64[B, 3] upper box corners.
  Returns:
    tdist: f64[R], distance to the nearest hit, inf when none.
    box: i32[R], index of the box hit (0 when none).
    normal: f64[R, 3], outward unit normal at the hit (0 when none).
  """
  safe = np.where(np.abs(directions) < 1e-12, 1e-12, directions)
  inverse = 1.0 / safe
  t_lo = (lower[None] - origins[:, None]) * inverse[:, None]  # [R, B, 3]
  t_hi = (upper[None] - origins[:, None]) * inverse[:, None]
  t_enter = np.minimum(t_lo, t_hi)
  t_exit = np.maximum(t_lo, t_hi)
  enter = t_enter.max(axis=-1)  # [R, B]
  leave = t_exit.min(axis=-1)
  hit = (enter <= leave) & (enter > 0)
  enter = np.where(hit, enter, np.inf)
  box = enter.argmin(axis=-1)
  rows = np.arange(len(origins))
  tdist = enter[rows, box]
  axis = t_enter[rows, box].argmax(axis=-1)
  normal = np.zeros_like(directions)
  normal[rows, axis] = -np.sign(safe[rows, axis])
  normal[~np.isfinite(tdist)] = 0.0
  return tdist, box.astype(np.int32), normal


def render_chair(poses, intrinsics, height, width, supersample=1):
  """Ray-traces the chair, antialiased with k x k rays per pixel.

  Args:
    poses: f32[N, 4, 4], camera-to-world (OpenGL axes).
    intrinsics: f32[N, 4], (fx, fy, cx, cy) in pixels.
    height: image height in pixels.
    width: image width in pixels.
    supersample: odd k; each pixel averages a k x k grid of rays (box
      filter, premultiplied), like an antialiased render. 1 = one ray through
      the pixel center.
  Returns:
    rgb: f32[N, H, W, 3], straight (un-premultiplied) color in [0, 1]; the
      white background color where nothing is hit.
    alpha: f32[N, H, W], the fraction of the pixel's rays that hit the chair
      (exactly 0 or 1 when supersample == 1).
    depth: f32[N, H, W], distance to the hit along the pixel-center ray, inf
      where that ray misses.
  """
  if supersample != 1:
    k = int(supersample)
    if k < 1 or k % 2 == 0:
      raise ValueError(f'supersample must be an odd integer, got {k}.')
    fine = np.asarray(intrinsics, np.float64).reshape(-1, 4) * k
    rgb, alpha, depth = render_chair(poses, fine, height * k, width * k)
    blocks = lambda x: x.reshape(x.shape[0], height, k, width, k,
                                 *x.shape[3:])
    coverage = blocks(alpha).mean(axis=(2, 4))
    color = blocks(rgb * alpha[..., None]).mean(axis=(2, 4))
    straight = np.where(coverage[..., None] > 0,
                        color / np.maximum(coverage[..., None], 1e-12),
                        np.asarray(BACKGROUND, np.float32))
    center = blocks(depth)[:, :, k // 2, :, k // 2]
    return (straight.astype(np.float32), coverage.astype(np.float32),
            center.astype(np.float32))
  poses = np.asarray(poses, np.float64).reshape(-1, 4, 4)
  intrinsics = np.asarray(intrinsics, np.float64).reshape(-1, 4)
  lower, upper, colors = _box_arrays()
  light = np.asarray(LIGHT_DIRECTION)
  pixels = cameras.image_pixels(height, width).reshape(-1, 2).astype(
      np.float64)
  row, col = pixels[:, 0], pixels[:, 1]
  num = len(poses)
  rgb = np.empty((num, height * width, 3), np.float32)
  alpha = np.empty((num, height * width), np.float32)
  depth = np.empty((num, height * width), np.float32)
  for i in range(num):
    fx, fy, cx, cy = intrinsics[i]
    for start in range(0, height * width, _CHUNK):
      rows = slice(start, start + _CHUNK)
      cam = np.stack([(col[rows] + 0.5 - cx) / fx,
                      -(row[rows] + 0.5 - cy) / fy,
                      -np.ones_like(row[rows])], -1)
      directions = cam @ poses[i, :3, :3].T
      directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
      origins = np.broadcast_to(poses[i, :3, 3], directions.shape)
      tdist, box, normal = intersect_boxes(origins, directions, lower, upper)
      hit = np.isfinite(tdist)
      shade = AMBIENT + DIFFUSE * np.maximum(normal @ light, 0.0)
      color = np.clip(colors[box] * shade[:, None], 0.0, 1.0)
      rgb[i, rows] = np.where(hit[:, None], color, np.asarray(BACKGROUND))
      alpha[i, rows] = hit
      depth[i, rows] = tdist
  shape = (num, height, width)
  return rgb.reshape(shape + (3,)), alpha.reshape(shape), depth.reshape(shape)


def chair_poses(num, seed, radius=4.0):
  """Random cameras on the upper hemisphere looking at the origin.

  Camera directions are uniform in area on the band of the sphere with
  z / radius in [0.05, 0.95] (no grazing or straight-down views), with the
  image up towards +z.

  Args:
    num: number of cameras.
    seed: int seed of `np.random.default_rng`.
    radius: distance of every camera from the origin.
  Returns:
    f32[num, 4, 4] camera-to-world poses.
  """
  rng = np.random.default_rng(seed)
  z = rng.uniform(0.05, 0.95, num)
  phi = rng.uniform(0.0, 2.0 * np.pi, num)
  ring = np.sqrt(1.0 - z**2)
  positions = radius * np.stack([ring * np.cos(phi), ring * np.sin(phi), z],
                                -1)
  return np.stack([cameras.look_at(p, (0.0, 0.0, 0.0)) for p in positions]
                  ).reshape(num, 4, 4)


def write_chair_dataset(out_dir, resolution=100, num_train=100, num_val=8,
                        num_test=16, seed=0, supersample=1):
  """Renders the chair and writes it as a Blender-format dataset.

  Layout: `<split>/r_<i>.png` (RGBA, straight alpha), `<split>/r_<i>_depth.npy`
  (f32[H, W] ray distance, inf on background) and `transforms_<split>.json`
  with `camera_angle_x`, `near` 2, `far` 6, `scene_bound` 1.5 and per frame
  `file_path`, `transform_matrix`, `depth_file_path`. Existing files of the
  same names are overwritten.

  Args:
    out_dir: folder to write (created if needed).
    resolution: image width and height in pixels.
    num_train: training frames.
    num_val: validation frames.
    num_test: test frames.
    seed: seed of the camera poses (all splits draw from one stream).
    supersample: odd k, rays per pixel side (antialiasing), see
      `render_chair`.
  Returns:
    out_dir.
  """
  out_dir = os.fspath(out_dir)
  counts = {'train': num_train, 'val': num_val, 'test': num_test}
  poses = chair_poses(sum(counts.values()), seed)
  focal = cameras.focal_from_fov(resolution, CAMERA_ANGLE_X)
  intrinsics = np.array([focal, focal, 0.5 * resolution, 0.5 * resolution],
                        np.float32)
  start = 0
  for split, count in counts.items():
    split_poses = poses[start:start + count]
    start += count
    os.makedirs(os.path.join(out_dir, split), exist_ok=True)
    rgb, alpha, depth = render_chair(
        split_poses, np.tile(intrinsics, (count, 1)), resolution, resolution,
        supersample)
    rgba = np.concatenate([rgb, alpha[..., None]], -1)
    rgba = np.round(rgba * 255.0).astype(np.uint8)
    frames = []
    for i in range(count):
      stem = f'{split}/r_{i}'
      Image.fromarray(rgba[i]).save(os.path.join(out_dir, stem + '.png'))
      np.save(os.path.join(out_dir, stem + '_depth.npy'), depth[i])
      frames.append({
          'file_path': f'./{stem}',
          'transform_matrix': split_poses[i].astype(float).tolist(),
          'depth_file_path': f'./{stem}_depth.npy',
      })
    meta = {'camera_angle_x': CAMERA_ANGLE_X, 'near': NEAR, 'far': FAR,
            'scene_bound': SCENE_BOUND,
            'procedural': {'scene': 'chair', 'seed': seed,
                           'resolution': resolution,
                           'supersample': supersample},
            'frames': frames}
    with open(os.path.join(out_dir, f'transforms_{split}.json'), 'w',
              encoding='utf-8') as f:
      json.dump(meta, f, indent=2)
  return out_dir
