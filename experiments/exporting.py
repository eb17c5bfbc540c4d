"""What `python -m experiments.export` does, without its flags.

Owns `select_codes` (the codes a --codes list names), `parse_light`,
`check_out` (an --out that leaves the run alone) and `export_run` (meshes,
point cloud, cameras and summary of a loaded run); the grid, the surface and
the files are `condnerf.export`'s. Tests and other runners import this
module: `experiments/export.py` only parses flags.
"""

import os
import re
import time

import jax
import numpy as np
import trimesh

from condnerf import codes as codes_lib
from condnerf import export as export_lib
from condnerf import lighting
from condnerf import workdir as workdir_lib
from condnerf.edit import methods

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
