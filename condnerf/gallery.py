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
  `palette_swatches`, `palette_weight_maps`   a palette head's colors per
                    code, and each entry's weight over a view.
  `recolor_entry`   one palette entry set to a color, re-rendered (the
                    color pickers' callback).
  `palette_entry_parts`   which chair part each entry paints.
  `truth_strips`    edits against ground truth: PSNRs and image strips.
It renders through `inference.render_codes` (a whole row of codes in one
batched call), `inference.render_with_code` and `EditResult.render`, and
does not own rendering, editing or the image primitives (`images.py`), nor
displaying anything (`display.py`). Codes are code pytrees (`codes.py`);
a bare latent vector or table is accepted too.
"""

import jax
import numpy as np

from condnerf import codes as codes_lib
from condnerf import eval_lib
from condnerf import images
from condnerf import inference
from condnerf import lighting
from condnerf import metrics
from condnerf.data import materials
from condnerf.data import procedural
from condnerf.edit import methods
from condnerf.edit import scribbles


def frame_codes(state, frames, views):
  """The codes `views` of `frames` were trained with (mean code for -1).

  Args:
    state: `TrainState` (its codes are read).
    frames: `data.base.Frames`.
    views: list of view indices.
  Returns:
    The code table (pytree of numpy arrays), one row per view.
  """
  ids = np.asarray(frames.appearance_ids)[np.asarray(views, np.int64)]
  return jax.tree.map(np.asarray,
                      codes_lib.lookup(jax.device_get(state.codes), ids))


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
    rays: `structs.Rays` [H, W] of the view (`scribbles.view_rays`).
    code_a, code_b: codes, the ends of the sweep.
    num: images in the sweep (>= 2).
    scale: integer enlargement of every image.
  Returns:
    (f32[h, w, 3] sheet labelled with t, list of num f32[H, W, 3] renders).
  """
  sweep = inference.interpolation_sweep(experiment, state.params, rays,
                                        code_a, code_b, num)
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
    codes: a code table (columns), e.g. table rows, codes of frames
      (`frame_codes`) or codes from a bank (`codes.stack`).
    code_names: None or one label per code (default 'code k').
    ground_truth: put each view's own image in a first column.
    scale: integer enlargement of every cell.
  Returns:
    (f32[h, w, 3] labelled sheet, list of rows of f32[H, W, 3] renders).
  """
  count = codes_lib.num_rows(codes_lib.as_code(codes))
  names = (list(code_names) if code_names is not None
           else [f'code {k}' for k in range(count)])
  if len(names) != count:
    raise ValueError(f'{len(names)} code_names for {count} codes.')
  renders, cells, labels = [], [], []
  for view in views:
    rays = scribbles.view_rays(frames, view)
    row = list(inference.render_codes(experiment, state.params, rays,
                                      codes)['rgb'])
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
    code: one code.
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
  return [inference.render_with_code(experiment, state.params, r,
                                     code)['rgb'] for r in rays]


def edit_sheet(experiment, state, results, frames, views, scale=1):
  """Before / after renders of edits: one row per view.

  The first column renders the mean code with the trained weights (where
  every edit starts); then one column per edit.

  Args:
    experiment: `experiment_lib.Experiment`.
    state: trained `TrainState`.
    results: dict name -> `edit.methods.EditResult`.
    frames: `data.base.Frames` the views index.
    views: list of view indices.
    scale: integer enlargement of every cell.
  Returns:
    f32[h, w, 3] labelled sheet.
  """
  mean = codes_lib.mean_code(jax.device_get(state.codes))
  cells, labels = [], []
  for view in views:
    rays = scribbles.view_rays(frames, view)
    row = [inference.render_with_code(experiment, state.params, rays,
                                      mean)['rgb']]
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
    result: `edit.methods.EditResult`.
    frames: `data.base.Frames`.
    view: view index.
    scale: integer enlargement of every cell.
  Returns:
    (f32[h, w, 3] sheet with rows depth and opacity, each before | after |
    difference; dict with float 'depth' and 'acc': max |after - before|).
  """
  rays = scribbles.view_rays(frames, view)
  mean = codes_lib.mean_code(jax.device_get(state.codes))
  before = inference.render_with_code(experiment, state.params, rays, mean)
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


def palette_swatches(table, names=None, size=16):
  """The palettes of several codes as rows of color squares.

  Args:
    table: a code table with a 'palette' entry f32[num_codes, K, 3] (or
      the palette array itself).
    names: None, or one label per code (default 'code k').
    size: side of each square in pixels.
  Returns:
    f32[h, w, 3] labelled sheet: one row per code, one square per entry
    (colors clipped to [0, 1]; entries are labelled with their index).
  """
  palettes = np.asarray(table['palette'] if isinstance(table, dict)
                        else table, np.float32)
  names = (list(names) if names is not None
           else [f'code {k}' for k in range(len(palettes))])
  rows = [[np.broadcast_to(np.clip(color, 0.0, 1.0), (size, size, 3))
           for color in palette] for palette in palettes]
  labels = [[f'{name}: {k}' if k == 0 else str(k)
             for k in range(len(palette))]
            for name, palette in zip(names, palettes)]
  return images.contact_sheet(rows, labels)


def palette_weight_maps(experiment, state, frames, view, scale=1):
  """Each palette entry's weight over a view: the palette's segmentation.

  Args:
    experiment: `experiment.Experiment` with a palette head.
    state: trained `TrainState`.
    frames: `data.base.Frames`.
    view: view index.
    scale: integer enlargement of every map.
  Returns:
    (f32[h, w, 3] labelled sheet of the K maps and the intensity, dict with
    weights f32[H, W, K] and intensity f32[H, W]).
  """
  maps = inference.render_palette_maps(
      experiment, state.params, scribbles.view_rays(frames, view),
      codes_lib.mean_code(jax.device_get(state.codes)))
  weights = maps['weights']
  cells = [_scaled(weights[..., k], scale) for k in range(weights.shape[-1])]
  cells.append(_scaled(np.clip(maps['intensity'] / max(
      float(maps['intensity'].max()), 1e-6), 0.0, 1.0), scale))
  total = max(float(weights.sum()), 1e-9)
  labels = [f'entry {k}: {100 * weights[..., k].sum() / total:.0f}%'
            for k in range(weights.shape[-1])] + ['intensity s']
  return images.contact_sheet([cells], [labels]), maps


def shading_maps(experiment, state, frames, view, code, scale=1):
  """What a shaded head sees of a view: normals, albedo, shading, color.

  Normals map x, y, z from [-1, 1] to rgb where the view is opaque; albedo
  and shading are composited on white like the color.

  Args:
    experiment: `experiment.Experiment` with a shaded palette head.
    state: trained `TrainState`.
    frames: `data.base.Frames`.
    view: view index.
    code: one code (its palette is the albedo, its light the shading).
    scale: integer enlargement of every image.
  Returns:
    (f32[h, w, 3] labelled sheet, dict of `inference.render_palette_maps`).
  """
  methods.check_shaded(experiment, 'Shading maps')
  rays = scribbles.view_rays(frames, view)
  maps = inference.render_palette_maps(experiment, state.params, rays, code)
  rgb = inference.render_with_code(experiment, state.params, rays,
                                   code)['rgb']
  acc = maps['acc'][..., None]
  length = np.linalg.norm(maps['normals'], axis=-1, keepdims=True)
  normals = 0.5 + 0.5 * maps['normals'] / np.maximum(length, 1e-6)
  peak = max(float(maps['shading'].max()), 1e-6)

  def on_white(image):  # composited by opacity, like the color.
    return image + (1.0 - acc)

  cells = [np.where(acc > 0.5, normals, 1.0), on_white(maps['albedo']),
           on_white(maps['shading'] / peak), rgb]
  labels = ['normals', 'albedo', f'shading/{peak:.2f}', 'color']
  return images.contact_sheet(
      [[_scaled(np.clip(c, 0.0, 1.0), scale) for c in cells]],
      [labels]), maps


def light_direction(azimuth, elevation, up=(0.0, 0.0, 1.0)):
  """f64[3]: the unit vector at `azimuth` degrees about `up` and
  `elevation` degrees above the horizon (azimuth 0 = +x; 90 = +y for up
  +z, -z for up +y)."""
  up = lighting.unit(up)
  x = np.array([1.0, 0.0, 0.0])
  x = lighting.unit(x - np.dot(x, up) * up if abs(up[0]) < 0.9 else
                    np.cross(up, [0.0, 0.0, 1.0]))
  y = np.cross(up, x)
  a, e = np.radians(azimuth), np.radians(elevation)
  return np.cos(e) * (np.cos(a) * x + np.sin(a) * y) + np.sin(e) * up


def relight_view(experiment, state, rays, code, azimuth, elevation):
  """A code lit from (azimuth, elevation), and the view rendered with it.

  The callback behind the notebook's light sliders: `methods.relight`
  keeps the light's intensity and ambient and moves only its direction.

  Returns:
    (the new code, f32[H, W, 3] render).
  """
  direction = light_direction(azimuth, elevation, experiment.scene.up)
  new = methods.relight(experiment, state, code, direction=direction).code
  return new, inference.render_with_code(experiment, state.params, rays,
                                         new)['rgb']


def recolor_entry(experiment, state, rays, code, entry, color):
  """One palette entry set to a color, and the view rendered with it.

  The callback behind the notebook's color pickers: a code edit with no
  optimization at all.

  Args:
    experiment: `experiment.Experiment` with a palette head.
    state: trained `TrainState`.
    rays: `structs.Rays` [H, W] of the view.
    code: the code to change (pytree with a 'palette' entry).
    entry: palette index.
    color: f32[3] in [0, 1].
  Returns:
    (the new code, f32[H, W, 3] render).
  """
  palette = np.array(code['palette'], np.float32)
  if not 0 <= entry < len(palette):
    raise scribbles.EditError(f'Palette entry {entry} is out of range: the '
                              f'palette has entries 0..{len(palette) - 1}.')
  palette[entry] = np.asarray(color, np.float32)
  new = {**code, 'palette': palette}
  return new, inference.render_with_code(experiment, state.params, rays,
                                         new)['rgb']


def palette_entry_parts(experiment, state, frames, view):
  """Which chair part each palette entry paints, from exact part maps.

  For the procedural chair's datasets (their `metadata['source']`
  re-renders part ids): each entry's weight over the view, summed per part.

  Args:
    experiment: `experiment.Experiment` with a palette head, on a procedural
      chair dataset.
    state: trained `TrainState`.
    frames: the test `data.base.Frames` (views of the source's test split).
    view: view index.
  Returns:
    list of dicts, one per entry: entry, part (the one it weighs most on,
    '-' when the entry paints almost nothing), share (of the entry's weight
    on that part), weight (the entry's total weight over the view, in
    pixels).
  """
  part_id, _ = materials.part_maps(experiment.scene.metadata['source'],
                                   'test', max_frames=len(frames))
  _, maps = palette_weight_maps(experiment, state, frames, view)
  rows = []
  for k in range(maps['weights'].shape[-1]):
    weight = maps['weights'][..., k]
    per_part = [float(weight[part_id[view] == p].sum())
                for p in range(len(procedural.PARTS))]
    total = float(weight.sum())
    best = int(np.argmax(per_part))
    rows.append({'entry': k,
                 'part': procedural.PARTS[best] if total >= 1.0 else '-',
                 'share': per_part[best] / max(total, 1e-9),
                 'weight': total})
  return rows


def truth_strips(experiment, original, results, frames, truth, views):
  """Edits against ground truth: PSNR rows and before | edits | truth strips.

  Args:
    experiment: `experiment.Experiment`.
    original: the unedited `EditResult` (`edit.methods.unedited`).
    results: dict name -> `EditResult`.
    frames: `data.base.Frames` the views index.
    truth: list of f32[H, W, 3], ground truth of every view of `frames`.
    views: view indices to show.
  Returns:
    (list of dicts {'edit', 'psnr'} (mean over `views`, 'before' first),
    list of f32[H, W', 3] strips, one per view).
  """
  looks = {'before': original, **results}
  renders = {name: [r.render(experiment, scribbles.view_rays(frames, v))['rgb']
                    for v in views] for name, r in looks.items()}
  rows = [{'edit': name, 'psnr': float(np.mean(
      [metrics.psnr(im, truth[v]) for im, v in zip(ims, views)]))}
          for name, ims in renders.items()]
  strips = [np.concatenate([renders[name][i] for name in looks] +
                           [truth[v]], axis=1) for i, v in enumerate(views)]
  return rows, strips
