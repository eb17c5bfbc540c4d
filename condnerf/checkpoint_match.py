"""Does a checkpoint fit the model? Its saved tree against the abstract state.

Owns `CheckpointMismatchError` and `check_matches`, which compares every
leaf's path, shape and dtype in a checkpoint's metadata with the abstract
training state a model builds, and names the first leaf that differs (a
workdir of another model configuration), and `abstract_from_metadata`,
the abstract tree of a saved entry (to restore it as it was saved).
Reading and writing checkpoints is `checkpointing`'s.
"""

import jax
import numpy as np
import orbax.checkpoint as ocp

from condnerf import errors
from condnerf import workdir as workdir_lib


class CheckpointMismatchError(errors.UserError, ValueError):
  """The checkpoint's tree or array shapes differ from the model's."""


def abstract_from_metadata(tree):
  """ShapeDtypeStructs with the saved shapes and dtypes of a metadata tree."""
  def leaf(meta):
    dtype = getattr(meta, 'dtype', None)
    return jax.ShapeDtypeStruct(tuple(meta.shape),
                                np.dtype(dtype) if dtype else np.int64)
  return jax.tree.map(leaf, tree, is_leaf=lambda x: hasattr(x, 'shape'))


def _key_name(key):
  """Renders one pytree path entry as a plain string."""
  for attr in ('key', 'name', 'idx'):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def _leaf_specs(tree):
  """Maps 'a/b/0/c' paths to `(shape, dtype)` for every leaf of `tree`.

  The dtype is None where it carries no configuration: Python scalars saved
  by Orbax (`ScalarMetadata`, stored as 64-bit) and weakly typed abstract
  leaves (what `jax.eval_shape` makes of a Python number).
  """
  specs = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    name = '/'.join(_key_name(k) for k in path)
    shape = tuple(getattr(leaf, 'shape', ()))
    dtype = getattr(leaf, 'dtype', None)
    if (dtype is None or isinstance(leaf, ocp.metadata.ScalarMetadata) or
        getattr(leaf, 'weak_type', False)):
      specs[name] = (shape, None)
    else:
      specs[name] = (shape, np.dtype(dtype))
  return specs


def _describe(spec):
  if spec is None:
    return 'no such leaf'
  shape, dtype = spec
  dtype_name = 'unknown dtype' if dtype is None else dtype.name
  return f'{dtype_name}{list(shape)}'


def _same(got, want):
  if got is None or want is None or got[0] != want[0]:
    return False
  return got[1] is None or want[1] is None or got[1] == want[1]


def check_matches(metadata, abstract_state, step, directory):
  """Raises CheckpointMismatchError naming the first leaf that differs.

  Leaves are visited shallowest first (so `params/...` is reported before the
  optimizer moments that mirror it), in pytree order within a depth.
  """
  saved = _leaf_specs(metadata)
  wanted = _leaf_specs(abstract_state)
  paths = list(wanted) + [p for p in saved if p not in wanted]
  differing = [p for p in paths if not _same(saved.get(p), wanted.get(p))]
  if not differing:
    return
  path = min(differing, key=lambda p: p.count('/'))
  raise CheckpointMismatchError(
      f'Checkpoint step {step} in {directory} does not match the model: '
      f'{len(differing)} leaves differ, first at {path!r}: checkpoint has '
      f'{_describe(saved.get(path))}, model expects '
      f'{_describe(wanted.get(path))}. This workdir belongs to a different '
      'model configuration. Use a new --workdir, or run with the config that '
      f'wrote it (see {workdir_lib.CONFIG_FILE} in the workdir).')
