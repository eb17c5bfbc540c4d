"""Device mesh and data placement for data-parallel steps.

One 1-D mesh `('data',)` spans every device of every process. Rays are
split on the 'data' axis (`P('data')`); params, codes and optimizer state are
replicated (`P()`). Steps are per-device functions mapped with
`jax.shard_map` over this mesh and reduced with `lax.pmean` — the pmap
programming model on the API JAX supports today. Every array that enters a
step is placed by a helper here first, because shard_map refuses inputs whose
sharding differs from its in_specs.

Also owns the start of a multi-process run: `initialize_distributed` (with
bounded waits) and `check_same_config` (every process was given the same
settings).
"""

import hashlib
import json
import os
import socket
import sys
import threading
import time

import jax
from jax.experimental import multihost_utils
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from condnerf import errors
from condnerf import writers

AXIS = 'data'


def create_mesh(devices=None):
  """A 1-D ('data',) mesh over `devices` (default: all global devices)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (AXIS,))


def local_mesh():
  """A ('data',) mesh over this process's devices only."""
  return create_mesh(jax.local_devices())


def is_local(mesh):
  """True when every device of `mesh` belongs to this process."""
  index = jax.process_index()
  return all(d.process_index == index for d in mesh.devices.flat)


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
  if jax.process_count() == 1 or is_local(mesh):
    return jax.device_put(tree, sharding)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, x), tree)


def process_rows(tree):
  """This process's rows of a batch every process holds whole.

  Args:
    tree: pytree of numpy arrays with equal leading dim divisible by the
      process count (e.g. padded to the global device count).
  Returns:
    The contiguous block of rows `shard_batch` expects from this process.
  """
  count = jax.process_count()
  if count == 1:
    return tree
  rows = jax.tree.leaves(tree)[0].shape[0] // count
  lo = jax.process_index() * rows
  return jax.tree.map(lambda x: x[lo:lo + rows], tree)


