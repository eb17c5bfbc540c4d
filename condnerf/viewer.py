"""What the browser viewer renders, with no browser: poses, looks, frames.

`experiments/viewer_server.py` wires these to a viser server; all that decides
what a pixel shows lives here, so it is tested without a browser. Owns
  `camera_pose`, `view_rays`   a browser camera (viser's OpenCV frame) as
                               the scene's camera-to-world and its rays;
  `code_choices`               the codes a run offers: its mean, every
                               training look, every code of its bank;
  `Look`                       the code on screen and its edits (palette
                               entries, the light's direction and strength);
  `outputs`, `Renderer`        what can be shown (rgb, depth, opacity, and
                               with a palette or shaded head albedo, shading,
                               normals, each entry's weight) and a renderer
                               that gives up between chunks once a newer
                               request is waiting;
  `Session`                    one browser's render loop: the newest request
                               wins, a preview comes first, the full view
                               after it unless a newer request came.
Rendering goes through `inference` (the renderer eval and edits use), so a
frame here and an image of the edit CLI agree for the same code and camera.
"""

import dataclasses
import threading
import time
from typing import Any, Callable

import jax
import numpy as np

from condnerf import codes as codes_lib
from condnerf import errors
from condnerf import gallery
from condnerf import images
from condnerf import inference
from condnerf import lighting
from condnerf import parallel
from condnerf.data import sampler as sampler_lib

# viser's camera looks down +z with +y down (OpenCV); the scene's cameras
# look down -z with +y up (OpenGL / Blender).
_OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0])
BASE_OUTPUTS = ('rgb', 'depth', 'opacity')


class ViewerError(errors.UserError, ValueError):
  """A viewer request that cannot be met (the message says why)."""


