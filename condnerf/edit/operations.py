"""`--mode=edit`: run one edit operation of `config.edit` on a trained run.

The last stage of `condnerf.edit`. Owns validating the edit inputs named in
the config before anything is written, and the layout of
`<workdir>/edit/runs/<name>/` (`workdir.edit_output`: a name may not be one
of the run's own files, such as the bank `edit/codes.npz`):
  recolor      before_NNN.png / after_NNN.png for every view of the split,
               code.npy (latent) and palette.npy (if any), report.json; the
               edited code joins the bank (code methods). `edit.method`
               picks the method (`methods.METHODS`), e.g. `palette` (any
               color, closed form) or `palette_part` (one part).
  palette      set palette entries directly (`edit.palette='2=#2f5cff'`) on
               the code `edit.init_code` starts from; before/after PNGs.
  relight      set the light code of `edit.init_code` (shaded heads):
               from `edit.light_direction` ('x,y,z' towards the light),
               turned by `edit.light_rotate` degrees about up, or copied
               from frame `edit.light_from` of the split; intensity and
               ambient kept unless `edit.light_intensity` /
               `edit.light_ambient` are set; before/after PNGs, the code
               joins the bank. A light fitted from pixels is
               `recolor` with `edit.method=light`.
  benchmark    the edit benchmark (`evaluators/edit_benchmark.py`).
  swap         swap_NNN.png: every view rendered with one code.
  interpolate  sweep_NNN.png strips and sweep.gif on views[0].
  fit          fitted codes of `views` (whole images) saved to the bank.
  nerfw        NeRF-W protocol on every view of the split: a code fitted on
               the left half, PSNR on the right half (per view and mean).
  codes        every row of the code table and every code of the bank on
               every view, one batched render per view: <name>_viewNNN.png
               and grid.png (views x codes).
The training checkpoint is only read; the output folder replaces an older
one of the same name only once it is complete.
"""

import math
import os

import jax
import numpy as np

from condnerf import codes as codes_lib
from condnerf import evaluators
from condnerf import experiment as experiment_lib
from condnerf import images
from condnerf import inference
from condnerf import lighting
from condnerf import workdir as workdir_lib
from condnerf.edit import linear
from condnerf.edit import methods
from condnerf.edit import optimize
from condnerf.edit import scribbles
from condnerf.edit import scoring

OPERATIONS = ('recolor', 'palette', 'relight', 'benchmark', 'swap',
              'interpolate', 'fit', 'nerfw', 'codes')


def run(config, workdir, experiment=None):
  """Runs `config.edit.operation` (on a prebuilt `experiment` of `config`
  if given); returns the path of its output folder."""
  ec = config.edit
  out_dir = workdir_lib.edit_output(workdir, ec.name)
  _check(ec)
  bank = ec.bank or workdir_lib.bank_path(workdir)
  exp, state = experiment_lib.load_trained(config, workdir, experiment)
  frames = getattr(exp.scene, ec.split)
  args = (exp, state, ec, frames, bank)
  if jax.process_index() != 0:  # only process 0 writes.
    _OPERATIONS[ec.operation](*args, None)
    return out_dir
  with workdir_lib.staged_dir(out_dir) as tmp:
    report = _OPERATIONS[ec.operation](*args, tmp)
    workdir_lib.write_json(os.path.join(tmp, 'report.json'), report)
  return out_dir


def _check(ec):
  """Validates `config.edit` before anything is loaded or written."""
  if ec.operation not in OPERATIONS:
    raise scribbles.EditError(f'Unknown edit.operation {ec.operation!r}; '
                              f'choose one of {list(OPERATIONS)}.')
  if ec.method not in methods.METHODS:
    raise scribbles.EditError(f'Unknown edit.method {ec.method!r}; choose '
                              f'one of {list(methods.METHODS)}.')
  if ec.split not in experiment_lib.SPLITS:
    raise scribbles.EditError(f'Unknown edit.split {ec.split!r}; choose one '
                              f'of {list(experiment_lib.SPLITS)}.')
  scribbles.parse_views(ec.views)
  scribbles.parse_color(ec.color)
  if ec.operation == 'palette':
    parse_palette(ec.palette)
  if ec.operation == 'relight':
    parse_light(ec)


