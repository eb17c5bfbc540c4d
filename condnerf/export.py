"""A trained run as files other tools open: meshes, points and cameras.

Owns (issue #30, part 2) the box and density grid of a field
(`scene_box`, `make_density_fn`, `sample_grid`), marching cubes of a
density callable (`extract_surface` -> `Surface`), vertex colors rendered
under codes (`vertex_colors`), a point cloud of rendered views
(`view_points`), camera records, and PLY / GLB bytes written atomically.
Codes by name, light and the output folder are the runner's
(`experiments/export.py`); rendering is `inference`'s.

Libraries: scikit-image's `measure.marching_cubes` (Lewiner) extracts the
surface: maintained, a pure pip wheel, no compiler. trimesh writes PLY and
GLB with per-vertex colors and reads them back (tests). Both are pip
packages in setup.py.

Grid: R cells per axis over the box [lower, upper]; the density is sampled
at cell centers, x_i = lower + (i + 0.5) h with h = (upper - lower) / R, so
R^3 points (16.8M at R = 256). The outer layer of samples is set below the
threshold before marching, so a surface the box cuts is closed along the
box (export.json says whether each mesh is watertight). Vertices are world positions (the scene's
own axes: +z up for the procedural chair, not glTF's +y), faces are wound
counter-clockwise seen from outside (outward normals).

Vertex colors: each vertex v with outward unit normal n gets one ray that
starts `OUTSIDE_CELLS` cells outside the surface, at v + d n, points back
along -n, and ends `INSIDE_CELLS` cells inside it (near 0, far d + d_in).
It is rendered like any image ray (same sampler, fields, color head, code
and light), so the MLP, palette and shaded heads color vertices exactly as
they color pixels. A rendered color is c * acc + (1 - acc) * bg with c the
weighted mean color of the ray's samples; the background is divided out,
c = (rgb - (1 - acc) bg) / acc. A ray that gathers less than `MIN_OPACITY`
(a vertex on a wisp of density) takes the mean color of its neighbours.
NDC scenes are refused: their sampler spans the whole ray from the near
plane to infinity whatever the ray's near and far, so no short ray exists.
"""

import dataclasses
import math

import jax
from jax.sharding import PartitionSpec as P
import numpy as np
from skimage import measure
import tqdm
import trimesh

from condnerf import cameras
from condnerf import errors
from condnerf import inference
from condnerf import parallel
from condnerf import structs
from condnerf import workdir as workdir_lib
from condnerf.data import sampler as sampler_lib

MIN_RESOLUTION = 8
OUTSIDE_CELLS = 2.0  # a vertex ray starts this many cells outside.
INSIDE_CELLS = 4.0  # and ends this many cells inside.
MIN_OPACITY = 0.05  # below: the vertex takes its neighbours' color.
# The default threshold: the density at which a slab 1/256 of the box wide
# absorbs half the light (`default_threshold`).
THRESHOLD_SLABS = 256


class ExportError(errors.UserError, ValueError):
  """Export settings that cannot work (resolution, radius, codes, scene)."""


class NoSurfaceError(ExportError):
  """The density never crosses the threshold inside the box."""


@dataclasses.dataclass
class Surface:
  """A triangle mesh from marching cubes.

  Attributes:
    vertices: f32[V, 3], world positions.
    faces: i32[F, 3], vertex indices, counter-clockwise seen from outside.
    normals: f32[V, 3], outward unit normals (the density's descent).
    density_range: (min, max) density seen on the grid.
  """
  vertices: np.ndarray
  faces: np.ndarray
  normals: np.ndarray
  density_range: tuple


def check_resolution(resolution):
  """Returns `resolution` as an int; ExportError unless an integer >= 8."""
  if (isinstance(resolution, bool) or
      not isinstance(resolution, (int, np.integer)) or
      resolution < MIN_RESOLUTION):
    raise ExportError(f'The grid resolution must be an integer >= '
                      f'{MIN_RESOLUTION} (cells per axis), got {resolution!r}.')
  return int(resolution)


