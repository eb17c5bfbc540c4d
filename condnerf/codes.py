"""Codes: a pytree of tables, separate from the field parameters.

The code table is a dict of arrays sharing a leading `num_codes` axis:
  {'appearance': f32[num_codes, code_dim]}                 latent codes
  {'appearance': ..., 'palette': f32[num_codes, K, 3]}     with a palette head
  {..., 'light': f32[num_codes, 9, 3]}                     shaded by SH light
One code (a row of every table) is the same dict without the leading axis;
per-ray codes have a leading `num_rays` axis. The model never owns a table;
it receives one code per ray. Everything here is a pure function over the
whole pytree, so swapping, interpolating, mixing or banking a look moves
every entry together. Row -1 in an id array means "the mean of all codes"
(frames that were never given a code of their own, e.g. test views in
per-frame-code training). Named codes travel between runs, notebooks and
users in `.npz` code banks (`save_bank`, `load_bank`, `bank_code`): entry
'appearance' under the code's name (the format of banks without palettes),
any other entry under 'name/entry'.
"""

import os
import zipfile

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from condnerf import errors
from condnerf import workdir as workdir_lib

APPEARANCE = 'appearance'
PALETTE = 'palette'
LIGHT = 'light'


def init_codes(key, num_codes, code_dim, scale=0.01, palette_size=0,
               palette_center=None, palette_spread=0.1, light=None):
  """A fresh code table.

  Latent codes are small Gaussian entries. Palette colors start random,
  independently for every code and entry: palettes equal across codes
  would receive equal gradients wherever the palette weights are still
  uniform, and the weights could never tell the parts apart. Without
  `palette_center` they are uniform in [0.15, 0.85]; with it, within
  `palette_spread` of each code's center color (`palette_centers`), so that
  no entry starts far from every color of its appearance: such an entry
  loses every point in the first steps, its weight dies everywhere, and it
  never gets a gradient again.

  Args:
    key: jax random key.
    num_codes: rows of the table (>= 1).
    code_dim: width of each latent code.
    scale: standard deviation of the latent entries.
    palette_size: K, entries of each code's palette; 0 = no palette.
    palette_center: None, or f32[num_codes, 3] a color per code.
    palette_spread: half-width of the uniform offsets around it.
    light: None (no light codes), or f32[num_codes, 9, 3] the light codes'
      start (`lighting`; a shaded palette head).
  Returns:
    {'appearance': f32[num_codes, code_dim]} (+ 'palette': f32[num_codes, K,
    3]) (+ 'light': f32[num_codes, 9, 3]).
  """
  if num_codes < 1:
    raise ValueError(f'num_codes must be >= 1, got {num_codes}.')
  codes = {APPEARANCE: scale * jax.random.normal(
      key, (num_codes, code_dim), jnp.float32)}
  if palette_size:
    palette_key = jax.random.fold_in(key, 1)
    shape = (num_codes, palette_size, 3)
    if palette_center is None:
      codes[PALETTE] = jax.random.uniform(palette_key, shape, jnp.float32,
                                          0.15, 0.85)
    else:
      center = jnp.asarray(palette_center, jnp.float32)[:, None, :]
      codes[PALETTE] = jnp.clip(center + jax.random.uniform(
          palette_key, shape, jnp.float32, -palette_spread, palette_spread),
                                0.0, 1.0)
  if light is not None:
    light = jnp.asarray(light, jnp.float32)
    if light.shape != (num_codes, 9, 3):
      raise ValueError(f'Initial light codes must be f32[{num_codes}, 9, 3], '
                       f'got {light.shape}.')
    codes[LIGHT] = light
  return codes


def palette_sums(images, alphas, code_ids, num_codes):
  """Each appearance's summed object color and pixel count.

  Args:
    images: list of f32[H, W, 3] training images.
    alphas: None, or list of f32[H, W] foreground opacity (pixels with
      alpha > 0.5 count; without alphas, every pixel).
    code_ids: i32[N] code row of each image (-1: none).
    num_codes: rows of the table.
  Returns:
    (f64[num_codes, 3] color sums, f64[num_codes] pixel counts); processes
    holding parts of the split add theirs.
  """
  total = np.zeros((num_codes, 3))
  count = np.zeros((num_codes,))
  for i, (image, code) in enumerate(zip(images, code_ids)):
    if not 0 <= code < num_codes:
      continue
    pixels = np.asarray(image).reshape(-1, 3)
    if alphas is not None:
      pixels = pixels[np.asarray(alphas[i]).reshape(-1) > 0.5]
    total[code] += pixels.sum(0)
    count[code] += len(pixels)
  return total, count


