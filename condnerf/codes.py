"""Appearance codes: a pytree of tables, separate from the field parameters.

`codes = {'appearance': f32[num_codes, code_dim]}`. The model never owns the
table; it receives one code vector per ray. Everything here is a pure array
function, so swapping, interpolating or mixing appearances is plain jnp.
Row -1 in an id array means "the mean of all codes" (frames that were never
given a code of their own, e.g. test views in per-frame-code training).
Named codes travel between runs, notebooks and users in `.npz` code banks
(`save_bank`, `load_bank`, `bank_code`).
"""

import os

import jax
import jax.numpy as jnp
import numpy as np

from condnerf import errors
from condnerf import workdir as workdir_lib


def init_codes(key, num_codes, code_dim, scale=0.01):
  """A fresh code table, small Gaussian entries.

  Args:
    key: jax random key.
    num_codes: rows of the table (>= 1).
    code_dim: width of each code.
    scale: standard deviation of the entries.
  Returns:
    {'appearance': f32[num_codes, code_dim]}.
  """
  if num_codes < 1:
    raise ValueError(f'num_codes must be >= 1, got {num_codes}.')
  table = scale * jax.random.normal(key, (num_codes, code_dim), jnp.float32)
  return {'appearance': table}


def lookup(codes, ids):
  """Per-ray code vectors from the table.

  Args:
    codes: {'appearance': f32[num_codes, code_dim]}.
    ids: i32[...], rows of the table; -1 selects the mean code.
  Returns:
    f32[..., code_dim].
  """
  table = codes['appearance']
  rows = jnp.take(table, jnp.maximum(ids, 0), axis=0)
  mean = jnp.mean(table, axis=0)
  return jnp.where((ids < 0)[..., None], mean, rows)


def interpolate(code_a, code_b, t):
  """Linear blend `(1 - t) a + t b`.

  Args:
    code_a: f32[code_dim].
    code_b: f32[code_dim].
    t: f32[...] blend factors.
  Returns:
    f32[..., code_dim].
  """
  t = jnp.asarray(t, jnp.float32)[..., None]
  return (1.0 - t) * code_a + t * code_b


def mix(table, weights):
  """Convex (or any) combination of table rows.

  Args:
    table: f32[num_codes, code_dim].
    weights: f32[..., num_codes]; rows are not renormalised.
  Returns:
    f32[..., code_dim].
  """
  return jnp.asarray(weights, jnp.float32) @ table


def mean_code(codes):
  """f32[code_dim], the mean appearance code."""
  return jnp.mean(codes['appearance'], axis=0)


class CodeBankError(errors.UserError, KeyError):
  """A code name is missing from a bank, or the bank file is unreadable."""


def save_bank(path, named_codes):
  """Adds named codes to an `.npz` code bank (atomic; keeps other names).

  Args:
    path: the bank file; created if missing.
    named_codes: dict name -> f32[code_dim].
  """
  bank = load_bank(path) if os.path.exists(path) else {}
  for name, code in named_codes.items():
    code = np.asarray(code, np.float32)
    if code.ndim != 1:
      raise ValueError(f'Code {name!r} must be a vector, got {code.shape}.')
    bank[str(name)] = code
  workdir_lib.write_atomic(path, lambda f: np.savez(f, **bank), binary=True)


def load_bank(path):
  """dict name -> f32[code_dim] from an `.npz` code bank."""
  if not os.path.exists(path):
    raise CodeBankError(f'No code bank at {path}; save codes first.')
  with np.load(path) as data:
    return {name: np.asarray(data[name], np.float32) for name in data.files}


def bank_code(path, name):
  """One named code from a bank; the error lists the names there are."""
  bank = load_bank(path)
  if name not in bank:
    raise CodeBankError(f'Code {name!r} is not in {path}; it has '
                        f'{sorted(bank)}.')
  return bank[name]
