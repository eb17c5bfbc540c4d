r"""Latencies of the browser viewer on a trained run, as JSON.

  python -m experiments.view_bench --workdir=runs/demo

Serves the run (`experiments/view.py`), opens it in headless Chromium (the
OS package, through Playwright) and times, on the server's side, from the
browser's action to the frame handed to it: the first frame (a preview) and
the first full one after the page opens, then for each camera drag, palette entry and light change the
preview and the full view. Prints medians over `--repeats` and the
screenshots' paths (`--shots`). Takes `experiments.view`'s flags
(`--workdir`, `--height`, `--preview_height`; its port is a free one).
"""

# pylint: disable=g-bad-import-order
from experiments import cli  # first: sets up CPU devices before jax loads.

import json
import os
import shutil
import socket
import time

from absl import flags
import numpy as np

from experiments import view
from experiments import viewer_server

_REPEATS = flags.DEFINE_integer('repeats', 5, 'Times each action is timed.')
_SHOTS = flags.DEFINE_string('shots', '', 'Folder for screenshots (none '
                             'when empty).')
_CHROMIUM = flags.DEFINE_string('chromium', '', 'Chromium binary (default: '
                                '`chromium` on PATH).')


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _frames_after(session, mark, timeout=60.0):
  """(preview, full) `viewer.Frame`s of the newest request after `mark`."""
  deadline = time.perf_counter() + timeout
  while session.latest <= mark and time.perf_counter() < deadline:
    time.sleep(0.01)
  number = session.latest
  full = session.wait_for(number, timeout=timeout)
  preview = session.wait_for(number, preview=True, timeout=timeout)
  return preview, full


def main(argv):
  del argv
  from playwright import sync_api  # pylint: disable=g-import-not-at-top
  chromium = _CHROMIUM.value or shutil.which('chromium')
  if not chromium:
    cli.fail('Chromium is not installed (apt-get install chromium), or '
             'pass --chromium=PATH.')
  port = _free_port()
  started = time.perf_counter()
  viewer = viewer_server.Viewer(view._WORKDIR.value, port=port,  # pylint: disable=protected-access
                       height=view._HEIGHT.value,  # pylint: disable=protected-access
                       preview_height=view._PREVIEW.value)  # pylint: disable=protected-access
  result = {'workdir': view._WORKDIR.value, 'step': viewer.renderer.step,
            'start_seconds': time.perf_counter() - started,
            'full_rows': viewer.height, 'preview_rows': viewer.preview_height}
  timings = {'camera_preview': [], 'camera_full': [], 'palette_preview': [],
             'palette_full': [], 'light_preview': [], 'light_full': []}
  shots = _SHOTS.value

  def shot(page, name):
    if shots:
      os.makedirs(shots, exist_ok=True)
      time.sleep(0.5)
      page.screenshot(path=os.path.join(shots, f'{name}.png'))

  with sync_api.sync_playwright() as pw:
    browser = pw.chromium.launch(
        executable_path=chromium, headless=True,
        args=['--enable-unsafe-swiftshader', '--use-angle=swiftshader',
              '--no-sandbox'])
    page = browser.new_page(viewport={'width': 1280, 'height': 800})
    opened = time.perf_counter()
    page.goto(f'http://127.0.0.1:{port}/', wait_until='load')
    result['page_load_seconds'] = time.perf_counter() - opened
    while not viewer.sessions:
      time.sleep(0.01)
    session = next(iter(viewer.sessions.values()))
    session.wait_for(1, preview=True)
    result['first_frame_seconds'] = time.perf_counter() - opened
    session.wait_for(1)
    result['first_full_frame_seconds'] = time.perf_counter() - opened
    shot(page, 'first')
    for i in range(_REPEATS.value):
      mark = session.latest
      page.mouse.move(300, 400)
      page.mouse.down()
      page.mouse.move(300 + 40 * (1 if i % 2 else -1), 410, steps=4)
      page.mouse.up()
      preview, full = _frames_after(session, mark)
      timings['camera_preview'].append(preview.seconds)
      timings['camera_full'].append(full.seconds)
      if viewer.entries:
        mark = session.latest
        viewer.entries[i % len(viewer.entries)].value = (
            (40 * i) % 256, 60, 255 - (30 * i) % 256)
        preview, full = _frames_after(session, mark)
        timings['palette_preview'].append(preview.seconds)
        timings['palette_full'].append(full.seconds)
      if viewer.light is not None:
        mark = session.latest
        azimuth = viewer.light[0]
        azimuth.value = (azimuth.value + 50.0 + 180.0) % 360.0 - 180.0
        preview, full = _frames_after(session, mark)
        timings['light_preview'].append(preview.seconds)
        timings['light_full'].append(full.seconds)
    shot(page, 'edited')
    browser.close()
  viewer.stop()
  result.update({f'{k}_median': float(np.median(v)) for k, v in
                 timings.items() if v})
  result['seconds'] = {k: [round(x, 3) for x in v] for k, v in
                       timings.items() if v}
  result['cancelled_full_renders'] = session.cancelled
  print(json.dumps(result, indent=2))


if __name__ == '__main__':
  cli.run(main)
