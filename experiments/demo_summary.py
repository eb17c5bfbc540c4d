"""The demo's headline figures over seeds: which they are, their bars, and
the summary table (`experiments.demo_seeds` runs the seeds).

`figures` reads one run's eval metrics and edit report, `summarize` takes
mean ± std over seeds and holds mean minus one standard deviation against
each bar of `BARS`, `markdown` writes the table (`summary.md`) that
README.md's headline figures and docs/editing.md's edit benchmark quote.
"""

import numpy as np

# (figure, bar): the headline figures of the demo and the bars mean minus one
# standard deviation must clear (issue #26); None = reported, no bar.
BARS = (
    ('test_psnr', 30.0),
    ('in_distribution/best_code', 30.5),
    ('in_distribution/best_weight', None),
    # The best code method above every weight-level method.
    ('in_distribution/code_minus_weight', 0.0),
    ('ood_recolor/palette', 30.5),
    ('part_recolor/palette_part/inside', 30.5),
    ('part_recolor/palette_part/kept', 36.0),
    ('relight_direction/light_set', 29.0),
    ('relight_fit/light', 29.5),
    ('fit_half_psnr', 28.0),
    ('swap_psnr', None),
    ('steps', None),
    ('minutes', None),
)
CODE_METHODS = ('code', 'palette', 'palette_part', 'light', 'light_set')
WEIGHT_METHODS = ('color_head', 'adapter', 'full', 'hybrid')


def figures(metrics, report, minutes, steps):
  """{figure: value} of one seed's eval metrics and edit report."""
  fams = report['families']

  def psnr(family, method, key='psnr'):
    row = fams.get(family, {}).get('methods', {}).get(method)
    return None if row is None else row.get(key)

  in_dist = fams['in_distribution']['methods']
  out = {
      'test_psnr': metrics['psnr'],
      'in_distribution/code_minus_weight': None,
      'in_distribution/best_code': max(
          r['psnr'] for m, r in in_dist.items() if m in CODE_METHODS),
      'in_distribution/best_weight': max(
          (r['psnr'] for m, r in in_dist.items() if m in WEIGHT_METHODS),
          default=None),
      'ood_recolor/palette': psnr('ood_recolor', 'palette'),
      'part_recolor/palette_part/inside': psnr('part_recolor', 'palette_part',
                                               'part_psnr'),
      'part_recolor/palette_part/kept': psnr('part_recolor', 'palette_part',
                                             'preservation_psnr'),
      'relight_direction/light_set': psnr('relight_direction', 'light_set'),
      'relight_fit/light': psnr('relight_fit', 'light'),
      'fit_half_psnr': report.get('fit_half_psnr'),
      'swap_psnr': report.get('swap_psnr'),
      'steps': steps,
      'minutes': minutes,
  }
  if out['in_distribution/best_weight'] is not None:
    out['in_distribution/code_minus_weight'] = (
        out['in_distribution/best_code'] - out['in_distribution/best_weight'])
  for family, entry in fams.items():  # every row, for the full table.
    for method, row in entry['methods'].items():
      out.setdefault(f'{family}/{method}', row['psnr'])
  return out


def summarize(per_seed):
  """{figure: {values, mean, std, bar, clears}} over seeds (std with
  ddof=0 over the seeds run; a figure missing from a seed is left out)."""
  names = list(dict.fromkeys(k for f in per_seed.values() for k in f))
  bars = dict(BARS)
  out = {}
  for name in names:
    values = [f[name] for f in per_seed.values()
              if f.get(name) is not None]
    if not values:
      continue
    mean, std = float(np.mean(values)), float(np.std(values))
    bar = bars.get(name)
    out[name] = {'values': values, 'mean': mean, 'std': std, 'bar': bar,
                 'clears': None if bar is None else mean - std >= bar}
  return out


def markdown(summary, seeds, command):
  """The summary as a Markdown table, headline figures first."""
  lines = [f'Demo over seeds {", ".join(seeds)}: `{command}`', '',
           '| figure | per seed | mean ± std | bar (mean - std) |',
           '|---|---|---|---|']
  order = [n for n, _ in BARS if n in summary] + sorted(
      n for n in summary if n not in dict(BARS))
  for name in order:
    s = summary[name]
    spec = '.0f' if name == 'steps' else '.2f'
    values = ' / '.join(format(v, spec) for v in s['values'])
    bar = ('-' if s['bar'] is None else
           f"{s['bar']:g}: {'yes' if s['clears'] else 'NO'} "
           f"({s['mean'] - s['std']:.2f})")
    lines.append(f"| {name} | {values} | {s['mean']:{spec}} ± "
                 f"{s['std']:.2f} | {bar} |")
  return '\n'.join(lines) + '\n'
