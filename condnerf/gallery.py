"""Pictures of a trained run, arranged for people: grids, strips, paths.

Owns the renders notebooks and docs show, each returned as host numpy
images (`f32[H, W, 3]` in [0, 1]) or contact sheets of them:
  `frame_codes`     the code each frame was trained with.
  `code_grid`       views x appearance codes (swapping codes between frames
                    is the off-diagonal of a grid of their own codes).
  `orbit`           a camera path around the scene under one code.
  `strip`           images side by side with labels.
  `interpolation_strip`   one view under codes blended from a to b.
  `edit_sheet`      before / after rows of edits on several views.
  `geometry_sheet`  depth and opacity before and after an edit, with their
                    difference images and the largest change.
It renders through `editing.render_codes` (a whole row of codes in one
batched call), `editing.render_with_code` and `EditResult.render`, and
does not own rendering, editing or the image primitives (`images.py`), nor
displaying anything (`display.py`).
"""

import jax
import numpy as np

from condnerf import codes as codes_lib
from condnerf import editing
from condnerf import eval_lib
from condnerf import images


def frame_codes(state, frames, views):
  """The codes `views` of `frames` were trained with (mean code for -1).

  Args:
    state: `TrainState` (its codes are read).
    frames: `data.base.Frames`.
    views: list of view indices.
  Returns:
    f32[len(views), code_dim] numpy.
  """
  ids = np.asarray(frames.appearance_ids)[np.asarray(views, np.int64)]
  return np.asarray(codes_lib.lookup(jax.device_get(state.codes), ids))


def _scaled(image, scale):
  return images.upscale(image, scale) if scale != 1 else image


def strip(row, labels=None, scale=1):
  """Images side by side on white, each optionally labelled above.

  Args:
    row: list of f32[H, W, 3] (or [H, W]) images.
    labels: None or a list of strings, one per image.
    scale: integer nearest-neighbour enlargement of every image.
  Returns:
    f32[h, w, 3] contact sheet of one row.
  """
  return images.contact_sheet([[_scaled(im, scale) for im in row]],
                              None if labels is None else [list(labels)])


def interpolation_strip(experiment, state, rays, code_a, code_b, num=5,
                        scale=1):
  """One view rendered under `num` blends of two codes, t = 0 .. 1.

  Args:
    experiment: `experiment_lib.Experiment`.
    state: trained `TrainState`.
    rays: `structs.Rays` [H, W] of the view (`editing.view_rays`).
    code_a, code_b: f32[code_dim], the ends of the sweep.
    num: images in the sweep (>= 2).
    scale: integer enlargement of every image.
  Returns:
    (f32[h, w, 3] sheet labelled with t, list of num f32[H, W, 3] renders).
  """
  sweep = editing.interpolation_sweep(experiment, state, rays, code_a,
                                      code_b, num)
  labels = [f't = {t:.2f}' for t in np.linspace(0.0, 1.0, num)]
  return strip(sweep, labels, scale), sweep


def code_grid(experiment, state, frames, views, codes, code_names=None,
              ground_truth=True, scale=1):
  """Renders every view under every code: rows are views, columns codes.

  Args:
    experiment: `experiment_lib.Experiment`.
    state: trained `TrainState`.
    frames: `data.base.Frames` the views index.
    views: list of view indices (rows).
    codes: f32[num_codes, code_dim] codes (columns), e.g. table rows, codes
      of frames (`frame_codes`) or codes from a bank.
    code_names: None or one label per code (default 'code k').
    ground_truth: put each view's own image in a first column.
    scale: integer enlargement of every cell.
  Returns:
    (f32[h, w, 3] labelled sheet, list of rows of f32[H, W, 3] renders).
  """
  codes = np.asarray(codes, np.float32)
  names = (list(code_names) if code_names is not None
           else [f'code {k}' for k in range(len(codes))])
  if len(names) != len(codes):
    raise ValueError(f'{len(names)} code_names for {len(codes)} codes.')
  renders, cells, labels = [], [], []
  for view in views:
    rays = editing.view_rays(frames, view)
    row = list(editing.render_codes(experiment, state, rays, codes)['rgb'])
    renders.append(row)
    cell_row = [_scaled(im, scale) for im in row]
    label_row = [f'view {view}: {name}' for name in names]
    if ground_truth:
      cell_row.insert(0, _scaled(frames.images[int(view)], scale))
      label_row.insert(0, f'view {view}: photo')
    cells.append(cell_row)
    labels.append(label_row)
  return images.contact_sheet(cells, labels), renders