def scene_box(experiment, radius=None):
  """The box [lower, upper] the density grid covers, in world units.

  Bounded fields: the field's scene box [-b, b]^3 (b = `scene_bound`,
  where the field's positions are clipped or its encoding ends), or a
  smaller cube [-radius, radius]^3. Contracted fields: the world-space cube
  [-radius, radius]^3 (default b: the contraction is the identity inside
  the ball of radius b); the field contracts those world points itself, so
  vertices are world points whatever the radius.

  Args:
    experiment: `experiment.Experiment`.
    radius: None or a positive float, half-width in world units.
  Returns:
    (lower f64[3], upper f64[3], space) with space 'bounded' or
    'contracted'.
  Raises:
    ExportError: an NDC scene, a radius <= 0, or beyond a bounded box.
  """
  if experiment.model.ndc:
    raise ExportError(
        'This run samples a forward-facing scene in NDC, where every ray '
        'spans the near plane to infinity, so there is no scene box to mesh '
        'nor short vertex rays to render; mesh export needs a bounded or '
        'contracted scene.')
  settings = dict(experiment.model.field or {})
  bound = float(settings.get('scene_bound') or 1.5)
  contracted = bool(settings.get('use_contraction'))
  if radius is not None:
    radius = float(radius)
    if not radius > 0:
      raise ExportError(f'--radius must be positive, got {radius}.')
    if not contracted and radius > bound * (1 + 1e-6):
      raise ExportError(
          f'--radius={radius} reaches outside the field\'s scene box '
          f'(half-width {bound}), where a bounded field has no content; give '
          f'a radius <= {bound} or leave it out.')
  half = bound if radius is None else radius
  return (np.full(3, -half), np.full(3, half),
          'contracted' if contracted else 'bounded')


def default_threshold(lower, upper, slabs=THRESHOLD_SLABS):
  """Density (per world unit) at which a slab 1/`slabs` of the box's width
  absorbs half the light: ln 2 * slabs / width (59 for the chair's 3-unit
  box). Scales with the scene and does not depend on the grid resolution."""
  width = float(np.max(np.asarray(upper) - np.asarray(lower)))
  return math.log(2.0) * slabs / width


def make_density_fn(experiment, params):
  """`density_fn(points f32[n, 3]) -> f32[n]` of the final field.

  The points are split over the experiment's devices (params replicated)
  under one jitted `shard_map`, padded to a multiple of the device count.
  """
  model, mesh = experiment.model, experiment.mesh

  def per_device(params, points):
    return model.apply({'params': params}, points, method='density_at')

  step = jax.jit(jax.shard_map(per_device, mesh=mesh,
                               in_specs=(P(), P(parallel.AXIS)),
                               out_specs=P(parallel.AXIS)))
  placed = parallel.replicate(params, mesh)

  def density_fn(points):
    points, count = parallel.pad_to_multiple(
        np.asarray(points, np.float32), mesh.devices.size)
    return np.asarray(step(placed, parallel.shard_batch(points, mesh)))[:count]

  return density_fn


def cell_centers(lower, upper, resolution):
  """f64[3, R] cell-center coordinates along each axis (module docstring)."""
  lower, upper = np.asarray(lower, np.float64), np.asarray(upper, np.float64)
  frac = (np.arange(resolution) + 0.5) / resolution
  return lower[:, None] + frac[None] * (upper - lower)[:, None]


def sample_grid(density_fn, lower, upper, resolution, chunk=1 << 18,
                progress=True):
  """The density at every cell center of the box, in chunks.

  Args:
    density_fn: f32[n, 3] world points -> f32[n] density; called with
      `chunk` points each time (the last chunk padded), so it compiles once.
    lower, upper: f64[3] box corners.
    resolution: R, cells per axis (>= 8).
    chunk: points per call.
    progress: show a tqdm bar.
  Returns:
    f32[R, R, R] density, indexed [x, y, z].
  """
  resolution = check_resolution(resolution)
  chunk = int(chunk)
  axes = cell_centers(lower, upper, resolution).astype(np.float32)
  total = resolution**3
  out = np.empty(total, np.float32)
  for start in tqdm.tqdm(range(0, total, chunk), desc='density grid',
                         unit='chunk', disable=not progress, leave=False):
    index = np.arange(start, min(start + chunk, total))
    i, j, k = np.unravel_index(index, (resolution,) * 3)
    points = np.stack([axes[0][i], axes[1][j], axes[2][k]], -1)
    count = len(points)
    points = np.pad(points, ((0, chunk - count), (0, 0)), mode='edge')
    out[start:start + count] = np.asarray(density_fn(points))[:count]
  return out.reshape((resolution,) * 3)


def _suggestion(low, high):
  """A threshold inside (low, high): their log-space midpoint."""
  low = max(low, high * 1e-3)
  return math.sqrt(low * high) if low > 0 else 0.5 * (low + high)


