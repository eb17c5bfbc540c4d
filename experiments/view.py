r"""Browser viewer of a trained run: look at it and edit its code live.

  python -m experiments.view --workdir=runs/demo [--port=8080]

opens a viser server (http://localhost:8080). The scene renders from the
browser's camera on demand: a preview while the camera moves, the full view
once it rests (a newer camera cancels a stale render between chunks).
Controls: the code on screen (the mean, every training look, every code of
the run's bank), what is shown (rgb, depth, opacity; with a palette head
albedo, shading and each entry's weight; normals with a shaded one), a
color per palette entry, the light's azimuth, elevation and intensity,
saving the code into the run's bank (`edit/codes.npz`, never the
checkpoint) and the view as a PNG (`<workdir>/view/`). It reads
checkpoints read-only, so it works while a training writes to the folder,
and offers the newest step when one lands. `--config` replaces the run's
recorded config (e.g. when its data moved).
"""

# pylint: disable=g-bad-import-order
from experiments import cli  # first: sets up CPU devices before jax loads.

from absl import flags
from ml_collections import config_flags

from experiments import viewer_server

_WORKDIR = flags.DEFINE_string('workdir', None, 'Folder of the trained run.')
_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config to use instead of the run\'s recorded one.',
    lock_config=True)
_HOST = flags.DEFINE_string('host', '127.0.0.1', 'Address to serve on '
                            '(0.0.0.0: every interface).')
_PORT = flags.DEFINE_integer('port', 8080, 'Port to serve on.')
_HEIGHT = flags.DEFINE_integer(
    'height', 0, 'Rows of the full view (0: twice the training images\').')
_PREVIEW = flags.DEFINE_integer(
    'preview_height', 0, 'Rows of the preview shown while the camera moves '
    '(0: a quarter of the full view).')
_POLL = flags.DEFINE_float('poll_seconds', 5.0, 'How often to look for a '
                           'newer checkpoint.')
flags.mark_flags_as_required(['workdir'])


def main(argv):
  del argv
  viewer_server.Viewer(
      _WORKDIR.value, _CONFIG.value, host=_HOST.value, port=_PORT.value,
      height=_HEIGHT.value, preview_height=_PREVIEW.value,
      poll_seconds=_POLL.value).serve_forever()


if __name__ == '__main__':
  cli.run(main)
