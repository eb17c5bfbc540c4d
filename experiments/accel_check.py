r"""One command for a short accelerator loan: device tests, benchmark, JSON.

  python -m experiments.accel_check --out=runs/accel.json \
      [--lego=../shared/data/lego --lego_minutes=5]
  python -m experiments.accel_check --dry_run --out=/tmp/accel.json  # CPU

Runs, in this order and each in its own process so that one failure does
not hide the rest:
  bench   `experiments.bench --suite=full` (train/render throughput, MFU,
          edit times, bfloat16's PSNR cost) on whatever devices JAX sees;
  lego    with --lego: `experiments.bench --suite=lego` for --lego_minutes
          and the first curve point at or above 28 dB test PSNR;
  tests   the device-relevant tests (the train step on many devices,
          chunked inference, placement helpers, the hash grid and its
          gradients, the metrics): pass/fail counts and seconds.
It writes one JSON (again after each part): the environment (backend, device kind and count, jax
version), each part's result or error, and the headline figures the pods
issue asks of a GPU: `fast` training rays/s (goal 1,000,000 on one GPU)
and lego minutes to 28 dB. `--dry_run` shrinks every part to seconds (the
tests run it on CPU), so the script is known to work before a loan starts.
"""

import json
import os
import subprocess
import sys
import time

from absl import app
from absl import flags

from condnerf import workdir as workdir_lib

_OUT = flags.DEFINE_string('out', 'runs/accel_check.json', 'The JSON.')
_DRY_RUN = flags.DEFINE_bool(
    'dry_run', False, 'Tiny sizes everywhere (seconds on a CPU).')
_LEGO = flags.DEFINE_string(
    'lego', '', 'Blender lego folder: also time training to 28 dB.')
_LEGO_MINUTES = flags.DEFINE_float('lego_minutes', 5.0,
                                   'Training minutes of the lego curve.')
_LEGO_POINTS = flags.DEFINE_integer('lego_points', 5,
                                    'Evaluations on the lego curve.')
_PART_TIMEOUT = flags.DEFINE_integer('part_timeout', 600,
                                     'Seconds each part may take.')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEVICE_TESTS = ('tests/train_lib_test.py', 'tests/inference_test.py',
                'tests/parallel_test.py', 'tests/encoding_test.py',
                'tests/metrics_test.py')
# The dry run's test subset: one multi-device train step, and placement.
DRY_TESTS = ('tests/train_lib_test.py::TrainStepTest::'
             'test_eight_devices_equal_one_device0', 'tests/parallel_test.py')
DRY_BENCH = ('--steps=2', '--resolution=16', '--edit_train_steps=5',
             '--edit_steps=3', '--batch_size=64', '--render_rays=64',
             '--matmul_rows=1024', '--repeats=2', '--configs=fast',
             '--override=model.num_samples=(8, 8)')
GOAL_RAYS_PER_S = 1_000_000
TARGET_PSNR = 28.0


def run_part(args, timeout, env=None):
  """Runs `python args` in the repo; returns (returncode, stdout, stderr,
  seconds), returncode None when it ran past `timeout`."""
  start = time.time()
  try:
    proc = subprocess.run([sys.executable, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout,
                          check=False)
    code, out, err = proc.returncode, proc.stdout, proc.stderr
  except subprocess.TimeoutExpired as e:
    # What it printed before the kill comes back as bytes, even with text.
    partial = e.stdout or b''
    code, out, err = None, (partial if isinstance(partial, str) else
                            partial.decode(errors='replace')), (
                                f'timed out after {timeout} s')
  return code, out, err, time.time() - start


def pytest_counts(summary):
  """{'passed': n, 'failed': n, ...} from pytest's last summary line."""
  counts = {}
  words = summary.replace(',', ' ').split()
  for number, word in zip(words, words[1:]):
    if number.isdigit():
      counts[word.rstrip(',')] = int(number)
  return counts


def run_tests(dry_run, timeout):
  """The device-relevant tests on JAX's default backend (the accelerator
  where there is one; tests/conftest.py forces CPUs only when unset)."""
  env = dict(os.environ, JAX_PLATFORMS='')
  env.pop('XLA_FLAGS', None)
  code, out, err, seconds = run_part(
      ['-m', 'pytest', '-q', '-p', 'no:cacheprovider',
       *(DRY_TESTS if dry_run else DEVICE_TESTS)], timeout, env)
  lines = [line for line in out.splitlines() if line.strip()]
  return {'ok': code == 0, 'seconds': seconds,
          'counts': pytest_counts(lines[-1] if lines else ''),
          'tail': None if code == 0 else (out + err)[-3000:]}


def run_bench(args, timeout):
  """`experiments.bench` with `args`; its JSON, or the error."""
  code, out, err, seconds = run_part(['-m', 'experiments.bench', *args],
                                     timeout)
  if code != 0:
    return {'ok': False, 'seconds': seconds, 'tail': err[-3000:]}
  return {'ok': True, 'seconds': seconds, 'result': json.loads(out)}


def minutes_to(curve, psnr):
  """The first curve point's minutes at or above `psnr` dB, else None."""
  return next((p['minutes'] for p in curve if p['psnr'] >= psnr), None)


def headline(report):
  """The figures the pods issue asks of a GPU loan."""
  bench = report['bench'].get('result') or {}
  fast = bench.get('configs', {}).get('fast', {})
  lego = (report.get('lego') or {}).get('result') or {}
  return {'fast_train_rays_per_s': fast.get('train_rays_per_s'),
          'goal_train_rays_per_s': GOAL_RAYS_PER_S,
          'lego_minutes_to_28db': minutes_to(lego.get('curve', []),
                                             TARGET_PSNR) if lego else None}


def write_report(report):
  """Adds the environment and headline to `report` and writes --out."""
  report['env'] = (report['bench'].get('result') or {}).get('env')
  report['headline'] = headline(report)
  os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
  workdir_lib.write_json(_OUT.value, report)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  dry, timeout = _DRY_RUN.value, _PART_TIMEOUT.value
  if _LEGO.value and not os.path.isdir(_LEGO.value):
    raise app.UsageError(f'--lego={_LEGO.value} is not a folder; give the '
                         'Blender lego scene (e.g. ../shared/data/lego).')
  report = {'dry_run': dry, 'started': time.strftime('%Y-%m-%d %H:%M:%S')}
  # The figures first, and the JSON rewritten after each part: a loan that
  # ends early still leaves what was measured.
  print('accel_check: bench --suite=full...', file=sys.stderr)
  report['bench'] = run_bench(
      ['--suite=full', *(DRY_BENCH if dry else ())], timeout)
  write_report(report)
  if _LEGO.value:
    print('accel_check: lego curve...', file=sys.stderr)
    # Its JSON and curve plot go beside --out (OUT_lego.json / .png).
    report['lego'] = run_bench(
        ['--suite=lego', f'--data={_LEGO.value}', '--config=fast',
         f'--minutes={0.1 if dry else _LEGO_MINUTES.value}',
         f'--points={2 if dry else _LEGO_POINTS.value}',
         f'--out={os.path.splitext(_OUT.value)[0]}_lego.json',
         *(('--eval_images=1',) if dry else ())], timeout)
    write_report(report)
  print('accel_check: tests...', file=sys.stderr)
  report['tests'] = run_tests(dry, timeout)
  write_report(report)
  print(json.dumps(report['headline']))
  ok = report['tests']['ok'] and report['bench']['ok'] and (
      report.get('lego', {'ok': True})['ok'])
  return 0 if ok else 1


if __name__ == '__main__':
  app.run(main)
