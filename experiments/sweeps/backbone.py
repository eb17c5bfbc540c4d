r"""Geometry backbone: positional encoding + MLP vs multiresolution hash grid.

  python -m experiments.ablate --sweep=experiments/sweeps/backbone.py \
      --workdir=runs/abl_backbone
Demo scene, fixed 1600 steps, 2 seeds, proposal sampling for both. The
`posenc` trunk is a 4 x 128 MLP on 10-octave positional features (softplus
density, lower learning rate, as MLP NeRFs need); `hashgrid` is the demo's
own field. Expect `posenc` to be several times slower per step on a CPU.
`runlocal` keeps the tiny widths of the smoke configuration.
"""

from condnerf.configs import common
from condnerf.configs import demo


def get_sweep(arg=None):
  arg = common.parse_arg(arg, runlocal=False)
  base = demo.sweep_base(arg.runlocal)
  posenc = {'name': 'posenc', 'model.field.encoding': 'posenc',
            'model.field.density_activation': 'softplus',
            'model.field.density_bias': -1.0, 'optim.lr_init': 1e-3,
            'optim.lr_final': 1e-4}
  if not arg.runlocal:
    posenc.update({'model.field.width': 128, 'model.field.depth': 4,
                   'model.field.feature_dim': 64})
  return dict(
      name='backbone',
      base=base,
      variants=[posenc, {'name': 'hashgrid'}],
      seeds=(0, 1),
  )
