"""The viser server behind `python -m experiments.view`, without flags.

Owns `Viewer` (a server over one run: its controls, one `viewer.Session`
per browser, checkpoint polling) and `check_port`. What a frame shows is
`condnerf.viewer`'s; `experiments/view.py` parses the flags and serves.
Tests and `view_bench` import this module.
"""

import errno
import os
import socket
import threading
import time

from absl import logging
import numpy as np

from condnerf import checkpointing
from condnerf import codes as codes_lib
from condnerf import errors
from condnerf import experiment as experiment_lib
from condnerf import images
from condnerf import runs
from condnerf import viewer
from condnerf import workdir as workdir_lib


class PortInUseError(errors.UserError, OSError):
  """The port is taken (the message says how to pick another)."""


def check_port(host, port):
  """Raises PortInUseError when `host:port` cannot be served on."""
  if not 0 < int(port) < 65536:
    raise PortInUseError(f'--port={port} is not a port; use 1..65535.')
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
    try:
      probe.bind((host, int(port)))
    except OSError as e:
      if e.errno != errno.EADDRINUSE:
        raise
      raise PortInUseError(
          f'Port {port} on {host} is in use (another viewer, notebook or '
          f'server); pick another with --port={int(port) + 1}, or stop '
          'what holds it.') from e


def _uint8(image):
  return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _hex_rgb(rgb):
  return tuple(int(v) for v in np.clip(np.round(np.asarray(rgb) * 255), 0,
                                        255))


