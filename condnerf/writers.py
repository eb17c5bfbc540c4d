"""Metric logging to `workdir/metrics.jsonl` and TensorBoard.

Owns `MetricWriter`: scalars go to a JSON-lines file, one object per call,
  {"step": s, "split": "train", name: value, ...}
(easy to read back with pandas or `json.loads`), and, with images and the
config, to TensorBoard event files under `workdir/tb/` written by
tensorboardX.

It does not own deciding what or when to log (the loop and evaluators), or
which process logs: build the writer with `enabled=jax.process_index() == 0`
so the other processes get a writer whose calls do nothing.
"""

from collections.abc import Mapping
import json
import os

import numpy as np
from tensorboardX import SummaryWriter

from condnerf import workdir as workdir_lib

METRICS_FILENAME = 'metrics.jsonl'
TB_DIRNAME = 'tb'
_RESERVED_KEYS = ('step', 'split')


def flatten_dict(tree, prefix='', sep='.'):
  """Flattens nested mappings into `{'a.b.c': leaf}`.

  Args:
    tree: nested mapping, or an object with `to_dict()` (a ConfigDict).
    prefix: prepended to every key.
    sep: separator between nested keys.

  Returns:
    A flat dict from joined key to leaf value, in the mapping's order.
  """
  if hasattr(tree, 'to_dict'):
    tree = tree.to_dict()
  flat = {}
  for key, value in tree.items():
    name = f'{prefix}{sep}{key}' if prefix else str(key)
    if hasattr(value, 'to_dict') or isinstance(value, Mapping):
      flat.update(flatten_dict(value, name, sep))
    else:
      flat[name] = value
  return flat


def drop_rows_after(workdir, step):
  """Prepares a resumed run's metrics.jsonl: drops rows it will write again.

  A run resumed from checkpoint `step` repeats the steps after it, and
  evaluates again at its end, so rows with a larger step, and 'eval' rows at
  `step` itself, are removed (atomically). Unreadable lines are kept.

  Args:
    workdir: the run folder.
    step: the restored checkpoint step.
  Returns:
    The number of rows dropped.
  """
  path = os.path.join(workdir, METRICS_FILENAME)
  if not os.path.exists(path):
    return 0
  with open(path, 'rb') as f:  # bytes: a damaged line is kept as it is.
    lines = f.readlines()
  kept = []
  for line in lines:
    try:
      row = json.loads(line)
      repeated = row['step'] > step or (row['step'] == step and
                                        row.get('split') == 'eval')
    except (ValueError, KeyError, TypeError):
      repeated = False
    if not repeated:
      kept.append(line if line.endswith(b'\n') else line + b'\n')
  if len(kept) != len(lines):
    workdir_lib.write_atomic(path, lambda f: f.write(b''.join(kept)),
                             binary=True)
  return len(lines) - len(kept)


def _to_float(value):
  """A scalar (Python, numpy or a size-1 jax array) as a Python float."""
  array = np.asarray(value)
  if array.size != 1:
    raise ValueError(f'expected a scalar, got shape {array.shape}.')
  return float(array.reshape(()))


class MetricWriter:
  """Writes scalars, images and hyperparameters of one run.

  Example:
    writer = MetricWriter(workdir, enabled=jax.process_index() == 0)
    writer.write_hparams(config)
    writer.write_scalars(step, {'loss': loss, 'psnr': psnr})
    writer.write_scalars(step, {'psnr': test_psnr}, split='test')
    writer.close()
  """

  def __init__(self, workdir, enabled=True):
    """Opens (appending to) the run's metric files.

    Args:
      workdir: run directory; created if missing.
      enabled: if False, nothing is created and every method does nothing.
    """
    self._enabled = enabled
    self._jsonl = None
    self._tb = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self.metrics_path = os.path.join(workdir, METRICS_FILENAME)
    self._jsonl = open(self.metrics_path, 'a')
    try:
      self._tb = SummaryWriter(logdir=os.path.join(workdir, TB_DIRNAME))
    except BaseException:
      self._jsonl.close()  # e.g. `tb` is a file: nothing left open.
      raise

  @property
  def enabled(self) -> bool:
    return self._enabled

  def write_scalars(self, step, scalars, split='train'):
    """Appends one line to metrics.jsonl and logs each scalar to TensorBoard.

    The JSON line is flushed at once, so it survives a crash. Non-finite
    values are written as `NaN`/`Infinity`, which Python's `json` reads.

    Args:
      step: training step.
      scalars: mapping from metric name to a Python, numpy or jax scalar.
      split: data split the metrics come from ('train', 'test', ...); the
        TensorBoard tag is `split/name`.
    """
    if not self._enabled:
      return
    step = int(step)
    values = {name: _to_float(value) for name, value in scalars.items()}
    clashes = [name for name in values if name in _RESERVED_KEYS]
    if clashes:
      raise ValueError(f'metric names {clashes} are reserved.')
    record = {'step': step, 'split': split, **values}
    self._jsonl.write(json.dumps(record) + '\n')
    self._jsonl.flush()
    for name, value in values.items():
      self._tb.add_scalar(f'{split}/{name}', value, global_step=step)

  def write_images(self, step, images):
    """Logs images to TensorBoard (not to metrics.jsonl).

    Args:
      step: training step.
      images: mapping from tag to f32[H, W, 3] or f32[H, W] in [0, 1];
        values are clipped.
    """
    if not self._enabled:
      return
    for name, image in images.items():
      image = np.clip(np.nan_to_num(np.asarray(image, np.float32)), 0, 1)
      if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
      formats = {2: 'HW', 3: 'HWC'}.get(image.ndim)
      if formats is None:
        raise ValueError(f'image {name!r} has shape {image.shape}; expected '
                         '[H, W, 3] or [H, W].')
      self._tb.add_image(name, image, global_step=int(step),
                         dataformats=formats)

  def write_hparams(self, config):
    """Logs the flattened config to TensorBoard as a text table.

    Args:
      config: nested mapping or ConfigDict; nested keys are joined with '.'.
    """
    if not self._enabled:
      return
    flat = flatten_dict(config)
    lines = ['| key | value |', '|---|---|']
    lines += [f'| {key} | {value!r} |' for key, value in sorted(flat.items())]
    self._tb.add_text('hparams', '\n'.join(lines), global_step=0)

  def flush(self):
    """Forces everything written so far to disk."""
    if not self._enabled:
      return
    self._jsonl.flush()
    self._tb.flush()

  def close(self):
    """Flushes and closes the files; later calls do nothing."""
    if not self._enabled:
      return
    self._jsonl.close()
    self._tb.close()
    self._enabled = False

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.close()