def orbit(experiment, state, code, num_frames=None, radius=None,
          elevation=None, frames=None):
  """Renders a circular camera path around the scene under one code.

  Args:
    experiment: `experiment_lib.Experiment`.
    state: trained `TrainState`.
    code: f32[code_dim].
    num_frames, radius, elevation: the path (default: `config.render`);
      elevation in degrees.
    frames: `data.base.Frames` whose first view gives the image size,
      intrinsics and near/far (default: the test split, else train).
  Returns:
    list of num_frames f32[H, W, 3] images.
  """
  rc = experiment.config.render
  rays = eval_lib.orbit_rays(
      experiment.scene, rc.num_frames if num_frames is None else num_frames,
      rc.radius if radius is None else radius,
      rc.elevation if elevation is None else elevation, frames=frames)
  return [np.clip(editing.render_with_code(experiment, state, r, code)['rgb'],
                  0.0, 1.0) for r in rays]


def edit_sheet(experiment, state, results, frames, views, scale=1):
  """Before / after renders of edits: one row per view.

  The first column renders the mean code with the trained weights (where
  every edit starts); then one column per edit.

  Args:
    experiment: `experiment_lib.Experiment`.
    state: trained `TrainState`.
    results: dict name -> `edit_baselines.EditResult`.
    frames: `data.base.Frames` the views index.
    views: list of view indices.
    scale: integer enlargement of every cell.
  Returns:
    f32[h, w, 3] labelled sheet.
  """
  mean = codes_lib.mean_code(jax.device_get(state.codes))
  cells, labels = [], []
  for view in views:
    rays = editing.view_rays(frames, view)
    row = [editing.render_with_code(experiment, state, rays, mean)['rgb']]
    row += [r.render(experiment, rays)['rgb'] for r in results.values()]
    cells.append([_scaled(im, scale) for im in row])
    labels.append([f'view {view}: before'] +
                  [f'view {view}: {name}' for name in results])
  return images.contact_sheet(cells, labels)


def geometry_sheet(experiment, state, result, frames, view, scale=1):
  """Depth and opacity of one view before and after an edit, and |change|.

  Before renders the mean code with the trained weights; after renders the
  edit. Difference images are dark where nothing changed (see
  `images.difference_image`).

  Args:
    experiment: `experiment_lib.Experiment`.
    state: trained `TrainState`.
    result: `edit_baselines.EditResult`.
    frames: `data.base.Frames`.
    view: view index.
    scale: integer enlargement of every cell.
  Returns:
    (f32[h, w, 3] sheet with rows depth and opacity, each before | after |
    difference; dict with float 'depth' and 'acc': max |after - before|).
  """
  rays = editing.view_rays(frames, view)
  mean = codes_lib.mean_code(jax.device_get(state.codes))
  before = editing.render_with_code(experiment, state, rays, mean)
  after = result.render(experiment, rays)
  depth_diff, depth_max = images.difference_image(before['depth'],
                                                  after['depth'])
  acc_diff, acc_max = images.difference_image(before['acc'], after['acc'])
  # One depth range for both, from the foreground before the edit.
  fg = before['depth'][before['acc'] >= 0.5]
  near, far = (np.percentile(fg, [1.0, 99.0]) if fg.size
               else (frames.near, frames.far))
  color = lambda d: images.colorize_depth(d, before['acc'], near, far)
  rows = [[color(before['depth']), color(after['depth']), depth_diff],
          [before['acc'], after['acc'], acc_diff]]
  labels = [['depth before', 'depth after', f'|diff| max {depth_max:.2g}'],
            ['opacity before', 'opacity after', f'|diff| max {acc_max:.2g}']]
  sheet = images.contact_sheet([[_scaled(im, scale) for im in row]
                                for row in rows], labels)
  return sheet, {'depth': depth_max, 'acc': acc_max}