def to_local(tree, mesh):
  """Replicated global arrays, copied onto the devices of a local `mesh`.

  Args:
    tree: pytree of fully replicated jax arrays (e.g. restored params), on a
      mesh that may span other processes.
    mesh: a mesh of this process's devices.
  Returns:
    The same values replicated on `mesh`.
  """
  def one(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      x = x.addressable_data(0)  # this process's replica.
    return x
  return replicate(jax.tree.map(one, tree), mesh)


def gather_arrays(array, ndim, dtype=np.float32):
  """Every process's host array, of any shape, on every process.

  Processes may hold arrays of different shapes (images of different sizes)
  or nothing at all; arrays are padded to a common shape for one collective
  and cropped back. Every process must call this (it is a collective).

  Args:
    array: numpy array of rank `ndim`, or None.
    ndim: rank of the arrays.
    dtype: their dtype.
  Returns:
    list (one entry per process, in process order) of numpy arrays or None.
  """
  if jax.process_count() == 1:
    return [array]
  shape = np.full((ndim,), -1, np.int32)  # -1: this process has nothing.
  if array is not None:
    shape[:] = array.shape
  shapes = multihost_utils.process_allgather(shape)
  buf = np.zeros(tuple(int(n) for n in np.maximum(shapes.max(0), 1)), dtype)
  if array is not None:
    buf[tuple(slice(0, n) for n in array.shape)] = array
  everything = multihost_utils.process_allgather(buf)
  return [None if shapes[q][0] < 0 else
          everything[q][tuple(slice(0, int(n)) for n in shapes[q])]
          for q in range(len(shapes))]


def process_sum(array):
  """f64[...]: the sum over processes of each process's f64[...] host array
  (same shape everywhere; a collective). The float64 bits travel as uint32
  words, since jax arrays hold no float64 by default."""
  array = np.ascontiguousarray(array, np.float64)
  if jax.process_count() == 1:
    return array
  words = array.reshape(-1).view(np.uint32)
  every = np.asarray(multihost_utils.process_allgather(words))
  return every.view(np.float64).sum(0).reshape(array.shape)


def gather_strings(text):
  """Every process's string (or None), as a list in process order."""
  data = None if text is None else np.frombuffer(text.encode(), np.uint8)
  return [None if d is None else bytes(d).decode()
          for d in gather_arrays(data, 1, np.uint8)]


def _process_layout(coordinator, num_processes, process_id):
  """(coordinator, num_processes, process_id) from the arguments, else the
  environment, checked when a coordinator is given."""
  coordinator = coordinator or os.environ.get('JAX_COORDINATOR_ADDRESS')
  if num_processes is None and os.environ.get('JAX_NUM_PROCESSES'):
    num_processes = int(os.environ['JAX_NUM_PROCESSES'])
  if process_id is None and os.environ.get('JAX_PROCESS_ID'):
    process_id = int(os.environ['JAX_PROCESS_ID'])
  if coordinator and (num_processes is None or process_id is None):
    raise errors.StartupError(
        f'Coordinator {coordinator} given without the process count or id; '
        'pass --num_processes and --process_id (or set JAX_NUM_PROCESSES and '
        'JAX_PROCESS_ID).')
  if coordinator and not (num_processes >= 1 and
                          0 <= process_id < num_processes):
    raise errors.StartupError(
        f'--process_id={process_id} is outside [0, {num_processes}) for '
        f'--num_processes={num_processes}; number the processes 0 to '
        f'{num_processes - 1}.')
  return coordinator, num_processes, process_id


def initialize_distributed(coordinator=None, num_processes=None,
                           process_id=None, auto=False, init_timeout=120,
                           heartbeat_timeout=60):
  """Starts JAX's multi-controller runtime when this is a multi-process run.

  Explicit (`coordinator` or $JAX_COORDINATOR_ADDRESS, with the process
  count and id from the arguments or $JAX_NUM_PROCESSES/$JAX_PROCESS_ID), or
  auto-detected on TPU pods and SLURM clusters when `auto`. On CPU the
  collectives go through gloo.

  Args:
    coordinator: 'HOST:PORT' of process 0, or None.
    num_processes: int or None.
    process_id: int or None.
    auto: call `jax.distributed.initialize()` with cluster auto-detection
      when no coordinator is given.
    init_timeout: seconds to wait for every process to connect.
    heartbeat_timeout: seconds after which a silent process is declared dead
      and the others fail instead of waiting forever.
  Returns:
    True when the runtime was started.
  Raises:
    errors.StartupError: a coordinator without the process count or id, a
      process id outside [0, num_processes), or a coordinator that could
      not be reached in time (the message names the address). When the
      other processes do not all connect within `init_timeout`, the process
      prints why and exits with code 2 (the runtime would abort natively).
  """
  coordinator, num_processes, process_id = _process_layout(
      coordinator, num_processes, process_id)
  if not coordinator and not auto:
    return False
  if coordinator and process_id:
    # The runtime aborts the process (no Python error) when the coordinator
    # never answers; probe it first to fail with a message instead.
    wait_for_coordinator(coordinator, init_timeout)
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  # The runtime also aborts natively when the other processes never arrive;
  # a watchdog exits first, with a message.
  watchdog = threading.Timer(init_timeout, _startup_timed_out,
                             (coordinator, num_processes, init_timeout))
  watchdog.daemon = True
  watchdog.start()
  try:
    jax.distributed.initialize(
        coordinator, num_processes, process_id,
        initialization_timeout=init_timeout + _ABORT_MARGIN_S,
        heartbeat_timeout_seconds=heartbeat_timeout)
  finally:
    watchdog.cancel()
  return True


_ABORT_MARGIN_S = 30  # the runtime's own timeout, after the watchdog's.


def _startup_timed_out(coordinator, num_processes, timeout):
  """Runs on the watchdog thread: the processes did not all connect."""
  print(f'error: not all {num_processes or "expected"} processes connected '
        f'to the coordinator {coordinator or "(auto-detected)"} within '
        f'{timeout} s; start the same command on every process (ids 0 to '
        f'{(num_processes or 1) - 1}) or raise --init_timeout.',
        file=sys.stderr, flush=True)
  os._exit(2)  # pylint: disable=protected-access


def wait_for_coordinator(address, timeout):
  """Returns once HOST:PORT accepts connections; raises after `timeout` s.

  Raises:
    errors.StartupError: `address` is not HOST:PORT, or nothing listened
      there in time (names the address).
  """
  host, _, port = address.rpartition(':')
  if not host or not port.isdigit():
    raise errors.StartupError(
        f'Coordinator address {address!r} must be HOST:PORT.')
  deadline = time.monotonic() + timeout
  while True:
    try:
      with socket.create_connection((host, int(port)), timeout=2):
        return
    except OSError as e:
      if time.monotonic() > deadline:
        raise errors.StartupError(
            f'Coordinator {address} did not answer within {timeout} s ({e}); '
            'start process 0 first and check that HOST:PORT is reachable '
            'from this host (or raise --init_timeout).') from e
      time.sleep(0.5)


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
  """Raises ConfigError unless `batch_size` splits evenly over the mesh."""
  n = mesh.devices.size
  if batch_size % n:
    below = batch_size // n * n
    nearest = ' or '.join(str(b) for b in (below, below + n) if b > 0)
    raise errors.ConfigError(
        f'{what}={batch_size} must be divisible by the {n} devices of the '
        f'mesh; use a multiple of {n}: the nearest are {nearest}.')


def check_same_config(settings):
  """Refuses to start a run whose processes were given different settings.

  Every process sends a hash of `settings` (JSON values: the resolved
  config and the mode); only when they differ are the settings themselves
  gathered, so that the error names the keys. A collective: every process
  calls it, and every process raises.

  Args:
    settings: nested dict of JSON values.
  Raises:
    errors.StartupError: some process's settings differ from process 0's;
      the message names each differing key and its values.
  """
  if jax.process_count() == 1:
    return
  text = json.dumps(settings, sort_keys=True)
  digests = gather_strings(hashlib.sha256(text.encode()).hexdigest())
  if len(set(digests)) == 1:
    return
  everyone = [writers.flatten_dict(json.loads(t))
              for t in gather_strings(text)]
  first, differences = everyone[0], []
  for q, theirs in enumerate(everyone[1:], 1):
    keys = sorted(k for k in set(first) | set(theirs)
                  if first.get(k) != theirs.get(k))
    differences += [f'{k}: {first.get(k)!r} on process 0, '
                    f'{theirs.get(k)!r} on process {q}' for k in keys]
  listed = '; '.join(differences[:8])
  if len(differences) > 8:
    listed += f'; and {len(differences) - 8} more'
  raise errors.StartupError(
      f'The {len(everyone)} processes were started with different configs '
      f'({listed}); start every process with the same --config, overrides '
      'and --mode.')
