r"""Exports a trained run: meshes, a point cloud and its cameras (#30, part 2).

  python -m experiments.export --workdir=runs/demo [--out=runs/demo/export] \
      [--resolution=256] [--threshold=59] [--codes=mean,0,blue_chair] \
      [--light=0,-1,1] [--radius=1.5] [--no_point_cloud] [--config=FILE]
Writes under --out (default WORKDIR/export), each file atomically (a
temporary sibling renamed over it), and nothing outside it:
  mesh_<code>.ply, mesh_<code>.glb  the density's iso-surface by marching
      cubes with per-vertex colors under that code (and --light), one pair
      per --codes entry (`condnerf/export.py` says how vertices are colored);
  points.ply    xyz + rgb points of the rendered training views;
  cameras.json  every train/test camera: pose, intrinsics, size, split;
  export.json   resolution, threshold, box, density range, codes, and each
      mesh's vertex and face counts.
The run is opened read-only (`runs.load_run`), so a training may go on.
--codes entries: `mean` (the mean of the trained codes), a row of the code
table (an integer), or a name in the run's code bank WORKDIR/edit/codes.npz
('mean' and integers never name bank codes). Bad input prints one line and
exits with code 2. Files of an earlier export that this one does not write
(another code) stay; export.json lists this export's.
"""

# pylint: disable=g-bad-import-order
from experiments import cli  # first: sets up CPU devices before jax loads.

import os
import re
import time

from absl import app
from absl import flags
import jax
from ml_collections import config_flags
import numpy as np
import trimesh

from condnerf import codes as codes_lib
from condnerf import export as export_lib
from condnerf import lighting
from condnerf import runs
from condnerf import workdir as workdir_lib
from condnerf.edit import methods

_WORKDIR = flags.DEFINE_string('workdir', None, 'Folder of the trained run.')
_OUT = flags.DEFINE_string('out', None, 'Output folder (default: '
                           'WORKDIR/export); only files in it are written.')
_RESOLUTION = flags.DEFINE_integer(
    'resolution', 256, 'Grid cells per axis over the scene box (>= 8); the '
    'density is evaluated at R^3 cell centers.')
_THRESHOLD = flags.DEFINE_float(
    'threshold', None, 'Density (per world unit) of the surface. Default: '
    'ln(2) * 256 / box width (59 for a 3-unit box), the density at which a '
    'slab 1/256 of the box wide absorbs half the light: scaled to the scene, '
    'the same at every --resolution, and on the demo chair within a cell of '
    'its boxes (see tests/export_test.py).')
_CODES = flags.DEFINE_string(
    'codes', 'mean', 'Comma list of the codes coloring the meshes: mean, a '
    'row of the code table, or a name in WORKDIR/edit/codes.npz.')
_LIGHT = flags.DEFINE_string(
    'light', None, "'x,y,z' towards the light (world axes), for a shaded "
    'head: each code keeps its light\'s intensity and ambient term.')
_RADIUS = flags.DEFINE_float(
    'radius', None, 'Half-width of the meshed cube in world units (before '
    'contraction): default the field\'s scene_bound; contracted scenes may '
    'go beyond it, bounded ones only below.')
_POINT_CLOUD = flags.DEFINE_bool(
    'point_cloud', True, 'Render the training views and write points.ply.')
_NO_POINT_CLOUD = flags.DEFINE_bool(
    'no_point_cloud', False, 'Skip points.ply (the same as absl\'s '
    '--nopoint_cloud).')
_MAX_POINTS = flags.DEFINE_integer(
    'max_points', 200_000, 'Most points in points.ply (drawn at random from '
    'the pixels of opacity > 0.5).')
_CHUNK = flags.DEFINE_integer('chunk', 1 << 18,
                              'Grid points per density evaluation.')
_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file (:args) to use instead of the run\'s '
    'recorded config.json.', lock_config=True)
flags.mark_flags_as_required(['workdir'])

MESH_PREFIX = 'mesh_'
_ROW = re.compile(r'[+-]?\d+')


