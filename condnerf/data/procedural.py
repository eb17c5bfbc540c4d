"""The procedural scene: a red chair of boxes, ray-traced exactly.

The chair is six axis-aligned boxes inside [-1, 1]^3 with +z up, the back on
the +y side, grouped into four named parts (`PARTS`): `seat`, `back`,
`front_legs` (two boxes) and `back_legs` (two boxes). Every part has its own
base color (`PART_COLORS`, reddish by default; a render may pass another
table). Shading is Lambertian under one directional light plus ambient light
(`Light`; by default `LIGHT_DIRECTION`, `DIFFUSE`, `AMBIENT`), no shadows:
  rgb = clip(color * (ambient + intensity * max(0, n . l)), 0, 1).
The background is white. Rendering intersects each ray with every box (slab
method, float64, vectorised numpy), so depth, mask and part ids are exact and
the result is deterministic; optional k x k supersampling antialiases color,
alpha and part coverage.

Owns the scene geometry, the part and light parameters, the renderer
(`render_chair_full`, and `render_chair` for color, alpha and depth only),
and random hemisphere cameras. Writing it as a Blender-format dataset is
`chair_files`' job; material variants of the chair are `materials`'.
No jax.
"""

import dataclasses
import math

import numpy as np

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
# Named parts, in part-id order; every box belongs to exactly one.
PARTS = ('seat', 'back', 'front_legs', 'back_legs')
BOX_PARTS = {
    'seat': 'seat',
    'back': 'back',
    'leg_front_left': 'front_legs',
    'leg_front_right': 'front_legs',
    'leg_back_left': 'back_legs',
    'leg_back_right': 'back_legs',
}
# part -> default base color: that of its boxes (which agree).
PART_COLORS = {BOX_PARTS[name]: box[2] for name, box in CHAIR_BOXES.items()}
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


@dataclasses.dataclass(frozen=True)
class Light:
  """A directional light plus ambient light; the defaults are the scene's.

  Attributes:
    direction: 3 floats, unit vector from the surface towards the light. A
      direction within 1e-9 of unit length is kept exactly as given (so one
      read back from json renders bit for bit alike); others are normalized.
    intensity: diffuse intensity, >= 0.
    ambient: ambient intensity, >= 0.
  """
  direction: tuple = LIGHT_DIRECTION
  intensity: float = DIFFUSE
  ambient: float = AMBIENT

  def __post_init__(self):
    direction = np.asarray(self.direction, np.float64)
    norm = np.linalg.norm(direction) if direction.shape == (3,) else 0.0
    if not np.isfinite(norm) or norm == 0.0:
      raise ValueError('Light direction must be 3 finite numbers, not all '
                       f'zero; got {self.direction!r}.')
    if abs(norm - 1.0) > 1e-9:  # Else keep the given bits.
      direction = direction / norm
    for name in ('intensity', 'ambient'):
      value = getattr(self, name)
      if not (math.isfinite(value) and value >= 0):
        raise ValueError(f'Light {name} must be a finite number >= 0, got '
                         f'{value!r}.')
      object.__setattr__(self, name, float(value))
    object.__setattr__(self, 'direction',
                       tuple(float(v) for v in direction))

  def to_json(self):
    """{'direction': [x, y, z], 'intensity': i, 'ambient': a}."""
    return {'direction': list(self.direction), 'intensity': self.intensity,
            'ambient': self.ambient}


def as_light(light):
  """A `Light` from None (the default light), a `Light` or its json dict."""
  if light is None:
    return Light()
  if isinstance(light, Light):
    return light
  if isinstance(light, dict) and set(light) == {'direction', 'intensity',
                                                'ambient'}:
    return Light(**light)
  raise ValueError('light must be None, a procedural.Light or a dict with '
                   f'"direction", "intensity" and "ambient"; got {light!r}.')


