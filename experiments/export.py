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

from absl import app
from absl import flags
from ml_collections import config_flags

from condnerf import export as export_lib
from condnerf import runs
from condnerf import workdir as workdir_lib
from experiments import exporting

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

def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  workdir = workdir_lib.check_workdir(_WORKDIR.value)
  out = _OUT.value or os.path.join(workdir, 'export')
  exporting.check_out(workdir, out)
  export_lib.check_resolution(_RESOLUTION.value)
  run = runs.load_run(workdir, config=_CONFIG.value)
  summary = exporting.export_run(
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