def select_codes(run, specs):
  """The codes a --codes list names.

  Args:
    run: `runs.Run`.
    specs: comma-separated entries (module docstring).
  Returns:
    list of (name, code pytree of numpy arrays, source) with source
    'mean', 'row' or 'bank'.
  Raises:
    export_lib.ExportError: an empty or repeated entry, a row out of range,
      a name not in the bank (the message lists the bank's names).
  """
  table = run.codes
  num_codes = codes_lib.num_rows(table)
  like = codes_lib.row(table, 0)
  names = [s.strip() for s in str(specs).split(',')]
  if not all(names):
    raise export_lib.ExportError(f'--codes={specs!r} has an empty entry; '
                                 'give e.g. --codes=mean,0.')
  repeated = sorted({n for n in names if names.count(n) > 1})
  if repeated:
    raise export_lib.ExportError(f'--codes lists {repeated} twice.')
  bank, chosen = None, []
  for name in names:
    if name == 'mean':
      code, source = codes_lib.mean_code(table), 'mean'
    elif _ROW.fullmatch(name):
      if not 0 <= int(name) < num_codes:
        raise export_lib.ExportError(
            f'--codes: row {int(name)} is out of range; this run has '
            f'{num_codes} trained codes (rows 0..{num_codes - 1}).')
      code, source = codes_lib.row(table, int(name)), 'row'
    else:
      path = run.bank
      if bank is None:
        bank = (codes_lib.load_bank(path) if os.path.lexists(path) else {})
      if name not in bank:
        raise export_lib.ExportError(
            f"--codes: {name!r} is not 'mean', a row 0..{num_codes - 1}, "
            f'nor a code in the bank {path}, which has '
            + (f'{sorted(bank)}.' if bank else 'no codes (none saved yet).'))
      code, source = codes_lib.check_like(bank[name], like, name), 'bank'
    workdir_lib.check_name(f'{MESH_PREFIX}{name}.glb', '--codes entry')
    chosen.append((name, jax.tree.map(np.asarray, code), source))
  return chosen


def parse_light(text):
  """f64[3] unit vector from 'x,y,z', or None for None/''."""
  if text is None or not str(text).strip():
    return None
  try:
    values = [float(v) for v in str(text).split(',')]
    return lighting.unit(values)
  except ValueError as e:
    raise export_lib.ExportError(f'--light={text!r}: {e}') from e


def check_out(workdir, out):
  """Refuses an --out that is the run folder or inside its training files
  (the run must stay as it is); returns `out`."""
  real = os.path.realpath(out)
  run_real = os.path.realpath(workdir)
  protected = [os.path.join(run_real, name)
               for name in workdir_lib.TRAINING_FOLDERS]
  if real == run_real or any(real == p or real.startswith(p + os.sep)
                             for p in protected):
    raise export_lib.ExportError(
        f'--out={out} is the run folder or one of its training folders; give '
        'a folder of its own (default WORKDIR/export).')
  if os.path.exists(out) and not os.path.isdir(out):
    raise export_lib.ExportError(f'--out={out} is a file, not a folder.')
  return out