def as_part_colors(part_colors):
  """The base color of every part as an array.

  Args:
    part_colors: None (the defaults, `PART_COLORS`), f32[num_parts, 3] rows
      in `PARTS` order, or a dict part name -> rgb (parts it leaves out keep
      their default color).
  Returns:
    f64[num_parts, 3] colors in [0, 1].
  Raises:
    ValueError: on an unknown part name, a wrong shape or values outside
      [0, 1].
  """
  table = np.array([PART_COLORS[part] for part in PARTS], np.float64)
  if isinstance(part_colors, dict):
    unknown = sorted(set(part_colors) - set(PARTS))
    if unknown:
      raise ValueError(f'Unknown chair parts {unknown}; the parts are '
                       f'{list(PARTS)}.')
    for part, color in part_colors.items():
      table[PARTS.index(part)] = np.asarray(color, np.float64).reshape(3)
  elif part_colors is not None:
    table = np.asarray(part_colors, np.float64)
    if table.shape != (len(PARTS), 3):
      raise ValueError(f'part_colors must be [{len(PARTS)}, 3] (rows in '
                       f'order {list(PARTS)}), got shape {table.shape}.')
  if not np.all((table >= 0) & (table <= 1)):
    raise ValueError(f'Part colors must lie in [0, 1], got {table.tolist()}.')
  return table


def _box_arrays():
  """Lower and upper corners f64[B, 3] and the part id i32[B] of every box."""
  lower = np.array([box[0] for box in CHAIR_BOXES.values()], np.float64)
  upper = np.array([box[1] for box in CHAIR_BOXES.values()], np.float64)
  part = np.array([PARTS.index(BOX_PARTS[name]) for name in CHAIR_BOXES],
                  np.int32)
  return lower, upper, part


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


@dataclasses.dataclass
class ChairRender:
  """Everything `render_chair_full` knows about N images.

  Attributes:
    rgb: f32[N, H, W, 3], straight (un-premultiplied) color in [0, 1]; the
      white background color where nothing is hit.
    alpha: f32[N, H, W], the fraction of the pixel's rays that hit the chair
      (exactly 0 or 1 without supersampling).
    depth: f32[N, H, W], distance to the hit along the pixel-center ray, inf
      where that ray misses.
    part_id: i32[N, H, W], index into `PARTS` of the part the pixel-center ray
      hits, -1 where it misses.
    coverage: f32[N, H, W, num_parts], the fraction of the pixel's rays that
      hit each part; sums to `alpha` over the last axis (up to float32
      rounding; exactly without supersampling).
    normal: f32[N, H, W, 3], outward unit normal where the pixel-center ray
      hits, 0 where it misses.
  """
  rgb: np.ndarray
  alpha: np.ndarray
  depth: np.ndarray
  part_id: np.ndarray
  coverage: np.ndarray
  normal: np.ndarray


def _check_supersample(supersample):
  k = int(supersample)
  if k != supersample or k < 1 or k % 2 == 0:
    raise ValueError(f'supersample must be an odd integer, got {supersample}.')
  return k


def _trace(poses, intrinsics, height, width, box_colors, light):
  """Traces one ray through every pixel center; see `render_chair_full`."""
  poses = np.asarray(poses, np.float64).reshape(-1, 4, 4)
  intrinsics = np.asarray(intrinsics, np.float64).reshape(-1, 4)
  lower, upper, box_part = _box_arrays()
  direction = np.asarray(light.direction)
  pixels = cameras.image_pixels(height, width).reshape(-1, 2).astype(
      np.float64)
  row, col = pixels[:, 0], pixels[:, 1]
  shape = (len(poses), height * width)
  rgb, normals = (np.empty(shape + (3,), np.float32) for _ in range(2))
  alpha, depth = (np.empty(shape, np.float32) for _ in range(2))
  part = np.empty(shape, np.int32)
  for i in range(len(poses)):
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
      shade = light.ambient + light.intensity * np.maximum(normal @ direction,
                                                           0.0)
      color = np.clip(box_colors[box] * shade[:, None], 0.0, 1.0)
      rgb[i, rows] = np.where(hit[:, None], color, np.asarray(BACKGROUND))
      alpha[i, rows] = hit
      depth[i, rows] = tdist
      part[i, rows] = np.where(hit, box_part[box], -1)
      normals[i, rows] = normal
  image = (len(poses), height, width)
  return ChairRender(
      rgb=rgb.reshape(image + (3,)), alpha=alpha.reshape(image),
      depth=depth.reshape(image), part_id=part.reshape(image),
      coverage=np.zeros(image + (0,), np.float32),  # Set by the caller.
      normal=normals.reshape(image + (3,)))


