r"""Forward-facing LLFF captures (fern by default), sampled in NDC.

  python -m experiments.main --config=experiments/configs/llff.py:fast \
      --config.data.path=../shared/data/fern --workdir=runs/fern
The default `data.factor=8` reads images_8/: fern at the NeRF paper's
504 x 378 (`--config.data.factor=16` for its 252 x 189 copy). The LLFF
protocol: every 8th image (from the first) is a test view, the rest train.
Rays are mapped to NDC (`condnerf.ndc`, near plane 1 after the
loader's scaling) and sampled evenly in NDC depth, which is evenly in
disparity; depth maps are reported in world units. One shared appearance
code (a capture has one look). Variants: `fast` (hash grid + proposal
sampler, a 10-minute budget), `runlocal`.
"""

from condnerf.configs import base
from condnerf.configs import common
from experiments.configs import lego


def get_config(arg=None):
  return capture_config(arg, name='llff', path='../shared/data/fern',
                        factor=8, holdout=8, appearance='shared', ndc=True)


def capture_config(arg, **data):
  """The config of a real capture with `data` set: the base model, or with
  `arg` 'fast' the fast family as `apply_llff_fast` tunes it, or
  'runlocal'; no time budget unless `fast` sets one."""
  arg = common.parse_arg(arg, runlocal=False, fast=False)
  config = base.get_config(
      ','.join(k for k in ('fast', 'runlocal') if arg[k]))
  config.data.update(**data)
  config.train.minutes = 0.0
  if arg.fast and not arg.runlocal:
    apply_llff_fast(config)
  return config


def apply_llff_fast(config):
  """The fast family as tuned on lego (`lego.apply_lego_fast`: hash grid,
  proposal sampler, a 10-minute budget over which the learning rate
  decays), on photos without alpha. NDC puts the whole scene in the cube
  [-1, 1]^3 (x, y slightly beyond it for the outer cameras), so the grids
  need no contraction.
  """
  lego.apply_lego_fast(config)
  config.train.random_background = False