def export_run(run, out, resolution=256, threshold=None, codes='mean',
               light=None, radius=None, point_cloud=True, max_points=200_000,
               chunk=1 << 18, progress=True):
  """Writes a run's meshes, point cloud, cameras and summary under `out`.

  Args:
    run: `runs.Run`.
    out: the output folder (created; files in it are replaced).
    resolution: grid cells per axis (>= 8).
    threshold: surface density, None for `export.default_threshold`.
    codes: the --codes list (`select_codes`).
    light: None or 'x,y,z' towards the light (shaded heads).
    radius: None or the half-width of the meshed cube (`scene_box`).
    point_cloud: also write points.ply.
    max_points: cap on its points (>= 1).
    chunk: grid points per density evaluation.
    progress: show tqdm bars.
  Returns:
    The summary written to export.json (dict).
  Raises:
    export_lib.ExportError: bad settings (checked before the grid is
      evaluated), no surface at the threshold (`NoSurfaceError`).
  """
  start = time.perf_counter()
  exp, params = run.experiment, run.state.params
  check_out(run.workdir, out)
  resolution = export_lib.check_resolution(resolution)
  if point_cloud and not (isinstance(max_points, int) and max_points >= 1):
    raise export_lib.ExportError(
        f'--max_points must be a positive integer, got {max_points!r}.')
  lower, upper, space = export_lib.scene_box(exp, radius)
  direction = parse_light(light)
  chosen = select_codes(run, codes)
  if direction is not None:
    # Each code lit from there, its intensity and ambient kept; a run
    # without a shaded head gets methods.check_shaded's error.
    chosen = [(n, methods.relight(exp, run.state, c, direction=direction).code,
               s) for n, c, s in chosen]
  default = threshold is None
  if default:
    threshold = export_lib.default_threshold(lower, upper)
  cell = float(np.max(upper - lower)) / resolution
  # One surface per density field: the whole scene today. A part-
  # compositional model (`config.model.parts`, DESIGN.md "Geometry and
  # content codes") adds one entry per part here, part name -> its density
  # at points, written as mesh_<part>_<code>.*.
  fields = {'': export_lib.make_density_fn(exp, params)}
  table = jax.tree.map(np.asarray,
                       codes_lib.stack([code for _, code, _ in chosen]))
  meshes, ranges = {}, []
  for part, density_fn in fields.items():
    surface = export_lib.extract_surface(density_fn, lower, upper, resolution,
                                         threshold, chunk, progress)
    ranges.append(surface.density_range)
    colors, acc = export_lib.vertex_colors(exp, params, surface, table, cell)
    watertight = bool(trimesh.Trimesh(surface.vertices, surface.faces,
                                      process=False).is_watertight)
    for (name, _, _), rgb in zip(chosen, colors):
      stem = MESH_PREFIX + (f'{part}_' if part else '') + name
      for file_type in ('ply', 'glb'):
        export_lib.write_bytes(
            os.path.join(out, f'{stem}.{file_type}'),
            export_lib.mesh_bytes(surface, rgb, file_type))
      meshes[stem] = dict(
          part=part or None, code=name, files=[f'{stem}.ply', f'{stem}.glb'],
          vertices=len(surface.vertices), faces=len(surface.faces),
          watertight=watertight,
          ray_opacity_median=float(np.median(acc)),
          ray_opacity_below_min=int(np.sum(acc < export_lib.MIN_OPACITY)))
  summary = dict(
      workdir=run.workdir, step=run.step, resolution=resolution,
      threshold=float(threshold), threshold_is_default=default, cell=cell,
      bounds=dict(lower=lower.tolist(), upper=upper.tolist(), space=space),
      density_range=[min(r[0] for r in ranges), max(r[1] for r in ranges)],
      codes=[dict(name=n, source=s) for n, _, s in chosen],
      light=None if direction is None else direction.tolist(),
      meshes=meshes)
  if point_cloud:
    frames = run.scene.train
    points, rgb = export_lib.view_points(exp, run.state, frames, max_points)
    export_lib.write_bytes(os.path.join(out, 'points.ply'),
                           export_lib.points_bytes(points, rgb))
    summary['points'] = dict(file='points.ply', count=len(points),
                             views=len(frames), max_points=max_points)
  records = export_lib.camera_records(run.scene)
  workdir_lib.write_json(os.path.join(out, 'cameras.json'), dict(
      convention='camera-to-world, OpenGL axes (x right, y up, looking '
                 'down -z); intrinsics in pixels; world units',
      up=np.asarray(run.scene.up).tolist(), cameras=records))
  summary['cameras'] = dict(file='cameras.json', count=len(records))
  summary['seconds'] = time.perf_counter() - start
  workdir_lib.write_json(os.path.join(out, 'export.json'), summary)
  return summary


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  workdir = workdir_lib.check_workdir(_WORKDIR.value)
  out = _OUT.value or os.path.join(workdir, 'export')
  check_out(workdir, out)
  export_lib.check_resolution(_RESOLUTION.value)
  run = runs.load_run(workdir, config=_CONFIG.value)
  summary = export_run(
      run, out, _RESOLUTION.value, _THRESHOLD.value, _CODES.value,
      _LIGHT.value, _RADIUS.value,
      _POINT_CLOUD.value and not _NO_POINT_CLOUD.value, _MAX_POINTS.value,
      _CHUNK.value)
  for stem, info in summary['meshes'].items():
    print(f'{out}/{stem}.ply|.glb: {info["vertices"]} vertices, '
          f'{info["faces"]} faces.')
  if 'points' in summary:
    print(f'{out}/points.ply: {summary["points"]["count"]} points.')
  print(f'{out}/export.json: threshold {summary["threshold"]:.4g}, density '
        f'range [{summary["density_range"][0]:.4g}, '
        f'{summary["density_range"][1]:.4g}] ({summary["seconds"]:.1f} s).')


if __name__ == '__main__':
  cli.run(main)
