r"""Appearance-code size: 8 vs 32 vs 128 numbers.

  python -m experiments.ablate --sweep=experiments/sweeps/code_dim.py \
      --workdir=runs/abl_code_dim
Demo scene, fixed 1600 steps, 2 seeds (as conditioning.py); `runlocal` for
smoke runs.
"""

from condnerf.configs import common
from condnerf.configs import demo


def get_sweep(arg=None):
  arg = common.parse_arg(arg, runlocal=False)
  # The latent-code head on image-space variants (the demo before palette
  # codes): what these sweeps were measured on.
  base = demo.get_config('small,latent' if arg.runlocal else 'latent')
  base.train.update(minutes=0.0, val_every=0)  # fixed steps, any load.
  return dict(
      name='code_dim',
      base=base,
      variants=[{'name': f'dim{d}', 'codes.dim': d} for d in (8, 32, 128)],
      seeds=(0, 1),
  )
