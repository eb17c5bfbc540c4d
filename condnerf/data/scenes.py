"""Registry of dataset loaders, selected by `config.data.name`.

Owns only the name -> loader mapping and the lookup; every loader returns a
validated `base.Scene` (see `condnerf.data.base`).
"""

import inspect

from condnerf.data import base
from condnerf.data import blender
from condnerf.data import llff
from condnerf.data import nerfstudio

DATASETS = {
    'blender': blender.load_blender,
    'nerfstudio': nerfstudio.load_nerfstudio,
    'llff': llff.load_llff,
}


def load_scene(name, path, **kwargs):
  """Loads a scene with the loader registered under `name`.

  Args:
    name: a key of `DATASETS`.
    path: dataset path, passed to the loader.
    **kwargs: loader keyword arguments (appearance, num_codes, background,
      factor, max_frames, holdout, ...). Arguments a loader does not take
      (e.g. `holdout` for Blender scenes, which come split) are dropped.
  Returns:
    The loader's validated `base.Scene`.
  Raises:
    DataError: for an unknown name (the message lists the valid ones), or
      whatever the loader raises.
  """
  if name not in DATASETS:
    raise base.DataError(f'Unknown dataset {name!r}; choose one of '
                         f'{sorted(DATASETS)}.')
  loader = DATASETS[name]
  accepted = inspect.signature(loader).parameters
  if kwargs.get('ndc') and 'ndc' not in accepted:
    raise base.DataError(
        f'data.ndc=True is for forward-facing captures, which the llff '
        f'loader reads; the {name!r} loader has no NDC. Set data.ndc=False '
        '(a scene box, or model.field.use_contraction=True for unbounded '
        'scenes).')
  return loader(path, **{k: v for k, v in kwargs.items() if k in accepted})