def surface_of_grid(grid, lower, upper, threshold):
  """Marching cubes of a sampled density grid (see `extract_surface`)."""
  grid = np.asarray(grid, np.float32)
  resolution = grid.shape[0]
  finite = grid[np.isfinite(grid)]
  low, high = ((float(finite.min()), float(finite.max())) if finite.size
               else (math.nan, math.nan))
  inner = grid[1:-1, 1:-1, 1:-1]
  peak = float(np.nanmax(inner)) if inner.size else -math.inf
  if not (peak > threshold and low < threshold):
    raise NoSurfaceError(
        f'No surface at density threshold {threshold:.4g}: the density on '
        f'the {resolution}^3 grid ranges over [{low:.4g}, {high:.4g}]'
        + (f' (at most {peak:.4g} off the box\'s faces)'
           if low < threshold < high else '') +
        f'; give a --threshold inside that range (e.g. '
        f'{_suggestion(low, high):.3g})'
        + (', or a finer --resolution' if low < threshold < high else '')
        + '.')
  closed = np.nan_to_num(grid, nan=low, posinf=high, neginf=low)
  below = min(low, threshold) - 1.0
  for axis in range(3):  # close surfaces the box cuts (watertight).
    index = [slice(None)] * 3
    for side in (0, -1):
      index[axis] = side
      closed[tuple(index)] = below
  cell = (np.asarray(upper, np.float64) - lower) / resolution
  verts, faces, normals, _ = measure.marching_cubes(
      closed, level=float(threshold), spacing=tuple(cell),
      allow_degenerate=False)
  verts = verts + cell_centers(lower, upper, resolution)[:, 0]
  normals = normals / np.maximum(
      np.linalg.norm(normals, axis=-1, keepdims=True), 1e-12)
  # skimage winds faces clockwise seen along its (outward) normals.
  return Surface(vertices=verts.astype(np.float32),
                 faces=faces[:, ::-1].astype(np.int32),
                 normals=normals.astype(np.float32),
                 density_range=(low, high))


def extract_surface(density_fn, lower, upper, resolution, threshold,
                    chunk=1 << 18, progress=True):
  """The iso-surface density == threshold inside the box.

  Args:
    density_fn: f32[n, 3] world points -> f32[n] density (e.g.
      `make_density_fn`, or an analytic function in tests).
    lower, upper: f64[3] box corners.
    resolution: R, cells per axis (>= 8).
    threshold: the density of the surface.
    chunk, progress: see `sample_grid`.
  Returns:
    `Surface`.
  Raises:
    ExportError: a bad resolution.
    NoSurfaceError: the density does not cross the threshold (the message
      gives the range seen and a threshold inside it).
  """
  grid = sample_grid(density_fn, lower, upper, resolution, chunk, progress)
  return surface_of_grid(grid, lower, upper, threshold)


def vertex_rays(surface, cell):
  """One short ray per vertex pointing back at it along -normal.

  Args:
    surface: `Surface`.
    cell: float, the grid's cell size in world units.
  Returns:
    `structs.Rays` of numpy arrays, leading shape [V].
  """
  outside, count = OUTSIDE_CELLS * cell, len(surface.vertices)
  return structs.Rays(
      origins=(surface.vertices + outside * surface.normals).astype(
          np.float32), directions=(-surface.normals).astype(np.float32),
      near=np.zeros((count, 1), np.float32),
      far=np.full((count, 1), outside + INSIDE_CELLS * cell, np.float32),
      code_ids=np.zeros((count,), np.int32))


def surface_color(rgb, acc, background):
  """f32[..., 3] in [0, 1]: rendered colors f32[..., 3] with the background
  f32[3] divided out by their opacity f32[...] (the samples' mean color)."""
  acc = np.asarray(acc, np.float32)[..., None]
  color = (np.asarray(rgb, np.float32) - (1.0 - acc) * background) / (
      np.maximum(acc, 1e-6))
  return np.clip(color, 0.0, 1.0)


def fill_missing(colors, faces, missing, iterations=64):
  """Gives vertices marked `missing` the mean color of their neighbours.

  Args:
    colors: f32[C, V, 3] colors (C codes).
    faces: i32[F, 3].
    missing: bool[V].
    iterations: passes of spreading from known vertices.
  Returns:
    f32[C, V, 3]; vertices no pass reached take the mean known color.
  """
  colors, known = colors.copy(), ~missing
  edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]],
                          faces[:, [2, 0]]])
  edges = np.concatenate([edges, edges[:, ::-1]])
  for _ in range(iterations):
    use = known[edges[:, 1]] & ~known[edges[:, 0]]
    if not use.any():
      break
    total = np.zeros_like(colors)
    count = np.zeros(colors.shape[1])
    np.add.at(total, (slice(None), edges[use, 0]), colors[:, edges[use, 1]])
    np.add.at(count, edges[use, 0], 1.0)
    reached = count > 0
    colors[:, reached] = total[:, reached] / count[reached, None]
    known = known | reached
  if known.any() and not known.all():
    colors[:, ~known] = colors[:, known].mean(axis=1, keepdims=True)
  return colors


