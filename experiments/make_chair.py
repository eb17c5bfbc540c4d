r"""Renders the procedural red chair as a Blender-format dataset.

  python -m experiments.make_chair --out runs/chair [--resolution 100] \
      [--num_train 100] [--num_val 8] [--num_test 16] [--seed 0] \
      [--supersample 3]

See `condnerf.data.procedural.write_chair_dataset` for the layout.
"""

from absl import app
from absl import flags

from condnerf.data import procedural

_OUT = flags.DEFINE_string('out', None, 'Folder to write.')
_RESOLUTION = flags.DEFINE_integer('resolution', 100, 'Image size in pixels.')
_NUM_TRAIN = flags.DEFINE_integer('num_train', 100, 'Training frames.')
_NUM_VAL = flags.DEFINE_integer('num_val', 8, 'Validation frames.')
_NUM_TEST = flags.DEFINE_integer('num_test', 16, 'Test frames.')
_SUPERSAMPLE = flags.DEFINE_integer(
    'supersample', 3, 'Odd k: k x k rays per pixel (antialiasing).')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the camera poses.')
flags.mark_flag_as_required('out')


def main(argv):
  del argv
  out = procedural.write_chair_dataset(
      _OUT.value, resolution=_RESOLUTION.value, num_train=_NUM_TRAIN.value,
      num_val=_NUM_VAL.value, num_test=_NUM_TEST.value, seed=_SEED.value,
      supersample=_SUPERSAMPLE.value)
  print(f'Wrote the procedural chair ({_NUM_TRAIN.value}/{_NUM_VAL.value}/'
        f'{_NUM_TEST.value} frames at {_RESOLUTION.value}px) to {out}')


if __name__ == '__main__':
  app.run(main)