def _rotation(wxyz):
  """f64[3, 3] of a unit quaternion (w, x, y, z)."""
  w, x, y, z = np.asarray(wxyz, np.float64) / np.linalg.norm(wxyz)
  return np.array([
      [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
      [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
      [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def camera_pose(wxyz, position):
  """f32[4, 4] camera-to-world (OpenGL axes) of a viser camera.

  Args:
    wxyz: f64[4], the camera's orientation in the world (OpenCV axes).
    position: f64[3], its center.
  """
  pose = np.eye(4)
  pose[:3, :3] = _rotation(wxyz) @ _OPENCV_TO_OPENGL
  pose[:3, 3] = position
  return pose.astype(np.float32)


def pose_wxyz(pose):
  """(wxyz f64[4], position f64[3]) of a viser camera at `pose` (OpenGL
  camera-to-world f32[4, 4]); the inverse of `camera_pose`."""
  r = np.asarray(pose, np.float64)[:3, :3] @ _OPENCV_TO_OPENGL
  w = np.sqrt(max(1e-12, 1.0 + r[0, 0] + r[1, 1] + r[2, 2])) / 2.0
  q = np.array([w, (r[2, 1] - r[1, 2]) / (4 * w), (r[0, 2] - r[2, 0]) / (4 * w),
                (r[1, 0] - r[0, 1]) / (4 * w)])
  if w < 1e-3:  # Near a half turn: the largest diagonal term is stable.
    i = int(np.argmax(np.diag(r)))
    j, k = (i + 1) % 3, (i + 2) % 3
    s = np.sqrt(max(1e-12, 1.0 + r[i, i] - r[j, j] - r[k, k])) * 2.0
    q = np.zeros(4)
    q[0] = (r[k, j] - r[j, k]) / s
    q[1 + i], q[1 + j], q[1 + k] = s / 4.0, (r[j, i] + r[i, j]) / s, (
        r[k, i] + r[i, k]) / s
  return q / np.linalg.norm(q), np.asarray(pose, np.float64)[:3, 3]


def view_rays(pose, fov_y, aspect, height, near, far):
  """Rays [height, round(height * aspect)] of a pinhole camera.

  Args:
    pose: f32[4, 4] camera-to-world (OpenGL axes).
    fov_y: vertical field of view in radians.
    aspect: width / height.
    height: image rows.
    near, far: ray bounds (the scene's).
  Returns:
    `structs.Rays` with leading shape [height, width], code id 0.
  """
  height = int(height)
  width = max(1, int(round(height * float(aspect))))
  focal = 0.5 * height / np.tan(0.5 * float(fov_y))
  intrinsics = np.array([focal, focal, 0.5 * width, 0.5 * height], np.float32)
  return sampler_lib.pose_rays(pose, intrinsics, height, width, near, far, 0)


def code_choices(run, bank=None):
  """dict label -> one code (pytree of numpy arrays), in display order:
  'mean', 'look 0' ... (the trained table), then 'bank: NAME' per code
  of `bank` (dict name -> code, e.g. `codes.load_bank`)."""
  table = run.codes
  choices = {'mean': codes_lib.mean_code(table)}
  for i in range(codes_lib.num_rows(table)):
    choices[f'look {i}'] = codes_lib.row(table, i)
  for name, code in sorted((bank or {}).items()):
    choices[f'bank: {name}'] = codes_lib.check_like(
        code, choices['mean'], name)
  return choices


def light_controls(light, up):
  """(azimuth, elevation in degrees, intensity) of a light code f32[9, 3]:
  its closest directional light (`lighting.estimate`), about `up`."""
  found = lighting.estimate(light)
  direction = found['direction']
  up = lighting.unit(up)
  elevation = np.degrees(np.arcsin(np.clip(np.dot(direction, up), -1, 1)))
  # The azimuth is measured against gallery.light_direction's own axes.
  x, y = gallery.light_direction(0.0, 0.0, up), gallery.light_direction(
      90.0, 0.0, up)
  azimuth = np.degrees(np.arctan2(np.dot(direction, y), np.dot(direction, x)))
  return float(azimuth), float(elevation), float(np.mean(found['intensity']))


@dataclasses.dataclass
class Look:
  """The code on screen: a chosen code with its palette and light edits.

  Attributes:
    code: dict entry -> numpy array (a pytree code; see `codes.py`).
    up: the scene's up direction (light azimuths turn about it).
  """
  code: dict
  up: Any = (0.0, 0.0, 1.0)

  @property
  def has_palette(self):
    return codes_lib.PALETTE in self.code

  @property
  def has_light(self):
    return 'light' in self.code

  def set_entry(self, entry, rgb):
    """Palette entry `entry` to f32[3] `rgb` in [0, 1]."""
    palette = np.array(self.code[codes_lib.PALETTE], np.float32)
    if not 0 <= int(entry) < len(palette):
      raise ViewerError(f'Palette entry {entry} is out of range: the palette '
                        f'has entries 0..{len(palette) - 1}.')
    palette[int(entry)] = np.clip(np.asarray(rgb, np.float32), 0.0, 1.0)
    self.code = {**self.code, codes_lib.PALETTE: palette}

  def set_light(self, azimuth, elevation, intensity):
    """The light from (azimuth, elevation) degrees at `intensity`; its
    ambient is kept (`lighting.with_direction`)."""
    direction = gallery.light_direction(azimuth, elevation, self.up)
    self.code = {**self.code, 'light': np.asarray(lighting.with_direction(
        self.code['light'], direction, intensity=float(intensity)),
                                                  np.float32)}


def outputs(experiment):
  """The names of what a run can show: `BASE_OUTPUTS`, then with a palette
  head 'albedo', 'shading', 'weight K' per entry, and 'normals' with a
  shaded one."""
  names = list(BASE_OUTPUTS)
  if experiment.model.head_kind == 'palette':
    names += ['albedo', 'shading']
    if experiment.model.needs_normals():
      names.append('normals')
    names += [f'weight {k}' for k in range(experiment.model.palette_size())]
  return tuple(names)


class Cancelled(Exception):
  """A render gave up because a newer request was waiting."""


class Renderer:
  """Renders one camera's output under one code, chunk by chunk.

  Holds the run's parameters on the devices once (`load`), so a frame pays
  only for its rays. `render` checks `stale()` between chunks and raises
  `Cancelled` when it says so.
  """

  def __init__(self, run):
    self.load(run)

  def load(self, run):
    """Uses `run`'s state from now on (a newer checkpoint)."""
    self.run = run
    self.experiment = run.experiment
    self._params = parallel.replicate(run.state.params, self.experiment.mesh)
    self._chunk = int(self.experiment.config.eval.chunk)

  @property
  def step(self):
    return self.run.step

  def _palette_step(self):
    return self.experiment.cached_step(
        'palette_maps', lambda: inference.make_palette_maps_step(
            self.experiment.model, self.experiment.mesh))

  def render(self, rays, code, output='rgb', stale=lambda: False):
    """f32[H, W, 3] in [0, 1]: `output` (see `outputs`) of rays [H, W].

    Raises:
      ViewerError: an output this run cannot show.
      Cancelled: `stale()` turned true between chunks.
    """
    if output not in outputs(self.experiment):
      raise ViewerError(f'This run cannot show {output!r}; it shows '
                        f'{list(outputs(self.experiment))}.')
    height, width = rays.code_ids.shape
    flat = rays.reshape(height * width).replace(
        code_ids=np.zeros((height * width,), np.int32))
    mesh = self.experiment.mesh
    table = parallel.replicate(codes_lib.stack([codes_lib.as_code(code)]),
                               mesh)
    step = (self.experiment.render_step if output in BASE_OUTPUTS
            else self._palette_step())
    pieces = []
    for start in range(0, height * width, self._chunk):
      if stale():
        raise Cancelled()
      part = jax.tree.map(lambda x, s=start: x[s:s + self._chunk], flat)
      pieces.append(inference.render_rays(step, self._params, table, part,
                                          self._chunk, mesh))
    out = {k: np.concatenate([p[k] for p in pieces]).reshape(
        (height, width) + pieces[0][k].shape[1:]) for k in pieces[0]}
    return self._picture(out, output, rays)

  def _picture(self, out, output, rays):
    if output == 'rgb':
      return np.clip(out['rgb'], 0.0, 1.0)
    if output == 'depth':
      return images.colorize_depth(out['depth'], out['acc'],
                                   near=float(rays.near.min()),
                                   far=float(rays.far.max()))
    if output == 'opacity':
      return np.repeat(np.clip(out['acc'], 0.0, 1.0)[..., None], 3, -1)
    if output in ('albedo', 'shading'):
      # Over the scene's background, as the rgb is.
      background = np.asarray(self.experiment.model.background, np.float32)
      acc = out['acc'][..., None]
      return np.clip(out[output] + (1.0 - acc) * background, 0.0, 1.0)
    if output == 'normals':
      return np.clip(0.5 * out['normals'] + 0.5 * out['acc'][..., None], 0, 1)
    k = int(output.split()[1])  # 'weight K'.
    return np.repeat(np.clip(out['weights'][..., k], 0.0, 1.0)[..., None],
                     3, -1)


@dataclasses.dataclass
class Request:
  """What one browser wants to see: a camera and what to render of it."""
  pose: np.ndarray
  fov_y: float
  aspect: float
  code: dict
  output: str = 'rgb'


@dataclasses.dataclass
class Frame:
  """A rendered frame: its request number, `preview` or full, the image
  f32[H, W, 3], the seconds from the request to the finished image, and
  the camera pose f32[4, 4] it was rendered from."""
  number: int
  preview: bool
  image: np.ndarray
  seconds: float
  pose: np.ndarray


class Session:
  """One browser's render loop in its own thread.

  `submit` replaces whatever was waiting; the thread renders the newest
  request at `preview_height` rows, hands it to `show`, then renders it at
  `height` rows unless a newer request arrived (then the full render stops
  between chunks, and the newer one starts with its preview).

  Args:
    renderer: `Renderer`.
    near, far: ray bounds.
    height: rows of the full view.
    preview_height: rows of the preview (0: no preview).
    show: callback(`Frame`) with each finished image.
    on_error: callback(exception) for a render that failed (the loop goes
      on with the next request).
  """

  def __init__(self, renderer, near, far, height, preview_height,
               show: Callable[[Frame], None],
               on_error: Callable[[Exception], None] = lambda e: None):
    self.renderer, self.near, self.far = renderer, near, far
    self.height, self.preview_height = int(height), int(preview_height)
    self.show, self.on_error = show, on_error
    self.frames = []  # every Frame shown, oldest first.
    self.cancelled = 0  # full renders given up for a newer request.
    self._cond = threading.Condition()
    self._pending, self._number, self._closed = None, 0, False
    self._thread = threading.Thread(target=self._loop, daemon=True)
    self._thread.start()

  def submit(self, request):
    """Asks for `request`; returns its number."""
    with self._cond:
      self._number += 1
      self._pending = (self._number, time.perf_counter(), request)
      self._cond.notify()
      return self._number

  @property
  def latest(self):
    """The number of the newest request."""
    with self._cond:
      return self._number

  def close(self):
    with self._cond:
      self._closed = True
      self._cond.notify()
    self._thread.join(timeout=30)

  def wait_for(self, number, preview=False, timeout=60.0):
    """The first `Frame` of request `number` or later (a full one unless
    `preview`); None after `timeout` seconds."""
    deadline = time.perf_counter() + timeout
    with self._cond:
      while True:
        for frame in self.frames:
          if frame.number >= number and (preview or not frame.preview):
            return frame
        left = deadline - time.perf_counter()
        if left <= 0:
          return None
        self._cond.wait(left)

  def _stale(self, number):
    return self._closed or self._number != number

  def _render(self, number, start, request, height, preview):
    rays = view_rays(request.pose, request.fov_y, request.aspect, height,
                     self.near, self.far)
    image = self.renderer.render(rays, request.code, request.output,
                                 stale=lambda: self._stale(number))
    frame = Frame(number, preview, image, time.perf_counter() - start,
                  np.asarray(request.pose))
    self.show(frame)
    with self._cond:
      self.frames.append(frame)
      del self.frames[:-16]
      self._cond.notify_all()

  def _loop(self):
    while True:
      with self._cond:
        while self._pending is None and not self._closed:
          self._cond.wait()
        if self._closed:
          return
        number, start, request = self._pending
        self._pending = None
      try:
        if self.preview_height and self.preview_height < self.height:
          self._render(number, start, request, self.preview_height, True)
        if not self._stale(number):
          self._render(number, start, request, self.height, False)
      except Cancelled:
        self.cancelled += 1
      except Exception as e:  # pylint: disable=broad-except
        self.on_error(e)