def _antialias(fine, k, height, width):
  """Averages the k x k rays of every pixel of a k-times finer render."""
  blocks = lambda x: x.reshape(x.shape[0], height, k, width, k, *x.shape[3:])
  center = lambda x: blocks(x)[:, :, k // 2, :, k // 2]
  coverage = blocks(fine.alpha).mean(axis=(2, 4))
  color = blocks(fine.rgb * fine.alpha[..., None]).mean(axis=(2, 4))
  straight = np.where(coverage[..., None] > 0,
                      color / np.maximum(coverage[..., None], 1e-12),
                      np.asarray(BACKGROUND, np.float32))
  parts = blocks(fine.part_id)
  per_part = np.stack([(parts == p).mean(axis=(2, 4), dtype=np.float32)
                       for p in range(len(PARTS))], -1)
  return ChairRender(
      rgb=straight.astype(np.float32), alpha=coverage.astype(np.float32),
      depth=center(fine.depth).astype(np.float32),
      part_id=center(fine.part_id), coverage=per_part,
      normal=center(fine.normal))


def render_chair_full(poses, intrinsics, height, width, supersample=1,
                      part_colors=None, light=None):
  """Ray-traces the chair with any part colors and light.

  Args:
    poses: f32[N, 4, 4], camera-to-world (OpenGL axes).
    intrinsics: f32[N, 4], (fx, fy, cx, cy) in pixels.
    height: image height in pixels.
    width: image width in pixels.
    supersample: odd k; each pixel averages a k x k grid of rays (box
      filter, premultiplied), like an antialiased render. 1 = one ray through
      the pixel center.
    part_colors: None (`PART_COLORS`), f32[num_parts, 3] in `PARTS` order,
      or a dict part -> rgb; see `as_part_colors`.
    light: None (the default light), a `Light` or its json dict.
  Returns:
    `ChairRender` (rgb, alpha, depth, part_id, coverage, normal).
  Raises:
    ValueError: on an even supersample, bad part colors or a bad light.
  """
  k = _check_supersample(supersample)
  box_colors = as_part_colors(part_colors)[_box_arrays()[2]]
  light = as_light(light)
  if k == 1:
    render = _trace(poses, intrinsics, height, width, box_colors, light)
    coverage = render.part_id[..., None] == np.arange(len(PARTS))
    return dataclasses.replace(render, coverage=coverage.astype(np.float32))
  fine = np.asarray(intrinsics, np.float64).reshape(-1, 4) * k
  return _antialias(_trace(poses, fine, height * k, width * k, box_colors,
                           light), k, height, width)


def render_chair(poses, intrinsics, height, width, supersample=1):
  """Ray-traces the chair with its default colors and light.

  Args:
    poses: f32[N, 4, 4], camera-to-world (OpenGL axes).
    intrinsics: f32[N, 4], (fx, fy, cx, cy) in pixels.
    height: image height in pixels.
    width: image width in pixels.
    supersample: odd k, rays per pixel side; see `render_chair_full`.
  Returns:
    rgb: f32[N, H, W, 3], alpha: f32[N, H, W] and depth: f32[N, H, W], as
      in `ChairRender`.
  """
  render = render_chair_full(poses, intrinsics, height, width, supersample)
  return render.rgb, render.alpha, render.depth


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