def parse_light(ec):
  """The relight settings of `config.edit`, checked.

  Returns:
    dict: direction (None or f64[3]), intensity / ambient (None = keep),
    rotate (degrees), light_from (frame index or None).
  Raises:
    scribbles.EditError: nothing to do, a direction of zero length or not
      3 numbers, or a negative intensity or ambient.
  """
  direction = None
  if ec.light_direction.strip():
    try:
      direction = lighting.unit([float(v) for v in
                                 ec.light_direction.split(',')])
    except ValueError as e:
      raise scribbles.EditError(f'edit.light_direction='
                                f'{ec.light_direction!r}: {e}') from e
  for key in ('light_rotate', 'light_intensity', 'light_ambient'):
    if not math.isfinite(ec[key]):
      raise scribbles.EditError(f'edit.{key}={ec[key]} is not finite; give '
                                'a number.')
  for key in ('light_intensity', 'light_ambient'):
    if ec[key] < 0 and ec[key] != -1:
      raise scribbles.EditError(f'edit.{key}={ec[key]} must be >= 0 (or -1 '
                                "to keep the code's own).")
  settings = {
      'direction': direction,
      'intensity': None if ec.light_intensity == -1 else ec.light_intensity,
      'ambient': None if ec.light_ambient == -1 else ec.light_ambient,
      'rotate': float(ec.light_rotate),
      'light_from': None if ec.light_from == -1 else int(ec.light_from)}
  if (direction is None and not settings['rotate'] and
      settings['light_from'] is None and settings['intensity'] is None and
      settings['ambient'] is None):
    raise scribbles.EditError(
        'edit.operation=relight changes nothing: set edit.light_direction '
        '(e.g. "1,0,1"), edit.light_rotate (degrees about up), '
        'edit.light_from (a frame whose light to copy), or '
        'edit.light_intensity / edit.light_ambient.')
  return settings


def parse_palette(text):
  """'k=COLOR;k=COLOR' -> {entry: f32[3]} (`edit.palette`)."""
  entries = {}
  for item in text.split(';'):
    if not item.strip():
      continue
    key, sep, color = item.partition('=')
    if not sep or not key.strip().isdigit():
      raise scribbles.EditError(
          f'Cannot parse edit.palette={text!r}: {item.strip()!r} is not '
          '"entry=color"; use e.g. "2=#2f5cff;0=0.1,0.2,0.9".')
    if int(key) in entries:
      raise scribbles.EditError(
          f'edit.palette={text!r} gives entry {int(key)} twice; give each '
          'entry once.')
    entries[int(key)] = scribbles.parse_color(color)
  if not entries:
    raise scribbles.EditError('edit.palette is empty; give "entry=color" '
                              'pairs, e.g. --config.edit.palette="2=#2f5cff".')
  return entries


def _row(state, index, what):
  """Row `index` of the code table (-1: the mean code)."""
  table = jax.device_get(state.codes)
  count = codes_lib.num_rows(table)
  if index == -1 and what == 'edit.init_code':
    return codes_lib.mean_code(table)
  if not 0 <= index < count:
    raise scribbles.EditError(f'{what}={index} is outside the code table '
                              f'[0, {count})' + (
                                  ' (or -1 for the mean code).'
                                  if what == 'edit.init_code' else '.'))
  return codes_lib.row(table, index)


def _scribbles(ec, frames, experiment, params, start):
  """The recolor batch of views[0], and its keep pixels (or None)."""
  view = scribbles.parse_views(ec.views)[0]
  rays = scribbles.view_rays(frames, view)  # validates the index.
  if ec.mask:
    pixels = scribbles.load_mask(ec.mask, frames, view)
  elif ec.pixels:
    pixels = scribbles.parse_pixels(ec.pixels)
  else:
    raise scribbles.EditError('Give the scribble as --config.edit.mask=PNG '
                              'or --config.edit.pixels="row,col;...".')
  batch = scribbles.scribble_batch(frames, [view], [pixels],
                                   [scribbles.parse_color(ec.color)])
  keep = None
  if ec.keep_mask:
    mask = scribbles.load_mask(ec.keep_mask, frames, view)
    current = inference.render_with_code(experiment, params, rays, start)
    keep = scribbles.scribble_batch(frames, [view], [mask],
                                    [current['rgb'][mask]])
  return batch, keep


