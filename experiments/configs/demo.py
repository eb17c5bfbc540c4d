r"""Demo: the procedural red chair under 8 appearance variants.

  python -m experiments.demo --workdir=runs/demo      # makes data, trains
  python -m experiments.main --config=experiments/configs/demo.py \
      --workdir=runs/demo --mode=eval
Each frame's colors are the chair's under one of 8 random (hue, chroma,
gain) appearances; frames sharing an appearance share a code, so test views
are scored with the right code. Variants: `runlocal`.
"""

from condnerf.configs import base
from condnerf.configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, runlocal=False)
  config = base.get_config('fast')
  config.data.name = 'blender'
  config.data.path = 'runs/demo/data/chair_variants'
  config.data.appearance = 'ids'
  # Procedural-scene generation settings (read by experiments.demo).
  config.data.procedural = dict(resolution=64, num_train=100, num_val=4,
                                num_test=16, num_appearances=8, supersample=3)
  config.train.steps = 1600
  config.train.minutes = 5.5
  config.train.log_every = 50
  config.train.checkpoint_every = 1000
  config.train.val_every = 1000
  if arg.runlocal:
    base.apply_runlocal(config)
    config.data.procedural.update(resolution=16, num_train=8, num_val=2,
                                  num_test=2)
  return config
