r"""The wild benchmark: statue_of_liberty photos, one code per photo.

  python -m experiments.main --config=experiments/configs/wild.py \
      --workdir=runs/wild
  python -m experiments.main --config=experiments/configs/wild.py \
      --workdir=runs/wild --mode=edit --config.edit.operation=nerfw
  # the ablation with one shared code for every photo:
  python -m experiments.main --config=experiments/configs/wild.py:shared \
      --workdir=runs/wild_shared
135 internet photos under different cameras, weather and light (LLFF format
with masks, used as alpha over a white background); every 8th photo is held
out. `nerfw` fits a code on the left half of each held-out photo and scores
the right half (NeRF-W protocol).
"""

from condnerf.configs import base
from condnerf.configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, runlocal=False, shared=False)
  config = base.get_config('fast')
  config.data.name = 'llff'
  config.data.path = '../shared/data/statue_of_liberty'
  config.data.factor = 4
  config.data.holdout = 8
  config.data.appearance = 'shared' if arg.shared else 'per_frame'
  config.train.steps = 3000
  config.train.minutes = 10.0
  config.train.log_every = 50
  config.train.checkpoint_every = 1000
  config.train.val_every = 1000
  config.eval.max_images = 0
  config.edit.operation = 'nerfw'
  if arg.runlocal:
    base.apply_runlocal(config)
  return config
