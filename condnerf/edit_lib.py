"""`--mode=edit`: run one edit operation of `config.edit` on a trained run.

Owns reading the edit inputs named in the config (mask PNGs, pixel lists,
colors, code names), validating them before anything is written, and the
layout of `<workdir>/edit/<name>/`:
  recolor      before_NNN.png / after_NNN.png for every view of the split,
               code.npy, report.json; the code is added to the bank.
  benchmark    the edit benchmark (evaluators/edit_benchmark.py).
  swap         swap_NNN.png: every view rendered with one code.
  interpolate  sweep_NNN.png strips and sweep.gif on views[0].
  fit          fitted codes of `views` (whole images) saved to the bank.
  nerfw        NeRF-W protocol on every view of the split: a code fitted on
               the left half, PSNR on the right half (per view and mean).
  codes        every row of the code table and every code of the bank on
               every view, one batched render per view: <name>_viewNNN.png
               and grid.png (views x codes).
The training checkpoint is only read, never written. Outputs are written
to a temporary folder and moved into place when complete.
"""

import os

import jax
import numpy as np

from condnerf import codes as codes_lib
from condnerf import edit_baselines
from condnerf import editing
from condnerf import experiment as experiment_lib
from condnerf import images
from condnerf import metrics as metrics_lib
from condnerf import workdir as workdir_lib
from condnerf.evaluators import edit_benchmark

OPERATIONS = ('recolor', 'benchmark', 'swap', 'interpolate', 'fit', 'nerfw',
              'codes')


def parse_pixels(text):
  """'r,c;r,c' -> i32[n, 2]; raises EditError on malformed text."""
  pixels = []
  for item in text.split(';'):
    if not item.strip():
      continue
    values = item.split(',')
    try:
      pixel = [int(v) for v in values]
    except ValueError:
      pixel = []
    if len(pixel) != 2:
      raise editing.EditError(
          f'Cannot parse edit.pixels={text!r}: {item.strip()!r} is not one '
          '"row,col" pair; use "row,col;row,col;...".')
    pixels.append(pixel)
  return np.asarray(pixels, np.int32).reshape(-1, 2)


def parse_views(views):
  """`edit.views` as a list of ints; raises EditError for anything else."""
  try:
    return [int(v) for v in views]
  except (TypeError, ValueError) as e:
    raise editing.EditError(
        f'edit.views={tuple(views)!r} must be view indices, e.g. '
        '--config.edit.views="(0,3)".') from e


def load_mask(path, frames, view):
  """bool[H, W] scribble mask from a PNG (any channel > 0.5 is a scribble).

  Raises:
    EditError: a missing file or a size that does not match the view.
  """
  if not os.path.exists(path):
    raise editing.EditError(f'Mask file {path} does not exist.')
  try:
    mask = images.load_png(path)
  except (OSError, ValueError) as e:
    raise editing.EditError(
        f'Mask file {path} is not an image Pillow can read ({e}); save the '
        'mask as a PNG, white where the scribble is.') from e
  mask = mask[..., :3].max(-1) if mask.ndim == 3 else mask
  height, width = frames.images[view].shape[:2]
  if mask.shape != (height, width):
    raise editing.EditError(
        f'Mask {path} is {mask.shape[1]}x{mask.shape[0]} but view {view} is '
        f'{width}x{height}; draw the mask at the view\'s resolution.')
  return mask > 0.5


def _scribbles(ec, frames, state, experiment):
  """The recolor batch: scribbles (and keep pixels) of views[0]."""
  view = parse_views(ec.views)[0]
  editing.view_rays(frames, view)  # validates the index.
  if ec.mask:
    pixels = load_mask(ec.mask, frames, view)
  elif ec.pixels:
    pixels = parse_pixels(ec.pixels)
  else:
    raise editing.EditError('Give the scribble as --config.edit.mask=PNG or '
                            '--config.edit.pixels="row,col;...".')
  batch = editing.scribble_batch(frames, [view], [pixels],
                                 [editing.parse_color(ec.color)])
  if ec.keep_mask:
    keep = load_mask(ec.keep_mask, frames, view)
    current = experiment.render(state, editing.view_rays(frames, view))
    keep_batch = editing.scribble_batch(frames, [view], [keep],
                                        [current['rgb'][keep]])
    batch = editing.concat_batches(batch, keep_batch)
  return batch


