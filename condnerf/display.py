"""Inline display in Jupyter: images, GIF animations and small tables.

Owns turning host arrays into what a notebook shows: `show` (an image or a
labelled row of images, as PNG), `show_gif` (an animation, inline; no video
codec needed) and `show_table` (rows of dicts as a Markdown table, built by
`markdown_table`), `color_pickers` (ipywidgets, for palette entries) and
`sliders` (for a light's direction).
Each can also write what it shows to a file (`save_to`),
which is how the figures in docs/ are exported. IPython is imported only
when something is displayed, so the library does not depend on it.

It does not own image encoding or layout (`images.py`) or what is rendered
(`gallery.py`).

Not built on mediapy (checked with 1.2.7): its `show_image(s)` emit an HTML
`<img>` rather than an `image/png` output (what nbconvert, GitHub and
tests/notebooks_test.py read), with titles and scaling done in HTML/CSS
where our exports need labels and pixels in the PNG itself; its GIFs
(`show_video(codec='gif')`) need an ffmpeg binary that pip does not install;
and importing it imports IPython and matplotlib.pyplot.
"""

import math
import os

import numpy as np

from condnerf import images


def _ipython():
  """IPython's display module, imported on first use."""
  # pylint: disable-next=g-import-not-at-top
  from IPython import display as ipython_display
  return ipython_display


def _row(image, labels):
  if isinstance(image, (list, tuple)):
    return images.contact_sheet(
        [list(image)], None if labels is None else [list(labels)])
  return image


def show(image, labels=None, scale=1, save_to=None):
  """Shows an image, or a row of images, inline as a PNG.

  Args:
    image: f32[H, W, 3] (or [H, W]) in [0, 1], or a list of them (shown side
      by side, labelled with `labels`).
    labels: None, or one string per image of a list.
    scale: integer nearest-neighbour enlargement (small renders).
    save_to: None, or a PNG path to write the shown image to.
  Returns:
    The PNG bytes shown.
  """
  shown = images.upscale(_row(image, labels), scale)
  data = images.encode_png(shown)
  if save_to:
    images.save_png(save_to, shown)
  ipython = _ipython()
  ipython.display(ipython.Image(data=data, format='png'))
  return data


def show_gif(frames, fps=10, scale=1, save_to=None):
  """Shows frames inline as a looping GIF animation.

  Args:
    frames: list of f32[H, W, 3] in [0, 1], all the same size.
    fps: frames per second.
    scale: integer nearest-neighbour enlargement.
    save_to: None, or a GIF path to write the animation to.
  Returns:
    The GIF bytes shown.
  """
  frames = [images.upscale(frame, scale) for frame in frames]
  data = images.encode_gif(frames, fps)
  if save_to:
    images.save_gif(save_to, frames, fps)
  ipython = _ipython()
  ipython.display(ipython.Image(data=data, format='gif'))
  return data


def _cell(value, digits):
  if isinstance(value, (bool, np.bool_)):
    return str(bool(value))
  if isinstance(value, (int, np.integer)):
    return str(int(value))
  if isinstance(value, (float, np.floating)):
    value = float(value)
    if math.isnan(value) or math.isinf(value):
      return str(value)
    return f'{value:.{digits}g}'
  return str(value).replace('|', '\\|').replace('\n', ' ')


def markdown_table(rows, columns=None, digits=3):
  """Rows of dicts as a Markdown table.

  Args:
    rows: list of dicts (one per row).
    columns: column keys in order (default: the keys of the first row, then
      any new keys of later rows); a missing value is left empty.
    digits: significant digits of floats.
  Returns:
    str, one line per row after a header and a separator.
  """
  if columns is None:
    columns = []
    for row in rows:
      columns += [k for k in row if k not in columns]
  lines = ['| ' + ' | '.join(str(c) for c in columns) + ' |',
           '|' + '|'.join('---' for _ in columns) + '|']
  for row in rows:
    lines.append('| ' + ' | '.join(
        _cell(row[c], digits) if c in row else '' for c in columns) + ' |')
  return '\n'.join(lines)