def _before_after(exp, frames, original, result, out):
  """before_NNN.png / after_NNN.png of every view; the edited code."""
  for i in range(len(frames)):
    rays = scribbles.view_rays(frames, i)
    images.save_png(os.path.join(out, f'before_{i:03d}.png'),
                    original.render(exp, rays)['rgb'])
    images.save_png(os.path.join(out, f'after_{i:03d}.png'),
                    result.render(exp, rays)['rgb'])
  code = codes_lib.as_code(result.code)
  np.save(os.path.join(out, 'code.npy'), code['appearance'])
  if 'palette' in code:
    np.save(os.path.join(out, 'palette.npy'), code['palette'])


def _recolor(exp, state, ec, frames, bank, out):
  start = _row(state, ec.init_code, 'edit.init_code')
  batch, keep = _scribbles(ec, frames, exp, state.params, start)
  result = methods.run_edit(exp, state, batch, ec.method, steps=ec.steps,
                            learning_rate=ec.learning_rate or None,
                            init_code=start, keep=keep)
  banked = ec.method in methods.CODE_METHODS
  if out:
    _before_after(exp, frames, methods.unedited(state, start), result, out)
    if banked:
      codes_lib.save_bank(bank, {ec.name: result.code})
  info = result.info
  return {'operation': 'recolor', 'method': ec.method, 'color': ec.color,
          'view': int(ec.views[0]), 'num_pixels': int(len(batch.target)),
          'num_keep': 0 if keep is None else int(len(keep.target)),
          'steps': info.steps, 'seconds': info.seconds,
          'compile_seconds': info.compile_seconds,
          'loss_start': info.loss_start, 'loss_end': info.loss_end,
          'details': result.details, 'bank': bank if banked else None}


def _palette(exp, state, ec, frames, bank, out):
  """Sets palette entries directly: a code edit with no pixels at all."""
  size = exp.model.palette_size()
  if not size:
    raise scribbles.EditError(
        'edit.operation=palette needs a palette head; this run has '
        f'model.head.kind={exp.config.model.head.kind!r}.')
  entries = parse_palette(ec.palette)
  bad = sorted(k for k in entries if k >= size)
  if bad:
    raise scribbles.EditError(f'Palette entries {bad} are out of range: the '
                              f'palette has entries 0..{size - 1}.')
  start = _row(state, ec.init_code, 'edit.init_code')
  palette = np.array(start['palette'], np.float32)
  for k, color in entries.items():
    palette[k] = color
  result = methods.EditResult('palette_set', {**start, 'palette': palette},
                              state.params)
  if out:
    _before_after(exp, frames, methods.unedited(state, start), result, out)
    codes_lib.save_bank(bank, {ec.name: result.code})
  return {'operation': 'palette', 'entries': {k: v.tolist() for k, v in
                                              entries.items()},
          'init_code': int(ec.init_code), 'bank': bank}


def _relight(exp, state, ec, frames, bank, out):
  """Sets the light of a code: from a direction, turned, or another's."""
  settings = parse_light(ec)
  methods.check_shaded(exp, 'edit.operation=relight')
  start = _row(state, ec.init_code, 'edit.init_code')
  light = None
  if settings['light_from'] is not None:
    index = settings['light_from']
    if not 0 <= index < len(frames):
      raise scribbles.EditError(
          f'edit.light_from={index} is not a frame of the {ec.split!r} '
          f'split, which has frames 0..{len(frames) - 1}.')
    code_id = int(frames.appearance_ids[index])  # -1: the mean code.
    table = jax.device_get(state.codes)
    light = (codes_lib.mean_code(table) if code_id < 0 else
             codes_lib.row(table, code_id))['light']
  result = methods.relight(exp, state, start, light=light,
                           direction=settings['direction'],
                           intensity=settings['intensity'],
                           ambient=settings['ambient'],
                           rotate=settings['rotate'])
  if out:
    _before_after(exp, frames, methods.unedited(state, start), result, out)
    codes_lib.save_bank(bank, {ec.name: result.code})
  found = lighting.estimate(result.code['light'])
  return {'operation': 'relight', 'init_code': int(ec.init_code),
          'direction': (None if settings['direction'] is None else
                        settings['direction'].tolist()),
          'intensity': settings['intensity'], 'ambient': settings['ambient'],
          'rotate': settings['rotate'], 'light_from': settings['light_from'],
          'light': np.asarray(result.code['light']).tolist(),
          'estimated': {k: np.round(v, 4).tolist() for k, v in found.items()},
          'bank': bank}


