"""Device mesh and data placement for data-parallel steps.

One 1-D mesh `('data',)` spans every device of every process. Rays are
split on the 'data' axis (`P('data')`); params, codes and optimizer state are
replicated (`P()`). Steps are per-device functions mapped with
`jax.shard_map` over this mesh and reduced with `lax.pmean` — the pmap
programming model on the API JAX supports today. Every array that enters a
step is placed by a helper here first, because shard_map refuses inputs whose
sharding differs from its in_specs.
"""

import jax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

AXIS = 'data'


def create_mesh(devices=None):
  """A 1-D ('data',) mesh over `devices` (default: all global devices)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (AXIS,))


def data_sharding(mesh):
  """Sharding that splits the leading axis over the mesh."""
  return NamedSharding(mesh, P(AXIS))


def replicated(mesh):
  """Sharding that copies the array to every device of the mesh."""
  return NamedSharding(mesh, P())


def replicate(tree, mesh):
  """Places a pytree of host or device arrays replicated on `mesh`."""
  return jax.device_put(tree, replicated(mesh))


def shard_batch(tree, mesh):
  """Places this process's share of a batch, split over the mesh.

  Each process passes only its own rows (leading axis = global batch /
  process count); the result is a global array. On one process this is a
  plain `device_put`.

  Args:
    tree: pytree of numpy arrays with equal leading dims divisible by the
      number of local devices.
    mesh: the data mesh.
  Returns:
    pytree of global jax arrays sharded as `P('data')`.
  """
  sharding = data_sharding(mesh)
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, x), tree)


def pad_to_multiple(tree, multiple):
  """Pads the leading axis of every leaf up to a multiple, by edge copies.

  Args:
    tree: pytree of numpy arrays with equal leading dim n.
    multiple: target divisor.
  Returns:
    (padded tree, n) — padded rows repeat the last row; callers mask or
    discard rows >= n.
  """
  n = jax.tree.leaves(tree)[0].shape[0]
  pad = (-n) % multiple
  if pad == 0:
    return tree, n
  return jax.tree.map(
      lambda x: np.concatenate([x, np.repeat(x[-1:], pad, axis=0)]), tree), n


def check_divisible(batch_size, mesh, what='batch_size'):
  """Raises ValueError unless `batch_size` splits evenly over the mesh."""
  n = mesh.devices.size
  if batch_size % n:
    raise ValueError(
        f'{what}={batch_size} must be divisible by the {n} devices of the '
        f'mesh; use a multiple of {n}.')
