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
  base = demo.sweep_base(arg.runlocal)
  return dict(
      name='code_dim',
      base=base,
      variants=[{'name': f'dim{d}', 'codes.dim': d} for d in (8, 32, 128)],
      seeds=(0, 1),
  )