def _benchmark(exp, state, ec, frames, bank, out):
  del frames, bank
  evaluator = evaluators.build_one(
      exp, 'edit_benchmark', view=int(ec.views[0]),
      num_scribbles=ec.scribbles, steps=ec.steps, seed=ec.seed)
  return evaluator.run(state, out)  # only process 0 (out set) writes.


def _swap(exp, state, ec, frames, bank, out):
  like = codes_lib.row(jax.device_get(state.codes), 0)
  code = (codes_lib.bank_code(bank, ec.bank_code, like) if ec.bank_code
          else _row(state, ec.code_a, 'edit.code_a'))
  for i in range(len(frames)):
    rgb = inference.render_with_code(
        exp, state.params, scribbles.view_rays(frames, i), code)['rgb']
    if out:
      images.save_png(os.path.join(out, f'swap_{i:03d}.png'), rgb)
  return {'operation': 'swap', 'code': ec.bank_code or int(ec.code_a),
          'num_views': len(frames)}


def _interpolate(exp, state, ec, frames, bank, out):
  del bank
  a = _row(state, ec.code_a, 'edit.code_a')
  b = _row(state, ec.code_b, 'edit.code_b')
  sweep = inference.interpolation_sweep(
      exp, state.params, scribbles.view_rays(frames, int(ec.views[0])), a, b,
      ec.num)
  if out:
    for i, rgb in enumerate(sweep):
      images.save_png(os.path.join(out, f'sweep_{i:03d}.png'), rgb)
    images.save_png(os.path.join(out, 'strip.png'),
                    np.concatenate(sweep, axis=1))
    images.save_gif(os.path.join(out, 'sweep.gif'), sweep + sweep[::-1],
                    fps=8)
  return {'operation': 'interpolate', 'code_a': int(ec.code_a),
          'code_b': int(ec.code_b), 'num': int(ec.num)}


def _fit(exp, state, ec, frames, bank, out):
  views = scribbles.parse_views(ec.views)
  for v in views:
    scribbles.view_rays(frames, v)
  fitted, info = optimize.fit(exp, state, frames, views, steps=ec.steps,
                              learning_rate=ec.learning_rate or 5e-2,
                              init_fn=linear.look_init(exp, state.params),
                              entries=linear.gradient_entries(state.codes))
  names = {f'{ec.name}_{ec.split}_{v}': codes_lib.row(fitted, i)
           for i, v in enumerate(views)}
  if out:
    codes_lib.save_bank(bank, names)
  return {'operation': 'fit', 'views': views, 'names': sorted(names),
          'seconds': info.seconds, 'loss_end': info.loss_end, 'bank': bank}


def _nerfw(exp, state, ec, frames, bank, out):
  del bank
  scores, fitted, info = scoring.nerfw(
      exp, state, frames, steps=ec.steps,
      learning_rate=ec.learning_rate or 5e-2)
  per_view = []
  for v, psnr in enumerate(scores):
    per_view.append({'name': frames.names[v], 'right_half_psnr': psnr})
    if out:
      rgb = inference.render_with_code(exp, state.params,
                                       scribbles.view_rays(frames, v),
                                       codes_lib.row(fitted, v))['rgb']
      images.save_png(os.path.join(out, f'view_{v:03d}.png'),
                      np.concatenate([frames.images[v], rgb], axis=1))
  return {'operation': 'nerfw', 'split': ec.split,
          'half_psnr': float(np.mean(scores)), 'fit_seconds': info.seconds,
          'steps': info.steps, 'per_view': per_view}


def _codes(exp, state, ec, frames, bank, out):
  """Every code of the table and the bank on every view, batched per view."""
  del ec
  table = jax.device_get(state.codes)
  named = {f'row_{i}': codes_lib.row(table, i)
           for i in range(codes_lib.num_rows(table))}
  if os.path.exists(bank):
    like = codes_lib.row(table, 0)
    named.update({name: codes_lib.check_like(code, like, name)
                  for name, code in codes_lib.load_bank(bank).items()})
  names = list(named)
  stacked = codes_lib.stack([named[n] for n in names])
  grid = []
  for i in range(len(frames)):
    rgb = inference.render_codes(exp, state.params,
                                 scribbles.view_rays(frames, i),
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


_OPERATIONS = {'recolor': _recolor, 'palette': _palette, 'relight': _relight,
               'benchmark': _benchmark, 'swap': _swap,
               'interpolate': _interpolate, 'fit': _fit, 'nerfw': _nerfw,
               'codes': _codes}
