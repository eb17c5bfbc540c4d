"""Material variants of the procedural chair: part recolors and relighting.

An appearance here is a `Material`: a base color for every chair part
(`procedural.PARTS`) and a `procedural.Light`. Unlike `variants`, which
transforms finished images, a material is re-rendered from the geometry, so
the ground truth of a recolor or a relight is exact for every view.

The training distribution (what `sample_appearances` draws):
  part colors: independent for every part and appearance, HSV with hue
    uniform in `HUE_RANGE_DEG` = (-25, 40) degrees (0 = red; magenta-red
    through orange), saturation uniform in `SATURATION_RANGE` = (0.6, 0.95)
    and value uniform in `VALUE_RANGE` = (0.5, 0.9); stored rounded to
    float32. The default chair colors lie inside it; saturated blue
    (0.1, 0.25, 0.9), hue ~229 degrees, lies far outside.
  light: direction uniform in solid angle on the cap of half-angle
    `light_cone_deg` around `procedural.LIGHT_DIRECTION`; diffuse intensity
    uniform in `INTENSITY_RANGE` = (0.45, 0.65); ambient fixed at
    `procedural.AMBIENT`. With `light_cone_deg` = 0 every appearance has the
    default light exactly (direction and intensity `procedural.DIFFUSE`).
Colors and lights come from separate seeded streams, so one seed gives the
same colors whatever the cone.

A material dataset (`write_material_dataset`) is the chair in the Blender
format with the cameras `chair_files.write_chair_dataset` uses for the same
seed. Every frame carries `appearance_id`, `part_colors` ({part: [r, g, b]})
and `light` ({direction, intensity, ambient}); the top level carries
`materials` (the appearance table, one {part_colors, light} per id), `parts`,
`material_distributions` (see `training_distribution`) and `procedural`
(seed, resolution, supersample: what re-rendering needs).

Owns the distributions and their membership tests, sampling, writing the
dataset and re-rendering its views under any material (`ground_truth`,
`part_maps`). Geometry and shading are `procedural`'s; reading datasets is
`blender`'s.
"""

import dataclasses
import os

import numpy as np

from condnerf import workdir as workdir_lib
from condnerf.data import base
from condnerf.data import chair_files
from condnerf.data import dataset_writing
from condnerf.data import image_io
from condnerf.data import procedural
from condnerf.data import transforms_json

HUE_RANGE_DEG = (-25.0, 40.0)
SATURATION_RANGE = (0.6, 0.95)
VALUE_RANGE = (0.5, 0.9)
INTENSITY_RANGE = (0.45, 0.65)
# Slack of the membership tests, for colors rounded to float32 and angles
# recomputed from stored directions.
_HSV_SLACK = 1e-4
_ANGLE_SLACK_DEG = 1e-4


@dataclasses.dataclass(frozen=True, eq=False)
class Material:
  """One appearance of the chair.

  Attributes:
    part_colors: f32[num_parts, 3] base colors, rows in `procedural.PARTS`
      order.
    light: `procedural.Light`.
  """
  part_colors: np.ndarray
  light: procedural.Light

  def to_json(self):
    """{'part_colors': {part: [r, g, b]}, 'light': {...}} with plain floats."""
    colors = {part: [float(v) for v in self.part_colors[i]]
              for i, part in enumerate(procedural.PARTS)}
    return {'part_colors': colors, 'light': self.light.to_json()}

  @classmethod
  def from_json(cls, entry):
    """The `Material` of a `to_json` dict (a dataset frame or table row)."""
    try:
      if set(entry['part_colors']) != set(procedural.PARTS):
        raise ValueError(f'part_colors must name every part of '
                         f'{list(procedural.PARTS)}')
      colors = procedural.as_part_colors(entry['part_colors'])
      light = procedural.as_light(entry['light'])
    except (KeyError, TypeError, ValueError) as e:
      raise base.DataError(
          f'Not a material (need "part_colors" and "light"): {e}') from e
    return cls(part_colors=colors.astype(np.float32), light=light)


def rgb_to_hsv(rgb):
  """f64[..., 3] (hue in degrees in [-180, 180), saturation, value).

  Args:
    rgb: f32[..., 3] colors in [0, 1]. Gray has hue 0 and saturation 0.
  """
  rgb = np.asarray(rgb, np.float64)
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  value = rgb.max(-1)
  chroma = value - rgb.min(-1)
  safe = np.where(chroma > 0, chroma, 1.0)
  sector = np.where(value == r, np.mod((g - b) / safe, 6.0),
                    np.where(value == g, (b - r) / safe + 2.0,
                             (r - g) / safe + 4.0))
  hue = np.where(chroma > 0, np.mod(60.0 * sector + 180.0, 360.0) - 180.0,
                 0.0)
  saturation = chroma / np.where(value > 0, value, 1.0)
  return np.stack([hue, saturation, value], -1)


