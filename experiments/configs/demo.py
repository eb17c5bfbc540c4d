r"""Demo: the procedural red chair under 8 appearance variants.

  python -m experiments.demo --workdir=runs/demo      # makes data, trains
  python -m experiments.main --config=experiments/configs/demo.py \
      --workdir=runs/demo --mode=eval
The config itself is `condnerf/configs/demo.py` (notebooks, which import
only `condnerf`, train it too). Variants: `runlocal`, `small`.
"""

from condnerf.configs import demo


def get_config(arg=None):
  return demo.get_config(arg)
