r"""Blender lego (or any Blender-format scene), one shared appearance code.

  python -m experiments.main --config=experiments/configs/lego.py \
      --config.data.path=../shared/data/lego --workdir=runs/lego
Variants: `fast` (hash grid + proposal sampler), `runlocal`.
The scene has one appearance, so every frame shares code 0.
"""

from condnerf.configs import base
from condnerf.configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, runlocal=False, fast=False)
  config = base.get_config(
      ','.join(k for k in ('fast', 'runlocal') if arg[k]))
  config.data.name = 'blender'
  config.data.path = '../shared/data/lego'
  config.data.appearance = 'shared'
  config.train.minutes = 0.0
  return config
