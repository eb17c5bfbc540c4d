"""Mesh, placement, padding and startup helpers of `parallel` (8 CPU devices).

The device count is forced in `tests/conftest.py`, before jax is imported.
"""

import socket

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from condnerf import errors
from condnerf import parallel
from condnerf import structs
from tests import scenes


def _batch(n):
  """A pytree batch of `n` rows whose values name their row."""
  rows = np.arange(n, dtype=np.float32)
  return structs.Rays(
      origins=np.stack([rows, rows + 0.25, rows + 0.5], axis=-1),
      directions=np.tile(np.float32([0.0, 0.0, -1.0]), (n, 1)),
      near=rows[:, None] + 2.0, far=rows[:, None] + 6.0,
      code_ids=np.arange(n, dtype=np.int32) % 3)


@scenes.needs_devices(8)
def test_the_suite_runs_on_eight_devices():
  assert jax.device_count() == 8
  assert jax.process_count() == 1


@scenes.needs_devices(8)
def test_create_mesh_spans_the_given_devices_on_one_data_axis():
  mesh = parallel.create_mesh()
  assert mesh.axis_names == (parallel.AXIS,) == ('data',)
  assert list(mesh.devices.flat) == jax.devices()
  four = parallel.create_mesh(jax.devices()[2:6])
  assert four.devices.shape == (4,)
  assert list(four.devices.flat) == jax.devices()[2:6]
  assert list(parallel.local_mesh().devices.flat) == jax.local_devices()
  assert parallel.is_local(mesh) and parallel.is_local(four)


@scenes.needs_devices(8)
def test_shard_batch_splits_rows_over_devices_and_round_trips():
  mesh = parallel.create_mesh()
  batch = _batch(16)
  placed = parallel.shard_batch(batch, mesh)
  for host, leaf in zip(jax.tree.leaves(batch), jax.tree.leaves(placed)):
    assert leaf.sharding.is_equivalent_to(parallel.data_sharding(mesh),
                                          leaf.ndim)
    assert leaf.sharding.spec == P('data')
    # Device k holds rows 2k, 2k + 1.
    shards = sorted(leaf.addressable_shards, key=lambda s: s.index[0].start)
    assert [s.device for s in shards] == jax.devices()
    for k, shard in enumerate(shards):
      np.testing.assert_array_equal(shard.data, host[2 * k:2 * k + 2])
    np.testing.assert_array_equal(np.asarray(leaf), host)
    assert leaf.dtype == host.dtype


@scenes.needs_devices(8)
def test_shard_batch_refuses_rows_that_do_not_split_over_the_mesh():
  with pytest.raises(ValueError):
    parallel.shard_batch(_batch(12), parallel.create_mesh())


def test_replicate_copies_every_leaf_to_every_device():
  mesh = parallel.create_mesh(jax.devices()[:4])
  tree = {'w': np.arange(6.0).reshape(2, 3), 'b': jnp.float32(3.0)}
  placed = parallel.replicate(tree, mesh)
  for host, leaf in zip(jax.tree.leaves(tree), jax.tree.leaves(placed)):
    assert leaf.sharding.spec == P()
    assert leaf.sharding.is_fully_replicated
    assert {s.device for s in leaf.addressable_shards} == set(
        jax.devices()[:4])
    for shard in leaf.addressable_shards:
      np.testing.assert_array_equal(shard.data, host)


def test_placed_inputs_feed_a_shard_mapped_step():
  """The reason the helpers exist: shard_map takes what they place."""
  mesh = parallel.create_mesh()
  batch = _batch(16)

  def per_device(scale, rays):
    local = scale * rays.origins[:, 0]
    return local, jax.lax.psum(jnp.sum(local), parallel.AXIS)

  step = jax.jit(jax.shard_map(per_device, mesh=mesh,
                               in_specs=(P(), P(parallel.AXIS)),
                               out_specs=(P(parallel.AXIS), P())))
  rows, total = step(parallel.replicate(jnp.float32(2.0), mesh),
                     parallel.shard_batch(batch, mesh))
  np.testing.assert_array_equal(rows, 2.0 * np.arange(16))
  assert float(total) == 2.0 * sum(range(16))


@pytest.mark.parametrize('n, multiple, padded', [
    (16, 8, 16), (13, 8, 16), (1, 8, 8), (7, 1, 7), (9, 4, 12)])
def test_pad_to_multiple_repeats_the_last_row_and_keeps_the_count(
    n, multiple, padded):
  batch = _batch(n)
  out, count = parallel.pad_to_multiple(batch, multiple)
  assert count == n
  for host, leaf in zip(jax.tree.leaves(batch), jax.tree.leaves(out)):
    assert leaf.shape == (padded,) + host.shape[1:]
    assert leaf.dtype == host.dtype
    np.testing.assert_array_equal(leaf[:n], host)  # unpadding: rows < n.
    np.testing.assert_array_equal(
        leaf[n:], np.repeat(host[-1:], padded - n, axis=0))