def show_table(rows, columns=None, digits=3, save_to=None):
  """Shows rows of dicts inline as a table (see `markdown_table`).

  Args:
    rows: list of dicts.
    columns: column keys in order (default: all, in first-seen order).
    digits: significant digits of floats.
    save_to: None, or a path to write the Markdown text to.
  Returns:
    The Markdown text.
  """
  text = markdown_table(rows, columns, digits)
  if save_to:
    os.makedirs(os.path.dirname(os.path.abspath(save_to)), exist_ok=True)
    with open(save_to, 'w') as f:
      f.write(text + '\n')
  ipython = _ipython()
  ipython.display(ipython.Markdown(text))
  return text


def to_hex(color):
  """'#rrggbb' of f32[3] in [0, 1] (clipped)."""
  values = np.round(np.clip(np.asarray(color, np.float64), 0, 1) * 255)
  return '#' + ''.join(f'{int(v):02x}' for v in values)


def _widgets(what, example):
  """The ipywidgets module inside a notebook front end; else None, after
  printing that `what` needs one and the callback call to use instead."""
  try:
    # pylint: disable-next=g-import-not-at-top
    from IPython import get_ipython
    import ipywidgets  # pylint: disable=g-import-not-at-top
  except ImportError:
    get_ipython = None
  if get_ipython is None or get_ipython() is None:
    print(f'{what} need a notebook with ipywidgets; call the callback '
          f'directly instead, e.g. {example}.')
    return None
  return ipywidgets


def color_pickers(colors, on_change, description='entry'):
  """One ipywidgets color picker per color; `on_change(index, rgb)` on edits.

  Without ipywidgets (or outside a notebook front end, where widgets do not
  render) this prints a note instead and returns None: call `on_change`
  yourself to try a color.

  Args:
    colors: f32[K, 3] starting colors in [0, 1].
    on_change: called with (index, f32[3]) whenever a picker changes.
    description: label prefix of each picker.
  Returns:
    The list of pickers (their `value` is '#rrggbb'), or None.
  """
  ipywidgets = _widgets('Color pickers', 'on_change(2, (0.1, 0.25, 0.9))')
  if ipywidgets is None:
    return None
  pickers = []
  for k, color in enumerate(np.asarray(colors)):
    picker = ipywidgets.ColorPicker(value=to_hex(color),
                                    description=f'{description} {k}',
                                    concise=False)

    def changed(event, k=k):
      text = event['new'].lstrip('#')
      on_change(k, np.array([int(text[i:i + 2], 16) for i in (0, 2, 4)],
                            np.float32) / 255.0)

    picker.observe(changed, names='value')
    pickers.append(picker)
  _ipython().display(ipywidgets.VBox(pickers))
  return pickers


def sliders(specs, on_change):
  """Float sliders (ipywidgets); `on_change(values)` with every value.

  Like `color_pickers`, prints a note and returns None without a notebook
  front end: call `on_change` yourself.

  Args:
    specs: dict name -> (min, max, start).
    on_change: called with {name: float} whenever a slider moves.
  Returns:
    The list of sliders, or None.
  """
  example = {name: spec[2] for name, spec in specs.items()}
  ipywidgets = _widgets('Sliders', f'on_change({example})')
  if ipywidgets is None:
    return None
  widgets = {name: ipywidgets.FloatSlider(value=start, min=low, max=high,
                                          description=name,
                                          continuous_update=False)
             for name, (low, high, start) in specs.items()}

  def changed(_):
    on_change({name: float(w.value) for name, w in widgets.items()})

  for widget in widgets.values():
    widget.observe(changed, names='value')
  _ipython().display(ipywidgets.VBox(list(widgets.values())))
  return list(widgets.values())
