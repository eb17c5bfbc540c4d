"""Mesh export: marching cubes, vertex colors, files, cameras and errors.

The chair tests train one small demo-like run (the demo's fast field and
shaded palette head on the material chair, 32 px, 700 steps) in
`setUpClass`: 50-70 s on 2 shared CPU cores. Smaller runs did not give a
chair: the `small` demo's runlocal model stalled near 12 dB even at 300
steps, and the fast field after 300 steps peaked at density 134 with only
a fragment of the chair (1,300 vertices) above the default threshold. The
run compiles with XLA's optimizations on: under
`jax_disable_most_optimizations` (which other test modules set for the
whole process) 300 steps took 2 minutes, not 16 s.
"""

import os
import tempfile

from absl.testing import absltest
import jax
import numpy as np
import trimesh

from condnerf import codes as codes_lib
from condnerf import export as export_lib
from condnerf import runs
from condnerf.configs import demo
from condnerf.data import procedural
from experiments import exporting as export_main

RESOLUTION = 64  # cell 0.047: about half a training pixel (0.086 units).


def ball(radius):
  """A density callable: 100 inside a ball about the origin, falling
  linearly (1000 per unit) outside, so density 50 lies at `radius` + 0.05."""
  def density_fn(points):
    return 100.0 - 1000.0 * np.maximum(
        np.linalg.norm(points, axis=-1) - radius, 0.0)
  return density_fn


class SurfaceTest(absltest.TestCase):

  def test_ball_radius_normals_and_watertight(self):
    lower, upper, resolution = -np.ones(3), np.ones(3), 48
    cell = 2.0 / resolution
    surface = export_lib.extract_surface(ball(0.45), lower, upper, resolution,
                                         50.0, chunk=4096, progress=False)
    dist = np.linalg.norm(surface.vertices, axis=-1)
    self.assertLess(abs(dist.mean() - 0.5), cell)
    self.assertLess(dist.std(), 0.25 * cell)
    mesh = trimesh.Trimesh(surface.vertices, surface.faces, process=False)
    self.assertTrue(mesh.is_watertight)
    self.assertTrue(mesh.is_winding_consistent)
    self.assertGreater(mesh.volume, 0.0)  # faces wound outward.
    self.assertGreater(np.min(np.sum(surface.normals * surface.vertices, -1)),
                       0.0)
    self.assertEqual(surface.density_range[1], 100.0)

  def test_surface_cut_by_the_box_is_closed(self):
    surface = export_lib.extract_surface(ball(1.0), -np.ones(3), np.ones(3),
                                         16, 50.0, progress=False)
    mesh = trimesh.Trimesh(surface.vertices, surface.faces, process=False)
    self.assertTrue(mesh.is_watertight)
    self.assertLess(np.max(np.abs(surface.vertices)), 1.0)

  def test_no_surface_names_the_density_range(self):
    # 10 + x at the cell centers x = -0.875 .. 0.875.
    with self.assertRaisesRegex(
        export_lib.NoSurfaceError,
        r'threshold 500: .* ranges over \[9.125, 10.88\]; give a '
        r'--threshold inside that range \(e.g. 9.96\)'):
      export_lib.extract_surface(lambda p: 10.0 + p[:, 0], -np.ones(3),
                                 np.ones(3), 8, 500.0, progress=False)

  def test_resolution_must_be_an_integer_of_at_least_8(self):
    for bad in (7, 0, -3, 16.0, '32', True):
      with self.assertRaisesRegex(export_lib.ExportError, '>= 8'):
        export_lib.extract_surface(ball(0.4), -np.ones(3), np.ones(3), bad,
                                   50.0, progress=False)


def chair_config(data_root):
  """The demo's model (fast family, shaded palette head) on a small chair."""
  config = demo.get_config('')
  config.data.procedural.update(resolution=32, num_train=24, num_val=1,
                                num_test=1, num_appearances=2, supersample=1)
  config.data.path = runs.ensure_chair_scene(
      data_root, seed=config.seed, **config.data.procedural.to_dict())
  # A random background keeps empty space empty: on a white background the
  # run filled the seat-back corner and the space under the seat with
  # white density (85% of the vertices within 2 cells of the boxes at 128^3
  # against 98% with it, one run each at 1200 steps).
  config.train.update(steps=700, batch_size=512, log_every=100,
                      checkpoint_every=0, val_every=0, random_background=True)
  # Batches this small are noisy; one run at 1200 steps had a late batch
  # read as divergence, which withheld its only checkpoint.
  config.train.guard.loss_factor = 1e3
  config.eval.max_images = 1
  config.evals = {}
  return config