def vertex_colors(experiment, params, surface, table, cell):
  """Every vertex's surface color under each code of a table.

  Args:
    experiment: `experiment.Experiment`.
    params: field parameters.
    surface: `Surface`.
    table: code table (pytree with leading num_codes).
    cell: float, the grid's cell size (sets the rays' length).
  Returns:
    (f32[num_codes, V, 3] colors in [0, 1], f32[V] opacity of each vertex's
    ray, which no code changes).
  """
  rays = vertex_rays(surface, cell)
  out = inference.render_codes(experiment, params, rays, table)
  acc = np.asarray(out['acc'], np.float32)
  colors = surface_color(out['rgb'], acc[None],
                         np.asarray(experiment.model.background, np.float32))
  return fill_missing(colors, surface.faces, acc < MIN_OPACITY), acc


def view_points(experiment, state, frames, max_points, min_opacity=0.5,
                seed=0):
  """A colored point cloud from renders of views.

  Every pixel of every frame is rendered with its frame's code; pixels with
  opacity above `min_opacity` become points at origin + depth * direction,
  colored by the surface's color (background divided out), then at most
  `max_points` of them are drawn at random (seeded).

  Args:
    experiment: `experiment.Experiment`.
    state: trained `TrainState`.
    frames: `data.base.Frames` (e.g. `scene.train`).
    max_points: the cap on points (>= 1).
    min_opacity: pixels at or below it are dropped.
    seed: the subsampling's numpy seed.
  Returns:
    (f32[P, 3] world positions, f32[P, 3] rgb in [0, 1]).
  """
  frame_ids, pixels = [], []
  for index, image in enumerate(frames.images):
    grid = cameras.image_pixels(*image.shape[:2]).reshape(-1, 2)
    frame_ids.append(np.full(len(grid), index, np.int64))
    pixels.append(grid.astype(np.float32))
  rays = sampler_lib.frame_rays(frames, np.concatenate(frame_ids),
                                np.concatenate(pixels))
  out = experiment.render(state, rays)
  acc = np.asarray(out['acc'], np.float32)
  keep = np.flatnonzero(acc > min_opacity)
  if len(keep) > max_points:
    keep = np.sort(np.random.default_rng(seed).choice(keep, max_points,
                                                      replace=False))
  points = rays.origins[keep] + (np.asarray(out['depth'])[keep, None] *
                                 rays.directions[keep])
  return points.astype(np.float32), surface_color(
      out['rgb'][keep], acc[keep],
      np.asarray(experiment.model.background, np.float32))


def camera_records(scene):
  """Every camera of the scene's train, val (when not the test split) and
  test splits: list of dicts with split, index (frame index in the split),
  name, width, height, intrinsics {fx, fy, cx, cy} in pixels, pose (4x4
  camera-to-world, OpenGL axes: x right, y up, looking down -z), near,
  far, appearance_id (-1: the mean code)."""
  splits = [('train', scene.train)]
  if scene.val is not scene.test:
    splits.append(('val', scene.val))
  splits.append(('test', scene.test))
  records = []
  for split, frames in splits:
    for index in range(len(frames)):
      height, width = frames.images[index].shape[:2]
      fx, fy, cx, cy = (float(v) for v in frames.intrinsics[index])
      records.append(dict(
          split=split, index=index, name=str(frames.names[index]),
          width=int(width), height=int(height),
          intrinsics=dict(fx=fx, fy=fy, cx=cx, cy=cy),
          pose=np.asarray(frames.poses[index], np.float64).tolist(),
          near=float(frames.near), far=float(frames.far),
          appearance_id=int(frames.appearance_ids[index])))
  return records


def _rgba8(rgb):
  """u8[..., 4]: opaque RGBA of f32[..., 3] in [0, 1]."""
  rgb = np.round(255.0 * np.clip(rgb, 0.0, 1.0)).astype(np.uint8)
  return np.concatenate([rgb, np.full_like(rgb[..., :1], 255)], -1)


def mesh_bytes(surface, rgb, file_type):
  """A mesh with per-vertex colors as the bytes of a `ply` or `glb` file.

  Args:
    surface: `Surface`.
    rgb: f32[V, 3] vertex colors in [0, 1].
    file_type: 'ply' (binary, with normals) or 'glb'.
  """
  mesh = trimesh.Trimesh(vertices=surface.vertices, faces=surface.faces,
                         vertex_normals=surface.normals,
                         vertex_colors=_rgba8(rgb), process=False)
  return mesh.export(file_type=file_type)


def points_bytes(points, rgb):
  """A point cloud f32[P, 3] with colors f32[P, 3] as binary PLY bytes."""
  return trimesh.PointCloud(points, colors=_rgba8(rgb)).export(
      file_type='ply')


def write_bytes(path, data):
  """Writes bytes through a temporary sibling renamed over `path`."""
  return workdir_lib.write_atomic(path, lambda f: f.write(data), binary=True)