def hsv_to_rgb(hsv):
  """f64[..., 3] colors of f32[..., 3] (hue in degrees, saturation, value)."""
  hsv = np.asarray(hsv, np.float64)
  hue = np.mod(hsv[..., :1], 360.0) / 60.0
  saturation, value = hsv[..., 1:2], hsv[..., 2:3]
  k = np.mod(np.array([5.0, 3.0, 1.0]) + hue, 6.0)
  return value - value * saturation * np.clip(np.minimum(k, 4.0 - k), 0, 1)


def in_hue_band(rgb):
  """bool[...]: whether colors f32[..., 3] have a hue in `HUE_RANGE_DEG`.

  Gray (no hue) is outside the band.
  """
  hsv = rgb_to_hsv(rgb)
  low, high = HUE_RANGE_DEG
  return ((hsv[..., 1] > 0) & (hsv[..., 0] >= low - _HSV_SLACK) &
          (hsv[..., 0] <= high + _HSV_SLACK))


def in_color_distribution(rgb):
  """bool[...]: whether colors f32[..., 3] lie in the training color box.

  That is hue in `HUE_RANGE_DEG`, saturation in `SATURATION_RANGE` and value
  in `VALUE_RANGE` (each up to float32 rounding).
  """
  hsv = rgb_to_hsv(rgb)
  inside = in_hue_band(rgb)
  for channel, (low, high) in ((1, SATURATION_RANGE), (2, VALUE_RANGE)):
    inside &= ((hsv[..., channel] >= low - _HSV_SLACK) &
               (hsv[..., channel] <= high + _HSV_SLACK))
  return inside


def light_angle_deg(direction):
  """f64[...]: degrees between directions f32[..., 3] and the default light."""
  direction = np.asarray(direction, np.float64)
  direction = direction / np.linalg.norm(direction, axis=-1, keepdims=True)
  cosine = direction @ np.asarray(procedural.LIGHT_DIRECTION)
  return np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))


def in_light_cone(direction, light_cone_deg):
  """bool[...]: whether directions f32[..., 3] lie in the training cone."""
  return light_angle_deg(direction) <= light_cone_deg + _ANGLE_SLACK_DEG


def in_light_distribution(light, light_cone_deg):
  """Whether a light (a `procedural.Light` or its dict) could be drawn.

  Checks the cone, the intensity band (exactly `procedural.DIFFUSE` when the
  cone is 0) and the fixed ambient.
  """
  light = procedural.as_light(light)
  low, high = (INTENSITY_RANGE if light_cone_deg > 0 else
               (procedural.DIFFUSE, procedural.DIFFUSE))
  return bool(in_light_cone(light.direction, light_cone_deg) and
              low <= light.intensity <= high and
              light.ambient == procedural.AMBIENT)


def training_distribution(light_cone_deg):
  """The distribution `sample_appearances` draws from, as a json dict."""
  intensity = (list(INTENSITY_RANGE) if light_cone_deg > 0 else
               [procedural.DIFFUSE, procedural.DIFFUSE])
  return {'hue_deg': list(HUE_RANGE_DEG),
          'saturation': list(SATURATION_RANGE), 'value': list(VALUE_RANGE),
          'light_axis': list(procedural.LIGHT_DIRECTION),
          'light_cone_deg': float(light_cone_deg), 'intensity': intensity,
          'ambient': procedural.AMBIENT}


def _check_cone(light_cone_deg):
  if not 0.0 <= light_cone_deg <= 180.0:
    raise base.DataError(f'light_cone_deg must lie in [0, 180], got '
                         f'{light_cone_deg!r}.')
  return float(light_cone_deg)


def _cone_directions(rng, num, light_cone_deg):
  """f64[num, 3] unit directions uniform on the cap around the default."""
  axis = np.asarray(procedural.LIGHT_DIRECTION, np.float64)
  if light_cone_deg == 0:
    return np.tile(axis, (num, 1))
  cos_theta = rng.uniform(np.cos(np.radians(light_cone_deg)), 1.0, num)
  phi = rng.uniform(0.0, 2.0 * np.pi, num)
  helper = np.eye(3)[int(np.argmin(np.abs(axis)))]
  u = np.cross(axis, helper)
  u /= np.linalg.norm(u)
  w = np.cross(axis, u)
  sin_theta = np.sqrt(np.maximum(1.0 - cos_theta**2, 0.0))
  directions = cos_theta[:, None] * axis + sin_theta[:, None] * (
      np.cos(phi)[:, None] * u + np.sin(phi)[:, None] * w)
  return directions / np.linalg.norm(directions, axis=-1, keepdims=True)