def palette_from_sums(total, count):
  """f32[num_codes, 3]: each appearance's mean object color, where its
  palette starts; 0.5 gray for a code without pixels (see `palette_sums`)."""
  centers = np.full((len(count), 3), 0.5)
  seen = count > 0
  centers[seen] = total[seen] / count[seen, None]
  return centers.astype(np.float32)


def palette_centers(images, alphas, code_ids, num_codes):
  """Each appearance's mean object color (see `palette_sums`)."""
  return palette_from_sums(*palette_sums(images, alphas, code_ids, num_codes))


def as_code(code):
  """A code pytree from a code pytree or a bare latent vector f32[code_dim]."""
  if isinstance(code, dict):
    return code
  return {APPEARANCE: code}


def lookup(codes, ids):
  """Per-ray codes from the table.

  Args:
    codes: the code table (see module docstring).
    ids: i32[...], rows of the table; -1 selects the mean code.
  Returns:
    The code pytree with leading shape `ids.shape`.
  """
  def one(table):
    rows = jnp.take(table, jnp.maximum(ids, 0), axis=0)
    mean = jnp.mean(table, axis=0)
    mask = (ids < 0).reshape(ids.shape + (1,) * (table.ndim - 1))
    return jnp.where(mask, mean, rows)
  return jax.tree.map(one, codes)


def broadcast(code, num_rays):
  """One code repeated for `num_rays` rays (leading axis added)."""
  return jax.tree.map(
      lambda x: jnp.broadcast_to(x, (num_rays,) + jnp.shape(x)), code)


def row(codes, index):
  """Row `index` of every table: one code."""
  return jax.tree.map(lambda table: table[index], codes)


def stack(code_list):
  """A table of codes (each a pytree with the same structure)."""
  return jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]),
                      *code_list)


def num_rows(codes):
  """The number of codes in a table."""
  return int(jax.tree.leaves(codes)[0].shape[0])


def interpolate(code_a, code_b, t):
  """Linear blend `(1 - t) a + t b` of every entry.

  Args:
    code_a: one code (pytree, or a bare latent vector).
    code_b: one code of the same structure.
    t: f32[...] blend factors.
  Returns:
    The codes with leading shape `t.shape` (a table when t is a vector).
  """
  t = jnp.asarray(t, jnp.float32)

  def blend(a, b):
    a, b = jnp.asarray(a), jnp.asarray(b)
    u = t.reshape(t.shape + (1,) * a.ndim)
    return (1.0 - u) * a + u * b
  if isinstance(code_a, dict):
    return jax.tree.map(blend, code_a, code_b)
  return blend(code_a, code_b)


def mix(table, weights):
  """Convex (or any) combination of table rows, entry by entry.

  Args:
    table: a code table (pytree), or f32[num_codes, code_dim].
    weights: f32[..., num_codes]; rows are not renormalised.
  Returns:
    Codes with leading shape `weights.shape[:-1]`.
  """
  weights = jnp.asarray(weights, jnp.float32)
  return jax.tree.map(lambda x: jnp.tensordot(weights, x, axes=1), table)


def mean_code(codes):
  """The mean code (one row per entry)."""
  return jax.tree.map(lambda table: jnp.mean(table, axis=0), codes)


DAMAGED_SUFFIX = '.damaged'


class CodeBankError(errors.UserError, KeyError):
  """A code name is missing from a bank, or the bank file is unreadable."""