class Viewer:
  """A viser server over one run. `serve_forever` blocks; tests use the
  object directly (`sessions`, `look`, `save_code`, `save_png`, `stop`)."""

  def __init__(self, workdir, config=None, host='127.0.0.1', port=8080,
               height=0, preview_height=0, poll_seconds=5.0):
    import viser  # pylint: disable=g-import-not-at-top
    check_port(host, port)
    if not runs.has_checkpoint(workdir):
      raise experiment_lib.NoCheckpointError(
          f'No checkpoint in {workdir_lib.checkpoint_dir(workdir)}; train '
          'the run first (python -m experiments.main --mode=train '
          f'--workdir={workdir} ...) or point --workdir at a trained run.')
    self.workdir = workdir
    self._config = config
    run = runs.load_run(workdir, config)
    self.renderer = viewer.Renderer(run)
    scene = run.scene
    frames = scene.test if len(scene.test) else scene.train
    self.near, self.far = float(frames.near), float(frames.far)
    rows = frames.images[0].shape[0]
    self.height = int(height) or 2 * rows
    self.preview_height = int(preview_height) or max(8, self.height // 4)
    self.home = np.asarray(frames.poses[0], np.float32)
    fy = float(frames.intrinsics[0][1])
    self.home_fov = 2.0 * float(np.arctan(0.5 * rows / fy))
    self.choices = viewer.code_choices(run, self._bank())
    self.look = viewer.Look(dict(self.choices['mean']), up=scene.up)
    self.output = 'rgb'
    self._syncing = False
    self.sessions = {}  # client id -> viewer.Session.
    self._lock = threading.Lock()
    self._warm_up()
    self.server = viser.ViserServer(host=host, port=int(port), verbose=False)
    self.port = int(port)
    self.server.scene.set_up_direction(tuple(float(u) for u in scene.up))
    camera = self.server.initial_camera
    camera.position = tuple(float(x) for x in self.home[:3, 3])
    camera.look_at = (0.0, 0.0, 0.0)
    camera.up = tuple(float(u) for u in scene.up)
    camera.fov = self.home_fov
    self._build_gui()
    self.server.on_client_connect(self._connect)
    self.server.on_client_disconnect(self._disconnect)
    self._stop = threading.Event()
    self._poller = threading.Thread(target=self._poll, args=(poll_seconds,),
                                    daemon=True)
    self._poller.start()

  # -- state ---------------------------------------------------------------

  def _bank(self):
    path = workdir_lib.bank_path(self.workdir)
    if not os.path.exists(path):
      return {}
    try:
      return codes_lib.load_bank(path)
    except codes_lib.CodeBankError as e:
      logging.warning('%s The viewer shows the trained codes only.',
                      errors.one_line(e))
      return {}

  def _warm_up(self):
    """Compiles the render steps before the first browser asks."""
    for height in (self.preview_height, self.height):
      rays = viewer.view_rays(self.home, self.home_fov, 1.0, height,
                              self.near, self.far)
      self.renderer.render(rays, self.look.code, 'rgb')
    if len(viewer.outputs(self.renderer.experiment)) > 3:
      self.renderer.render(rays, self.look.code, 'albedo')

  def request(self, camera):
    """`viewer.Request` of a viser camera under the current look."""
    aspect = camera.image_width / max(1, camera.image_height) if (
        camera.image_height) else 1.0
    return viewer.Request(viewer.camera_pose(camera.wxyz, camera.position),
                          float(camera.fov), float(aspect),
                          dict(self.look.code), self.output)

  def refresh(self):
    """Re-renders every browser's view (after a code or output change)."""
    for client_id, session in list(self.sessions.items()):
      client = self.server.get_clients().get(client_id)
      if client is not None:
        session.submit(self.request(client.camera))

  # -- clients -------------------------------------------------------------

  def _connect(self, client):
    def show(frame):
      client.scene.set_background_image(_uint8(frame.image), format='jpeg',
                                        jpeg_quality=92)

    def on_error(error):
      logging.error('Render failed: %s', error)
      client.add_notification('Render failed', errors.one_line(error),
                              color='red')

    session = viewer.Session(self.renderer, self.near, self.far,
                             self.height, self.preview_height, show, on_error)
    with self._lock:
      self.sessions[client.client_id] = session
    client.camera.on_update(lambda camera: session.submit(
        self.request(camera)))
    session.submit(self.request(client.camera))

  def _disconnect(self, client):
    with self._lock:
      session = self.sessions.pop(client.client_id, None)
    if session is not None:
      session.close()

  # -- controls ------------------------------------------------------------

  def _build_gui(self):
    gui = self.server.gui
    exp = self.renderer.experiment
    self.status = gui.add_markdown(self._status_text())
    self.code_menu = gui.add_dropdown('Code', tuple(self.choices),
                                      initial_value='mean')
    self.output_menu = gui.add_dropdown('Show', viewer.outputs(exp),
                                        initial_value='rgb')
    self.code_menu.on_update(lambda _: self.choose(self.code_menu.value))
    self.output_menu.on_update(lambda _: self.show_output(
        self.output_menu.value))
    self.entries = []
    if self.look.has_palette:
      with gui.add_folder('Palette'):
        for k, rgb in enumerate(self.look.code[codes_lib.PALETTE]):
          handle = gui.add_rgb(f'entry {k}', initial_value=_hex_rgb(rgb))
          handle.on_update(lambda _, k=k: self.set_entry(
              k, np.asarray(self.entries[k].value) / 255.0))
          self.entries.append(handle)
    self.light = None
    if self.look.has_light:
      azimuth, elevation, intensity = viewer.light_controls(
          self.look.code['light'], self.look.up)
      with gui.add_folder('Light'):
        self.light = (
            gui.add_slider('azimuth', min=-180.0, max=180.0, step=1.0,
                           initial_value=round(azimuth)),
            gui.add_slider('elevation', min=-90.0, max=90.0, step=1.0,
                           initial_value=round(elevation)),
            gui.add_slider('intensity', min=0.0, max=3.0, step=0.01,
                           initial_value=round(intensity, 2)))
      for handle in self.light:
        handle.on_update(lambda _: self.set_light(
            *(h.value for h in self.light)))
    with gui.add_folder('Save'):
      self.name_box = gui.add_text('name', initial_value='viewer_code')
      gui.add_button('Save code to bank').on_click(
          lambda event: self._report(event, self.save_code,
                                     self.name_box.value))
      gui.add_button('Save view as PNG').on_click(
          lambda event: self._report(event, self.save_png))
    self.reload_button = gui.add_button('Reload newest checkpoint',
                                        disabled=True)
    self.reload_button.on_click(lambda event: self._report(event,
                                                           self.reload))

  def _status_text(self):
    return (f'**{os.path.basename(os.path.abspath(self.workdir))}** at step '
            f'{self.renderer.step}; full view {self.height} rows, preview '
            f'{self.preview_height}.')

  def _report(self, event, action, *args):
    """Runs a control's action; tells the browser what it did or why not."""
    try:
      message = action(*args)
    except errors.UserError as e:
      message = f'error: {errors.one_line(e)}'
    if event.client is not None:
      event.client.add_notification('condnerf', message,
                                    auto_close_seconds=6.0)
    return message

  def choose(self, label):
    """Shows the code `label` of `choices`; the controls follow it."""
    self.look = viewer.Look(dict(self.choices[label]), up=self.look.up)
    self._syncing = True  # the controls take the code's values, no edits.
    try:
      for k, handle in enumerate(self.entries):
        handle.value = _hex_rgb(self.look.code[codes_lib.PALETTE][k])
      if self.light is not None:
        for handle, value in zip(self.light, viewer.light_controls(
            self.look.code['light'], self.look.up)):
          handle.value = round(value, 2)
    finally:
      self._syncing = False
    self.refresh()

  def show_output(self, output):
    self.output = output
    self.refresh()

  def set_entry(self, entry, rgb):
    if self._syncing:
      return
    self.look.set_entry(entry, rgb)
    self.refresh()

  def set_light(self, azimuth, elevation, intensity):
    if self._syncing:
      return
    self.look.set_light(azimuth, elevation, intensity)
    self.refresh()

  def save_code(self, name):
    """Saves the current code into the run's bank as `name`."""
    name = workdir_lib.check_name(str(name).strip(), 'code name')
    bank = workdir_lib.bank_path(self.workdir)
    codes_lib.save_bank(bank, {name: self.look.code})
    self.choices[f'bank: {name}'] = dict(self.look.code)
    self.code_menu.options = tuple(self.choices)
    return f'Saved code {name!r} to {bank}.'

  def save_png(self, client_id=None):
    """Renders the newest full view of a browser again and writes it to
    `<workdir>/view/view_<n>.png`; returns a line naming the file."""
    client_id = next(iter(self.sessions)) if client_id is None else client_id
    client = self.server.get_clients().get(client_id)
    if client is None:
      raise viewer.ViewerError('No browser is connected to save a view of.')
    req = self.request(client.camera)
    image = self.renderer.render(viewer.view_rays(
        req.pose, req.fov_y, req.aspect, self.height, self.near, self.far),
                                 req.code, req.output)
    folder = os.path.join(self.workdir, 'view')
    number = len(os.listdir(folder)) if os.path.isdir(folder) else 0
    path = os.path.join(folder, f'view_{number:03d}.png')
    images.save_png(path, image)
    return f'Wrote {path}.'

  def newest_step(self):
    """The newest step in the run's checkpoints (read-only), or None."""
    ckpt = checkpointing.Checkpointer(
        workdir_lib.checkpoint_dir(self.workdir), read_only=True)
    try:
      return ckpt.latest_step()
    finally:
      ckpt.close()

  def reload(self):
    """Restores the newest checkpoint and re-renders."""
    run = runs.load_run(self.workdir, self._config or
                        self.renderer.run.config,
                        self.renderer.experiment)
    self.renderer.load(run)
    self.status.content = self._status_text()
    self.reload_button.disabled = True
    self.refresh()
    return f'Loaded step {run.step}.'

  def _poll(self, seconds):
    while not self._stop.wait(seconds):
      try:
        step = self.newest_step()
      except Exception as e:  # pylint: disable=broad-except
        logging.info('Could not list checkpoints: %s', e)
        continue
      if step is not None and step > self.renderer.step:
        self.reload_button.label = f'Reload step {step}'
        self.reload_button.disabled = False

  def stop(self):
    self._stop.set()
    for session in list(self.sessions.values()):
      session.close()
    self.server.stop()

  def serve_forever(self):
    print(f'Viewer of {self.workdir} (step {self.renderer.step}) at '
          f'http://localhost:{self.port} ; Ctrl-C stops it.', flush=True)
    try:
      while True:
        time.sleep(3600)
    finally:
      self.stop()
