r"""Renders the procedural red chair as a Blender-format dataset.

  python -m experiments.make_chair --out runs/chair [--resolution 100] \
      [--num_train 100] [--num_val 8] [--num_test 16] [--seed 0] \
      [--supersample 3]

With `--materials`, every frame gets one of `--num_appearances` sampled part
colorings and lights (light directions within `--light_cone` degrees of the
default; 0 = the default light) and the folder must be empty unless
`--overwrite`:

  python -m experiments.make_chair --out runs/chair_materials --materials \
      --num_appearances 8 --light_cone 0

See `condnerf.data.chair_files.write_chair_dataset` and
`condnerf.data.materials.write_material_dataset` for the layouts.
"""

from absl import flags

from condnerf.data import chair_files
from condnerf.data import materials
from experiments import cli

_OUT = flags.DEFINE_string('out', None, 'Folder to write.')
_RESOLUTION = flags.DEFINE_integer('resolution', 100, 'Image size in pixels.')
_NUM_TRAIN = flags.DEFINE_integer('num_train', 100, 'Training frames.')
_NUM_VAL = flags.DEFINE_integer('num_val', 8, 'Validation frames.')
_NUM_TEST = flags.DEFINE_integer('num_test', 16, 'Test frames.')
_SUPERSAMPLE = flags.DEFINE_integer(
    'supersample', 3, 'Odd k: k x k rays per pixel (antialiasing).')
_SEED = flags.DEFINE_integer(
    'seed', 0, 'Seed of the camera poses (and of the materials).')
_MATERIALS = flags.DEFINE_bool(
    'materials', False, 'Write a material dataset: per-frame part colors and '
    'light (see condnerf.data.materials).')
_NUM_APPEARANCES = flags.DEFINE_integer(
    'num_appearances', 8, 'With --materials: rows of the material table.')
_LIGHT_CONE = flags.DEFINE_float(
    'light_cone', 0.0, 'With --materials: half-angle in degrees of the cone '
    'of light directions; 0 = the default light.')
_OVERWRITE = flags.DEFINE_bool(
    'overwrite', False, 'With --materials: replace a non-empty --out.')
flags.mark_flag_as_required('out')


def main(argv):
  del argv
  sizes = dict(resolution=_RESOLUTION.value, num_train=_NUM_TRAIN.value,
               num_val=_NUM_VAL.value, num_test=_NUM_TEST.value,
               seed=_SEED.value, supersample=_SUPERSAMPLE.value)
  frames = (f'{_NUM_TRAIN.value}/{_NUM_VAL.value}/{_NUM_TEST.value} frames '
            f'at {_RESOLUTION.value}px')
  if not _MATERIALS.value:
    out = chair_files.write_chair_dataset(_OUT.value, **sizes)
    print(f'Wrote the procedural chair ({frames}) to {out}')
    return
  out = materials.write_material_dataset(
      _OUT.value, num_appearances=_NUM_APPEARANCES.value,
      light_cone_deg=_LIGHT_CONE.value, overwrite=_OVERWRITE.value, **sizes)
  print(f'Wrote the procedural chair with {_NUM_APPEARANCES.value} materials '
        f'(light cone {_LIGHT_CONE.value} deg; {frames}) to {out}')


if __name__ == '__main__':
  cli.run(main)