def sample_appearances(num, seed, light_cone_deg=0.0):
  """Draws materials from the training distribution (module docstring).

  Args:
    num: number of materials.
    seed: int seed; colors and lights use separate streams of it.
    light_cone_deg: half-angle of the light-direction cone in degrees, in
      [0, 180]; 0 = always the default light.
  Returns:
    list of `num` `Material`s.
  """
  light_cone_deg = _check_cone(light_cone_deg)
  color_rng = np.random.default_rng([seed, 0])
  shape = (num, len(procedural.PARTS))
  hsv = np.stack([color_rng.uniform(*HUE_RANGE_DEG, shape),
                  color_rng.uniform(*SATURATION_RANGE, shape),
                  color_rng.uniform(*VALUE_RANGE, shape)], -1)
  colors = hsv_to_rgb(hsv).astype(np.float32)
  light_rng = np.random.default_rng([seed, 1])
  directions = _cone_directions(light_rng, num, light_cone_deg)
  if light_cone_deg > 0:
    intensities = light_rng.uniform(*INTENSITY_RANGE, num)
  else:
    intensities = np.full(num, procedural.DIFFUSE)
  return [Material(colors[i], procedural.Light(
      tuple(directions[i]), float(intensities[i]), procedural.AMBIENT))
          for i in range(num)]


def _check_sizes(resolution, num_train, num_val, num_test, num_appearances,
                 supersample):
  """{split: frame count}, once every size is checked."""
  check = base.check_positive_int
  check(resolution, 'resolution')
  if check(supersample, 'supersample') % 2 == 0:
    raise base.DataError(f'supersample must be odd, got {supersample}.')
  if check(num_train, 'num_train') < check(num_appearances,
                                           'num_appearances'):
    raise base.DataError(
        f'num_train={num_train} is smaller than num_appearances='
        f'{num_appearances}; every appearance must occur in training.')
  return {'train': num_train, 'val': check(num_val, 'num_val', 0),
          'test': check(num_test, 'num_test', 0)}


def _write_split(folder, split, poses, ids, materials, resolution,
                 supersample):
  """Renders and saves one split's views; returns their frame entries."""
  os.makedirs(os.path.join(folder, split), exist_ok=True)
  count = len(poses)
  rgba = np.zeros((count, resolution, resolution, 4), np.uint8)
  depth = np.zeros((count, resolution, resolution), np.float32)
  intrinsics = chair_files.dataset_intrinsics(resolution)
  for code in np.unique(ids).tolist():
    rows = np.flatnonzero(ids == code)
    render = procedural.render_chair_full(
        poses[rows], np.tile(intrinsics, (len(rows), 1)), resolution,
        resolution, supersample, materials[code].part_colors,
        materials[code].light)
    rgba[rows] = chair_files.to_rgba8(render.rgb, render.alpha)
    depth[rows] = render.depth
  frames = []
  for i, code in enumerate(ids.tolist()):
    frame = chair_files.save_frame(folder, f'{split}/r_{i}', poses[i],
                                  rgba[i], depth[i])
    frame['appearance_id'] = code
    frame.update(materials[code].to_json())
    frames.append(frame)
  return frames


def write_material_dataset(out_dir, resolution=100, num_train=100, num_val=8,
                           num_test=16, num_appearances=8, seed=0,
                           supersample=1, light_cone_deg=0.0,
                           overwrite=False):
  """Renders the chair under sampled materials as a Blender-format dataset.

  Layout as `chair_files.write_chair_dataset` (same cameras for the same
  seed) plus the material keys of the module docstring. Every split's frames
  get seeded appearance ids, as evenly as possible, so every id occurs in
  train. Everything is written into a temporary folder beside `out_dir` and
  renamed into place at the end, so a failure leaves no partial output.

  Args:
    out_dir: folder to create; must be empty or absent unless `overwrite`.
    resolution: image width and height in pixels.
    num_train: training frames (at least `num_appearances`).
    num_val: validation frames.
    num_test: test frames.
    num_appearances: rows of the material table.
    seed: seed of cameras, materials and id assignment.
    supersample: odd k, rays per pixel side (antialiasing).
    light_cone_deg: half-angle of the light cone, see `sample_appearances`.
    overwrite: replace a non-empty `out_dir`.
  Returns:
    out_dir.
  Raises:
    DataError: on bad sizes or a non-empty `out_dir`.
  """
  out_dir = os.fspath(out_dir)
  counts = _check_sizes(resolution, num_train, num_val, num_test,
                        num_appearances, supersample)
  light_cone_deg = _check_cone(light_cone_deg)
  dataset_writing.check_out(None, out_dir, overwrite)
  materials = sample_appearances(num_appearances, seed, light_cone_deg)
  poses = procedural.chair_poses(sum(counts.values()), seed)
  rng = np.random.default_rng([seed, 2])
  with workdir_lib.staged_dir(out_dir) as tmp:
    start = 0
    for split, count in counts.items():
      ids = dataset_writing.balanced_ids(rng, count, num_appearances)
      frames = _write_split(tmp, split, poses[start:start + count], ids,
                            materials, resolution, supersample)
      start += count
      meta = chair_files.split_meta(frames, seed, resolution, supersample)
      meta['parts'] = list(procedural.PARTS)
      meta['materials'] = [m.to_json() for m in materials]
      meta['material_distributions'] = training_distribution(light_cone_deg)
      workdir_lib.write_json(os.path.join(tmp, f'transforms_{split}.json'),
                             meta, sort_keys=False)
  return out_dir