def test_padded_batch_shards_and_unpads_to_the_original():
  mesh = parallel.create_mesh()
  batch = _batch(13)
  padded, n = parallel.pad_to_multiple(batch, mesh.devices.size)
  placed = parallel.shard_batch(padded, mesh)
  back = jax.tree.map(lambda x: np.asarray(x)[:n], placed)
  for host, leaf in zip(jax.tree.leaves(batch), jax.tree.leaves(back)):
    np.testing.assert_array_equal(leaf, host)


@scenes.needs_devices(8)
def test_check_divisible_names_the_field_and_the_device_count():
  mesh = parallel.create_mesh()
  parallel.check_divisible(64, mesh)
  parallel.check_divisible(8, mesh, 'eval.chunk')
  with pytest.raises(errors.ConfigError, match=r'eval\.chunk=12 .* 8 devices'):
    parallel.check_divisible(12, mesh, 'eval.chunk')
  with pytest.raises(errors.ConfigError, match='batch_size=3'):
    parallel.check_divisible(3, parallel.create_mesh(jax.devices()[:2]))


def test_process_sum_on_one_process_is_the_float64_array():
  values = np.array([[0.1, 1e300], [3.0, -2.5]])
  out = parallel.process_sum(values)
  assert out.dtype == np.float64
  np.testing.assert_array_equal(out, values)


def test_single_process_helpers_are_identities():
  batch = _batch(8)
  assert parallel.process_rows(batch) is batch
  array = np.arange(6.0, dtype=np.float32).reshape(2, 3)
  gathered = parallel.gather_arrays(array, 2)
  assert len(gathered) == 1 and gathered[0] is array
  assert parallel.gather_arrays(None, 2) == [None]
  assert parallel.gather_strings('héllo') == ['héllo']
  assert parallel.gather_strings(None) == [None]


def test_to_local_replicates_values_on_the_local_mesh():
  full = parallel.create_mesh()
  tree = parallel.replicate({'w': np.arange(4.0)}, full)
  local = parallel.create_mesh(jax.devices()[:2])
  out = parallel.to_local(tree, local)
  assert out['w'].sharding.mesh.devices.tolist() == jax.devices()[:2]
  assert out['w'].sharding.spec == P()
  np.testing.assert_array_equal(out['w'], np.arange(4.0))


def test_initialize_distributed_without_a_coordinator_does_nothing(
    monkeypatch):
  for name in ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES',
               'JAX_PROCESS_ID'):
    monkeypatch.delenv(name, raising=False)
  assert parallel.initialize_distributed() is False
  assert jax.process_count() == 1


@pytest.mark.parametrize('kwargs, message', [
    (dict(num_processes=2), 'without the process count or id'),
    (dict(process_id=0), 'without the process count or id'),
    (dict(num_processes=2, process_id=2), r'outside \[0, 2\)'),
    (dict(num_processes=2, process_id=-1), r'outside \[0, 2\)'),
    (dict(num_processes=0, process_id=0), r'outside \[0, 0\)'),
])
def test_initialize_distributed_refuses_bad_process_numbers(
    monkeypatch, kwargs, message):
  for name in ('JAX_NUM_PROCESSES', 'JAX_PROCESS_ID'):
    monkeypatch.delenv(name, raising=False)
  with pytest.raises(errors.StartupError, match=message):
    parallel.initialize_distributed('127.0.0.1:1', **kwargs)


def test_initialize_distributed_reads_the_environment(monkeypatch):
  monkeypatch.setenv('JAX_COORDINATOR_ADDRESS', '127.0.0.1:1')
  monkeypatch.setenv('JAX_NUM_PROCESSES', '3')
  monkeypatch.setenv('JAX_PROCESS_ID', '3')
  with pytest.raises(errors.StartupError, match=r'--process_id=3 is outside'):
    parallel.initialize_distributed()


def test_wait_for_coordinator_returns_once_the_port_listens():
  with socket.socket() as server:
    server.bind(('127.0.0.1', 0))
    server.listen()
    port = server.getsockname()[1]
    assert parallel.wait_for_coordinator(f'127.0.0.1:{port}', 5) is None


def test_wait_for_coordinator_names_an_address_nobody_listens_on():
  with socket.socket() as probe:  # a port that was free a moment ago.
    probe.bind(('127.0.0.1', 0))
    port = probe.getsockname()[1]
  with pytest.raises(errors.StartupError,
                     match=f'Coordinator 127.0.0.1:{port} did not answer'):
    parallel.wait_for_coordinator(f'127.0.0.1:{port}', 0)


@pytest.mark.parametrize('address', ['localhost', 'localhost:', ':1234',
                                     'host:port'])
def test_wait_for_coordinator_refuses_a_malformed_address(address):
  with pytest.raises(errors.StartupError, match='must be HOST:PORT'):
    parallel.wait_for_coordinator(address, 0)
