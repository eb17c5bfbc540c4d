r"""360-degree captures (ethiopian_head by default): contracted space.

  python -m experiments.main --config=experiments/configs/unbounded.py:fast \
      --workdir=runs/head
  # with the capture's masks as alpha over a white background:
  ... --config.data.masks=True
Every 8th photo is a test view. The photos are used whole (their
background is real, and far): mip-NeRF 360's contraction maps the space
beyond the loader's box (every frustum between its depth bounds) into the
shell between radius 1 and 2 of the hash grids and the proposal fields, and
the first level samples evenly in disparity (mip-NeRF 360's s-space with
g(t) = 1/t), so the far background gets samples without starving the object.
One shared code (one capture, one look). Variants: `fast` (a 10-minute
budget), `runlocal`.
"""

from experiments.configs import llff


def get_config(arg=None):
  config = llff.capture_config(
      arg, name='llff', path='../shared/data/ethiopian_head', factor=20,
      holdout=8, appearance='shared', masks=False)
  config.model.field.use_contraction = True
  config.model.proposal_field.use_contraction = True
  config.model.lindisp = True
  return config
