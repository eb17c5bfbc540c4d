r"""Your own capture: a nerfstudio `transforms.json` (ns-process-data, or
COLMAP converted), one code per photo unless frames carry appearance ids.

  python -m experiments.main --config=experiments/configs/capture.py:fast \
      --config.data.path=CAPTURE_FOLDER --workdir=runs/capture
The loader normalizes the cameras (mean center at the origin, the farthest
at distance 1), honors OpenCV lens distortion, and holds out every 8th
frame without a "split" key as a test view (README, "Bring your own
capture"). Variants: `fast` (hash grid + proposal sampler, lego's tuned
settings, a 10-minute budget), `runlocal`.
"""

from condnerf.configs import base
from condnerf.configs import common
from experiments.configs import llff


def get_config(arg=None):
  arg = common.parse_arg(arg, runlocal=False, fast=False)
  config = base.get_config(
      ','.join(k for k in ('fast', 'runlocal') if arg[k]))
  config.data.update(name='nerfstudio', path='', holdout=8,
                     appearance='auto')
  config.train.minutes = 0.0
  if arg.fast and not arg.runlocal:
    llff.apply_llff_fast(config)
  return config
