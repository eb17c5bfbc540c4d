"""The viewer in a real headless browser (Debian's Chromium via Playwright).

Opens the viewer of a tiny trained run, waits for the first frame, drags
the camera, changes a palette entry and the light, saves the code from the
browser's button, and renders that code again through the edit CLI.
"""

import io
import os
import shutil
import subprocess
import tempfile
import time

from absl.testing import absltest
import numpy as np
from PIL import Image

from condnerf import codes as codes_lib
from condnerf import images
from condnerf import train_lib
from condnerf import viewer
from condnerf import workdir as workdir_lib
from experiments import viewer_server as view
from tests import viewer_test
from tests.smoke import launch

CHROMIUM = '/usr/bin/chromium'
# WebGL without a GPU: Chromium's software rasterizer.
BROWSER_ARGS = ('--enable-unsafe-swiftshader', '--use-angle=swiftshader',
                '--no-sandbox')


def find_chromium():
  """The Chromium binary, installed from the OS packages when absent;
  (path, None) or (None, why not)."""
  found = shutil.which('chromium') or (
      CHROMIUM if os.path.exists(CHROMIUM) else None)
  if found:
    return found, None
  if os.geteuid() != 0 or not shutil.which('apt-get'):
    return None, ('Chromium is not installed and this user cannot install it '
                  '(needs root and apt-get: apt-get install chromium).')
  proc = subprocess.run(['apt-get', 'install', '-y', '-q', 'chromium'],
                        capture_output=True, text=True, timeout=900,
                        check=False)
  found = shutil.which('chromium')
  if not found:
    return None, ('apt-get install chromium failed: '
                  f'{proc.stderr.strip()[-300:]}')
  return found, None


def _changed(a, b):
  """Mean absolute difference of two screenshots (PNG bytes), in [0, 1]."""
  a, b = (np.asarray(Image.open(io.BytesIO(x)).convert('RGB'), np.float32)
          / 255.0 for x in (a, b))
  return float(np.abs(a - b).mean())


class ViewerBrowserTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    chromium, why = find_chromium()
    if chromium is None:
      raise absltest.SkipTest(why)
    from playwright import sync_api  # pylint: disable=g-import-not-at-top
    cls.tmp = tempfile.TemporaryDirectory()
    cls.workdir = os.path.join(cls.tmp.name, 'run')
    cls.trained = viewer_test.train_small(cls.workdir)
    cls.port = launch.free_port()
    cls.viewer = view.Viewer(cls.workdir, port=cls.port, height=48,
                             preview_height=12, poll_seconds=0.5)
    cls.playwright = sync_api.sync_playwright().start()
    cls.browser = cls.playwright.chromium.launch(
        executable_path=chromium, headless=True, args=list(BROWSER_ARGS))

  @classmethod
  def tearDownClass(cls):
    cls.browser.close()
    cls.playwright.stop()
    cls.viewer.stop()
    cls.tmp.cleanup()
    super().tearDownClass()

  def session(self, timeout=60.0):
    """The viewer's session of the one open page."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
      if self.viewer.sessions:
        return next(iter(self.viewer.sessions.values()))
      time.sleep(0.05)
    self.fail('The page never connected to the viewer.')

  def newest(self, session):
    return session.frames[-1].number if session.frames else 0

  def next_frame(self, session, after, what):
    """The full frame of the newest request, once there is one after
    number `after` (a drag sends many poses)."""
    deadline = time.perf_counter() + 30.0
    while session.latest <= after and time.perf_counter() < deadline:
      time.sleep(0.05)
    time.sleep(0.3)  # the last camera message of a drag.
    frame = session.wait_for(session.latest, timeout=60.0)
    self.assertIsNotNone(frame, f'no frame after {what}')
    return frame

  def shot(self, page, name):
    """A screenshot (PNG bytes); also written to $CONDNERF_VIEWER_SHOTS."""
    time.sleep(0.5)  # the browser decodes and draws the new background.
    data = page.screenshot()
    folder = os.environ.get('CONDNERF_VIEWER_SHOTS')
    if folder:
      os.makedirs(folder, exist_ok=True)
      with open(os.path.join(folder, f'{name}.png'), 'wb') as f:
        f.write(data)
    return data

  def test_first_frame_camera_palette_light_and_saved_code(self):
    page = self.browser.new_page(viewport={'width': 1280, 'height': 800})
    try:
      opened = time.perf_counter()
      page.goto(f'http://127.0.0.1:{self.port}/', wait_until='load')
      session = self.session()
      first = session.wait_for(1, timeout=60.0)
      self.assertIsNotNone(first, 'no first frame')
      print(f'first full frame {time.perf_counter() - opened:.2f} s after '
            'the page opened')
      self.assertEqual(first.image.shape[0], 48)
      before = self.shot(page, 'first')

      # Drag the camera: the browser sends new poses, a new view comes.
      mark = self.newest(session)
      page.mouse.move(300, 400)  # left of the control panel.
      page.mouse.down()
      page.mouse.move(500, 450, steps=8)
      page.mouse.up()
      moved = self.next_frame(session, mark, 'a camera drag')
      turned = moved.pose[:3, :3].T @ first.pose[:3, :3]
      self.assertLess(np.trace(turned), 2.95)  # turned by > ~13 degrees.
      self.assertGreater(np.abs(moved.image - first.image).max(), 0.02)
      after_move = self.shot(page, 'moved')
      self.assertGreater(_changed(before, after_move), 0.0005)

      # A palette entry through its control: the frame changes.
      mark = self.newest(session)
      entry = 0
      self.viewer.entries[entry].value = (0, 0, 255)
      recolored = self.next_frame(session, mark, 'a palette change')
      np.testing.assert_array_equal(
          self.viewer.look.code['palette'][entry], [0.0, 0.0, 1.0])
      self.assertGreater(np.abs(recolored.image - moved.image).max(), 0.02)
      self.assertGreater(_changed(after_move, self.shot(page, 'recolored')), 0.0005)

      # The light's azimuth: the frame changes again.
      mark = self.newest(session)
      azimuth = self.viewer.light[0]
      azimuth.value = (azimuth.value + 120.0 + 180.0) % 360.0 - 180.0
      relit = self.next_frame(session, mark, 'a light change')
      self.shot(page, 'relit')
      self.assertGreater(np.abs(relit.image - recolored.image).max(), 0.02)

      # Save the code from the browser's own button.
      page.get_by_role('button', name='Save code to bank').click()
      bank = workdir_lib.bank_path(self.workdir)
      deadline = time.perf_counter() + 30.0
      while time.perf_counter() < deadline and not os.path.exists(bank):
        time.sleep(0.1)
      saved = codes_lib.load_bank(bank)['viewer_code']
      for key, value in self.viewer.look.code.items():
        np.testing.assert_allclose(saved[key], value, err_msg=key)

      # And the view, as a PNG in the run folder: the frame on screen.
      page.get_by_role('button', name='Save view as PNG').click()
      png = os.path.join(self.workdir, 'view', 'view_000.png')
      deadline = time.perf_counter() + 30.0
      while time.perf_counter() < deadline and not os.path.exists(png):
        time.sleep(0.1)
      written = images.load_png(png)[..., :3]
      shown = session.wait_for(session.latest)
      self.assertEqual(written.shape, shown.image.shape)
      np.testing.assert_allclose(written, shown.image, atol=1.5 / 255)
    finally:
      page.close()

    # The saved code renders to the same image through the edit CLI.
    proc = subprocess.run(
        launch.main_command(
            '--config=experiments/configs/demo.py:small',
            f'--config.data.path={self.trained.config.data.path}',
            f'--config.train.steps={self.trained.config.train.steps}',
            f'--workdir={self.workdir}', '--mode=edit',
            '--config.edit.name=from_viewer', '--config.edit.operation=swap',
            '--config.edit.bank_code=viewer_code'),
        cwd=launch.REPO, env=launch.devices_env(2), capture_output=True,
        text=True, timeout=600, check=False)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertIn(f'python -m experiments.view --workdir={self.workdir}',
                  proc.stdout)
    cli = images.load_png(os.path.join(self.workdir, 'edit', 'runs',
                                       'from_viewer', 'swap_000.png'))
    frames = self.trained.scene.test
    rows = frames.images[0].shape[0]
    fov = 2.0 * np.arctan(0.5 * rows / float(frames.intrinsics[0][1]))
    rays = viewer.view_rays(frames.poses[0], fov, 1.0, rows, frames.near,
                            frames.far)
    mine = self.viewer.renderer.render(rays, saved, 'rgb')
    np.testing.assert_allclose(cli[..., :3], mine, atol=2.5 / 255)

  def test_training_in_the_same_folder_offers_its_newest_step(self):
    self.assertTrue(self.viewer.reload_button.disabled)
    config = self.trained.config.copy_and_resolve_references()
    config.train.steps += 20
    # Resumes the run for 20 more steps while the viewer watches it.
    train_lib.train_and_evaluate(config, self.workdir,
                                 allow_config_change=True)
    deadline = time.perf_counter() + 30.0
    while time.perf_counter() < deadline and self.viewer.reload_button.disabled:
      time.sleep(0.1)
    self.assertFalse(self.viewer.reload_button.disabled)
    self.assertEqual(self.viewer.reload_button.label,
                     f'Reload step {config.train.steps}')
    self.assertEqual(self.viewer.reload(),
                     f'Loaded step {config.train.steps}.')
    self.assertEqual(self.viewer.renderer.step, config.train.steps)
    self.assertTrue(self.viewer.reload_button.disabled)

if __name__ == '__main__':
  absltest.main()
