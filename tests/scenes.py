"""Tiny in-memory scenes for tests (no files)."""

import json
import os
import unittest

import jax
import numpy as np
from PIL import Image

from condnerf import cameras
from condnerf import parallel
from condnerf.data import base
from condnerf.data import procedural


def needs_devices(count):
  """Skips a test on a backend with fewer than `count` devices.

  The CPU suite forces 8 devices (tests/conftest.py); on one GPU
  (`experiments.accel_check`) the tests that split work over 8 skip.
  """
  return unittest.skipIf(
      jax.device_count() < count,
      f'needs {count} devices, {jax.device_count()} here (the CPU suite '
      'forces 8)')


def assert_same_batched(actual, desired, err_msg=''):
  """The same values computed in batches of another shape.

  Bit for bit on CPU. An accelerator's XLA picks kernels (and summation
  orders) by shape, so there the values agree only to float32 rounding
  amplified through the network: 2.9e-5 relative at most on an H200
  (chunked renders), checked against 1e-4.
  """
  if jax.default_backend() == 'cpu':
    np.testing.assert_array_equal(actual, desired, err_msg=err_msg)
  else:
    np.testing.assert_allclose(actual, desired, rtol=1e-4, atol=1e-6,
                               err_msg=err_msg)


def tiny_frames(num, size, seed, num_codes, background=(1.0, 1.0, 1.0)):
  """Views of the procedural chair, each tinted by its code id."""
  del seed  # The views are fixed; kept for call-site symmetry.
  poses = []
  for i in range(num):
    angle = 2 * np.pi * i / num + 0.3
    position = 4.0 * np.array([np.cos(angle), np.sin(angle), 0.6])
    poses.append(cameras.look_at(position, (0, 0, 0)))
  poses = np.stack(poses)
  focal = cameras.focal_from_fov(size, 0.7)
  intrinsics = np.tile([focal, focal, size / 2, size / 2],
                       (num, 1)).astype(np.float32)
  rgb, alpha, depth = procedural.render_chair(poses, intrinsics, size, size)
  ids = (np.arange(num) % num_codes).astype(np.int32)
  tints = np.array([[1.0, 1.0, 1.0], [0.3, 0.6, 1.0], [0.5, 1.0, 0.4]])
  rgb = rgb * tints[ids % len(tints), None, None, :]
  images = rgb * alpha[..., None] + (
      np.asarray(background) * (1.0 - alpha[..., None]))
  return base.Frames(
      images=[im.astype(np.float32) for im in images],
      alphas=list(alpha), poses=poses, intrinsics=intrinsics,
      depths=list(depth),
      appearance_ids=ids,
      names=[f'frame_{i}' for i in range(num)], near=2.0, far=6.0)


def tiny_scene(num_train=4, num_test=2, size=16, num_codes=2, seed=0,
               background=(1.0, 1.0, 1.0)):
  """A few views of the tinted procedural chair around the origin."""
  test = tiny_frames(num_test, size, seed + 1, num_codes, background)
  return base.validate_scene(base.Scene(
      train=tiny_frames(num_train, size, seed, num_codes, background),
      val=test, test=test, num_codes=num_codes,
      background=np.asarray(background, np.float32),
      scene_bound=1.5, up=np.array([0.0, 0.0, 1.0], np.float32)))


def small_mesh():
  """A 2-device mesh: most tests need parallelism, not 8-way contention."""
  return parallel.create_mesh(jax.devices()[:2])


def opengl_to_llff(pose, hwf, bounds):
  """One poses_bounds.npy row for an OpenGL camera-to-world pose."""
  rotation = pose[:3, :3]
  llff_rotation = np.stack([-rotation[:, 1], rotation[:, 0], rotation[:, 2]],
                           -1)
  matrix = np.concatenate([llff_rotation, pose[:3, 3:4],
                           np.asarray(hwf, np.float64)[:, None]], 1)
  return np.concatenate([matrix.reshape(-1), bounds])


def write_forward_llff(folder, factor=8, num=9, size=16, masks=False):
  """A forward-facing LLFF capture of the procedural chair: cameras on a
  small grid 3 units in front of it, `images_<factor>/` of size x size
  (and, with `masks`, the chair's alpha as `masks_<factor>/`).
  Returns `folder`."""
  grid = [(x, y) for y in (-0.2, 0.0, 0.2) for x in (-0.3, 0.0, 0.3)][:num]
  poses = np.stack([cameras.look_at((x, y, 3.0), (0.2 * x, 0.2 * y, 0.0),
                                    up=(0.0, 1.0, 0.0)) for x, y in grid])
  focal = cameras.focal_from_fov(size, 0.9)
  intrinsics = np.tile([focal, focal, size / 2, size / 2], (num, 1))
  rgb, alpha, _ = procedural.render_chair(poses, intrinsics.astype(np.float32),
                                          size, size)
  images = rgb * alpha[..., None] + (1.0 - alpha[..., None])
  hwf = (size * factor, size * factor, focal * factor)
  rows = [opengl_to_llff(p, hwf, (2.0, 4.5)) for p in poses]
  os.makedirs(os.path.join(folder, f'images_{factor}'), exist_ok=True)
  np.save(os.path.join(folder, 'poses_bounds.npy'), np.stack(rows))
  for i, image in enumerate(images):
    Image.fromarray((255 * np.clip(image, 0, 1)).astype(np.uint8)).save(
        os.path.join(folder, f'images_{factor}', f'img{i:03d}.png'))
  if masks:
    os.makedirs(os.path.join(folder, f'masks_{factor}'), exist_ok=True)
    for i, a in enumerate(alpha):
      Image.fromarray((255 * np.clip(a, 0, 1)).astype(np.uint8)).save(
          os.path.join(folder, f'masks_{factor}', f'img{i:03d}.png'))
  return folder


def write_nerfstudio_capture(folder, num=9, size=16, seed=0):
  """A nerfstudio capture (`transforms.json` + images/) of the procedural
  chair from `num` cameras around it, as ns-process-data lays one out.
  Returns `folder`."""
  rng = np.random.default_rng(seed)
  angles = np.linspace(0, 2 * np.pi, num, endpoint=False) + rng.uniform(0, 1)
  poses = np.stack([cameras.look_at(
      (4 * np.cos(a), 4 * np.sin(a), 2.0), (0.0, 0.0, 0.0)) for a in angles])
  focal = cameras.focal_from_fov(size, 0.7)
  intrinsics = np.tile([focal, focal, size / 2, size / 2], (num, 1))
  rgb, alpha, _ = procedural.render_chair(poses, intrinsics.astype(np.float32),
                                          size, size)
  images = rgb * alpha[..., None] + (1.0 - alpha[..., None])
  os.makedirs(os.path.join(folder, 'images'), exist_ok=True)
  frames = []
  for i, (pose, image) in enumerate(zip(poses, images)):
    name = f'images/frame_{i:05d}.png'
    Image.fromarray((255 * np.clip(image, 0, 1)).astype(np.uint8)).save(
        os.path.join(folder, name))
    frames.append({'file_path': name, 'transform_matrix': pose.tolist()})
  meta = {'camera_model': 'OPENCV', 'fl_x': focal, 'fl_y': focal,
          'cx': size / 2, 'cy': size / 2, 'w': size, 'h': size, 'k1': 0.0,
          'k2': 0.0, 'p1': 0.0, 'p2': 0.0, 'frames': frames}
  with open(os.path.join(folder, 'transforms.json'), 'w',
            encoding='utf-8') as f:
    json.dump(meta, f)
  return folder