def read_materials(dataset_dir):
  """The material table (list of `Material`, by id) of a material dataset."""
  json_path = os.path.join(os.fspath(dataset_dir), 'transforms_train.json')
  meta = image_io.read_json(json_path)
  if not isinstance(meta, dict) or 'materials' not in meta:
    raise base.DataError(f'{json_path} has no "materials" table; is it a '
                         'material dataset (write_material_dataset)?')
  return [Material.from_json(entry) for entry in meta['materials']]


def _views(dataset_dir, split, max_frames):
  """Poses, intrinsics and render settings of a chair dataset's split."""
  json_path = os.path.join(dataset_dir, f'transforms_{split}.json')
  meta = image_io.read_json(json_path)
  frames = transforms_json.get_frames(meta, json_path)
  if max_frames:
    frames = frames[:max_frames]
  settings = meta.get('procedural')
  if not isinstance(settings, dict) or settings.get('scene') != 'chair':
    raise base.DataError(f'{json_path} has no "procedural" chair settings; '
                         'only procedural chair datasets can be re-rendered.')
  if 'appearances' in meta:
    raise base.DataError(
        f'{json_path} is an image-space variant dataset; render its ground '
        'truth with variants.ground_truth_images.')
  size = base.check_positive_int(settings.get('resolution'), 'resolution')
  poses, intrinsics = [], []
  for i, frame in enumerate(frames):
    where = f'{json_path} frame {i}'
    poses.append(transforms_json.parse_pose(frame['transform_matrix'], where))
    intrinsics.append(
        transforms_json.frame_intrinsics(meta, frame, size, size, where)[0])
  return (np.asarray(poses, np.float32).reshape(-1, 4, 4),
          np.asarray(intrinsics, np.float32).reshape(-1, 4), size,
          settings.get('supersample', 1))


def ground_truth(dataset_dir, split, part_colors=None, light=None,
                 background=(1.0, 1.0, 1.0), factor=1, max_frames=0):
  """Every view of a split re-rendered under one material.

  The images equal, bit for bit, what `blender.load_blender(dataset_dir,
  background=background, factor=factor)` would return if the frames had
  been written with this material: the same render, uint8 rounding,
  compositing and downsampling.

  Args:
    dataset_dir: a procedural chair dataset (`write_material_dataset`, or
      `chair_files.write_chair_dataset`).
    split: 'train', 'val' or 'test'.
    part_colors: None (the default colors), f32[num_parts, 3] or a dict
      part -> rgb; see `procedural.as_part_colors`.
    light: None (the default light), a `procedural.Light` or its dict.
    background: 3 floats in [0, 1].
    factor: int box-downsampling factor, as in `load_blender`.
    max_frames: when > 0, only the first `max_frames` views.
  Returns:
    f32[N, H, W, 3] composited images.
  """
  background = base.check_background(background)
  factor = base.check_positive_int(factor, 'factor')
  poses, intrinsics, size, supersample = _views(os.fspath(dataset_dir), split,
                                                max_frames)
  render = procedural.render_chair_full(poses, intrinsics, size, size,
                                        supersample, part_colors, light)
  rgba = chair_files.to_rgba8(render.rgb, render.alpha).astype(np.float32)
  rgba /= 255.0
  images = [image_io.box_downsample(
      image_io.composite(image[..., :3], image[..., 3], background), factor)
            for image in rgba]
  shape = (len(images),) + (images[0].shape if images else (0, 0, 3))
  return np.asarray(images, np.float32).reshape(shape)


def part_maps(dataset_dir, split, max_frames=0):
  """Which part every pixel of every view of a split shows.

  Args:
    dataset_dir: a procedural chair dataset.
    split: 'train', 'val' or 'test'.
    max_frames: when > 0, only the first `max_frames` views.
  Returns:
    part_id: i32[N, H, W], index into `procedural.PARTS` of the part the
      pixel-center ray hits, -1 on background.
    coverage: f32[N, H, W, num_parts], fraction of the pixel's rays that hit
      each part (sums to the pixel's alpha).
  """
  poses, intrinsics, size, supersample = _views(os.fspath(dataset_dir), split,
                                                max_frames)
  render = procedural.render_chair_full(poses, intrinsics, size, size,
                                        supersample)
  return render.part_id, render.coverage