def check_like(code, like, name):
  """Raises CodeBankError unless `code` has the entries and shapes of `like`.

  Args:
    code: one code (pytree).
    like: one code of the run it is meant for (e.g. `row(state.codes, 0)`).
    name: the code's name, for the message.
  Returns:
    `code`.
  """
  want = {k: tuple(np.shape(v)) for k, v in like.items()}
  got = {k: tuple(np.shape(v)) for k, v in code.items()}
  if want != got:
    raise CodeBankError(
        f'Code {name!r} has entries {got} but this run\'s codes have {want} '
        '(another code width or palette size); use a code saved from a run '
        'with the same config.')
  for entry, value in code.items():
    bad = ~np.isfinite(np.asarray(value, np.float32))
    if bad.any():
      raise CodeBankError(
          f'Code {name!r} is not finite: {int(bad.sum())} of the '
          f'{bad.size} values of its {entry!r} entry are NaN or infinite; '
          'save it again from a run that did not diverge.')
  return code


def save_bank(path, named_codes):
  """Adds named codes to an `.npz` code bank (atomic; keeps other names).

  The read, merge and replace happen under the bank's lock
  (`workdir.bank_lock`), so processes saving at once keep every code.

  Args:
    path: the bank file; created if missing.
    named_codes: dict name -> one code (pytree, or a bare latent vector).
  """
  new = {}
  for name, code in named_codes.items():
    name = str(name)
    if '/' in name:
      raise CodeBankError(f'Code name {name!r} may not contain "/".')
    code = {k: np.asarray(v, np.float32) for k, v in as_code(code).items()}
    if code[APPEARANCE].ndim != 1:
      raise CodeBankError(f'Code {name!r} must hold one latent vector, got '
                          f'shape {code[APPEARANCE].shape}.')
    new[name] = code
  with workdir_lib.bank_lock(path):
    bank = _load_or_move_aside(path)
    bank.update(new)
    arrays = {}
    for name, code in bank.items():
      for entry, value in code.items():
        arrays[name if entry == APPEARANCE else f'{name}/{entry}'] = value
    workdir_lib.write_atomic(path, lambda f: np.savez(f, **arrays),
                             binary=True)


class DamagedBankError(CodeBankError):
  """The bank file exists but cannot be read as a bank."""


def load_bank(path):
  """dict name -> one code (pytree) from an `.npz` code bank.

  Raises:
    CodeBankError: there is no bank at `path`.
    DamagedBankError: the file cannot be read as a bank (the message names
      it; the next `save_bank` moves it aside).
  """
  if not os.path.lexists(path):
    raise CodeBankError(f'No code bank at {path}; save codes first.')
  bank = {}
  try:
    # Our own handle: np.load leaks its file when the archive is damaged.
    with open(path, 'rb') as f, np.load(f, allow_pickle=False) as data:
      for key in data.files:
        name, _, entry = key.partition('/')
        bank.setdefault(name, {})[entry or APPEARANCE] = np.asarray(
            data[key], np.float32)
  except (OSError, ValueError, EOFError, zipfile.BadZipFile,
          AttributeError) as e:
    raise DamagedBankError(
        f'The code bank {path} is damaged ({type(e).__name__}: '
        f'{errors.one_line(e)}); restore it from a copy, or save a code '
        f'(an edit that saves one moves the damaged file aside as '
        f'{os.path.basename(path)}{DAMAGED_SUFFIX}).') from e
  return bank


def _load_or_move_aside(path):
  """The bank at `path` for a save: {} if none; a damaged one is moved to
  `path.damaged` (never overwritten: .damaged.1, ...) with a message."""
  if not os.path.lexists(path):
    return {}
  try:
    return load_bank(path)
  except DamagedBankError as e:
    aside, n = path + DAMAGED_SUFFIX, 0
    while os.path.lexists(aside):
      n += 1
      aside = f'{path}{DAMAGED_SUFFIX}.{n}'
    os.replace(path, aside)
    logging.warning('%s It was moved to %s; a new bank starts with the codes '
                    'saved now.', errors.one_line(e).split(';')[0] + '.',
                    aside)
    return {}


def bank_code(path, name, like=None):
  """One named code from a bank; the error lists the names there are.

  Args:
    path: the bank file.
    name: the code's name.
    like: optional code of the run it will be used with; its entries and
      shapes are checked (`check_like`).
  """
  bank = load_bank(path)
  if name not in bank:
    raise CodeBankError(f'Code {name!r} is not in {path}; it has '
                        f'{sorted(bank)}.')
  code = bank[name]
  return code if like is None else check_like(code, like, name)
