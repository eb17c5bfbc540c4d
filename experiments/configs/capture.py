r"""Your own capture: a nerfstudio `transforms.json` (ns-process-data, or
COLMAP converted), one code per photo unless frames carry appearance ids.

  python -m experiments.main --config=experiments/configs/capture.py:fast \
      --config.data.path=CAPTURE_FOLDER --workdir=runs/capture
The loader normalizes the cameras (mean center at the origin, the farthest
at distance 1), honors OpenCV lens distortion, and holds out every 8th
frame without a "split" key as a test view (docs/captures.md, "Bring
your own capture"). Variants: `fast` (hash grid + proposal sampler, lego's
tuned settings, a 10-minute budget), `runlocal`.
"""

from experiments.configs import llff


def get_config(arg=None):
  return llff.capture_config(arg, name='nerfstudio', path='', holdout=8,
                             appearance='auto')
