"""The viewer's rendering, without a browser: poses, looks, stale requests."""

import os
import socket
import tempfile
import threading

from absl.testing import absltest
import numpy as np

from condnerf import codes as codes_lib
from condnerf import experiment as experiment_lib
from condnerf import inference
from condnerf import runs
from condnerf import viewer
from condnerf.configs import demo as demo_config
from condnerf.data import sampler as sampler_lib
from experiments import viewer_server as view


def train_small(workdir, steps=600, head=None):
  """The tiny shaded palette demo (`configs/demo.py:small`), trained
  `steps` steps so its palette has settled enough to edit; `head` updates
  `config.model.head`."""
  config = demo_config.get_config('small')
  config.train.steps = steps
  config.model.head.update(head or {})
  config.data.path = runs.ensure_chair_scene(
      os.path.join(workdir, 'data'), seed=config.seed,
      **config.data.procedural.to_dict())
  return runs.train_run(config, workdir)


class PoseTest(absltest.TestCase):

  def test_pose_round_trip(self):
    rng = np.random.default_rng(0)
    for _ in range(20):
      q = rng.normal(size=4)
      q /= np.linalg.norm(q)
      pose = viewer.camera_pose(q, rng.normal(size=3))
      back = viewer.camera_pose(*viewer.pose_wxyz(pose))
      np.testing.assert_allclose(back, pose, atol=1e-5)
    # A half turn (w = 0) goes through the stable branch.
    pose = viewer.camera_pose([0.0, 0.0, 1.0, 0.0], [1.0, 2.0, 3.0])
    np.testing.assert_allclose(viewer.camera_pose(*viewer.pose_wxyz(pose)),
                               pose, atol=1e-5)

  def test_opencv_camera_looks_down_its_z(self):
    # Identity orientation in viser (OpenCV) looks along +z with +y down:
    # the scene's camera looks down its own -z, so its z column is -z.
    pose = viewer.camera_pose([1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0])
    np.testing.assert_allclose(pose[:3, 2], [0.0, 0.0, -1.0])
    np.testing.assert_allclose(pose[:3, 1], [0.0, -1.0, 0.0])
    rays = viewer.view_rays(pose, np.radians(60.0), 1.5, 10, 0.1, 5.0)
    self.assertEqual(rays.code_ids.shape, (10, 15))
    center = rays.directions[5, 7]
    self.assertGreater(center[2], 0.99)


class ViewerRunTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.TemporaryDirectory()
    cls.trained = train_small(os.path.join(cls.tmp.name, 'run'))
    cls.renderer = viewer.Renderer(cls.trained)
    cls.frames = cls.trained.scene.test

  @classmethod
  def tearDownClass(cls):
    cls.tmp.cleanup()
    super().tearDownClass()

  def frame_camera(self, index=0):
    """(pose, fov_y, aspect, rows) of test frame `index`."""
    rows, cols = self.frames.images[index].shape[:2]
    fy = float(self.frames.intrinsics[index][1])
    return (self.frames.poses[index], 2.0 * np.arctan(0.5 * rows / fy),
            cols / rows, rows)

  def rays(self, index=0):
    pose, fov, aspect, rows = self.frame_camera(index)
    return viewer.view_rays(pose, fov, aspect, rows, self.frames.near,
                            self.frames.far)

  def test_outputs_of_a_shaded_palette_run(self):
    names = viewer.outputs(self.trained.experiment)
    self.assertEqual(names[:6], ('rgb', 'depth', 'opacity', 'albedo',
                                 'shading', 'normals'))
    self.assertIn(f'weight {self.trained.config.model.head.palette_size - 1}',
                  names)

  def test_frame_matches_the_renderer_of_eval_and_edits(self):
    code = codes_lib.row(self.trained.codes, 1)
    image = self.renderer.render(self.rays(), code, 'rgb')
    truth = inference.render_with_code(
        self.trained.experiment, self.trained.state.params,
        sampler_lib.image_rays(self.frames, 0), code)['rgb']
    np.testing.assert_allclose(image, np.clip(truth, 0, 1), atol=2e-3)
    for output in viewer.outputs(self.trained.experiment):
      picture = self.renderer.render(self.rays(), code, output)
      self.assertEqual(picture.shape, image.shape, output)
      self.assertTrue(np.all((picture >= 0) & (picture <= 1)), output)
    with self.assertRaisesRegex(viewer.ViewerError, 'cannot show'):
      self.renderer.render(self.rays(), code, 'weight 99')

  def test_palette_entry_recolors_that_entry(self):
    look = viewer.Look(dict(codes_lib.mean_code(self.trained.codes)),
                       up=self.trained.scene.up)
    old = np.array(look.code['palette'])
    rays = self.rays()
    before = self.renderer.render(rays, look.code, 'rgb')
    weights = inference.render_palette_maps(
        self.trained.experiment, self.trained.state.params, rays,
        look.code)['weights']
    entry = int(np.argmax(weights.reshape(-1, weights.shape[-1]).sum(0)))
    look.set_entry(entry, (0.0, 0.0, 1.0))
    np.testing.assert_array_equal(look.code['palette'][entry], [0, 0, 1])
    others = np.arange(len(old)) != entry
    np.testing.assert_array_equal(look.code['palette'][others], old[others])
    after = self.renderer.render(rays, look.code, 'rgb')
    change = (after - before).reshape(-1, 3).mean(0)
    # Blue up, red and green down, by the entry's share of the pixels.
    self.assertGreater(change[2], 0.01)
    self.assertTrue(np.all(change[:2] < change[2]), change)
    with self.assertRaisesRegex(viewer.ViewerError, 'out of range'):
      look.set_entry(99, (0, 0, 0))

  def test_light_controls_round_trip_and_relight(self):
    look = viewer.Look(dict(codes_lib.row(self.trained.codes, 0)),
                       up=self.trained.scene.up)
    azimuth, elevation, intensity = viewer.light_controls(
        look.code['light'], look.up)
    rays = self.rays()
    before = self.renderer.render(rays, look.code, 'rgb')
    look.set_light(azimuth, elevation, intensity)
    again = viewer.light_controls(look.code['light'], look.up)
    np.testing.assert_allclose(again, (azimuth, elevation, intensity),
                               atol=1.0)
    look.set_light(azimuth + 180.0, -elevation, 2.0 * intensity + 0.5)
    after = self.renderer.render(rays, look.code, 'rgb')
    self.assertGreater(np.abs(after - before).mean(), 0.01)
    # The palette and the latent code stay as they were.
    original = codes_lib.row(self.trained.codes, 0)
    np.testing.assert_array_equal(look.code['palette'], original['palette'])
    np.testing.assert_array_equal(look.code['appearance'],
                                  original['appearance'])

  def test_code_choices_list_the_bank(self):
    bank = {'blue': codes_lib.row(self.trained.codes, 0)}
    choices = viewer.code_choices(self.trained, bank)
    num = self.trained.scene.num_codes
    self.assertEqual(list(choices)[:num + 1],
                     ['mean'] + [f'look {i}' for i in range(num)])
    self.assertIn('bank: blue', choices)
    bad = {'odd': {'appearance': np.zeros(3, np.float32)}}
    with self.assertRaises(codes_lib.CodeBankError):
      viewer.code_choices(self.trained, bad)

  def test_session_shows_preview_then_full_and_drops_stale(self):
    pose, fov, aspect, rows = self.frame_camera()
    code = codes_lib.mean_code(self.trained.codes)
    shown = []
    gate = threading.Event()
    gate.set()

    def show(frame):
      shown.append(frame)
      gate.wait()

    session = viewer.Session(self.renderer, self.frames.near,
                             self.frames.far, 4 * rows, rows, show)
    try:
      first = session.submit(viewer.Request(pose, fov, aspect, code))
      frame = session.wait_for(first)
      self.assertIsNotNone(frame)
      self.assertEqual(frame.image.shape[0], 4 * rows)
      self.assertEqual([f.preview for f in shown], [True, False])
      # Hold the loop inside the next preview; two newer requests arrive:
      # the middle one is never rendered, and the held one's full view is
      # dropped.
      gate.clear()
      held = session.submit(viewer.Request(pose, fov, aspect, code))
      while len(shown) < 3:
        threading.Event().wait(0.01)
      session.submit(viewer.Request(pose, fov, aspect, code, 'depth'))
      last = session.submit(viewer.Request(pose, fov, aspect, code,
                                           'opacity'))
      gate.set()
      frame = session.wait_for(last)
      self.assertIsNotNone(frame)
      numbers = [(f.number, f.preview) for f in shown]
      self.assertEqual(numbers, [(first, True), (first, False),
                                 (held, True), (last, True), (last, False)])
      np.testing.assert_allclose(frame.image[..., 0], frame.image[..., 1])
    finally:
      gate.set()
      session.close()

  def test_full_render_gives_up_when_stale(self):
    rays = viewer.view_rays(*self.frame_camera()[:3], 64, self.frames.near,
                            self.frames.far)
    calls = []

    def stale():
      calls.append(1)
      return len(calls) > 1

    self.renderer._chunk = 1024  # pylint: disable=protected-access
    try:
      with self.assertRaises(viewer.Cancelled):
        self.renderer.render(rays, codes_lib.mean_code(self.trained.codes),
                             'rgb', stale=stale)
    finally:
      self.renderer._chunk = int(self.trained.config.eval.chunk)  # pylint: disable=protected-access
    self.assertEqual(len(calls), 2)