def run(config, workdir):
  """Runs `config.edit.operation`; returns the path of its output folder.

  Every input is checked before anything is written; the output folder
  `<workdir>/edit/<edit.name>/` is replaced only once the new one is
  complete, and the training checkpoint is opened read-only.
  """
  ec = config.edit
  out_dir = workdir_lib.child(workdir_lib.edit_dir(workdir), ec.name,
                              'edit.name')
  if ec.operation not in OPERATIONS:
    raise editing.EditError(f'Unknown edit.operation {ec.operation!r}; '
                            f'choose one of {list(OPERATIONS)}.')
  if ec.method not in edit_baselines.METHODS:
    raise editing.EditError(f'Unknown edit.method {ec.method!r}; choose one '
                            f'of {list(edit_baselines.METHODS)}.')
  if ec.split not in experiment_lib.SPLITS:
    raise editing.EditError(f'Unknown edit.split {ec.split!r}; choose one '
                            f'of {list(experiment_lib.SPLITS)}.')
  parse_views(ec.views)
  bank = ec.bank or workdir_lib.bank_path(workdir)
  editing.parse_color(ec.color)  # fail on a bad color before loading.
  exp, state = experiment_lib.load_trained(config, workdir)
  table = np.asarray(jax.device_get(state.codes['appearance']))
  if table.size == 0:
    raise editing.EditError(f'The checkpoint in {workdir} has no codes.')
  frames = getattr(exp.scene, ec.split)
  if jax.process_index() != 0:  # only process 0 writes.
    _OPERATIONS[ec.operation](exp, state, ec, frames, table, bank, None)
    return out_dir
  with workdir_lib.staged_dir(out_dir) as tmp:
    report = _OPERATIONS[ec.operation](exp, state, ec, frames, table, bank,
                                       tmp)
    workdir_lib.write_json(os.path.join(tmp, 'report.json'), report)
  return out_dir


def _row(table, index, what):
  if not 0 <= index < len(table):
    raise editing.EditError(f'{what}={index} is outside the code table '
                            f'[0, {len(table)}).')
  return table[index]


def _recolor(exp, state, ec, frames, table, bank, out):
  batch = _scribbles(ec, frames, state, exp)
  result = edit_baselines.run_edit(exp, state, batch, ec.method,
                                   steps=ec.steps,
                                   learning_rate=ec.learning_rate or None)
  if out:
    original = edit_baselines.EditResult('none', table.mean(0), state.params,
                                         None, None)
    for i in range(len(frames)):
      rays = editing.view_rays(frames, i)
      images.save_png(os.path.join(out, f'before_{i:03d}.png'),
                      original.render(exp, rays)['rgb'])
      images.save_png(os.path.join(out, f'after_{i:03d}.png'),
                      result.render(exp, rays)['rgb'])
    np.save(os.path.join(out, 'code.npy'), result.code)
    if ec.method == 'code':
      codes_lib.save_bank(bank, {ec.name: result.code})
  info = result.info
  return {'operation': 'recolor', 'method': ec.method, 'color': ec.color,
          'view': int(ec.views[0]), 'num_pixels': int(len(batch.target)),
          'steps': info.steps, 'seconds': info.seconds,
          'compile_seconds': info.compile_seconds,
          'loss_start': info.loss_start, 'loss_end': info.loss_end,
          'bank': bank if ec.method == 'code' else None}


def _benchmark(exp, state, ec, frames, table, bank, out):
  del frames, table, bank
  source = exp.scene.metadata.get('variants_source')
  if not source or not os.path.exists(source):
    raise editing.EditError(
        'The edit benchmark needs an appearance-variants scene made by '
        'experiments.make_variants (its "variants_source" must exist).')
  evaluator = edit_benchmark.Evaluator(
      exp, source, view=int(ec.views[0]), num_scribbles=ec.scribbles,
      steps=ec.steps, seed=ec.seed)
  return evaluator.run(state, out)  # only process 0 (out set) writes.


