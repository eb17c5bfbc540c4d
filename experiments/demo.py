r"""The main job: procedural chair -> appearance variants -> train -> evaluate.

  python -m experiments.demo --workdir=runs/demo [--config=...:runlocal]
Writes under --workdir: data/ (the generated scene), checkpoints/,
metrics.jsonl, tb/, val/, eval/ (metrics.json, PNGs, contact_sheet.png).
"""

import os

# On a CPU host, expose every core as a device so the data-parallel step
# uses them all (no effect on GPU/TPU backends). Must precede importing jax.
os.environ.setdefault(
    'XLA_FLAGS', f'--xla_force_host_platform_device_count={os.cpu_count()}')

import time  # pylint: disable=g-import-not-at-top,wrong-import-position

from absl import app
from absl import flags
from ml_collections import config_flags

from condnerf import train_lib
from condnerf.data import procedural
from condnerf.data import variants

_CONFIG = config_flags.DEFINE_config_file(
    'config', os.path.join(os.path.dirname(__file__), 'configs', 'demo.py'),
    'Demo config file, optionally with :args.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', 'runs/demo', 'Output folder.')


def ensure_scene(config, workdir):
  """Generates the chair and its variants under workdir/data unless present.

  Returns:
    The variants dataset path.
  """
  gen = config.data.procedural
  data_dir = os.path.join(workdir, 'data')
  plain = os.path.join(data_dir, 'chair')
  varied = os.path.join(data_dir, 'chair_variants')
  if not os.path.exists(os.path.join(plain, 'transforms_train.json')):
    procedural.write_chair_dataset(
        plain, resolution=gen.resolution, num_train=gen.num_train,
        num_val=gen.num_val, num_test=gen.num_test, seed=config.seed)
  if not os.path.exists(os.path.join(varied, 'transforms_train.json')):
    variants.make_variants(plain, varied, seed=config.seed,
                           num_appearances=gen.num_appearances)
  return varied


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config, workdir = _CONFIG.value, _WORKDIR.value
  start = time.time()
  with config.unlocked():
    config.data.path = ensure_scene(config, workdir)
  results = train_lib.train_and_evaluate(config, workdir)
  minutes = (time.time() - start) / 60
  print(f'\nDemo finished in {minutes:.1f} min. Test PSNR '
        f"{results['psnr']:.2f} dB, SSIM {results['ssim']:.4f} over "
        f"{results['num_images']} views.")
  print(f'  metrics:       {workdir}/eval/metrics.json')
  print(f'  renders:       {workdir}/eval/rgb_*.png, depth_*.png, acc_*.png')
  print(f'  contact sheet: {workdir}/eval/contact_sheet.png')
  print(f'  checkpoints:   {workdir}/checkpoints/')


if __name__ == '__main__':
  app.run(main)