def inside_boxes(points, margin):
  """bool[N]: within `margin` of one of the chair's boxes."""
  inside = np.zeros(len(points), bool)
  for lower, upper, _ in procedural.CHAIR_BOXES.values():
    inside |= np.all((points >= np.subtract(lower, margin)) &
                     (points <= np.add(upper, margin)), axis=1)
  return inside


def colors_of(path):
  """f32[V, 3] vertex colors of a mesh file, and its vertex count."""
  mesh = trimesh.load(path, force='mesh')
  colors = np.asarray(mesh.visual.vertex_colors)[:, :3] / 255.0
  return colors, len(mesh.vertices)


class ChairExportTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls._optimizations = jax.config.read('jax_disable_most_optimizations')
    jax.config.update('jax_disable_most_optimizations', False)
    cls.tmp = tempfile.TemporaryDirectory()
    root = cls.tmp.name
    cls.workdir = os.path.join(root, 'run')
    config = chair_config(os.path.join(root, 'data'))
    runs.train_run(config, cls.workdir)
    cls.trained = runs.load_run(cls.workdir)
    blue = jax.tree.map(np.asarray, cls.trained.code(0))
    blue['palette'] = np.tile([[0.1, 0.2, 0.9]], (len(blue['palette']), 1))
    codes_lib.save_bank(cls.trained.bank,
                        {'blue': blue, 'green': cls.trained.code(1)})
    cls.out = os.path.join(root, 'export')
    cls.before = cls.listing(cls.workdir)
    cls.summary = export_main.export_run(
        cls.trained, cls.out, resolution=RESOLUTION, codes='mean,0,1,blue',
        max_points=3000, progress=False)

  @classmethod
  def tearDownClass(cls):
    cls.tmp.cleanup()
    jax.config.update('jax_disable_most_optimizations', cls._optimizations)
    super().tearDownClass()

  @staticmethod
  def listing(folder):
    found = {}
    for parent, _, files in os.walk(folder):
      for name in files:
        path = os.path.join(parent, name)
        found[path] = os.stat(path).st_mtime_ns
    return found

  def test_mesh_lies_on_the_chair_boxes(self):
    mesh = trimesh.load(os.path.join(self.out, 'mesh_mean.ply'))
    cell = self.summary['cell']
    inside = inside_boxes(np.asarray(mesh.vertices), 2 * cell).mean()
    # Measured 0.989 (0.931 within one cell) on 8 CPU devices, the suite's,
    # and 1.000 on 2 devices (0.957). Finer grids show the run's blur: at
    # 128^3 0.945 within 2 of its cells (0.974 within 3), at 256^3 0.80,
    # since a training pixel spans 0.086 units (7 cells at 256^3).
    self.assertGreaterEqual(inside, 0.97)
    # And it covers the chair: its extent is the boxes' within 2 cells.
    chair_lower = np.min([b[0] for b in procedural.CHAIR_BOXES.values()], 0)
    chair_upper = np.max([b[1] for b in procedural.CHAIR_BOXES.values()], 0)
    np.testing.assert_allclose(mesh.vertices.min(0), chair_lower,
                               atol=2 * cell)
    np.testing.assert_allclose(mesh.vertices.max(0), chair_upper,
                               atol=2 * cell)
    self.assertTrue(self.summary['meshes']['mesh_mean']['watertight'])

  def test_files_load_back_with_colors(self):
    count = self.summary['meshes']['mesh_0']['vertices']
    self.assertGreater(count, 1000)
    for name in ('mesh_mean', 'mesh_0', 'mesh_1', 'mesh_blue'):
      ply, ply_count = colors_of(os.path.join(self.out, f'{name}.ply'))
      glb, glb_count = colors_of(os.path.join(self.out, f'{name}.glb'))
      self.assertEqual((ply_count, glb_count), (count, count))
      np.testing.assert_array_equal(ply, glb)
    points = trimesh.load(os.path.join(self.out, 'points.ply'))
    self.assertEqual(len(points.vertices), 3000)
    self.assertEqual(self.summary['points']['count'], 3000)
    self.assertGreater(inside_boxes(points.vertices, 0.15).mean(), 0.9)
    self.assertFalse([n for n in os.listdir(self.out) if n.startswith('.')])

  def test_codes_color_the_surface_differently(self):
    first, _ = colors_of(os.path.join(self.out, 'mesh_0.ply'))
    second, _ = colors_of(os.path.join(self.out, 'mesh_1.ply'))
    blue, _ = colors_of(os.path.join(self.out, 'mesh_blue.ply'))
    self.assertGreater(np.abs(first - second).mean(), 0.02)
    # The surface's colors, not the white background: the chair is red,
    # the bank's code blue.
    red = first.mean(0)
    self.assertGreater(red[0], red[1] + 0.1)
    self.assertLess(red.min(), 0.4)
    self.assertGreater(blue.mean(0)[2], blue.mean(0)[0] + 0.1)

  def test_light_changes_the_colors(self):
    out = os.path.join(self.tmp.name, 'lit')
    lit = export_main.export_run(self.trained, out, resolution=32, codes='0',
                                 light='0,1,-1', point_cloud=False,
                                 progress=False)
    np.testing.assert_allclose(lit['light'], np.array([0, 1, -1]) / 2**0.5)
    unlit = os.path.join(self.tmp.name, 'unlit')
    export_main.export_run(self.trained, unlit, resolution=32, codes='0',
                           point_cloud=False, progress=False)
    a, _ = colors_of(os.path.join(out, 'mesh_0.ply'))
    b, _ = colors_of(os.path.join(unlit, 'mesh_0.ply'))
    self.assertGreater(np.abs(a - b).mean(), 0.02)

  def test_cameras_and_summary(self):
    self.assertEqual(self.listing(self.workdir), self.before)  # untouched.
    cameras = export_lib.camera_records(self.trained.scene)
    self.assertEqual([c['split'] for c in cameras],
                     ['train'] * 24 + ['val', 'test'])
    self.assertEqual(np.array(cameras[3]['pose']).shape, (4, 4))
    self.assertEqual((cameras[3]['width'], cameras[3]['height']), (32, 32))
    self.assertEqual(cameras[3]['index'], 3)
    self.assertEqual(self.summary['cameras']['count'], 26)
    self.assertEqual(self.summary['resolution'], RESOLUTION)
    self.assertAlmostEqual(self.summary['threshold'],
                           np.log(2) * 256 / 3.0, places=4)
    self.assertEqual(self.summary['bounds']['upper'], [1.5] * 3)
    low, high = self.summary['density_range']
    self.assertLess(low, self.summary['threshold'])
    self.assertGreater(high, self.summary['threshold'])
    self.assertEqual([c['name'] for c in self.summary['codes']],
                     ['mean', '0', '1', 'blue'])
    for name in ('cameras.json', 'export.json'):
      self.assertTrue(os.path.exists(os.path.join(self.out, name)))

  def test_bad_codes_are_named(self):
    with self.assertRaisesRegex(export_lib.ExportError,
                                r"'purple'.*\['blue', 'green'\]"):
      export_main.select_codes(self.trained, 'mean,purple')
    with self.assertRaisesRegex(export_lib.ExportError,
                                r'row 2 is out of range.*rows 0\.\.1'):
      export_main.select_codes(self.trained, '2')
    with self.assertRaisesRegex(export_lib.ExportError, 'twice'):
      export_main.select_codes(self.trained, '0,0')

  def test_no_surface_and_bad_settings(self):
    out = os.path.join(self.tmp.name, 'none')
    with self.assertRaisesRegex(export_lib.NoSurfaceError,
                                r'ranges over \[.*e.g.'):
      export_main.export_run(self.trained, out, resolution=16, threshold=1e9,
                             point_cloud=False, progress=False)
    with self.assertRaisesRegex(export_lib.ExportError, 'integer >= 8'):
      export_main.export_run(self.trained, out, resolution=4)
    with self.assertRaisesRegex(export_lib.ExportError, 'run folder'):
      export_main.export_run(self.trained, self.workdir, resolution=16)
    with self.assertRaisesRegex(export_lib.ExportError, 'scene box'):
      export_main.export_run(self.trained, out, resolution=16, radius=2.0)
    with self.assertRaisesRegex(export_lib.ExportError, 'light direction'):
      export_main.export_run(self.trained, out, resolution=16, light='0,0,0')
    self.assertFalse(os.path.exists(out))


if __name__ == '__main__':
  absltest.main()