def free_port():
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
    probe.bind(('127.0.0.1', 0))
    return probe.getsockname()[1]


class ViewerErrorsTest(absltest.TestCase):

  def test_latent_head_shows_no_palette_or_light_controls(self):
    with tempfile.TemporaryDirectory() as tmp:
      trained = train_small(os.path.join(tmp, 'run'), steps=10,
                            head={'kind': 'mlp', 'shading': 'none'})
      self.assertEqual(viewer.outputs(trained.experiment),
                       viewer.BASE_OUTPUTS)
      served = view.Viewer(os.path.join(tmp, 'run'), port=free_port(),
                           height=8, preview_height=4)
      try:
        self.assertEqual(served.entries, [])
        self.assertIsNone(served.light)
        self.assertEqual(tuple(served.output_menu.options),
                         viewer.BASE_OUTPUTS)
        # A code name that is not plain is refused; nothing is written.
        for name in ('../up', 'a/b', ' '):
          with self.assertRaisesRegex(Exception, 'not a plain name'):
            served.save_code(name)
        self.assertFalse(os.path.exists(os.path.join(tmp, 'run', 'edit')))
        self.assertIn("Saved code 'plain_1'", served.save_code('plain_1'))
        self.assertIn('bank: plain_1', served.code_menu.options)
      finally:
        served.stop()

  def test_port_in_use_names_it_and_another(self):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
      taken.bind(('127.0.0.1', 0))
      taken.listen(1)
      port = taken.getsockname()[1]
      with self.assertRaisesRegex(view.PortInUseError,
                                  f'Port {port} .* --port={port + 1}'):
        view.check_port('127.0.0.1', port)
    with self.assertRaisesRegex(view.PortInUseError, 'not a port'):
      view.check_port('127.0.0.1', 70000)

  def test_workdir_without_checkpoint(self):
    with tempfile.TemporaryDirectory() as tmp:
      with self.assertRaisesRegex(experiment_lib.NoCheckpointError,
                                  'No checkpoint in .*train the run first'):
        view.Viewer(tmp, port=free_port())


if __name__ == '__main__':
  absltest.main()
