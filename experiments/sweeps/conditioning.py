r"""How the color head reads the appearance code: concat vs FiLM vs none.

  python -m experiments.ablate --sweep=experiments/sweeps/conditioning.py \
      --workdir=runs/abl_conditioning
On the demo scene (procedural chair, 8 appearances, fixed 1600 steps so the
comparison does not depend on machine load), 2 seeds. `none` ignores the
code: the gap to it is what conditioning buys. `runlocal`: seconds-long
trials on a tiny chair, for tests and smoke runs.
"""

from condnerf.configs import common
from condnerf.configs import demo


def get_sweep(arg=None):
  arg = common.parse_arg(arg, runlocal=False)
  base = demo.sweep_base(arg.runlocal)
  return dict(
      name='conditioning',
      base=base,
      variants=[
          {'name': 'concat', 'model.head.conditioning': 'concat'},
          {'name': 'film', 'model.head.conditioning': 'film'},
          {'name': 'none', 'model.head.conditioning': 'none'},
      ],
      seeds=(0, 1),
  )