def _swap(exp, state, ec, frames, table, bank, out):
  code = (codes_lib.bank_code(bank, ec.bank_code) if ec.bank_code
          else _row(table, ec.code_a, 'edit.code_a'))
  for i in range(len(frames)):
    rgb = editing.render_with_code(exp, state, editing.view_rays(frames, i),
                                   code)['rgb']
    if out:
      images.save_png(os.path.join(out, f'swap_{i:03d}.png'), rgb)
  return {'operation': 'swap', 'code': ec.bank_code or int(ec.code_a),
          'num_views': len(frames)}


def _interpolate(exp, state, ec, frames, table, bank, out):
  del bank
  a = _row(table, ec.code_a, 'edit.code_a')
  b = _row(table, ec.code_b, 'edit.code_b')
  sweep = editing.interpolation_sweep(
      exp, state, editing.view_rays(frames, int(ec.views[0])), a, b, ec.num)
  if out:
    for i, rgb in enumerate(sweep):
      images.save_png(os.path.join(out, f'sweep_{i:03d}.png'), rgb)
    images.save_png(os.path.join(out, 'strip.png'),
                    np.concatenate(sweep, axis=1))
    images.save_gif(os.path.join(out, 'sweep.gif'), sweep + sweep[::-1],
                    fps=8)
  return {'operation': 'interpolate', 'code_a': int(ec.code_a),
          'code_b': int(ec.code_b), 'num': int(ec.num)}


def _fit(exp, state, ec, frames, table, bank, out):
  del table
  views = parse_views(ec.views)
  for v in views:
    editing.view_rays(frames, v)
  fitted, info = editing.fit(exp, state, frames, views, steps=ec.steps,
                             learning_rate=ec.learning_rate or 5e-2)
  names = {f'{ec.name}_{ec.split}_{v}': code for v, code in zip(views,
                                                                 fitted)}
  if out:
    codes_lib.save_bank(bank, names)
  return {'operation': 'fit', 'views': views, 'names': sorted(names),
          'seconds': info.seconds, 'loss_end': info.loss_end, 'bank': bank}


def _nerfw(exp, state, ec, frames, table, bank, out):
  del table, bank
  views = list(range(len(frames)))
  masks = [editing.half_mask(*frames.images[v].shape[:2], 'left')
           for v in views]
  fitted, info = editing.fit(exp, state, frames, views, masks=masks,
                             steps=ec.steps,
                             learning_rate=ec.learning_rate or 5e-2)
  per_view = []
  for v, code in zip(views, fitted):
    out_img = editing.render_with_code(exp, state, editing.view_rays(
        frames, v), code)['rgb']
    right = editing.half_mask(*frames.images[v].shape[:2], 'right')
    per_view.append({'name': frames.names[v], 'right_half_psnr': float(
        metrics_lib.psnr(out_img, frames.images[v], mask=right))})
    if out:
      images.save_png(os.path.join(out, f'view_{v:03d}.png'),
                      np.concatenate([frames.images[v], out_img], axis=1))
  return {'operation': 'nerfw', 'split': ec.split,
          'half_psnr': float(np.mean([p['right_half_psnr']
                                      for p in per_view])),
          'fit_seconds': info.seconds, 'steps': info.steps,
          'per_view': per_view}


def _codes(exp, state, ec, frames, table, bank, out):
  """Every code of the table and the bank on every view, batched per view."""
  named = {f'row_{i}': code for i, code in enumerate(table)}
  if os.path.exists(bank):
    named.update(codes_lib.load_bank(bank))
  names = list(named)
  stacked = np.stack([named[n] for n in names])
  grid = []
  for i in range(len(frames)):
    rgb = editing.render_codes(exp, state, editing.view_rays(frames, i),
                               stacked)['rgb']
    grid.append(list(rgb))
    if out:
      for name, image in zip(names, rgb):
        images.save_png(os.path.join(out, f'{name}_view{i:03d}.png'), image)
  if out and grid:
    images.save_png(os.path.join(out, 'grid.png'),
                    images.contact_sheet(grid[:8]))
  return {'operation': 'codes', 'codes': names, 'num_views': len(frames),
          'bank': bank if os.path.exists(bank) else None}


_OPERATIONS = {'recolor': _recolor, 'benchmark': _benchmark, 'swap': _swap,
               'interpolate': _interpolate, 'fit': _fit, 'nerfw': _nerfw,
               'codes': _codes}
