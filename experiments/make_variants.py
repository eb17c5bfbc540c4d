r"""Writes an appearance-variant copy of a Blender-format RGBA dataset.

  python -m experiments.make_variants --src ../shared/data/lego \
      --out runs/lego_variants --seed 0 [--num_appearances 8] [--overwrite]

See `condnerf.data.variants.make_variants` for what is written.
"""

from absl import flags

from condnerf.data import variants
from experiments import cli

_SRC = flags.DEFINE_string('src', None, 'Source Blender-format dataset.')
_OUT = flags.DEFINE_string('out', None, 'Folder to write (empty or absent).')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of appearances and ids.')
_NUM_APPEARANCES = flags.DEFINE_integer('num_appearances', 8,
                                        'Rows of the appearance table.')
_OVERWRITE = flags.DEFINE_bool('overwrite', False,
                               'Replace a non-empty --out.')
flags.mark_flags_as_required(['src', 'out'])


def main(argv):
  del argv
  out = variants.make_variants(_SRC.value, _OUT.value, seed=_SEED.value,
                               num_appearances=_NUM_APPEARANCES.value,
                               overwrite=_OVERWRITE.value)
  print(f'Wrote {_NUM_APPEARANCES.value} appearance variants of '
        f'{_SRC.value} to {out}')


if __name__ == '__main__':
  cli.run(main)
